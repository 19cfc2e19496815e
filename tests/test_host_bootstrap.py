"""The runner host's side: IMDSv2 identity, its own runner config read once and deleted, the
runner started with the config only in its environment, and user-data free of secrets."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import subprocess
import sys
import tarfile
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from estate.config.loader import load_estate, load_pool
from estate.derive.host_user_data import _without_docs, node_user_data, user_data
from lambda_src.aws.sigv4_client import AwsError, AwsJsonClient
from lambda_src.host import bootstrap as host_bootstrap
from tests.conftest import EXAMPLE_CONFIGS, MINIMAL_POOL, write_pool

TOKEN = "imds-session-token"


class FakeImds(BaseHTTPRequestHandler):
    """IMDSv2 only: a GET without the session token is refused, as with http_tokens=required."""

    def do_PUT(self) -> None:
        self._send(200, TOKEN if self.path == "/latest/api/token" else "")

    def do_GET(self) -> None:
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            self._send(401, "")
            return
        answers = {
            "/latest/meta-data/instance-id": "i-0123456789abcdef0",
            "/latest/meta-data/placement/region": "us-east-1",
            "/latest/meta-data/iam/security-credentials/": "runner-role",
            "/latest/meta-data/iam/security-credentials/runner-role": json.dumps(
                {"AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "secret", "Token": "session"}
            ),
        }
        self._send(200 if self.path in answers else 404, answers.get(self.path, ""))

    def _send(self, status: int, body: str) -> None:
        raw = body.encode()
        self.send_response(status)
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def imds() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeImds)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_identity_and_credentials_come_from_imdsv2(imds: str) -> None:
    meta = host_bootstrap.Imds(imds)
    assert meta.get("meta-data/instance-id") == "i-0123456789abcdef0"
    assert meta.credentials().access_key == "ASIAEXAMPLE"


def test_without_a_session_token_metadata_is_refused(imds: str) -> None:
    with pytest.raises(Exception, match="401"):
        urllib.request.urlopen(f"{imds}/latest/meta-data/instance-id", timeout=2)  # noqa: S310 - loopback


def test_config_is_awaited_read_once_and_deleted(moto_url: str) -> None:
    ssm = AwsJsonClient("ssm", "us-east-1", endpoint_url=moto_url)
    name = "/runner-estate/prod/jit/i-0123456789abcdef0"

    def scaler_stores_it(_: float) -> None:
        ssm.call("PutParameter", {"Name": name, "Value": "encoded-jit-config", "Type": "SecureString"})

    assert host_bootstrap.fetch_runner_config(ssm, name, wait_s=30, sleep=scaler_stores_it) == "encoded-jit-config"
    with pytest.raises(AwsError) as gone:
        ssm.call("GetParameter", {"Name": name})
    assert gone.value.code == "ParameterNotFound"


def test_no_config_within_the_boot_time_stops_the_host(moto_url: str) -> None:
    ssm = AwsJsonClient("ssm", "us-east-1", endpoint_url=moto_url)
    with pytest.raises(AwsError, match="ParameterNotFound"):
        host_bootstrap.fetch_runner_config(ssm, "/runner-estate/prod/jit/i-0", wait_s=0.5, sleep=lambda s: None)


def test_runner_gets_the_config_in_its_environment_not_its_arguments(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    script = tmp_path / "run.py"
    script.write_text(
        "import json, os, sys\n"
        f"json.dump({{'env': os.environ.get('{host_bootstrap.JIT_ENV}'), 'argv': sys.argv, "
        f"'aws': [k for k in os.environ if k.startswith('AWS_')]}}, open({str(seen)!r}, 'w'))\n"
    )
    code = host_bootstrap.run_once([sys.executable, str(script)], "encoded-jit-config", user=None)
    got = json.loads(seen.read_text())
    assert code == 0
    assert got["env"] == "encoded-jit-config"
    assert "encoded-jit-config" not in " ".join(got["argv"])
    assert got["aws"] == []


def _tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b"#!/bin/sh\necho runner\n"
        info = tarfile.TarInfo("run.sh")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_runner_download_is_checked_against_its_sha256(tmp_path: Path) -> None:
    blob = _tarball()
    urls: list[str] = []

    def fetch(url: str) -> bytes:
        urls.append(url)
        return blob

    with pytest.raises(RuntimeError, match="does not match"):
        host_bootstrap.install_runner(tmp_path / "bad", "2.329.0", "arm64", "0" * 64, fetch)
    assert not (tmp_path / "bad" / "run.sh").exists()
    good = host_bootstrap.install_runner(tmp_path / "good", "2.329.0", "arm64", hashlib.sha256(blob).hexdigest(), fetch)
    assert (good / "run.sh").exists()
    assert urls[0].endswith("/v2.329.0/actions-runner-linux-arm64-2.329.0.tar.gz")


# ---- user-data --------------------------------------------------------------------------

POOLS = load_estate([EXAMPLE_CONFIGS]).pools


@pytest.mark.parametrize("pool", POOLS, ids=lambda p: p.name)
def test_user_data_carries_code_and_settings_but_no_secret(pool: object) -> None:
    script = user_data(pool, "/runner-estate/prod/jit/", "2.329.0", None)  # type: ignore[arg-type]
    assert len(script) < 16 * 1024
    lowered = script.lower()
    for secret_marker in ("private key", "ghs_", "ghp_", "jitconfig ", "aws_secret_access_key", "x-hub-signature"):
        assert secret_marker not in lowered
    assert script == user_data(pool, "/runner-estate/prod/jit/", "2.329.0", None)  # type: ignore[arg-type]  # stable


def unpack_bundle(script: str, into: Path) -> None:
    """Run the user-data's own unpacking lines (its python3 decoder and tar) into `into`."""
    found = re.search(r"^(python3 -c .+ <<'BUNDLE' \| tar -xJ -C )\S+(\n.+\nBUNDLE)$", script, re.M | re.S)
    assert found is not None
    decoder = found.group(1).replace("python3", shlex.quote(sys.executable), 1)
    subprocess.run(["bash", "-c", f"{decoder}{shlex.quote(str(into))}{found.group(2)}"], check=True, timeout=60)  # noqa: S607


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py"))


