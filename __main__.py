"""Pulumi entry: stack config + runner_configs/*.yaml -> components.

The only place that reads Pulumi config. Everything is validated before the first resource is
registered, so bad input stops `pulumi preview`/`up` with one line and nothing half-applied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict

import pulumi
import pulumi_aws as aws
from pulumi.runtime.mocks import MockMonitor

from components.alarms import AlarmTopic, AlarmTopicArgs
from components.budget import StackBudget, StackBudgetArgs
from components.buildkite_queue import BuildkiteQueues, BuildkiteQueuesArgs
from components.capacity_block_fleet import CapacityBlockFleet, CapacityBlockFleetArgs
from components.dashboard import Dashboard, DashboardArgs
from components.estate_alarms import AlarmedPool, EstateAlarms, EstateAlarmsArgs
from components.github_org_settings import GitHubOrgSettings, GitHubOrgSettingsArgs
from components.image_pipeline import ImagePipeline, ImagePipelineArgs
from components.network import Network, NetworkArgs
from components.runner_fleet import RunnerFleet, RunnerFleetArgs
from components.scaler_functions import PoolWiring, ScalerFunctions, ScalerFunctionsArgs
from estate.config.diagnostics import ConfigError
from estate.config.loader import Estate, load_estate
from estate.config.pool import Pool
from estate.config.stack_config import (
    NAMESPACE,
    SECRET_SETTINGS,
    StackConfig,
    app_key_setting,
    is_text_setting,
    parse_stack_config,
)
from estate.derive.control_config import jit_parameter_prefix
from estate.derive.dashboard import dashboard_body, dashboard_pools
from estate.derive.host_user_data import user_data
from estate.derive.images import ImagePlan
from estate.derive.runner_groups import RunnerGroupPlan, pool_admission
from estate.derive.spot_role import SpotRolePlan
from estate.derive.stack_plan import plan_stack
from estate.project import stack_configs
from lambda_src.core.tags import POOL, estate_tags

PROJECT_DIR = Path(__file__).resolve().parent
LAMBDA_DEPENDENCIES = PROJECT_DIR / "build" / "lambda-deps"


def read_stack_config() -> StackConfig:
    cfg = pulumi.Config(NAMESPACE)
    raw: dict[str, Any] = {}
    for field in StackConfig.model_fields:
        if field == "region":
            continue
        value = cfg.get(field) if is_text_setting(field) else cfg.get_object(field)
        if value is not None:
            raw[field] = value
    region = pulumi.Config("aws").get("region")
    if region is not None:
        raw["region"] = region
    return parse_stack_config(raw, f"Pulumi.{pulumi.get_stack()}.yaml")


def availability_zones(stack: StackConfig, provider: aws.Provider) -> list[str]:
    network = stack.network
    if not network.creates_vpc:
        return []
    if network.availability_zones:
        return list(network.availability_zones)
    found = aws.get_availability_zones(state="available", opts=pulumi.InvokeOptions(provider=provider))
    return sorted(found.names)[: network.az_count]


def lambda_dependencies() -> Path | None:
    """PyJWT + cryptography built for the functions (scripts/build_lambda.sh). A real deploy
    without them would ship functions that cannot mint GitHub tokens, so it stops here."""
    if LAMBDA_DEPENDENCIES.is_dir():
        return LAMBDA_DEPENDENCIES
    if isinstance(pulumi.runtime.settings.get_monitor(), MockMonitor):
        return None
    raise pulumi.RunError(f"{LAMBDA_DEPENDENCIES} is missing: run `bash scripts/build_lambda.sh` before `pulumi up`")


def build_buildkite_queues(
    stack: StackConfig, estate: Estate, network: Network, tags: dict[str, str], opts: pulumi.ResourceOptions
) -> dict[str, pulumi.Output[str]]:
    """One Elastic CI Stack per Buildkite queue file, sharing one SecureString agent token."""
    if not estate.queues:
        return {}
    token = pulumi.Config(NAMESPACE).get_secret("buildkite_agent_token")
    if token is None:
        key = f"{NAMESPACE}:buildkite_agent_token"
        missing = ConfigError(
            f"Pulumi.{pulumi.get_stack()}.yaml", None, key, f"runner_configs has Buildkite queues: pulumi config set --secret {key}"
        )
        raise pulumi.RunError(str(missing)) from missing
    queues = BuildkiteQueues(
        "buildkite",
        BuildkiteQueuesArgs(
            queues=estate.queues,
            environment=stack.environment,
            vpc_id=network.vpc_id,
            subnet_ids=network.runner_subnet_ids,
            security_group_id=network.security_group_id,
            agent_token=token,
            log_retention_days=stack.log_retention_days,
            tags=tags,
        ),
        opts=opts,
    )
    return queues.stack_ids


def build_monitoring(
    stack: StackConfig, estate: Estate, topic_arn: pulumi.Output[str], tags: dict[str, str], opts: pulumi.ResourceOptions
) -> Dashboard:
    """The dashboard, the alarms on the estate's own metrics, and the stack's budget (issue 22)."""
    env = stack.environment
    spend_alarm = stack.budget.spend_alarm_usd_per_hour if stack.budget is not None else None
    pools = [AlarmedPool(p.name, p.capacity_type == "capacity-block", 60 * p.spec.estate.wait_alarm_minutes) for p in estate.pools]
    EstateAlarms("estate-alarms", EstateAlarmsArgs(env, pools, topic_arn, tags, spend_alarm), opts=opts)
    if stack.budget is not None:
        StackBudget("budget", StackBudgetArgs(env, stack.budget, topic_arn, tags), opts=opts)
    body = dashboard_body(env, stack.region, dashboard_pools(env, estate), spend_alarm)
    return Dashboard("dashboard", DashboardArgs(env, body), opts=opts)


class FleetCommon(TypedDict):
    """What every pool's fleet is given, whichever kind it is."""

    pool: Pool
    environment: str
    security_group_id: pulumi.Output[str]
    public_ip: bool
    log_retention_days: int
    tags: dict[str, str]
    jit_prefix_arn: pulumi.Output[str]


