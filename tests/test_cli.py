"""`python -m estate`: the command-line contract other tools rely on."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import queue
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml

from estate.cli import main
from estate.local.plane import LocalPlane
from tests.conftest import EXAMPLE_CONFIGS, FLASHINFER_CONFIGS, MINIMAL_POOL, PROJECT_DIR, needs_shared, write_pool
from tests.json_schema import problems, unknown_keywords


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "estate", *args], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False
    )


@needs_shared
def test_validate_accepts_the_flashinfer_files_but_their_graviton_types_ec2_does_not_have(capsys: pytest.CaptureFixture[str]) -> None:
    others = [p for p in sorted(FLASHINFER_CONFIGS.glob("*.yaml")) if "arm64" not in p.name]
    code = main(["validate", *map(str, others)])
    out, err = capsys.readouterr()
    assert code == 0
    # create_service_linked_role_spot (set in cpu-x64-spot) is acted on now, so it is not among them;
    # each file's own AMI, which the estate's baked image replaces, is (issue 20).
    assert out.strip().splitlines()[-1] == "ok: 6 pools, 42 warnings"
    assert err.count("warning: ") == 42
    assert err.count("runner_config.ami: not used while the stack builds images") == 6
    assert main(["validate", *map(str, sorted(FLASHINFER_CONFIGS.glob("*.yaml")))]) == 2
    out, err = capsys.readouterr()
    assert "unknown EC2 instance type 'm7g.24xlarge'" in err
    assert err.count("\n") == 1


def test_validate_bad_file_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_pool(tmp_path, "cpu", MINIMAL_POOL.replace("runners_maximum_count: 4", "runners_maximum_count: -3"))
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err == f"error: {path}: pool 'cpu': runner_config.runners_maximum_count: Input should be greater than or equal to 0\n"


def test_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_route_prints_pools_most_preferred_first(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "self-hosted,linux,x64,cpu"]) == 0
    assert capsys.readouterr().out == "cpu-x64-spot\ncpu-x64-ondemand\n"


def test_route_takes_labels_as_separate_words_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "self-hosted", "linux", "x64", "gpu", "h100"]) == 0
    assert capsys.readouterr().out == "gpu-h100-cb\n"


def test_route_with_no_pool_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "self-hosted,linux,x64,gpu,mi300x"]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: no pool serves a job with labels [self-hosted, linux, x64, gpu, mi300x]")


def test_route_explain_says_why_for_every_pool(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "--explain", "self-hosted,linux,x64,gpu,h100"]) == 0
    err = capsys.readouterr().err
    assert "gpu-h100-cb: yes" in err
    assert "gpu-a10g-spot: no" in err


def test_route_with_other_configs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_pool(tmp_path, "tiny", MINIMAL_POOL)
    assert main(["route", "--configs", str(tmp_path), "self-hosted,cpu"]) == 0
    assert capsys.readouterr().out == "tiny\n"


def test_schema_is_json_schema_of_a_pool_file_or_a_buildkite_queue_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"].endswith("2020-12/schema")
    kinds = [schema["$defs"][ref["$ref"].rsplit("/", 1)[-1]] for ref in schema["anyOf"]]
    assert [set(k["required"]) for k in kinds] == [{"matcherConfig", "runner_config"}, {"buildkite_queue"}]
    assert "estate" in kinds[0]["properties"]


def test_preview_json_from_a_fresh_process() -> None:
    done = run("preview", "--json")
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert {tuple(sorted(r)) for r in records} == {("inputs", "name", "parent", "type")}
    types = {r["type"] for r in records}
    assert {"runner-estate:index:Network", "runner-estate:index:RunnerFleet", "aws:ec2/launchTemplate:LaunchTemplate"} <= types
    template = next(r for r in records if r["name"] == "gpu-h100-cb-lt")
    assert template["parent"] == "gpu-h100-cb"
    assert template["inputs"]["metadataOptions"]["httpTokens"] == "required"


def test_preview_tree_counts_resources_per_component(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preview"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("stack prod: ")
    assert "gpu-h100-cb  (runner-estate:index:RunnerFleet," in out
    assert "aws:ec2/launchTemplate:LaunchTemplate" in out


def test_preview_of_a_missing_stack(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preview", "--stack", "nosuch"]) == 2
    assert "Pulumi.nosuch.yaml" in capsys.readouterr().err


def read_lines(proc: subprocess.Popen[str], count: int, timeout_s: float = 60.0) -> list[str]:
    """The next `count` lines of `proc`'s stdout, or fewer if it prints no more within `timeout_s`."""
    found: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def read() -> None:
        for _ in range(count):
            found.put(stdout.readline().strip())

    threading.Thread(target=read, daemon=True).start()
    lines = []
    with contextlib.suppress(queue.Empty):
        for _ in range(count):
            lines.append(found.get(timeout=timeout_s))
    return lines


