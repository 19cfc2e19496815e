"""Figures for a host's boot on a baked image, from user-data start to runner start (issue 20.3,
goal < 2 s). Prints the median and p95 of each step; asserts nothing.

    .venv/bin/python bench/boot_bench.py [--runs N] [--files N] [--mb N] [--pool NAME]

What runs is the real thing, on loopback, in a temporary folder:
- the image: the host-program components' own commands (estate/derive/image_components.py)
  unpack the host programs, and a synthetic runner tree shaped like an unpacked actions/runner
  release (two big node binaries, a few hundred libraries, thousands of small files; as
  bench/host_bench.py) is recorded as lambda_src/host/bake.py records the real one;
- the boot: the pool's baked user-data script itself (estate/derive/host_user_data.py), its
  paths moved under the temporary folder, with the system tools it calls as root (iptables,
  useradd, usermod, sudo, pkill, crontab, find, shutdown, nvidia-smi) replaced by stand-ins
  that succeed at once, and the bootstrap it starts talking to a fake IMDSv2 and a fake SSM
  (AWS JSON protocol, SigV4-signed requests accepted as they come);
- the runner: the tree's run.sh, which notes the time it starts (`date`) and exits.

Not in the figures: EC2 (launch to user-data start, ~16-26 s; design.md, "Time to start"),
GitHub (the runner's own connection), the real iptables/useradd calls (milliseconds), and the
first reads of a lazily loaded EBS volume (what the launch template's volume initialization
rate is for). The page cache is warm after the first run, as on a host whose image blocks have
been initialized. Most of what is left is the install's check (every file hashed: it scales with
the host's SHA-256 speed and cores), which the IMDS calls and the job folder's links overlap.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import yaml  # noqa: E402 - after the path set-up
from host_bench import build_tree  # noqa: E402

from estate.config.loader import load_estate  # noqa: E402
from estate.config.stack_config import parse_stack_config  # noqa: E402
from estate.derive import image_components  # noqa: E402
from estate.derive.host_user_data import user_data  # noqa: E402
from estate.derive.images import plan_images  # noqa: E402
from lambda_src.host.runner_files import record_runner  # noqa: E402

INSTANCE_ID = "i-0123456789abcdef0"
JIT_PREFIX = "/runner-estate/bench/jit/"
STAND_INS = ("iptables", "ip6tables", "useradd", "usermod", "crontab", "find", "shutdown", "nvidia-smi")


class _Stamps:
    def __init__(self) -> None:
        self.first_imds: float | None = None
        self.config_read: float | None = None

    def reset(self) -> None:
        self.first_imds = self.config_read = None


STAMPS = _Stamps()


class FakeImds(BaseHTTPRequestHandler):
    """IMDSv2: a token, then identity and role credentials."""

    def do_PUT(self) -> None:
        STAMPS.first_imds = STAMPS.first_imds or time.time()
        self._send("bench-token")

    def do_GET(self) -> None:
        answers = {
            "/latest/meta-data/instance-id": INSTANCE_ID,
            "/latest/meta-data/placement/region": "us-east-1",
            "/latest/meta-data/iam/security-credentials/": "runner-role",
            "/latest/meta-data/iam/security-credentials/runner-role": json.dumps(
                {"AccessKeyId": "ASIABENCH", "SecretAccessKey": "bench", "Token": "bench"}
            ),
        }
        self._send(
            answers[self.path] if self.headers.get("X-aws-ec2-metadata-token") == "bench-token" else "",
            200 if self.path in answers else 404,
        )

    def _send(self, body: str, status: int = 200) -> None:
        raw = body.encode()
        self.send_response(status)
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: object) -> None:
        return


class FakeSsm(FakeImds):
    """SSM's JSON protocol: the host's runner config is there (the control plane wrote it at launch)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        action = self.headers.get("x-amz-target", "").rsplit(".", 1)[-1]
        if action == "GetParameter":
            STAMPS.config_read = time.time()
            self._send(
                json.dumps({"Parameter": {"Name": JIT_PREFIX + INSTANCE_ID, "Value": "bench-encoded-jit-config", "Type": "SecureString"}})
            )
        else:
            self._send("{}")


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def stand_ins(folder: Path) -> Path:
    """The root-only system tools user-data and the tidy-up call, as programs that succeed at once;
    `sudo -u USER CMD` runs CMD; `pkill` finds no process (its exit status 1)."""
    folder.mkdir()
    for name in STAND_INS:
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
    (folder / "pkill").write_text("#!/bin/sh\nexit 1\n")
    (folder / "sudo").write_text(
        '#!/bin/sh\nwhile [ $# -gt 0 ]; do case "$1" in -u) shift 2;; -*) shift;; *) break;; esac; done\nexec "$@"\n'
    )
    (folder / "python3").symlink_to(sys.executable)
    for path in folder.iterdir():
        if not path.is_symlink():
            path.chmod(0o755)
    return folder


