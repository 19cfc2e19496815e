"""`python -m estate`: the command-line contract other tools rely on."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from estate.cli import main
from tests.conftest import EXAMPLE_CONFIGS, FLASHINFER_CONFIGS, MINIMAL_POOL, PROJECT_DIR, needs_shared, write_pool


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "estate", *args], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False
    )


@needs_shared
def test_validate_accepts_the_flashinfer_files(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", *map(str, sorted(FLASHINFER_CONFIGS.glob("*.yaml")))])
    out, err = capsys.readouterr()
    assert code == 0
    # create_service_linked_role_spot (set in cpu-x64-spot) is acted on now, so it is not among them.
    assert out.strip().splitlines()[-1] == "ok: 8 pools, 48 warnings"
    assert err.count("warning: ") == 48


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


def test_schema_is_json_schema_of_a_pool_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["required"]) == {"matcherConfig", "runner_config"}
    assert "estate" in schema["properties"]


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


def test_serve_prints_webhook_and_secret_and_takes_a_signed_job() -> None:
    command = [sys.executable, "-m", "estate", "serve", "--configs", str(EXAMPLE_CONFIGS)]
    with subprocess.Popen(command, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            assert proc.stdout is not None
            lines = dict(proc.stdout.readline().strip().split(": ", 1) for _ in range(2))
            assert lines["webhook"].startswith("http://127.0.0.1:")
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