def test_serve_prints_webhook_and_secret_and_takes_a_signed_job() -> None:
    command = [sys.executable, "-m", "estate", "serve", "--configs", str(EXAMPLE_CONFIGS)]
    with subprocess.Popen(command, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            printed = read_lines(proc, 5)
            lines = dict(line.split(": ", 1) for line in printed[:2])
            assert lines["webhook"].startswith("http://127.0.0.1:")
            assert printed[2].startswith("github: http://127.0.0.1:")
            # The capacity-block manager runs too, on blocks it says are simulated.
            simulated = "(simulated: estate/local/fake_block_ec2.py)"
            assert printed[3:] == [
                f"block: gpu-b200-cb cr-0b1c2d3e4f5a60719: 1 x p6-b200.48xlarge for 24 h {simulated}",
                f"block: gpu-h100-cb cr-0a1b2c3d4e5f60718: 1 x p5.48xlarge for 24 h {simulated}",
            ]
            body = json.dumps(
                {"action": "queued", "workflow_job": {"id": 1, "labels": ["self-hosted", "linux", "x64", "gpu", "t4"]}}
            ).encode()
            signature = "sha256=" + hmac.new(lines["secret"].encode(), body, hashlib.sha256).hexdigest()
            headers = {"X-GitHub-Event": "workflow_job", "X-Hub-Signature-256": signature}
            request = urllib.request.Request(lines["webhook"], data=body, method="POST", headers=headers)  # noqa: S310 - loopback
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
                assert (answer.status, json.loads(answer.read())["pool"]) == (202, "gpu-t4-spot")
        finally:
            proc.terminate()


def test_serve_runs_the_capacity_block_manager_on_simulated_blocks(moto_url: str) -> None:
    """Issue 19.7: `serve` said it ran the real planners but ran no capacity-block manager."""
    local = LocalPlane([str(EXAMPLE_CONFIGS)], endpoint=moto_url).start()
    try:
        blocks = local.with_blocks()
        assert blocks == [
            "gpu-b200-cb cr-0b1c2d3e4f5a60719: 1 x p6-b200.48xlarge for 24 h",
            "gpu-h100-cb cr-0a1b2c3d4e5f60718: 1 x p5.48xlarge for 24 h",
        ]
        local.serve_webhook()
        local.github.queue_job(["self-hosted", "linux", "x64", "gpu", "h100"])
        local.pump(local.scale_up)
        assert local.block_ec2 is not None
        (node,) = local.block_ec2.live("cr-0a1b2c3d4e5f60718")
        local.cycle()
        assert node in local.block_ec2.live("cr-0a1b2c3d4e5f60718")
    finally:
        local.stop()


# ---- warnings: the example warns about nothing; validate and preview agree (issue 19.3) ----


def test_the_example_estate_warns_about_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "runner_configs"]) == 0
    out, err = capsys.readouterr()
    assert (out.splitlines()[-1], err) == ("ok: 10 pools, 3 buildkite queues, 0 warnings", "")
    for stack in ("prod", "staging"):
        assert main(["validate", "--stack", stack]) == 0
        out, err = capsys.readouterr()
        assert (out.splitlines()[-1], err) == (f"ok: 10 pools, 3 buildkite queues, stack {stack}, 0 warnings", "")
    assert main(["preview"]) == 0
    assert capsys.readouterr().err == ""


