"""The reads behind `status` and `report`, all read-only: the ledger (DynamoDB), EC2, SQS, SSM
(the App key, when no file is given) and GitHub's runner listing. A source that cannot be read
is named in the result, never fatal: a status with GitHub down still shows the ledger."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from estate.ops.status_view import StatusFacts
from estate.ops.target import Target
from lambda_src.aws.block_ec2 import BlockEc2
from lambda_src.aws.ec2_fleet import Ec2Fleet
from lambda_src.aws.ledger import Ledger
from lambda_src.aws.sigv4_client import AwsJsonClient, Credentials
from lambda_src.core.block_planner import plan_blocks
from lambda_src.core.planner import scaled_pools
from lambda_src.github.client import GithubClient


class CredentialsError(RuntimeError):
    """No AWS credentials to read the stack with."""


class Reader:
    """One stack's (or serve's) AWS and GitHub, read-only."""

    def __init__(self, target: Target, clock: Callable[[], float] = time.time) -> None:
        import boto3

        self.target = target
        self.settings = target.settings
        self.clock = clock
        creds = target.credentials
        self.session = boto3.Session(
            region_name=self.settings.region,
            aws_access_key_id=creds["access_key"] if creds else None,
            aws_secret_access_key=creds["secret_key"] if creds else None,
        )
        if self.session.get_credentials() is None:
            raise CredentialsError("no AWS credentials: set a profile (AWS_PROFILE), environment keys or SSO, then retry")
        self.ledger = Ledger(
            AwsJsonClient("dynamodb", self.settings.region, credentials=self._credentials, endpoint_url=target.aws_url),
            self.settings.table_name,
            self.settings.ledger_ttl_s,
            clock,
            self.settings.pools,
        )

    def _credentials(self) -> Credentials:
        frozen = self.session.get_credentials().get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.target.aws_url)

    def app_key(self) -> str:
        if self.target.app_key_file is not None:
            return Path(self.target.app_key_file).read_text(encoding="utf-8")
        found = self.client("ssm").get_parameter(Name=self.settings.app_key_parameter, WithDecryption=True)
        return str(found["Parameter"]["Value"])

    def github(self) -> GithubClient:
        s = self.settings
        return GithubClient(s.api_url, s.org, s.app_id, self.app_key, s.installation_id, clock=self.clock, attempts=2)

    # ---- status -------------------------------------------------------------------------
    def status(self, where: str) -> StatusFacts:
        s, now = self.settings, self.clock()
        facts = StatusFacts(s, now, where)
        scaled = sorted(scaled_pools(s.pools))
        blocks = sorted(set(s.pools) - set(scaled))

        def read(what: str, call: Callable[[], Any]) -> Any:
            try:
                return call()
            except Exception as exc:  # noqa: BLE001 - a source that cannot be read is reported, not fatal
                facts.unread.append(f"{what}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"[:300])
                return None

        facts.queued = read("ledger (queued jobs)", self.ledger.queued_jobs) or []
        facts.hosts = read("ledger (hosts)", lambda: [i for p in scaled for i in self.ledger.live_instances(p)]) or []
        facts.failures = read("ledger (failures)", self.ledger.failures) or []
        ec2 = self.client("ec2")
        hosts = read("EC2 (instances)", lambda: Ec2Fleet(ec2, s.environment).hosts(scaled))
        if hosts is not None:
            facts.ec2_running = {}
            for host in hosts:
                facts.ec2_running[host.pool] = facts.ec2_running.get(host.pool, 0) + 1
        facts.runners = read("GitHub (runners)", lambda: self.github().list_runners())
        for pool_name in blocks:
            found = read(f"capacity blocks of {pool_name}", lambda p=pool_name: self._blocks(p, facts))  # type: ignore[misc]
            if found is not None:
                facts.blocks[pool_name] = found
        sqs = self.client("sqs")
        for pool_name, names in sorted(self.target.dlqs.items()):
            depths = [read(f"dead-letter queue {n}", lambda n=n: _depth(sqs, n)) for n in names]  # type: ignore[misc]
            facts.dlq[pool_name] = sum(d for d in depths if d is not None)
        return facts

    def _blocks(self, pool_name: str, facts: StatusFacts) -> dict[str, dict[str, Any]]:
        """The block planner's own report of the pool's blocks now (phase, hours left, slots)."""
        pool, s = self.settings.pools[pool_name], self.settings
        blocks = BlockEc2(self.client("ec2"), s.environment).blocks(pool)
        records = {b.id: self.ledger.block_record(b.id) for b in blocks}
        nodes = self.ledger.live_instances(pool_name)
        queued = sum(1 for j in facts.queued if j.pool == pool_name)
        plan = plan_blocks(
            pool, s.environment, blocks, records, nodes, self.ledger.slots(pool_name), facts.runners or [], queued, facts.now
        )
        return plan.report

    # ---- report -------------------------------------------------------------------------
    def items(self) -> Iterator[dict[str, Any]]:
        return self.ledger.items(("job#", "instance#", "usage#"))


def _depth(sqs: Any, name: str) -> int:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(found["Attributes"]["ApproximateNumberOfMessages"])