def wiring(fleet: RunnerFleet | CapacityBlockFleet) -> PoolWiring:
    if isinstance(fleet, CapacityBlockFleet):
        return PoolWiring(fleet.launch_template_id, fleet.role_arn, fleet.events_queue_arn, fleet.reports_queue_arn)
    return PoolWiring(fleet.launch_template_id, fleet.role_arn)


def build(stack: StackConfig, estate: Estate, groups: list[RunnerGroupPlan], spot_role: SpotRolePlan, images: ImagePlan) -> None:
    tags = {**stack.tags, **estate_tags(stack.environment)}
    # Tags are set on each resource (not provider default_tags) so the preview shows them.
    provider = aws.Provider("aws", region=stack.region)
    with_provider = pulumi.ResourceOptions(providers=[provider])

    # Every alarm of the estate notifies this topic (or the existing one the stack names).
    alarms = AlarmTopic(
        "alarms", AlarmTopicArgs(stack.environment, stack.region, stack.alarms, tags, budgets=stack.budget is not None), opts=with_provider
    )
    network = Network(
        "network",
        NetworkArgs(stack.environment, stack.region, stack.network, availability_zones(stack, provider), tags),
        opts=with_provider,
    )
    # The estate's images, one per family its pools boot (none where the stack builds no images).
    pipeline = None
    if images.families:
        pipeline = ImagePipeline(
            "images",
            ImagePipelineArgs(stack, images, network.runner_subnet_ids, network.security_group_id, tags),
            opts=with_provider,
        )
    account = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(provider=provider)).account_id
    jit_prefix_arn = pulumi.Output.concat("arn:aws:ssm:", stack.region, ":", account, ":parameter", jit_parameter_prefix(stack.environment))
    fleets: dict[str, RunnerFleet | CapacityBlockFleet] = {}
    jit_prefix = jit_parameter_prefix(stack.environment)
    for pool in estate.pools:
        common: FleetCommon = {
            "pool": pool,
            "environment": stack.environment,
            "security_group_id": network.security_group_id,
            "public_ip": stack.network.runner_subnets == "public",
            "log_retention_days": stack.log_retention_days,
            "tags": {**tags, POOL: pool.name},  # cost allocation by pool (docs/observability.md)
            "jit_prefix_arn": jit_prefix_arn,
        }
        sha256 = stack.runner_checksum(pool.runner.runner_architecture)
        boot = images.boot[pool.name]
        ready = [pipeline.images[boot.family]] if pipeline is not None and boot.family is not None else []
        if pool.capacity_type == "capacity-block":
            args = CapacityBlockFleetArgs(
                **common,
                jit_prefix=jit_prefix,
                runner_version=stack.runner_version,
                runner_sha256=sha256,
                alarm_topic_arn=alarms.topic_arn,
                boot=boot,
                images=images,
                image_ready=ready,
            )
            fleets[pool.name] = CapacityBlockFleet(pool.name, args, opts=with_provider)
        else:
            script = user_data(pool, jit_prefix, stack.runner_version, sha256, baked=boot.path == "baked")
            fleet_args = RunnerFleetArgs(**common, user_data=script, boot=boot, images=images, image_ready=ready)
            fleets[pool.name] = RunnerFleet(pool.name, fleet_args, opts=with_provider)

    secrets = pulumi.Config(NAMESPACE)
    scaler = ScalerFunctions(
        "scaler",
        ScalerFunctionsArgs(
            stack=stack,
            estate=estate,
            pools={n: wiring(f) for n, f in fleets.items()},
            subnet_ids=network.runner_subnet_ids,
            security_group_id=network.security_group_id,
            public_ip=stack.network.runner_subnets == "public",
            app_private_key=secrets.require_secret(SECRET_SETTINGS[0]),
            webhook_secret=secrets.require_secret(SECRET_SETTINGS[1]),
            extra_app_keys={a.app_id: secrets.require_secret(app_key_setting(a.app_id)) for a in stack.github.extra_apps},
            tags=tags,
            alarm_topic_arn=alarms.topic_arn,
            lambda_dependencies=lambda_dependencies(),
            create_spot_role=spot_role.create,
            image_parameters={n: b.parameter for n, b in images.boot.items() if b.parameter is not None},
        ),
        opts=with_provider,
    )

    assert stack.github.installation_id is not None  # checked by plan_stack in main()
    org_settings = GitHubOrgSettings(
        "github",
        GitHubOrgSettingsArgs(
            org=stack.github.org,
            app_id=stack.github.app_id,
            installation_id=stack.github.installation_id,
            api_url=stack.github.api_url,
            app_private_key=secrets.require_secret(SECRET_SETTINGS[0]),
            webhook_url=scaler.webhook_url,
            webhook_secret=secrets.require_secret(SECRET_SETTINGS[1]),
            groups=groups,
        ),
    )

    queues = build_buildkite_queues(stack, estate, network, tags, with_provider)
    dashboard = build_monitoring(stack, estate, alarms.topic_arn, tags, with_provider)

    pulumi.export("environment", stack.environment)
    pulumi.export("buildkite_stacks", queues)
    pulumi.export("runner_group_ids", org_settings.runner_group_ids)
    pulumi.export("webhook_url", scaler.webhook_url)
    pulumi.export("alarm_topic_arn", alarms.topic_arn)
    pulumi.export("dashboard_name", dashboard.dashboard_name)
    pulumi.export("ledger_table", scaler.table_name)
    pulumi.export("region", stack.region)
    pulumi.export("github_org", stack.github.org)
    pulumi.export("vpc_id", network.vpc_id)
    pulumi.export("runner_subnet_ids", network.runner_subnet_ids)
    pulumi.export("runner_security_group_id", network.security_group_id)
    pulumi.export(
        "pools",
        {
            pool.name: {
                "capacity_type": pool.capacity_type,
                "labels": list(pool.base_labels),
                "launch_template_id": fleets[pool.name].launch_template_id,
                "role_arn": fleets[pool.name].role_arn,
                "log_groups": fleets[pool.name].log_group_names,
                "image": images.boot[pool.name].family or "stock",
            }
            for pool in estate.pools
        },
    )
    pulumi.export(
        "images",
        {
            f.name: {"parameter": f.parameter, "pipeline_arn": pipeline.pipeline_arns[f.name], "pools": list(f.pools)}
            for f in images.families
        }
        if pipeline is not None
        else {},
    )
    pulumi.export(
        "capacity_block_purchases_usd",
        {n: f.purchase_usd for n, f in fleets.items() if isinstance(f, CapacityBlockFleet) and f.purchase_usd is not None},
    )
    # The compiled table the scaler Lambdas read; plain JSON, never raw YAML.
    pulumi.export("routing_table", json.dumps(estate.routing_table(pool_admission(stack, estate)).to_dict(), sort_keys=True))


def main() -> None:
    try:
        stack = read_stack_config()
        estate = load_estate([stack_configs(PROJECT_DIR, stack.runner_configs)])
        plan = plan_stack(stack, estate, PROJECT_DIR, pulumi.get_stack())
    except ConfigError as exc:
        # The engine prints a RunError as one line; `estate preview` finds the ConfigError behind it.
        raise pulumi.RunError(str(exc)) from exc
    for warning in plan.warnings:
        pulumi.log.warn(str(warning))
    build(stack, estate, plan.groups, plan.spot_role, plan.images)


main()
