"""Physical names within AWS limits (issue 18.7): long environment, pool and queue names are
refused at load with the limit, and the list of names stays the program's own."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from estate.config.diagnostics import ConfigError
from estate.config.loader import Estate, load_estate
from estate.config.names import AUTONAME_SUFFIX, LIMITS, PREFIX_SUFFIX, RUNNER_NAME, check_names, physical_names
from estate.config.stack_config import StackConfig, parse_stack_config
from estate.preview import Registered, run_program
from tests.conftest import EXAMPLE_CONFIGS, MINIMAL_POOL, PROJECT_DIR, write_pool

STACK_FILE = "Pulumi.prod.yaml"
BLOCK_POOL = """\
matcherConfig:
  exactMatch: true
  labelMatchers: [[self-hosted, linux, x64, gpu, h100]]
runner_config:
  runner_os: linux
  runner_architecture: x64
  runner_extra_labels: [gpu, h100]
  instance_types: [p5.48xlarge]
  instance_target_capacity_type: on-demand
  runners_maximum_count: 1
estate:
  capacity_block: {reservation_ids: [cr-0a1b2c3d4e5f60718]}
"""
QUEUE = """\
buildkite_queue:
  queue: cpu_queue
  instance_types: [m7i.2xlarge]
  max_size: 2
"""


def stack(environment: str = "prod", **changes: Any) -> StackConfig:
    raw = {
        "environment": environment,
        "region": "us-east-1",
        "github": {"org": "example-org", "app_id": 42},
        "secrets": {"github_app_private_key": "/x/key", "webhook_secret": "/x/hook"},
        **changes,
    }
    return parse_stack_config(raw, STACK_FILE)


def estate(tmp_path: Path, files: dict[str, str]) -> Estate:
    return load_estate([write_pool(tmp_path, name, text) for name, text in files.items()])


def renamed(found: Estate, old: str, new: str) -> Estate:
    """The estate with one pool renamed beyond what a file stem may be (the loader allows 40)."""
    pools = tuple(dataclasses.replace(p, name=new) if p.name == old else p for p in found.pools)
    return dataclasses.replace(found, pools=pools)


def refused(config: StackConfig, found: Estate) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        check_names(config, found, STACK_FILE)
    assert "\n" not in str(info.value)
    return info.value


# ---- the limits are the services' -----------------------------------------------------------


def botocore_max(service: str, shape: str) -> int:
    import botocore

    root = Path(botocore.__file__).parent / "data" / service
    (model_path,) = sorted(root.glob("*/service-2.json*"))[-1:]
    raw = gzip.decompress(model_path.read_bytes()) if model_path.suffix == ".gz" else model_path.read_bytes()
    model = json.loads(raw)
    return int(model["shapes"][shape]["max"])


@pytest.mark.parametrize("kind", [k for k, limit in LIMITS.items() if limit.botocore is not None])
def test_limits_stated_by_botocore_are_botocores(kind: str) -> None:
    limit = LIMITS[kind]
    assert limit.botocore is not None
    assert botocore_max(*limit.botocore) == limit.max


def test_limits_botocore_does_not_state_cite_their_source() -> None:
    for limit in LIMITS.values():
        if limit.botocore is None:
            assert not limit.source.startswith("botocore"), limit
            assert str(limit.max) in limit.source, limit


# ---- the list is what the program creates ----------------------------------------------------

AUTONAMED = {
    "aws:iam/role:Role": "iam_role",
    "aws:iam/rolePolicy:RolePolicy": "iam_policy",
    "aws:iam/instanceProfile:InstanceProfile": "iam_profile",
    "aws:cloudwatch/eventRule:EventRule": "event_rule",
    "aws:lambda/permission:Permission": "lambda_permission",
    "aws:imagebuilder/component:Component": "imagebuilder",
    "aws:imagebuilder/imageRecipe:ImageRecipe": "imagebuilder",
    "aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration": "imagebuilder",
    "aws:imagebuilder/distributionConfiguration:DistributionConfiguration": "imagebuilder",
    "aws:imagebuilder/imagePipeline:ImagePipeline": "imagebuilder",
}
HOST_PROGRAM_PART = re.compile(r"-host-programs-[0-9]+$")  # as many as the bundle's size needs: names.py lists a sample
NAMED = {
    "aws:dynamodb/table:Table": "dynamodb",
    "aws:ssm/parameter:Parameter": "ssm",
    "aws:sqs/queue:Queue": "sqs",
    "aws:cloudwatch/logGroup:LogGroup": "log_group",
    "aws:lambda/function:Function": "lambda",
    "aws:cloudwatch/metricAlarm:MetricAlarm": "alarm",
    "aws:cloudwatch/logMetricFilter:LogMetricFilter": "metric_filter",
    "aws:sns/topic:Topic": "sns",
    "aws:kms/alias:Alias": "kms_alias",
    "aws:cloudformation/stack:Stack": "cloudformation",
    "aws:budgets/budget:Budget": "budget",
}


def registered_names(records: list[Registered]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for r in records:
        if r.type in NAMED:
            found.add((NAMED[r.type], r.inputs["name"]))
        elif r.type == "aws:cloudwatch/dashboard:Dashboard":
            found.add(("dashboard", r.inputs["dashboardName"]))
        elif r.type == "aws:ec2/launchTemplate:LaunchTemplate":
            found.add(("launch_template", r.inputs["namePrefix"] + PREFIX_SUFFIX))
        elif r.type in AUTONAMED and "name" not in r.inputs and not HOST_PROGRAM_PART.search(r.name):
            found.add((AUTONAMED[r.type], r.name + AUTONAME_SUFFIX))
        if r.type == "aws:iam/role:Role" and "path" in r.inputs:
            found.add(("iam_path", r.inputs["path"]))
    return found


def test_the_list_is_every_name_the_program_registers() -> None:
    """A resource added with a name this module does not list (or a name listed that nothing
    creates) fails here, so the limits are checked on what is really built."""
    preview = run_program(PROJECT_DIR, "prod")
    registered = registered_names(preview.records)
    config = yaml.safe_load((PROJECT_DIR / "Pulumi.prod.yaml").read_text())["config"]
    listed = {
        (n.kind, n.name)
        for n in physical_names(
            stack(secrets=config["runner-estate:secrets"], github=config["runner-estate:github"], budget=config["runner-estate:budget"]),
            load_estate([EXAMPLE_CONFIGS]),
        )
        if not n.sample and not (n.queue is not None and n.kind == "iam_role")  # per-host names; the template's own role
    }
    assert sorted(registered - listed) == []
    assert sorted(listed - registered) == []


def test_the_example_stacks_fit() -> None:
    assert check_names(stack(), load_estate([EXAMPLE_CONFIGS]), STACK_FILE) == []


# ---- just under and just over each limit a name can reach -------------------------------------


def test_sqs_queue_names(tmp_path: Path) -> None:
    """A capacity-block pool's slot-reports queue, runner-estate-<env>-<pool>-slot-reports, is the longest queue."""
    env = "e" * 16
    ok = estate(tmp_path, {"b" * 36: BLOCK_POOL})
    assert max(len(n.name) for n in physical_names(stack(env), ok) if n.kind == "sqs") == 80
    check_names(stack(env), ok, STACK_FILE)
    (tmp_path / "over").mkdir()
    over = estate(tmp_path / "over", {"b" * 37: BLOCK_POOL})
    err = refused(stack(env), over)
    assert (err.file, err.pool, err.key) == (str(tmp_path / "over" / f"{'b' * 37}.yaml"), "b" * 37, None)
    assert "SQS queue name" in err.message
    assert "is 81 characters, over the limit of 80" in err.message
    assert f"environment '{env}' (Pulumi.prod.yaml) and this pool's name" in err.message


