"""ScalerFunctions: the control plane in AWS — webhook, scale-up, reconcile and scale-down
Lambdas from one build of lambda_src/, a queue (+ DLQ and alarm) per pool, the DynamoDB
ledger, the schedules, the two SecureStrings, and one least-privilege role per function."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from components.alarms import alarm_name, dlq_alarm, metric_alarm
from components.spot_interruptions import HANDLER_TIMEOUT_S as SPOT_HANDLER_TIMEOUT_S
from components.spot_interruptions import SpotInterruptions, SpotInterruptionsArgs
from estate.config.loader import Estate
from estate.config.pool import Pool
from estate.config.stack_config import StackConfig, app_key_parameter
from estate.derive import iam_policies
from estate.derive.control_config import control_settings, jit_parameter_prefix, pool_settings
from lambda_src.aws.ec2_fleet import SPOT_ROLE_METRIC, SPOT_SERVICE
from lambda_src.aws.ledger import OPEN, OPEN_INDEX
from lambda_src.core.redelivery import REDELIVERY_PERIOD_S
from lambda_src.core.settings import SETTINGS_FILE, PoolSettings
from lambda_src.core.sweeper import SWEEP_PERIOD_S
from lambda_src.core.tags import POOL
from lambda_src.functions.metrics import NAMESPACE as METRIC_NAMESPACE
from lambda_src.functions.redelivery import WEBHOOK_URL_VARIABLE

LAMBDA_SRC = Path(__file__).resolve().parent.parent / "lambda_src"
LAMBDA_PACKAGES = ("core", "aws", "github", "functions")  # host/ runs on instances, not in Lambda
RUNTIME = "python3.12"
ARCHITECTURE = "arm64"
SCALE_UP_TIMEOUT_S = 60
DEFAULT_MAX_RECEIVE_COUNT = 3
SCHEDULE = "rate(1 minute)"


@dataclass(frozen=True)
class PoolWiring:
    """Deploy-time ids of one pool's RunnerFleet."""

    launch_template_id: pulumi.Output[str]
    role_arn: pulumi.Output[str]
    # Capacity-block pools: EventBridge's events for the manager, and the nodes' slot reports.
    events_queue_arn: pulumi.Output[str] | None = None
    reports_queue_arn: pulumi.Output[str] | None = None


@dataclass(frozen=True)
class ScalerFunctionsArgs:
    stack: StackConfig
    estate: Estate
    pools: Mapping[str, PoolWiring]
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]  # capacity-block nodes get their network interface at launch
    public_ip: bool
    app_private_key: pulumi.Input[str]  # Pulumi secrets; stored as SSM SecureStrings
    webhook_secret: pulumi.Input[str]
    extra_app_keys: Mapping[int, pulumi.Input[str]]  # github.extra_apps' keys, by App id (Pulumi secrets)
    tags: dict[str, str]
    alarm_topic_arn: pulumi.Input[str]  # every alarm notifies it (components/alarms.py AlarmTopic)
    lambda_dependencies: Path | None  # PyJWT + cryptography built for the functions' architecture
    # Create the account-wide Spot service-linked role (estate/derive/spot_role.py decides).
    create_spot_role: bool = False
    # Pool -> the SSM parameter its launch template resolves its baked image from (estate/derive/images.py).
    image_parameters: Mapping[str, str] = field(default_factory=dict)


def lambda_archive(settings_json: str, dependencies: Path | None) -> pulumi.AssetArchive:
    """lambda_src's function packages, the compiled settings beside them, and the bundled dependencies."""
    sources = [LAMBDA_SRC / "__init__.py", *(p for package in LAMBDA_PACKAGES for p in sorted((LAMBDA_SRC / package).glob("*.py")))]
    assets: dict[str, Any] = {p.relative_to(LAMBDA_SRC.parent).as_posix(): pulumi.FileAsset(str(p)) for p in sources}
    assets[f"lambda_src/{SETTINGS_FILE}"] = pulumi.StringAsset(settings_json)
    if dependencies is not None:
        for entry in sorted(dependencies.iterdir()):
            assets[entry.name] = pulumi.FileArchive(str(entry)) if entry.is_dir() else pulumi.FileAsset(str(entry))
    return pulumi.AssetArchive(assets)


def _templates_first(args: ScalerFunctionsArgs, pools: Sequence[str]) -> pulumi.Output[list[str]]:
    """The pools' launch templates, as a dependency of a launching role's policy: its launch
    statements require the templates' pool tag, so an update applies them after the tags."""
    return pulumi.Output.all(*[args.pools[name].launch_template_id for name in pools])