def stack_with_warnings(tmp_path: Path) -> Path:
    """A project whose stack notifies nobody and whose pools keep upstream's fifo: warnings of both."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Pulumi.yaml", "__main__.py"):
        (project / name).write_text((PROJECT_DIR / name).read_text(encoding="utf-8"), encoding="utf-8")
    configs = project / "runner_configs"
    configs.mkdir()
    for path in EXAMPLE_CONFIGS.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        if path.stem.startswith("gpu-t4"):
            text = text.replace("runner_config:\n", "fifo: true\nrunner_config:\n", 1)
        (configs / path.name).write_text(text, encoding="utf-8")
    stack = (PROJECT_DIR / "Pulumi.prod.yaml").read_text(encoding="utf-8")
    stack = stack.replace("  runner-estate:alarms:\n    emails: [ci-oncall@example.org]\n", "")
    (project / "Pulumi.prod.yaml").write_text(stack, encoding="utf-8")
    return project


def test_validate_with_the_stack_lists_exactly_what_preview_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Preview said "16 config warnings; validate lists them" and validate listed 10."""
    project = stack_with_warnings(tmp_path)
    assert main(["--project", str(project), "validate", "--stack", "prod"]) == 0
    out, err = capsys.readouterr()
    listed = err.splitlines()
    assert len(listed) == 3  # two pools' fifo, the stack's alarms
    assert all(line.startswith("warning: ") for line in listed)
    assert any("runner-estate:alarms: alarms notify nobody" in line for line in listed)
    assert out.splitlines()[-1].endswith("stack prod, 3 warnings")
    assert main(["--project", str(project), "preview"]) == 0
    assert capsys.readouterr().err == "note: 3 config warnings; `estate validate --stack prod` lists them\n"
    # Without the stack, the pools' own warnings only.
    assert main(["validate", str(project / "runner_configs")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(", 2 warnings")


def test_quiet_keeps_warnings_and_notes_off_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = stack_with_warnings(tmp_path)
    assert main(["--project", str(project), "validate", "--stack", "prod", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines()[-1].endswith("3 warnings")
    assert main(["--project", str(project), "preview", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_validate_needs_paths_or_a_stack(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate"]) == 64
    assert capsys.readouterr().err.startswith("error: estate validate: give pool files or directories, or --stack NAME")


def test_two_stacks_of_one_project_with_one_environment_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """deploy.md's "cp Pulumi.prod.yaml Pulumi.<stack>.yaml" left environment: prod, silently."""
    project = stack_with_warnings(tmp_path)
    (project / "Pulumi.eu.yaml").write_text((project / "Pulumi.prod.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    for command in (["preview", "--stack", "eu"], ["validate", "--stack", "eu"], ["preview"]):
        assert main(["--project", str(project), *command]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "runner-estate:environment: 'prod' is also the environment of Pulumi." in err
    text = (project / "Pulumi.eu.yaml").read_text(encoding="utf-8")
    (project / "Pulumi.eu.yaml").write_text(text.replace("environment: prod", "environment: eu"), encoding="utf-8")
    assert main(["--project", str(project), "validate", "--stack", "eu", "--quiet"]) == 0


# ---- smaller gaps (issue 19.6) -----------------------------------------------------------


@pytest.mark.parametrize("labels", [[""], [","], [" , "]])
def test_route_with_no_label_is_a_usage_error(labels: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", *labels]) == 64
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "error: estate route: give at least one label, e.g. self-hosted,linux,x64 (see estate route --help)\n"


def bundled_files() -> list[Path]:
    found = sorted(EXAMPLE_CONFIGS.glob("*.yaml"))
    return found + (sorted(FLASHINFER_CONFIGS.glob("*.yaml")) if FLASHINFER_CONFIGS.is_dir() else [])


def test_every_bundled_file_meets_the_schema_and_a_misspelt_one_does_not(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The schema covers Buildkite queue files (the bundled bk-*.yaml failed it) and takes the
    quoted numbers the loader takes."""
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert unknown_keywords(schema) == set()
    files = bundled_files()
    assert any(p.stem.startswith("bk-") for p in files)
    for path in files:
        assert problems(schema, yaml.safe_load(path.read_text(encoding="utf-8"))) == [], path
    queue = yaml.safe_load((EXAMPLE_CONFIGS / "bk-cpu.yaml").read_text(encoding="utf-8"))
    queue["buildkite_queue"]["max_sise"] = 3
    assert problems(schema, queue)
    pool = yaml.safe_load(MINIMAL_POOL)
    pool["runner_config"]["runners_maximum_count"] = "50"
    assert problems(schema, pool) == []
    pool["runner_config"]["runners_maximum_count"] = -1
    assert problems(schema, pool)