@pytest.mark.parametrize(("with_blocks", "longest"), [(True, 38), (False, 39)])
def test_lambda_function_names(tmp_path: Path, with_blocks: bool, longest: int) -> None:
    """runner-estate-<env>-cb-scale-up (with capacity-block pools) or -scale-down: an environment's limit."""
    files = {"cpu": MINIMAL_POOL, **({"gpu": BLOCK_POOL} if with_blocks else {})}
    found = estate(tmp_path, files)
    check_names(stack("e" * longest), found, STACK_FILE)
    err = refused(stack("e" * (longest + 1)), found)
    assert (err.file, err.pool, err.key) == (STACK_FILE, None, "runner-estate:environment")
    assert "Lambda function name" in err.message
    assert "is 65 characters, over the limit of 64" in err.message


def test_iam_role_names_of_a_pool(tmp_path: Path) -> None:
    """The pool's instance role is auto-named <pool>-role-<7 random>."""
    found = estate(tmp_path, {"cpu": MINIMAL_POOL})
    check_names(stack("ab"), renamed(found, "cpu", "p" * 51), STACK_FILE)
    err = refused(stack("ab"), renamed(found, "cpu", "p" * 52))
    assert "IAM role name of the pool's instance role" in err.message
    assert "is 65 characters, over the limit of 64" in err.message
    assert err.pool == "p" * 52


def test_eventbridge_rule_names_of_a_block_pool(tmp_path: Path) -> None:
    found = estate(tmp_path, {"gpu": BLOCK_POOL})
    check_names(stack("ab"), renamed(found, "gpu", "g" * 41), STACK_FILE)
    err = refused(stack("ab"), renamed(found, "gpu", "g" * 42))
    assert "EventBridge rule name" in err.message
    assert "is 65 characters, over the limit of 64" in err.message