def _pool_settings(pool: Pool, deployed: Mapping[str, Any], public_ip: bool, image_parameter: str) -> PoolSettings:
    """One pool's settings with the deploy-time ids filled in."""
    name = pool.name
    return pool_settings(
        pool,
        deployed["templates"][name],
        deployed["subnets"],
        deployed["urls"][name],
        events_queue_arn=deployed["events"].get(name, ""),
        reports_queue_arn=deployed["reports"].get(name, ""),
        security_group_ids=pool.runner_security_groups(deployed["security_group"]),
        public_ip=public_ip,
        image_parameter=image_parameter,
    )


class ScalerFunctions(pulumi.ComponentResource):
    webhook_url: pulumi.Output[str]
    table_name: pulumi.Output[str]
    queue_urls: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: ScalerFunctionsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runner-estate:index:ScalerFunctions", name, None, opts)
        self._child = pulumi.ResourceOptions(parent=self)
        stack, env, tags = args.stack, args.stack.environment, args.tags
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=self)).account_id
        self._prefix = f"runner-estate-{env}"
        self._env = env
        self._topic = args.alarm_topic_arn
        self._logs: dict[str, aws.cloudwatch.LogGroup] = {}
        if args.create_spot_role:
            self._spot_role(name, tags)

        # The ledger outlives any one deploy: a replaced table would forget which jobs were served.
        table = aws.dynamodb.Table(
            f"{name}-ledger",
            name=f"{self._prefix}-ledger",
            billing_mode="PAY_PER_REQUEST",
            hash_key="pk",
            attributes=[aws.dynamodb.TableAttributeArgs(name="pk", type="S"), aws.dynamodb.TableAttributeArgs(name=OPEN, type="S")],
            global_secondary_indexes=[
                aws.dynamodb.TableGlobalSecondaryIndexArgs(name=OPEN_INDEX, hash_key=OPEN, range_key="pk", projection_type="ALL")
            ],
            ttl=aws.dynamodb.TableTtlArgs(attribute_name="expires_at", enabled=True),
            point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(enabled=True),
            server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(enabled=True),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )
        app_key, hook_secret = (
            aws.ssm.Parameter(
                f"{name}-{suffix}",
                name=param_name,
                type="SecureString",
                value=pulumi.Output.secret(value),
                description=description,
                tags=tags,
                opts=self._child,
            )
            for suffix, param_name, value, description in (
                (
                    "app-key",
                    stack.secrets.github_app_private_key,
                    args.app_private_key,
                    "GitHub App private key; read only by the scaler functions",
                ),
                (
                    "webhook-secret",
                    stack.secrets.webhook_secret,
                    args.webhook_secret,
                    "GitHub webhook secret; read only by the webhook function",
                ),
            )
        )

        # Each extra App's key in a SecureString of its own, read by the same functions as the main one.
        extra_keys = [
            aws.ssm.Parameter(
                f"{name}-app-key-{app_id}",
                name=app_key_parameter(stack, app_id),
                type="SecureString",
                value=pulumi.Output.secret(value),
                description=f"GitHub App {app_id} private key (github.extra_apps); read only by the scaler functions",
                tags=tags,
                opts=self._child,
            )
            for app_id, value in sorted(args.extra_app_keys.items())
        ]
        app_key_arns = pulumi.Output.all(app_key.arn, *(k.arn for k in extra_keys))

        queues = {pool.name: self._queue(name, pool.name, pool.spec.redrive_build_queue, pool.runner.job_queue_retention_in_seconds,
                                         {**tags, POOL: pool.name})
                  for pool in args.estate.pools}  # fmt: skip
        by_name = {p.name: p for p in args.estate.pools}
        settings_json = pulumi.Output.all(
            table=table.name,
            subnets=args.subnet_ids,
            templates={n: w.launch_template_id for n, w in args.pools.items()},
            urls={n: q.url for n, q in queues.items()},
            events={n: w.events_queue_arn for n, w in args.pools.items() if w.events_queue_arn is not None},
            reports={n: w.reports_queue_arn for n, w in args.pools.items() if w.reports_queue_arn is not None},
            security_group=args.security_group_id,
        ).apply(
            lambda v: json.dumps(
                control_settings(
                    stack,
                    args.estate,
                    table_name=v["table"],
                    pools={n: _pool_settings(by_name[n], v, args.public_ip, args.image_parameters.get(n, "")) for n in by_name},
                ).to_dict(),
                sort_keys=True,
            )
        )
        code = settings_json.apply(lambda text: lambda_archive(text, args.lambda_dependencies))
        jit_prefix_arn = pulumi.Output.concat("arn:aws:ssm:", stack.region, ":", account, ":parameter", jit_parameter_prefix(env))
        queue_arns = [q.arn for q in queues.values()]  # the webhook sends to every pool's queue
        # The scaler reads and launches for ordinary pools only; capacity-block pools are the block manager's.
        scaled = [p.name for p in args.estate.pools if p.capacity_type != "capacity-block"]
        scaled_queue_arns = [queues[n].arn for n in scaled]
        runner_roles = [args.pools[n].role_arn for n in scaled]
        self._account = account

        webhook = self._function(
            name,
            "webhook",
            code,
            10,
            lambda log_arn: pulumi.Output.all(log_arn, hook_secret.arn, table.arn, *queue_arns).apply(
                lambda a: iam_policies.webhook_policy(a[0], a[1], a[2], list(a[3:]))
            ),
            tags,
            protect=True,
        )
        # Signature verification is the authentication; a replaced URL would break GitHub's hook.
        url = aws.lambda_.FunctionUrl(
            f"{name}-webhook-url",
            function_name=webhook.name,
            authorization_type="NONE",
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )

        def scaler(launches: bool, with_queues: bool, queues: list[pulumi.Output[str]] | None = None) -> Any:
            def policy(log_arn: pulumi.Output[str]) -> pulumi.Output[dict[str, Any]]:
                parts = pulumi.Output.all(log_arn, app_key_arns, jit_prefix_arn, table.arn, pulumi.Output.all(*runner_roles),
                                          pulumi.Output.all(*(scaled_queue_arns if queues is None else queues)),
                                          self._image_parameter_arns(args, scaled), _templates_first(args, scaled))  # fmt: skip
                return parts.apply(
                    lambda a: iam_policies.scaler_policy(
                        environment=env,
                        pools=scaled,
                        log_group_arn=a[0],
                        app_key_arns=list(a[1]),
                        jit_prefix_arn=a[2],
                        table_arn=a[3],
                        runner_role_arns=list(a[4]),
                        region=stack.region,
                        launches=launches,
                        queue_arns=list(a[5]) if with_queues else None,
                        image_parameter_arns=list(a[6]),
                    )
                )

            return policy

        scale_up = self._function(name, "scale_up", code, SCALE_UP_TIMEOUT_S, scaler(True, True), tags)
        reconcile = self._function(name, "reconcile", code, 120, scaler(True, False), tags)
        scale_down = self._function(name, "scale_down", code, 120, scaler(False, False), tags)

        block_pools = [p for p in args.estate.pools if p.capacity_type == "capacity-block"]
        cb_scale_up = (
            self._block_functions(name, args, code, block_pools, queues, table, app_key_arns, jit_prefix_arn) if block_pools else None
        )

        for pool in args.estate.pools:
            concurrency = pool.runner.scale_up_reserved_concurrent_executions
            # Jobs of a capacity-block pool go to the block manager's scale-up, the rest to the scaler's.
            target = cb_scale_up if cb_scale_up is not None and pool in block_pools else scale_up
            aws.lambda_.EventSourceMapping(
                f"{name}-{pool.name}-scale-up",
                event_source_arn=queues[pool.name].arn,
                function_name=target.arn,
                batch_size=10,
                function_response_types=["ReportBatchItemFailures"],
                # Lambda's floor for a per-source cap is 2; -1 (upstream's "unlimited") sets none.
                scaling_config=aws.lambda_.EventSourceMappingScalingConfigArgs(maximum_concurrency=max(2, concurrency))
                if concurrency > 0
                else None,
                opts=self._child,
            )
        for fn, label in ((reconcile, "reconcile"), (scale_down, "scale-down")):
            self._schedule(name, label, fn, tags)

        # Failed webhook deliveries, sent again every few minutes (issue 21.2). It finds the org
        # hook by the webhook's URL, which cannot be in the settings the webhook is built from.
        redeliver = self._function(
            name,
            "redeliver",
            code,
            120,
            lambda log_arn: pulumi.Output.all(log_arn, app_key_arns, table.arn).apply(
                lambda a: iam_policies.redelivery_policy(a[0], list(a[1]), a[2])
            ),
            tags,
            environment={WEBHOOK_URL_VARIABLE: url.function_url},
        )
        self._schedule(name, "redeliver", redeliver, tags, f"rate({int(REDELIVERY_PERIOD_S // 60)} minutes)")

        # What outlived its purpose, found from tags and names (issue 21.3): its own role, which may
        # end only this environment's volumes, interfaces, ordinary hosts and hosts of removed pools.
        all_pools = [p.name for p in args.estate.pools]
        sweep = self._function(
            name,
            "sweep",
            code,
            300,
            lambda log_arn: pulumi.Output.all(log_arn, app_key_arns, jit_prefix_arn, table.arn).apply(
                lambda a: iam_policies.sweeper_policy(
                    environment=env,
                    scaled_pools=scaled,
                    all_pools=all_pools,
                    log_group_arn=a[0],
                    app_key_arns=list(a[1]),
                    jit_prefix_arn=a[2],
                    table_arn=a[3],
                    region=stack.region,
                )
            ),
            tags,
        )
        self._schedule(name, "sweep", sweep, tags, f"rate({int(SWEEP_PERIOD_S // 60)} minutes)")

        # EC2's spot interruption warnings and rebalance hints (issue 21.1): their queue only
        # EventBridge may send to, and a function that drains warned hosts, with the scaler's
        # permissions minus launching, reading that one queue.
        if any(p.capacity_type == "spot" for p in args.estate.pools):
            spot = SpotInterruptions(
                f"{name}-spot-events", SpotInterruptionsArgs(env, tags, args.alarm_topic_arn), opts=pulumi.ResourceOptions(parent=self)
            )
            handler = self._function(name, "spot", code, SPOT_HANDLER_TIMEOUT_S, scaler(False, True, [spot.queue_arn]), tags)
            aws.lambda_.EventSourceMapping(
                f"{name}-spot-events",
                event_source_arn=spot.queue_arn,
                function_name=handler.arn,
                batch_size=10,
                function_response_types=["ReportBatchItemFailures"],
                opts=self._child,
            )

        self._alarms(name, env, tags)

        self.webhook_url = url.function_url
        self.table_name = table.name
        self.queue_urls = {n: q.url for n, q in queues.items()}
        self.register_outputs({"webhook_url": self.webhook_url, "table_name": self.table_name})

    def _spot_role(self, name: str, tags: dict[str, str]) -> None:
        """AWSServiceRoleForEC2Spot, without which no spot launch succeeds. It is the account's,
        not this stack's: other stacks and Spot users rely on it, so removing it from the stack
        (or `pulumi destroy`) leaves it in place."""
        aws.iam.ServiceLinkedRole(
            f"{name}-spot-service-linked-role",
            aws_service_name=SPOT_SERVICE,
            description="EC2 Spot: launches spot instances for runner-estate and anything else in this account",
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )

    def _schedule(self, name: str, label: str, fn: aws.lambda_.Function, tags: dict[str, str], every: str = SCHEDULE) -> None:
        rule = aws.cloudwatch.EventRule(f"{name}-{label}-schedule", schedule_expression=every, tags=tags, opts=self._child)
        aws.cloudwatch.EventTarget(f"{name}-{label}-target", rule=rule.name, arn=fn.arn, opts=self._child)
        aws.lambda_.Permission(
            f"{name}-{label}-invoke",
            action="lambda:InvokeFunction",
            function=fn.name,
            principal="events.amazonaws.com",
            source_arn=rule.arn,
            opts=self._child,
        )

    def _image_parameter_arns(self, args: ScalerFunctionsArgs, pools: list[str]) -> pulumi.Output[list[str]]:
        """The baked images `pools` launch from: EC2 resolves a launch template's `resolve:ssm:`
        image with the launching function's own ssm:GetParameters."""
        names = sorted({args.image_parameters[n] for n in pools if n in args.image_parameters})
        region = args.stack.region
        return pulumi.Output.all(*[pulumi.Output.concat("arn:aws:ssm:", region, ":", self._account, ":parameter", n) for n in names])

    def _block_functions(
        self,
        name: str,
        args: ScalerFunctionsArgs,
        code: Any,
        block_pools: list[Any],
        queues: Mapping[str, aws.sqs.Queue],
        table: aws.dynamodb.Table,
        app_key_arns: pulumi.Output[list[str]],
        jit_prefix_arn: pulumi.Output[str],
    ) -> aws.lambda_.Function:
        """cb_scale_up (the capacity-block pools' job queues) and cb_manager (every minute,
        and each pool's events queue). Returns cb_scale_up for the job-queue mappings."""
        stack, tags = args.stack, args.tags
        wiring = [args.pools[p.name] for p in block_pools]
        # The manager hears each pool on two queues: EventBridge's events and the nodes' reports.
        events = {
            f"{p.name}-{kind}": arn
            for p, w in zip(block_pools, wiring, strict=True)
            for kind, arn in (("cb-events", w.events_queue_arn), ("slot-reports", w.reports_queue_arn))
            if arn is not None
        }
        buys = any(p.spec.estate.capacity_block is not None and p.spec.estate.capacity_block.renew for p in block_pools)
        reservation_ids = [r for p in block_pools if p.spec.estate.capacity_block for r in p.spec.estate.capacity_block.reservation_ids]

        def policy(queue_arns: list[pulumi.Output[str]]) -> Any:
            def build(log_arn: pulumi.Output[str]) -> pulumi.Output[dict[str, Any]]:
                images = self._image_parameter_arns(args, [p.name for p in block_pools])
                roles = pulumi.Output.all(*[w.role_arn for w in wiring])
                parts = pulumi.Output.all(log_arn, app_key_arns, jit_prefix_arn, table.arn, roles, pulumi.Output.all(*queue_arns), images,
                                          _templates_first(args, [p.name for p in block_pools]))  # fmt: skip
                return parts.apply(
                    lambda a: iam_policies.block_manager_policy(
                        environment=stack.environment,
                        pools=[p.name for p in block_pools],
                        log_group_arn=a[0],
                        app_key_arns=list(a[1]),
                        jit_prefix_arn=a[2],
                        table_arn=a[3],
                        node_role_arns=list(a[4]),
                        region=stack.region,
                        queue_arns=list(a[5]),
                        buys_blocks=buys,
                        image_parameter_arns=list(a[6]),
                        reservation_ids=reservation_ids,
                    )
                )

            return build

        cb_scale_up = self._function(name, "cb_scale_up", code, SCALE_UP_TIMEOUT_S, policy([queues[p.name].arn for p in block_pools]), tags)
        manager = self._function(name, "cb_manager", code, 120, policy(list(events.values())), tags)
        self._schedule(name, "cb-manager", manager, tags)
        for source, arn in events.items():
            aws.lambda_.EventSourceMapping(
                f"{name}-{source}",
                event_source_arn=arn,
                function_name=manager.arn,
                batch_size=10,
                function_response_types=["ReportBatchItemFailures"],
                opts=self._child,
            )
        return cb_scale_up

    def _alarms(self, name: str, env: str, tags: dict[str, str]) -> None:
        """Fail loudly: the counters the functions emit (lambda_src/functions/metrics.py) that mean
        jobs may be waiting. They notify the alarm topic (runner-estate:alarms; runbook)."""
        redelivery_period = int(REDELIVERY_PERIOD_S)
        for label, function, metric, periods, threshold, description, period in (
            ("webhook-failing", "webhook", "failed", 1, 0, "the webhook could not record deliveries (ledger or queue unavailable)", 60),
            ("webhook-unauthorised", "webhook", "unauthorised", 1, 5, "deliveries with a bad signature: webhook secret out of step?", 60),
            ("reconcile-failing", "reconcile", "failed_pools", 3, 0, "pools the reconciler could not launch for, 3 minutes running", 60),
            ("repos-unreadable", "reconcile", "repo_errors", 15, 0, "repositories GitHub would not show the App, 15 minutes running", 60),
            ("redelivery-blind", "redeliver", "hook_missing", 1, 0, "no org webhook delivers to us: failed deliveries are not sent again",
             redelivery_period),
        ):  # fmt: skip
            metric_alarm(
                f"{name}-{label}-alarm",
                name=alarm_name(env, label),
                topic_arn=self._topic,
                alarm_description=f"runner-estate {env}: {description}",
                namespace=METRIC_NAMESPACE,
                metric_name=metric,
                dimensions={"environment": env, "function": function},
                statistic="Sum",
                period=period,
                evaluation_periods=periods,
                threshold=threshold,
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="notBreaching",
                tags=tags,
                opts=self._child,
            )
        # Spot refused for want of the Spot service-linked role (lambda_src/aws/ec2_fleet.py logs it
        # with the count as a field): a metric from the launching functions' logs, and its alarm.
        for function in ("scale_up", "reconcile"):
            aws.cloudwatch.LogMetricFilter(
                f"{name}-{function}-spot-role-filter",
                name=f"{self._prefix}-{function.replace('_', '-')}-{SPOT_ROLE_METRIC.replace('_', '-')}",
                log_group_name=self._logs[function].name,
                pattern=f"{{ $.{SPOT_ROLE_METRIC} = 1 }}",
                metric_transformation=aws.cloudwatch.LogMetricFilterMetricTransformationArgs(
                    name=SPOT_ROLE_METRIC, namespace=METRIC_NAMESPACE, value="1", dimensions={"environment": "$.environment"}
                ),
                opts=self._child,
            )
        metric_alarm(
            f"{name}-spot-role-missing-alarm",
            name=alarm_name(env, "spot-role-missing"),
            topic_arn=self._topic,
            alarm_description=f"runner-estate {env}: spot launches refused, the Spot service-linked role is missing (runbook)",
            namespace=METRIC_NAMESPACE,
            metric_name=SPOT_ROLE_METRIC,
            dimensions={"environment": env},
            statistic="Sum",
            period=60,
            evaluation_periods=1,
            threshold=0,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            tags=tags,
            opts=self._child,
        )

    def _queue(self, name: str, pool: str, redrive: Any, retention_s: int, tags: dict[str, str]) -> aws.sqs.Queue:
        dlq = aws.sqs.Queue(
            f"{name}-{pool}-dlq", name=f"{self._prefix}-{pool}-dlq", message_retention_seconds=1209600, sqs_managed_sse_enabled=True,
            tags=tags, opts=self._child,
        )  # fmt: skip
        receives = redrive.maxReceiveCount if redrive is not None and redrive.maxReceiveCount else DEFAULT_MAX_RECEIVE_COUNT
        queue = aws.sqs.Queue(
            f"{name}-{pool}-queue",
            name=f"{self._prefix}-{pool}",
            visibility_timeout_seconds=2 * SCALE_UP_TIMEOUT_S,
            message_retention_seconds=min(retention_s, 1209600),
            sqs_managed_sse_enabled=True,
            redrive_policy=dlq.arn.apply(lambda arn: json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": receives})),
            tags=tags,
            opts=self._child,
        )
        dlq_alarm(f"{name}-{pool}-dlq-alarm", alarm_name(self._env, f"{pool}-dlq"),
                  f"Jobs of pool {pool} the scaler gave up on: read and replay the DLQ (runbook)", dlq, self._topic, tags,
                  self._child)  # fmt: skip
        return queue

    def _function(
        self,
        name: str,
        role_name: str,
        code: Any,
        timeout: int,
        policy: Any,
        tags: dict[str, str],
        protect: bool = False,
        environment: Mapping[str, pulumi.Input[str]] | None = None,
    ) -> aws.lambda_.Function:
        fn_name = f"{self._prefix}-{role_name.replace('_', '-')}"
        log = aws.cloudwatch.LogGroup(f"{name}-{role_name}-logs", name=f"/aws/lambda/{fn_name}", retention_in_days=30, tags=tags,
                                      opts=self._child)  # fmt: skip
        self._logs[role_name] = log
        role = aws.iam.Role(
            f"{name}-{role_name}-role",
            assume_role_policy=json.dumps(iam_policies.lambda_assume_role_policy()),
            description=f"runner-estate {fn_name}",
            tags=tags,
            opts=self._child,
        )
        role_policy = aws.iam.RolePolicy(
            f"{name}-{role_name}-policy", role=role.id, policy=policy(log.arn).apply(json.dumps), opts=self._child
        )
        function = aws.lambda_.Function(
            f"{name}-{role_name}",
            name=fn_name,
            runtime=RUNTIME,
            architectures=[ARCHITECTURE],
            handler=f"lambda_src.functions.handlers.{role_name}_handler",
            code=code,
            role=role.arn,
            timeout=timeout,
            memory_size=256,
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="JSON", log_group=log.name),
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=dict(environment)) if environment else None,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, protect=protect, depends_on=[role_policy]),
        )
        # A function that raises emits none of its own counters: Lambda's Errors metric is the
        # only sign, so every function alarms on it.
        metric_alarm(
            f"{name}-{role_name}-errors-alarm",
            name=alarm_name(self._env, f"{role_name.replace('_', '-')}-errors"),
            topic_arn=self._topic,
            alarm_description=f"runner-estate {fn_name} raised (Lambda Errors): read its log group (runbook: function errors)",
            namespace="AWS/Lambda",
            metric_name="Errors",
            dimensions={"FunctionName": function.name},
            statistic="Sum",
            period=60,
            evaluation_periods=1,
            threshold=0,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            tags=tags,
            opts=self._child,
        )
        return function
