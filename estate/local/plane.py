"""The control plane on one machine: the real handlers and planners, AWS in moto_server,
GitHub as our loopback fake. Used by `estate serve` and the end-to-end tests.

Only the adapters' endpoints differ from production; SQS's event source mapping (batches,
partial failures, redrive to the DLQ) is played by `pump()`. moto has no capacity blocks:
`with_blocks()` runs the capacity-block manager against our EC2 boundary fake
(estate/local/fake_block_ec2.py), holding the blocks the pools name.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3

from estate.config.loader import Estate, load_estate
from estate.config.stack_config import StackConfig, parse_stack_config
from estate.derive.control_config import control_settings, pool_settings
from estate.local.fake_block_ec2 import FakeBlockEc2
from estate.local.fake_github import FakeGithub, jit_runner
from estate.local.moto_fidelity import make_run_instances_count_faithful, make_ssm_strict
from lambda_src.aws.block_ec2 import BlockEc2
from lambda_src.aws.ec2_fleet import Ec2Fleet
from lambda_src.aws.jit_parameters import JitParameters
from lambda_src.aws.ledger import OPEN, OPEN_INDEX, Ledger
from lambda_src.aws.leftovers import LeftoverStore
from lambda_src.aws.sigv4_client import AwsJsonClient
from lambda_src.core.settings import ControlPlaneSettings
from lambda_src.functions import webhook
from lambda_src.functions.block_manager import BlockManager
from lambda_src.functions.control_plane import ControlPlane
from lambda_src.functions.handlers import CachedParameter, SqsQueues
from lambda_src.functions.redelivery import Redeliverer
from lambda_src.functions.spot_events import SpotEvents
from lambda_src.functions.sweeper import Sweeper
from lambda_src.github.client import GithubApp, GithubClient

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's account
MAX_RECEIVE_COUNT = 3
MOTO_AMI = "ami-12c6146b"  # in moto's bundled catalogue of public images
SESSION_FORMAT = "runner-estate-serve/1"


class Clock:
    """Wall time, or a virtual clock the tests move by hand."""

    def __init__(self, start: float | None = None) -> None:
        self.virtual = start is not None
        self._now = start or 0.0

    def __call__(self) -> float:
        return self._now if self.virtual else time.time()

    def advance(self, seconds: float) -> None:
        self._now += seconds


def local_stack_raw(org: str, runner_groups: dict[str, Any] | None = None, extra_apps: int = 0) -> dict[str, Any]:
    """The stack `serve` runs, as a stack file's settings; `runner_groups` as in
    Pulumi.<stack>.yaml (none: every group admits every private repository); `extra_apps` more
    GitHub Apps besides App 1234."""
    return {
        "environment": "local",
        "region": REGION,
        "github": {"org": org, "app_id": 1234, "extra_apps": [{"app_id": 1235 + k} for k in range(extra_apps)]},
        "secrets": {"github_app_private_key": "/runner-estate/local/app-key", "webhook_secret": "/runner-estate/local/webhook-secret"},
        "runner_groups": runner_groups or {},
    }


def local_stack_config(org: str, runner_groups: dict[str, Any] | None = None, extra_apps: int = 0) -> StackConfig:
    return parse_stack_config(local_stack_raw(org, runner_groups, extra_apps), "local")


@dataclass
class LocalPlane:
    configs: list[str]
    clock: Clock = field(default_factory=Clock)
    moto: Any = None
    endpoint: str | None = None  # an already running moto_server (tests share one); else we start our own
    github: FakeGithub = field(init=False)
    plane: ControlPlane = field(init=False)
    redeliverer: Redeliverer = field(init=False)
    sweeper: Sweeper = field(init=False)
    spot_events: SpotEvents = field(init=False)
    ports: webhook.WebhookPorts = field(init=False)
    settings: ControlPlaneSettings = field(init=False)
    estate: Estate = field(init=False)
    ec2: Any = field(init=False)
    sqs: Any = field(init=False)
    webhook_secret: str = field(default_factory=lambda: secrets.token_hex(20))
    runner_groups: dict[str, Any] | None = None  # the stack's `runner_groups` (repositories without the org)
    blocks: BlockManager | None = None  # the capacity-block manager, with `with_blocks()`
    block_ec2: FakeBlockEc2 | None = None
    extra_apps: int = 0  # more GitHub Apps the control plane spreads its calls over (issue 21.4)
    _http: ThreadingHTTPServer | None = None
    aws_url: str = ""  # the moto_server it runs against

    def start(self) -> LocalPlane:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        endpoint = self.endpoint or self._start_moto()
        self.aws_url = endpoint
        self.estate = load_estate(self.configs)
        stack = local_stack_config("example-org", self.runner_groups, self.extra_apps)
        groups = sorted({p.runner_group for p in self.estate.pools})
        self.github = FakeGithub(stack.github.org, stack.github.app_id, groups, self.clock).start()
        extra_keys = {a.app_id: self.github.add_app(a.app_id).private_key_pem for a in stack.github.extra_apps}

        session = boto3.session.Session(region_name=REGION)
        self.ec2 = session.client("ec2", endpoint_url=endpoint)
        self._remember_shutdown_behaviour()
        self.sqs = session.client("sqs", endpoint_url=endpoint)
        ssm = AwsJsonClient("ssm", REGION, endpoint_url=endpoint)
        dynamodb = AwsJsonClient("dynamodb", REGION, endpoint_url=endpoint)
        table = self._create_table(dynamodb)
        subnets = self._create_network()
        pools = {}
        for pool in self.estate.pools:
            template = self.ec2.create_launch_template(
                LaunchTemplateName=f"local-{pool.name}",
                # As the deployed template (components/runner_fleet.py): a power-off ends the host.
                LaunchTemplateData={
                    "ImageId": self._ami,
                    "InstanceType": pool.runner.instance_types[0],
                    "InstanceInitiatedShutdownBehavior": "terminate",
                },
            )["LaunchTemplate"]["LaunchTemplateId"]
            # The block manager's queues: tests hand it their records directly, so only the ARNs are needed.
            arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:local-{pool.name}-" if pool.capacity_type == "capacity-block" else ""
            pools[pool.name] = pool_settings(
                pool,
                template,
                subnets,
                self._create_queue(pool.name),
                events_queue_arn=arn and f"{arn}events",
                reports_queue_arn=arn and f"{arn}reports",
            )
        self.settings = control_settings(stack, self.estate, table_name=table, pools=pools, api_url=self.github.url)
        ssm.call("PutParameter", {"Name": stack.secrets.webhook_secret, "Value": self.webhook_secret, "Type": "SecureString"})
        ssm.call(
            "PutParameter", {"Name": stack.secrets.github_app_private_key, "Value": self.github.private_key_pem, "Type": "SecureString"}
        )
        for app in self.settings.more_apps:
            ssm.call("PutParameter", {"Name": app.key_parameter, "Value": extra_keys[app.app_id], "Type": "SecureString"})

        secret = CachedParameter(ssm, self.settings.webhook_secret_parameter)
        ledger = Ledger(dynamodb, table, self.settings.ledger_ttl_s, self.clock, self.settings.pools)
        queues = SqsQueues(AwsJsonClient("sqs", REGION, endpoint_url=endpoint), self.settings)
        self.ports = webhook.WebhookPorts(
            lambda: secret().encode(),
            ledger,
            queues,
            self.settings.routing,
            {},
            refresh_secret=secret.refresh,
            reusing_pool_of=self.settings.reusing_pool_of,
        )
        app_key = CachedParameter(ssm, self.settings.app_key_parameter)
        self.plane = ControlPlane(
            settings=self.settings,
            ledger=ledger,
            fleet=Ec2Fleet(self.ec2, self.settings.environment),
            jit=JitParameters(ssm, self.settings.jit_parameter_prefix, f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/"),
            github=GithubClient(
                self.github.url,
                stack.github.org,
                stack.github.app_id,
                app_key,
                clock=self.clock,
                sleep=lambda s: None,
                more_apps=[GithubApp(a.app_id, CachedParameter(ssm, a.key_parameter), a.installation_id) for a in self.settings.more_apps],
            ),
            clock=self.clock,
        )
        self.redeliverer = Redeliverer(self.settings, ledger, self.plane.github, self.clock)
        store = LeftoverStore(self.ec2, ssm, self.settings.environment, self.settings.jit_parameter_prefix)
        self.sweeper = Sweeper(self.settings, ledger, store, self.plane.github, self.clock)
        self.spot_events = SpotEvents(self.plane)
        self.ssm = ssm
        return self

    def with_blocks(self, hours: float = 24.0) -> list[str]:
        """Run the capacity-block manager too: each capacity-block pool's `reservation_ids` become
        blocks active from now for `hours` in our EC2 fake, its queue feeds the manager as
        `cb_scale_up` does, and `manage()` cycles it. Returns one line per block."""
        pools = {name: pool for name, pool in self.settings.pools.items() if pool.capacity_type == "capacity-block"}
        subnets = sorted({s for pool in pools.values() for s in pool.subnet_ids})
        self.block_ec2 = FakeBlockEc2(self.clock, {s: f"{REGION}{'ab'[i % 2]}" for i, s in enumerate(subnets)})
        lines = []
        for pool in self.estate.pools:
            block = pool.spec.estate.capacity_block
            if pool.name not in pools or block is None:
                continue
            for rid in block.reservation_ids:
                self.block_ec2.add_block(rid, pool.runner.instance_types[0], block.instance_count, self.clock(), hours)
                lines.append(f"{pool.name} {rid}: {block.instance_count} x {pool.runner.instance_types[0]} for {hours:g} h")
            if not block.reservation_ids:
                lines.append(f"{pool.name}: no reservation_ids (a purchase is not simulated)")
        self.blocks = BlockManager(
            settings=self.settings,
            ledger=self.plane.ledger,
            ec2=BlockEc2(self.block_ec2, self.settings.environment),
            jit=self.plane.jit,
            github=self.plane.github,
            clock=self.clock,
        )
        return lines

    def scale_up(self, records: list[dict[str, Any]]) -> list[str]:
        """One pool queue's batch to the function wired to it: scale-up, or for a capacity-block
        pool the block manager's (with `with_blocks()`). Returns the ids to retry."""
        failed = set(self.plane.scale_up(records))
        if self.blocks is not None:
            failed |= set(self.blocks.scale_up(records))
        return sorted(failed)

    def cycle(self) -> None:
        """The scheduled functions: reconcile and scale-down, and the block manager with AWS
        ending the instances of a block about to end."""
        self.plane.reconcile()
        self.plane.scale_down()
        if self.blocks is not None and self.block_ec2 is not None:
            self.block_ec2.aws_terminates_ending_blocks()
            self.blocks.manage()

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        self.github.stop()
        if self.moto is not None:
            self.moto.stop()

    def session(self) -> dict[str, Any]:
        """What `estate status --serve` and `estate report --serve` need to read this plane as
        they read a real stack: where AWS and GitHub answer, the stack's settings and the names
        it gave the ledger and queues (the credentials are moto's, which accepts any)."""
        return {
            "format": SESSION_FORMAT,
            "aws_url": self.aws_url,
            "credentials": {"access_key": "testing", "secret_key": "testing"},
            "stack": local_stack_raw("example-org", self.runner_groups, self.extra_apps),
            "configs": [str(Path(c).resolve()) for c in self.configs],
            "api_url": self.github.url,
            "table": self.settings.table_name,
            "dlqs": {p: [f"local-{p}-dlq"] for p in self.settings.pools},
        }

    # ---- the webhook endpoint ---------------------------------------------------------
    def serve_webhook(self, port: int = 0) -> str:
        """Listen on loopback; GitHub's deliveries go through the real handler."""
        self._http = ThreadingHTTPServer(("127.0.0.1", port), _webhook_handler(self))
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        host, port = self._http.server_address[:2]
        url = f"http://{host!s}:{port}/webhook"
        self.github.register_webhook(url, self.webhook_secret)
        self.redeliverer.webhook_url = url
        return url

    def handle_http(self, headers: dict[str, str], body: bytes) -> webhook.Response:
        event = {"headers": headers, "body": body.decode("utf-8", errors="surrogateescape"), "isBase64Encoded": False}
        try:
            return webhook.handle(event, self.ports, self.clock())
        except Exception:  # as handlers.webhook_handler answers when our own storage fails
            logging.getLogger("runner_estate.local").exception("webhook failed")
            return webhook.Response(503, {"error": "temporarily unavailable"}, "failed")

    # ---- SQS -> scale-up, as the event source mapping does it --------------------------
    def pump(self, on_batch: Callable[[list[dict[str, Any]]], list[str]] | None = None) -> int:
        """Deliver every ready message to scale-up in batches of 10; a failed message becomes
        visible again, and moves to the DLQ when received a fourth time. Returns messages handled."""
        handled = 0
        for pool in self.settings.pools.values():
            while True:
                got = self.sqs.receive_message(QueueUrl=pool.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, AttributeNames=["All"])
                messages = got.get("Messages", [])
                if not messages:
                    break
                records = [{"messageId": m["MessageId"], "body": m["Body"], "receiptHandle": m["ReceiptHandle"]} for m in messages]
                failed = set((on_batch or self.plane.scale_up)(records))
                for m in messages:
                    if m["MessageId"] not in failed:
                        self.sqs.delete_message(QueueUrl=pool.queue_url, ReceiptHandle=m["ReceiptHandle"])
                handled += len(messages)
                if failed:
                    break  # retried on the next pump, as after a visibility timeout
        return handled

    def dlq_depth(self, pool: str) -> int:
        url = self.sqs.get_queue_url(QueueName=f"local-{pool}-dlq")["QueueUrl"]
        return int(
            self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
                "ApproximateNumberOfMessages"
            ]
        )

    # ---- the host side ----------------------------------------------------------------
    def boot(self, instance_id: str) -> str:
        """Do what a host's bootstrap does: read its runner config, delete it, connect."""
        name = self.settings.jit_parameter_prefix + instance_id
        found = self.ssm.call("GetParameter", {"Name": name, "WithDecryption": True})
        self.ssm.call("DeleteParameter", {"Name": name})
        _, runner_name = jit_runner(found["Parameter"]["Value"])
        self.github.connect(runner_name)
        return runner_name

    def running_instances(self, pool: str | None = None) -> list[str]:
        filters = [{"Name": "instance-state-name", "Values": ["pending", "running"]}]
        if pool:
            filters.append({"Name": "tag:runner-estate:pool", "Values": [pool]})
        found = self.ec2.describe_instances(Filters=filters)
        return sorted(i["InstanceId"] for r in found["Reservations"] for i in r["Instances"])

    def power_off(self, instance_id: str) -> None:
        """The host powers itself off (after its job, or a warm instance after preparing): EC2
        then does what the instance's shutdown behaviour says — the RunInstances request's where
        it set one, else the launch template's `terminate`. moto runs no guest and reports
        `stop` for every instance launched without the parameter, template or not, so the
        behaviour EC2 would apply is remembered from the requests (`_remember_shutdown_behaviour`)."""
        if self._shutdown_behaviour.get(instance_id, "terminate") == "stop":
            self.ec2.stop_instances(InstanceIds=[instance_id])
        else:
            self.ec2.terminate_instances(InstanceIds=[instance_id])

    def _remember_shutdown_behaviour(self) -> None:
        """Note the shutdown behaviour each RunInstances request sets, per instance it launches."""
        self._shutdown_behaviour: dict[str, str] = {}

        def asked(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            context["shutdown_behaviour"] = params.get("InstanceInitiatedShutdownBehavior")

        def launched(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            if behaviour := context.get("shutdown_behaviour"):
                for instance in parsed.get("Instances", []):
                    self._shutdown_behaviour[instance["InstanceId"]] = behaviour

        self.ec2.meta.events.register("provide-client-params.ec2.RunInstances", asked)
        self.ec2.meta.events.register("after-call.ec2.RunInstances", launched)

    # ---- set-up -----------------------------------------------------------------------
    def _start_moto(self) -> str:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto_server logs every request
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from moto.server import ThreadedMotoServer

        make_ssm_strict()  # SSM's tier limits, which moto does not enforce
        make_run_instances_count_faithful()  # up to MaxCount, as EC2 launches
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto._server.server_address[:2]
        return f"http://{host}:{port}"

    def _create_table(self, dynamodb: AwsJsonClient) -> str:
        name = "runner-estate-local-ledger"
        dynamodb.call(
            "CreateTable",
            {
                "TableName": name,
                "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": OPEN, "AttributeType": "S"}],
                "GlobalSecondaryIndexes": [
                    {
                        "IndexName": OPEN_INDEX,
                        "KeySchema": [{"AttributeName": OPEN, "KeyType": "HASH"}, {"AttributeName": "pk", "KeyType": "RANGE"}],
                        "Projection": {"ProjectionType": "ALL"},
                    }
                ],
            },
        )
        return name

    def _create_network(self) -> list[str]:
        vpc = self.ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
        return [self.ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24")["Subnet"]["SubnetId"] for i in range(2)]

    @functools.cached_property
    def _ami(self) -> str:
        # One image of moto's catalogue, asked for by id: listing the whole catalogue takes seconds.
        return str(self.ec2.describe_images(ImageIds=[MOTO_AMI])["Images"][0]["ImageId"])

    def _create_queue(self, pool: str) -> str:
        dlq = self.sqs.create_queue(QueueName=f"local-{pool}-dlq")["QueueUrl"]
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT})
        return str(self.sqs.create_queue(QueueName=f"local-{pool}", Attributes={"RedrivePolicy": redrive})["QueueUrl"])


def _webhook_handler(local: LocalPlane) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(min(length, webhook.MAX_BODY_BYTES + 1))
            response = local.handle_http({k: v for k, v in self.headers.items()}, body)
            raw = json.dumps(response.body).encode()
            self.send_response(response.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


def default_configs() -> list[str]:
    return [str(Path(__file__).resolve().parents[2] / "runner_configs")]