def test_the_buildkite_stacks_role_name(tmp_path: Path) -> None:
    """The Elastic CI Stack names its role <stack name>-Role: runner-estate-<env>-bk-<queue>-Role."""
    env = "e" * 16
    check_names(stack(env), estate(tmp_path, {"q" * 25: QUEUE}), STACK_FILE)
    (tmp_path / "over").mkdir()
    err = refused(stack(env), estate(tmp_path / "over", {"q" * 26: QUEUE}))
    assert err.pool == "q" * 26
    assert err.message.startswith("IAM role name of the Elastic CI Stack's instance role")
    assert "is 65 characters, over the limit of 64" in err.message
    assert "this queue's name" in err.message


def test_a_pools_log_group_names(tmp_path: Path) -> None:
    """/runner-estate/<env>/<pool>/<log_group_name>, with the pool's own part from its file."""
    fixed = len("/runner-estate/prod/cpu/")

    def with_log(length: int) -> str:
        logs = f"  runner_log_files:\n    - {{log_group_name: {'l' * length}, file_path: /var/log/x, log_stream_name: x}}\n"
        return MINIMAL_POOL + logs

    check_names(stack(), estate(tmp_path, {"cpu": with_log(512 - fixed)}), STACK_FILE)
    (tmp_path / "over").mkdir()
    err = refused(stack(), estate(tmp_path / "over", {"cpu": with_log(513 - fixed)}))
    assert "CloudWatch log group name" in err.message
    assert "is 513 characters, over the limit of 512" in err.message


def test_a_secret_parameter_name_from_the_stack(tmp_path: Path) -> None:
    """SSM counts the whole ARN: arn:aws:ssm:us-east-1:<account>:parameter/<name> within 1011."""
    found = estate(tmp_path, {"cpu": MINIMAL_POOL})
    fixed = len("arn:aws:ssm:us-east-1:000000000000:parameter")
    longest = "/" + "s" * (1011 - fixed - 1)
    check_names(stack(secrets={"github_app_private_key": "/k", "webhook_secret": longest}), found, STACK_FILE)
    err = refused(stack(secrets={"github_app_private_key": "/k", "webhook_secret": longest + "s"}), found)
    assert (err.file, err.key) == (STACK_FILE, "runner-estate:secrets.webhook_secret")
    assert "over the limit of 1011" in err.message


def test_two_resources_may_not_share_a_name(tmp_path: Path) -> None:
    """Pool x-events's job queue and block pool x's events queue would both be runner-estate-<env>-x-events."""
    err = refused(stack(), estate(tmp_path, {"x": BLOCK_POOL, "x-events": MINIMAL_POOL}))
    assert err.pool == "x-events"
    assert "runner-estate-prod-x-events" in err.message
    assert "also x's" in err.message


def test_long_runner_names_are_warned_about(tmp_path: Path) -> None:
    """<prefix><env>-<pool>-<instance id>: GitHub's runner names stop at 64 characters."""
    fits = len("e" * 10) + 1 + 32 + 1 + 19
    assert fits == RUNNER_NAME.max - 1
    assert check_names(stack("e" * 10), estate(tmp_path, {"p" * 32: MINIMAL_POOL}), STACK_FILE) == []
    (tmp_path / "over").mkdir()
    (warning,) = check_names(stack("e" * 10), estate(tmp_path / "over", {"p" * 34: MINIMAL_POOL}), STACK_FILE)
    assert warning.pool == "p" * 34
    assert "runner names up to 65 characters" in warning.message


# ---- at load ----------------------------------------------------------------------------------


def test_the_program_refuses_a_name_too_long_before_any_resource(tmp_path: Path) -> None:
    data = yaml.safe_load((PROJECT_DIR / "Pulumi.prod.yaml").read_text())
    data["config"]["runner-estate:environment"] = "e" * 40
    data["config"]["runner-estate:runner_configs"] = str(EXAMPLE_CONFIGS)
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(Exception, match=r"Pulumi\.prod\.yaml: runner-estate:environment: .* over the limit of 64") as info:
        run_program(PROJECT_DIR, "prod", stack_path=path)
    assert "\n" not in str(info.value).strip()


def test_an_environment_longer_than_sixteen_is_fine_when_its_names_fit() -> None:
    """The limit is the names', not a fixed 16."""
    warnings = check_names(stack("production-eu-west"), load_estate([EXAMPLE_CONFIGS]), STACK_FILE)
    assert all("runner names" in w.message for w in warnings)  # GitHub's limit, warned about; no AWS name too long
