"""Buildkite queues on the estate: config, the Elastic CI Stack parameters, the token's custody."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from components.buildkite_queue import TEMPLATE_URL, stack_parameters
from estate.cli import main
from estate.config.diagnostics import ConfigError
from estate.config.loader import load_estate
from estate.preview import Registered, run_program
from tests.conftest import EXAMPLE_CONFIGS, MINIMAL_POOL, PROJECT_DIR, write_pool

QUEUE = """\
buildkite_queue:
  queue: gpu_4_queue
  instance_types: [g6.12xlarge]
  min_size: 1
  max_size: 16
  scale_in_idle_seconds: 1200
"""


def queue_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_estate([write_pool(tmp_path, "bk-gpu-4", text)])
    return caught.value


def test_a_queue_file_loads_beside_pools(tmp_path: Path) -> None:
    estate = load_estate([write_pool(tmp_path, "bk-gpu-4", QUEUE), write_pool(tmp_path, "cpu", MINIMAL_POOL)])
    assert [q.name for q in estate.queues] == ["bk-gpu-4"]
    assert [p.name for p in estate.pools] == ["cpu"]
    assert estate.queues[0].settings.terminate_after_job is False  # the template's default


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (("max_size: 16", "max_size: 0"), None, "min_size 1 is larger than max_size 0"),
        (("g6.12xlarge", "g6.huge"), "buildkite_queue.instance_types[0]", "unknown EC2 instance type 'g6.huge'"),
        (
            ("[g6.12xlarge]", "[g6.12xlarge, g5g.4xlarge]"),
            "buildkite_queue.instance_types",
            "all types of a queue must share one CPU architecture",
        ),
        (("queue: gpu_4_queue", "queue: gpu 4"), "buildkite_queue.queue", "String should match pattern"),
        (("min_size: 1", "min_size: 1\n  ssh_key: mine"), "buildkite_queue.ssh_key", "unknown key"),
        (("max_size: 16", 'max_size: "16"'), "buildkite_queue.max_size", "Input should be a valid integer"),
    ],
)
def test_bad_queue_config_is_refused_clearly(tmp_path: Path, change: tuple[str, str], key: str | None, message: str) -> None:
    err = queue_error(tmp_path, QUEUE.replace(*change))
    assert err.pool == "bk-gpu-4"
    if key is not None:
        assert err.key == key
    assert message in err.message


def test_parameters_map_the_queue_settings_and_our_defaults(tmp_path: Path) -> None:
    (queue,) = load_estate([write_pool(tmp_path, "bk-gpu-4", QUEUE)]).queues
    params = stack_parameters(queue, "prod", "vpc-1", ["subnet-a", "subnet-b"], "sg-1", "/runner-estate/prod/buildkite/agent-token", 30)
    assert params["BuildkiteQueue"] == "gpu_4_queue"
    assert params["InstanceTypes"] == "g6.12xlarge"
    assert (params["MinSize"], params["MaxSize"], params["ScaleInIdlePeriod"]) == ("1", "16", "1200")
    assert params["OnDemandPercentage"] == "100"
    assert params["BuildkiteTerminateInstanceAfterJob"] == "false"
    assert params["Subnets"] == "subnet-a,subnet-b"
    assert (params["IMDSv2Tokens"], params["RootVolumeEncrypted"], params["KeyName"], params["AssociatePublicIpAddress"]) == (
        "required",
        "true",
        "",
        "false",
    )
    assert params["BuildkiteAgentTokenParameterStorePath"] == "/runner-estate/prod/buildkite/agent-token"
    assert "BuildkiteAgentToken" not in params  # the token itself is never a stack parameter
    assert all(isinstance(v, str) for v in params.values())


@pytest.fixture(scope="module")
def prod() -> list[Registered]:
    return run_program(PROJECT_DIR, "prod").records


def test_one_stack_per_queue_from_the_pinned_template(prod: list[Registered]) -> None:
    stacks = [r for r in prod if r.type == "aws:cloudformation/stack:Stack"]
    queues = load_estate([EXAMPLE_CONFIGS]).queues
    assert sorted(s.parent or "" for s in stacks) == sorted(q.name for q in queues)
    for stack in stacks:
        assert stack.inputs["templateUrl"] == TEMPLATE_URL.format(version="v6.33.0")
        assert stack.inputs["parameters"]["SecurityGroupIds"] == "network-runners-id"
        assert stack.inputs["parameters"]["Subnets"].startswith("network-private-")


def test_the_agent_token_is_a_secure_string_and_never_plain(prod: list[Registered]) -> None:
    (token,) = [r for r in prod if r.type == "aws:ssm/parameter:Parameter" and r.parent == "buildkite"]
    assert token.inputs["type"] == "SecureString"
    assert token.inputs["value"] == "[secret]"  # the preview's placeholder for a Pulumi secret
    for stack in (r for r in prod if r.type == "aws:cloudformation/stack:Stack"):
        assert "[secret]" not in str(stack.inputs)


def test_queues_need_the_agent_token_as_a_secret(tmp_path: Path) -> None:
    data = yaml.safe_load((PROJECT_DIR / "Pulumi.prod.yaml").read_text())
    data["config"]["runner-estate:runner_configs"] = str(EXAMPLE_CONFIGS)
    data["config"]["runner-estate:buildkite_agent_token"] = "plain"
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="must be a secret"):
        run_program(PROJECT_DIR, "prod", stack_path=path)
    del data["config"]["runner-estate:buildkite_agent_token"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(Exception, match="runner_configs has Buildkite queues"):
        run_program(PROJECT_DIR, "prod", stack_path=path)


def test_validate_lists_queues(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLE_CONFIGS)]) == 0
    out: Any = capsys.readouterr().out
    assert "bk-gpu-1: buildkite queue gpu_1_queue (on-demand, 0-40 x g6.4xlarge)" in out
    assert "3 buildkite queues" in out