def bake_image(root: Path, files: int, megabytes: int) -> tuple[Path, Path]:
    """The baked parts of an image under `root`: host programs (by the image's own commands) and a
    recorded runner whose run.sh notes when it starts."""
    stack = parse_stack_config(
        {
            "environment": "bench",
            "region": "us-east-1",
            "github": {"org": "bench", "app_id": 1},
            "secrets": {"github_app_private_key": "/k", "webhook_secret": "/w"},
        },
        "bench",
    )
    plan, _ = plan_images(stack, load_estate([ROOT / "runner_configs"]), "bench")
    host_dir, parts = root / "opt" / "runner-estate", root / "parts"
    commands: list[str] = []
    for doc in image_components.component_documents(plan.family("cpu-x86_64"), stack):
        if doc.step.startswith("host-programs"):
            for phase in yaml.safe_load(doc.text)["phases"]:
                if phase["name"] == "build":
                    commands += [c for s in phase["steps"] for c in s["inputs"]["commands"] if not c.startswith("chown ")]
    script = "\n".join(commands).replace(image_components.PARTS_DIR, str(parts)).replace("/opt/runner-estate", str(host_dir))
    subprocess.run(["bash", "-c", script.replace("python3 -c", f"{shlex.quote(sys.executable)} -c")], check=True)  # noqa: S603, S607 - our own script
    runner_dir = root / "actions-runner"
    build_tree(runner_dir, files, megabytes)
    (runner_dir / "run.sh").write_text('#!/bin/sh\ndate +%s.%N >"$BENCH_RUNNER_STARTED"\n')
    (runner_dir / "run.sh").chmod(0o755)
    record_runner(runner_dir, "2.329.0", "x64")
    return host_dir, runner_dir


def boot_script(pool_name: str, root: Path, host_dir: Path, runner_dir: Path, imds: str) -> str:
    """The pool's baked user-data, its system paths moved under `root`. The bench runs it as
    whoever runs the bench, root included: a path it could not move stops the bench."""
    pool = next(p for p in load_estate([ROOT / "runner_configs"]).pools if p.name == pool_name)
    script = user_data(pool, JIT_PREFIX, "2.329.0", None, baked=True)
    run_as = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name  # its folder is given to it as on a host
    moves = {
        "/opt/runner-estate": str(host_dir),
        "/var/log/runner-estate": str(root / "log"),
        "/etc/sudoers.d/zz-runner-estate": str(root / "sudoers"),
        f"--run-as {pool.runner.runner_run_as}": f"--run-as {run_as}",
        "python3 -m lambda_src.host.bootstrap": f"python3 -m lambda_src.host.bootstrap --runner-dir {runner_dir} --imds-url {imds}",
    }
    for old, new in moves.items():
        if old not in script:
            raise RuntimeError(f"the user-data no longer holds {old!r}: fix the bench before it touches this machine")
        script = script.replace(old, new)
    left = re.findall(r"(?<!\w)/(?:opt|etc|var)/\S*", script.replace(str(root), "ROOT"))
    if left:
        raise RuntimeError(f"the user-data still names {left}: fix the bench before it touches this machine")
    return script


def _logged_at(log: Path, marker: str) -> float:
    """When the bootstrap logged the last line holding `marker` (its asctime, local time, in ms)."""
    line = [line for line in log.read_text().splitlines() if marker in line][-1]
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def one_boot(script: Path, env: dict[str, str], started: Path, log: Path) -> dict[str, float]:
    STAMPS.reset()
    started.unlink(missing_ok=True)
    began = time.time()
    subprocess.run(["bash", str(script)], env=env, check=True, timeout=120)  # noqa: S603, S607 - our own script
    runner = float(started.read_text())
    if STAMPS.first_imds is None or STAMPS.config_read is None:
        raise RuntimeError("the bootstrap never asked IMDS and SSM")
    return {
        "to python and its imports (first IMDS call)": STAMPS.first_imds - began,
        "to the install checked against its record (the bootstrap's log)": _logged_at(log, "runner 2.329.0 at") - began,
        "to the config read (IMDS; install checked, job folder linked meanwhile)": STAMPS.config_read - began,
        "to runner start": runner - began,
    }


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--pool", default="cpu-x64-spot", help="an example pool on a baked image (cpu-x64-spot, gpu-t4-spot, ...)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, serving(FakeImds) as imds, serving(FakeSsm) as ssm:
        root = Path(scratch)
        host_dir, runner_dir = bake_image(root, args.files, args.mb)
        script = root / "user-data.sh"
        script.write_text(boot_script(args.pool, root, host_dir, runner_dir, imds))
        started = root / "runner-started"
        env: dict[str, Any] = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "PATH": f"{stand_ins(root / 'bin')}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "AWS_ENDPOINT_URL": ssm,
            "BENCH_RUNNER_STARTED": str(started),
        }
        entries = sum(1 for _ in runner_dir.rglob("*"))
        size = sum(p.stat().st_size for p in runner_dir.rglob("*") if p.is_file()) >> 20
        tree = f"runner tree {entries} entries / {size} MB"
        print(f"pool {args.pool}, baked image: user-data {script.stat().st_size} bytes, {tree}, {os.cpu_count()} CPUs, {args.runs} boots")
        log = root / "log" / "runner.log"
        runs = [one_boot(script, env, started, log) for _ in range(args.runs)]
        for key in runs[0]:
            values = [r[key] * 1000 for r in runs]
            print(f"  {key:<72} median {statistics.median(values):5.0f} ms   p95 {_p95(values):5.0f} ms   max {max(values):5.0f} ms")
        lines = log.read_text().splitlines()
        for marker in ("runner 2.329.0 at", "the first job's folder"):
            said = [line.split(" INFO ", 1)[1] for line in lines if marker in line]
            print(f"  the bootstrap's own word ({len(said)} of {args.runs} boots): {said[-1] if said else 'nothing'}")


if __name__ == "__main__":
    main()