def test_user_data_bundle_is_the_bootstrap_and_runs(tmp_path: Path) -> None:
    script = user_data(POOLS[0], "/runner-estate/prod/jit/", "2.329.0", "ab" * 32)
    unpack_bundle(script, tmp_path)
    assert _files(tmp_path) == [
        "lambda_src/__init__.py",
        "lambda_src/aws/__init__.py",
        "lambda_src/aws/sigv4_client.py",
        "lambda_src/core/__init__.py",
        "lambda_src/core/job_isolation.py",
        "lambda_src/core/tags.py",
        "lambda_src/host/__init__.py",
        "lambda_src/host/bootstrap.py",
        "lambda_src/host/common.py",
        "lambda_src/host/first_job.py",
        "lambda_src/host/job_users.py",
        "lambda_src/host/runner_files.py",
    ]
    helped = subprocess.run(
        [sys.executable, "-m", "lambda_src.host.bootstrap", "--help"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert helped.returncode == 0, helped.stderr
    assert "--runner-sha256 " + "ab" * 32 in script


def test_the_bundle_drops_only_what_python_never_evaluates() -> None:
    """Docstrings, function annotations and local variables' annotations go (user-data has 16 KiB);
    a dataclass's fields and a module's annotated names keep theirs."""
    source = '''"""Module doc."""
from dataclasses import dataclass
LIMIT: int = 3


@dataclass
class Slot:
    """Class doc."""
    index: int = 0

    def users(self, prefix: str) -> list[str]:
        """Method doc."""
        found: list[str] = []
        for i in range(self.index):
            name: str = f"{prefix}{i}"
            found.append(name)
        return found
'''
    code = _without_docs(source).decode()
    assert "doc" not in code
    for kept in ("LIMIT: int = 3", "index: int = 0"):
        assert kept in code
    for stripped in ("def users(self, prefix):", "found = []", "name = f"):
        assert stripped in code
    namespace: dict[str, object] = {}
    exec(compile(code, "bundled", "exec"), namespace)  # noqa: S102 - our own test source
    assert namespace["Slot"](2).users("u") == ["u0", "u1"]  # type: ignore[operator]


def test_capacity_block_node_user_data_runs_the_slot_manager_from_its_bundle(tmp_path: Path) -> None:
    (pool,) = [p for p in POOLS if p.name == "gpu-h100-cb"]
    queue = "https://sqs.us-east-1.amazonaws.com/123456789012/runner-estate-prod-gpu-h100-cb-events"
    script = node_user_data(pool, "/runner-estate/prod/jit/", "2.329.0", "ab" * 32, queue)
    assert len(script) < 16 * 1024
    assert f"--layout 1x4+4x1 --reports-queue-url {queue}" in script
    assert "shutdown" not in script  # a node lives for its block
    unpack_bundle(script, tmp_path)
    assert _files(tmp_path) == [
        "lambda_src/__init__.py",
        "lambda_src/aws/__init__.py",
        "lambda_src/aws/sigv4_client.py",
        "lambda_src/core/__init__.py",
        "lambda_src/core/gpu_slots.py",
        "lambda_src/core/gpus.py",
        "lambda_src/core/instance_catalog.py",
        "lambda_src/core/job_isolation.py",
        "lambda_src/core/node_slots.py",
        "lambda_src/host/__init__.py",
        "lambda_src/host/common.py",
        "lambda_src/host/job_users.py",
        "lambda_src/host/nvidia_smi.py",
        "lambda_src/host/runner_files.py",
        "lambda_src/host/slot_manager.py",
    ]
    helped = subprocess.run(
        [sys.executable, "-m", "lambda_src.host.slot_manager", "--help"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert helped.returncode == 0, helped.stderr


# ---- estate.reuse_hosts: the host's side ------------------------------------------------


def test_a_reusable_host_runs_each_next_config_after_tidying_up_to_its_limit() -> None:
    configs, ran = ["one", "two", "three"], []
    waits: list[float] = []
    tidied: list[int] = []

    def fetch(wait_s: float) -> str:
        waits.append(wait_s)
        return configs.pop(0)

    def run(config: str) -> int:
        ran.append(config)
        return 0

    count = host_bootstrap.serve_jobs(fetch, run, lambda: tidied.append(len(ran)), 720.0, 90.0, max_jobs=2)
    assert (count, ran, waits, tidied) == (2, ["one", "two"], [720.0, 90.0], [1, 2])


def test_a_host_with_no_next_config_powers_off_after_tidying() -> None:
    def fetch(wait_s: float) -> str:
        if wait_s == 90.0:
            raise AwsError("ParameterNotFound", "none", 400)
        return "one"

    tidied: list[int] = []
    assert host_bootstrap.serve_jobs(fetch, lambda c: 0, lambda: tidied.append(1), 720.0, 90.0, max_jobs=5) == 1
    assert tidied == [1]  # the job's leftovers went before the host waited for a next config


def test_no_first_config_still_stops_the_host_with_an_error() -> None:
    def fetch(wait_s: float) -> str:
        raise AwsError("ParameterNotFound", "none", 400)

    with pytest.raises(AwsError):
        host_bootstrap.serve_jobs(fetch, lambda c: 0, lambda: None, 720.0, 90.0, max_jobs=5)


def test_only_a_reusing_pool_tells_its_hosts_to_wait_for_a_next_config(tmp_path: Path) -> None:
    plain, _ = load_pool(write_pool(tmp_path, "plain", MINIMAL_POOL))
    reusing, _ = load_pool(write_pool(tmp_path, "reusing", MINIMAL_POOL + "estate:\n  reuse_hosts:\n    max_jobs: 4\n"))
    assert "--max-jobs" not in user_data(plain, "/runner-estate/prod/jit/", "2.329.0", None)
    assert "--max-jobs 4 --reuse-wait 90" in user_data(reusing, "/runner-estate/prod/jit/", "2.329.0", None)


def test_a_warm_instance_prepares_and_powers_off_and_runs_its_job_on_the_next_boot() -> None:
    """First boot: the scaler's WARM_CONFIG stands where a config would; the install was checked
    (in fetch) and nothing runs. Started again for a job, the same program gets a real config."""
    from lambda_src.core.tags import WARM_CONFIG

    boots = iter([WARM_CONFIG, "the-job"])
    ran: list[str] = []

    def run(config: str) -> int:
        ran.append(config)
        return 0

    assert host_bootstrap.serve_jobs(lambda w: next(boots), run, lambda: None, 720.0, 90.0, max_jobs=1) == 0
    assert ran == []  # no runner on the warm boot
    assert host_bootstrap.serve_jobs(lambda w: next(boots), run, lambda: None, 720.0, 90.0, max_jobs=1) == 1
    assert ran == ["the-job"]


def test_a_warm_config_is_never_taken_for_a_later_job_config() -> None:
    """Only a host's first read may be the warm marker; a reusing host's next config is always run."""
    from lambda_src.core.tags import WARM_CONFIG

    configs = iter(["one", WARM_CONFIG])
    ran: list[str] = []

    def run(config: str) -> int:
        ran.append(config)
        return 0

    assert host_bootstrap.serve_jobs(lambda w: next(configs), run, lambda: None, 720.0, 90.0, max_jobs=2) == 2
    assert ran == ["one", WARM_CONFIG]


def test_host_user_data_runs_again_at_every_boot_a_node_does_not(tmp_path: Path) -> None:
    from estate.derive.host_user_data import PER_BOOT_SCRIPT

    plain, _ = load_pool(write_pool(tmp_path, "plain", MINIMAL_POOL))
    script = user_data(plain, "/runner-estate/prod/jit/", "2.329.0", None)
    assert f'install -D -m 700 "$0" {PER_BOOT_SCRIPT}' in script
    assert script.index(PER_BOOT_SCRIPT) < script.index("python3 -m lambda_src.host.bootstrap")
