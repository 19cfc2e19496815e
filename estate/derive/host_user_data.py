"""The user-data a runner host boots with: unpack our stdlib host code and run it — the
one-job bootstrap on an ordinary host, the GPU slot manager on a capacity-block node. On a
baked image (estate/derive/images.py) the host code is already in the image, at the same
place: the user-data checks that it is the code this stack ships (its bundle's digest) and
runs it, carrying no code at all.

It carries code and settings only — no credential of any kind. Runner configs arrive later
through SSM parameters only that instance may read (lambda_src/aws/jit_parameters.py), and
only root may read them: before the host program starts, the script keeps every other user
from the instance metadata service (where the role's credentials are) and sets up the users
jobs run as (one per GPU slot on a node), unprivileged and denied sudo. If either fails, no
runner starts.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import lzma
import shlex
import tarfile
from functools import cache
from pathlib import Path

from estate.config.pool import Pool
from estate.derive.images import BUNDLE_STAMP, HOST_PROGRAMS_DIR
from lambda_src.core.job_isolation import slot_user
from lambda_src.core.planner import REUSE_WINDOW_S

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST_ENTRY = "lambda_src.host.bootstrap"
NODE_ENTRY = "lambda_src.host.slot_manager"
BAKE_ENTRY = "lambda_src.host.bake"
IMAGE_ENTRIES = (HOST_ENTRY, NODE_ENTRY, BAKE_ENTRY)  # every host program an image carries
INSTALL_DIR = HOST_PROGRAMS_DIR
LOG_FILE = "/var/log/runner-estate/runner.log"
USER_DATA_LIMIT = 16 * 1024  # EC2's limit on user-data before base64
IMDS_ADDRESSES = (("iptables", "169.254.169.254/32"), ("ip6tables", "fd00:ec2::254/128"))
# cloud-init runs user-data once per instance and these scripts at every boot (after the first):
# a warm instance's script runs again when the scaler starts it for a job (issue 20.2).
PER_BOOT_SCRIPT = "/var/lib/cloud/scripts/per-boot/runner-estate"
SUDOERS_FILE = "/etc/sudoers.d/zz-runner-estate"  # read last: its rules override an image's earlier grants


class _LocalAnnotations(ast.NodeTransformer):
    """`x: T = v` inside a function becomes `x = v`: a local variable's annotation is never
    evaluated (PEP 526). Module and class ones stay (a dataclass's fields are its annotations)."""

    in_function = False

    def visit(self, node: ast.AST) -> ast.AST:
        if isinstance(node, ast.AnnAssign) and self.in_function and node.value is not None:
            return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)
        outer = self.in_function
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            self.in_function = not isinstance(node, ast.ClassDef)
        self.generic_visit(node)
        self.in_function = outer
        return node


def _without_docs(source: str) -> bytes:
    """The module's code without comments, docstrings, function annotations (with
    `from __future__ import annotations` nothing reads them at run time) and local variables'
    annotations: user-data is limited to 16 KiB."""
    tree = _LocalAnnotations().visit(ast.parse(source))
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            node.returns = None
            for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs, node.args.vararg, node.args.kwarg]:
                if arg is not None:
                    arg.annotation = None
    return ast.unparse(tree).encode()


def _module_file(module: str) -> str:
    """`lambda_src.host.bootstrap` -> `lambda_src/host/bootstrap.py` (or the package's __init__)."""
    base = module.replace(".", "/")
    return f"{base}/__init__.py" if (REPO_ROOT / base).is_dir() else f"{base}.py"


