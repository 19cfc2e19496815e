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
  image_id_parameter: /runner-estate/buildkite/gpu-ami-x86_64
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
        (("min_size: 1", "min_size: 1\n  agent_tags: {queue: other}"), "buildkite_queue.agent_tags", "set by the stack itself"),
        (("min_size: 1", "min_size: 1\n  image_id: ami-0123456789abcdef0"), None, "either as image_id or as image_id_parameter"),
        (("gpu-ami-x86_64", "gpu ami"), "buildkite_queue.image_id_parameter", "String should match pattern"),
    ],
)
def test_bad_queue_config_is_refused_clearly(tmp_path: Path, change: tuple[str, str], key: str | None, message: str) -> None:
    err = queue_error(tmp_path, QUEUE.replace(*change))
    assert err.pool == "bk-gpu-4"
    if key is not None:
        assert err.key == key
    assert message in err.message


def test_a_gpu_queue_without_a_gpu_ready_image_is_refused(tmp_path: Path) -> None:
    """The stack's stock image has no NVIDIA driver: a GPU queue on it would run every GPU job blind."""
    err = queue_error(tmp_path, QUEUE.replace("  image_id_parameter: /runner-estate/buildkite/gpu-ami-x86_64\n", ""))
    assert (err.file.endswith("bk-gpu-4.yaml"), err.pool, err.key) == (True, "bk-gpu-4", "buildkite_queue.image_id")
    assert "g6.12xlarge has GPUs" in err.message
    assert "image_id_parameter" in err.message
    assert "\n" not in str(err)


def test_a_cpu_queue_keeps_the_stock_image(tmp_path: Path) -> None:
    cpu = QUEUE.replace("g6.12xlarge", "m7i.2xlarge").replace("  image_id_parameter: /runner-estate/buildkite/gpu-ami-x86_64\n", "")
    (queue,) = load_estate([write_pool(tmp_path, "bk-cpu", cpu)]).queues
    params = stack_parameters(queue, "prod", "vpc-1", ["subnet-a"], "sg-1", "/t", 30)
    assert "ImageId" not in params
    assert "ImageIdParameter" not in params


@pytest.mark.parametrize(
    ("line", "parameter"),
    [("image_id: ami-0123456789abcdef0", "ImageId"), ("image_id_parameter: /runner-estate/buildkite/gpu-ami-x86_64", "ImageIdParameter")],
)
def test_the_gpu_image_reaches_the_stack(tmp_path: Path, line: str, parameter: str) -> None:
    text = QUEUE.replace("  image_id_parameter: /runner-estate/buildkite/gpu-ami-x86_64\n", f"  {line}\n")
    (queue,) = load_estate([write_pool(tmp_path, "bk-gpu-4", text)]).queues
    params = stack_parameters(queue, "prod", "vpc-1", ["subnet-a"], "sg-1", "/t", 30)
    assert params[parameter] == line.split(": ", 1)[1]
    assert ({"ImageId", "ImageIdParameter"} - {parameter}).isdisjoint(params)


def test_the_queue_tag_is_given_once(tmp_path: Path) -> None:
    """The stack tags its agents `queue=<BuildkiteQueue>` itself; BuildkiteAgentTags holds only the extra ones."""
    text = QUEUE.replace("min_size: 1", "min_size: 1\n  agent_tags: {gpus: '4'}")
    (queue,) = load_estate([write_pool(tmp_path, "bk-gpu-4", text)]).queues
    params = stack_parameters(queue, "prod", "vpc-1", ["subnet-a"], "sg-1", "/t", 30)
    assert params["BuildkiteQueue"] == "gpu_4_queue"
    tags = params["BuildkiteAgentTags"].split(",")
    assert not [t for t in tags if t.startswith("queue=")]
    assert tags == ["runner-estate-environment=prod", "gpus=4"]


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
        assert "queue=" not in stack.inputs["parameters"]["BuildkiteAgentTags"]
    gpu_queues = {q.name for q in queues if q.settings.instance_types[0].startswith("g")}
    assert gpu_queues == {"bk-gpu-1", "bk-gpu-4"}
    for stack in stacks:
        has_image = "ImageId" in stack.inputs["parameters"] or "ImageIdParameter" in stack.inputs["parameters"]
        assert has_image == (stack.parent in gpu_queues), stack.parent


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