@cache
def bundled_files(*entries: str) -> tuple[str, ...]:
    """The files host programs need: the entry modules, every lambda_src module they import
    (transitively) and their packages' __init__ files — read from the imports, so a new
    import can never be left out of user-data or an image."""
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):  # the module and every package above it
            name = ".".join(parts[:depth])
            if name in seen:
                continue
            seen.add(name)
            tree = ast.parse((REPO_ROOT / _module_file(name)).read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lambda_src"):
                    todo.append(node.module)
                elif isinstance(node, ast.Import):
                    todo += [alias.name for alias in node.names if alias.name.startswith("lambda_src")]
    return tuple(sorted(_module_file(name) for name in seen))


@cache
def _bundle(*entries: str) -> str:
    """The host modules as an xz-compressed tar in base85 (with `.` for `_`, so no run of it
    reads like a `ghs_` token): the densest text a quoted here-document carries unchanged.
    The node's bundle needs it to fit EC2's 16 KiB with gzip and base64 it would not."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in bundled_files(*entries):
            data = _without_docs((REPO_ROOT / name).read_text(encoding="utf-8"))
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed mtime: same input, same user-data
            tar.addfile(info, io.BytesIO(data))
    # pb=0: the modules are text, aligned to no power of two (xz's default pb=2 suits 4-byte data).
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "pb": 0}]
    packed = lzma.compress(buffer.getvalue(), check=lzma.CHECK_CRC32, filters=filters)
    return base64.b85encode(packed).decode().replace("_", ".")


def image_bundle() -> tuple[str, str]:
    """What an image carries at INSTALL_DIR: every host program's bundle (as `_bundle`), and its
    SHA-256, which the image records in BUNDLE_STAMP and a baked host's user-data checks."""
    text = _bundle(*IMAGE_ENTRIES)
    return text, hashlib.sha256(text.encode()).hexdigest()


# Decodes `_bundle` on the host (python3 is there: the host programs need it).
UNPACK = 'python3 -c \'import base64,sys;sys.stdout.buffer.write(base64.b85decode(sys.stdin.read().strip().replace(".","_")))\''


def _imds_for_root_only() -> str:
    """Firewall rules, first in OUTPUT: only uid 0 may talk to the metadata service."""
    rules = [[tool, "-w", "-I", "OUTPUT", "1", "-d", address, "-m", "owner", "!", "--uid-owner", "0", "-j", "REJECT"]
             for tool, address in IMDS_ADDRESSES]  # fmt: skip
    return " && ".join(map(shlex.join, rules)) + " || fail 'cannot keep jobs from the instance metadata service'"


def _job_users(pool: Pool, users: list[str]) -> list[str]:
    """Each job user exists, is in no group but its own (or the pool's `job_groups`, opted into)
    and is denied sudo (unless `allow_job_sudo`): no sudo, adm, docker or lxd a stock image gave it."""
    groups = pool.spec.estate.job_groups
    wanted = f'"$(getent group {shlex.join(groups)} | cut -d: -f1 | paste -sd,)"' if groups else "''"
    sudo = "NOPASSWD: ALL" if pool.spec.estate.allow_job_sudo else "!ALL"
    return [
        f"for u in {shlex.join(users)}; do"
        ' id -u "$u" >/dev/null 2>&1 || useradd --create-home --user-group --shell /bin/bash "$u" || fail "cannot create $u";'
        f' usermod -G {wanted} "$u" || fail "cannot confine $u"; done',
        f"printf {shlex.quote(f'%s ALL=(ALL:ALL) {sudo}' + chr(92) + 'n')} {shlex.join(users)} >{SUDOERS_FILE}"
        f" && chmod 440 {SUDOERS_FILE} || fail 'cannot deny sudo to job users'",
    ]


def _host_programs(entry: str, baked: bool) -> list[str]:
    """Unpack the host programs (stock image), or check that the image's are this stack's (baked)."""
    if not baked:
        return [f"{UNPACK} <<'BUNDLE' | tar -xJ -C {INSTALL_DIR}", _bundle(entry), "BUNDLE"]
    _, digest = image_bundle()
    return [f'[ "$(cat {BUNDLE_STAMP} 2>/dev/null)" = {digest} ] || fail "the image\'s host programs are not {digest[:12]}"']


def _gpu_persistence(pool: Pool) -> list[str]:
    """Keep the driver loaded between jobs (the first CUDA call of a job then pays no driver
    start): persistence mode, set in the background so nothing waits for it."""
    return ["(nvidia-smi -pm 1 >/dev/null 2>&1 &)"] if pool.accelerator == "nvidia" else []


def _script(
    pool: Pool, entry: str, arguments: list[str], users: list[str], on_failure: str, baked: bool = False, per_boot: bool = False
) -> str:
    # Every value is quoted where it meets the shell, whatever the loader let through.
    command = shlex.join(["python3", "-m", entry, *arguments])
    script = "\n".join(
        [
            "#!/bin/bash",
            "set -uo pipefail",
            f"mkdir -p {INSTALL_DIR} $(dirname {LOG_FILE})",
            *([f'install -D -m 700 "$0" {PER_BOOT_SCRIPT} 2>/dev/null'] if per_boot else []),
            f'fail() {{ echo "runner-estate: $1; no runner starts" >>{LOG_FILE}; {on_failure}exit 1; }}',
            _imds_for_root_only(),
            *_job_users(pool, users),
            *_gpu_persistence(pool),
            *_host_programs(entry, baked),
            f"cd {INSTALL_DIR} && {command} >>{LOG_FILE} 2>&1",
            *([on_failure.removesuffix("; ")] if on_failure else []),
            "",
        ]
    )
    if len(script) > USER_DATA_LIMIT:
        raise ValueError(f"user-data for pool {pool.name} is {len(script)} bytes; EC2 allows {USER_DATA_LIMIT}")
    return script


def _runner_args(pool: Pool, jit_prefix: str, runner_version: str, runner_sha256: str | None) -> list[str]:
    """The host program's arguments, one item per word (`_script` quotes them)."""
    args = [
        *("--parameter-prefix", jit_prefix),
        *("--runner-version", runner_version),
        *("--runner-arch", pool.runner.runner_architecture),
        *("--run-as", pool.runner.runner_run_as),
    ]
    return [*args, "--runner-sha256", runner_sha256] if runner_sha256 else args


def user_data(pool: Pool, jit_prefix: str, runner_version: str, runner_sha256: str | None, *, baked: bool = False) -> str:
    """An ordinary host: one job (or, with `estate.reuse_hosts`, a few in turn), then the host
    powers off (and is terminated). `baked`: the host boots the estate's image."""
    args = [*_runner_args(pool, jit_prefix, runner_version, runner_sha256), "--wait", str(60 * pool.runner.runner_boot_time_in_minutes)]
    if (reuse := pool.spec.estate.reuse_hosts) is not None:
        # The host outwaits the scaler's window by half a minute: a config stored at its end still finds the host.
        args += ["--max-jobs", str(reuse.max_jobs), "--reuse-wait", f"{REUSE_WINDOW_S + 30:g}"]
    return _script(pool, HOST_ENTRY, args, [pool.runner.runner_run_as], "shutdown -h now; ", baked, per_boot=True)


def node_user_data(
    pool: Pool, jit_prefix: str, runner_version: str, runner_sha256: str | None, reports_queue_url: str, *, baked: bool = False
) -> str:
    """A capacity-block node: the slot manager runs for the life of the block. If it stops
    (no driver, a bad layout) the node stays up for inspection; its log says why."""
    assert pool.slot_layout is not None
    args = [
        *_runner_args(pool, jit_prefix, runner_version, runner_sha256),
        *("--layout", pool.slot_layout.spec()),
        *("--reports-queue-url", reports_queue_url),
    ]
    users = [slot_user(pool.runner.runner_run_as, index) for index in range(pool.slot_layout.slot_count)]
    return _script(pool, NODE_ENTRY, args, users, "", baked)
