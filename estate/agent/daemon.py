"""`python -m estate agent`: ephemeral JIT runners on a machine we do not provision (a
bare-metal ARM64 server, a lab box with GPUs).

Keeps N runner slots (or one per GPU slot of a layout). Each slot runs one ephemeral JIT
runner at a time: one job, then a fresh registration. A slot idle past the idle timeout is
deregistered and parked, and comes back when jobs for its labels are queued. Every health
interval the agent reconciles with GitHub: dead processes are replaced, registrations of
ours that no slot owns (a crash, a reboot) are deleted. SIGTERM drains: no new jobs, running
ones finish, every slot deregistered.

Credentials: an installation token read from a file the control plane keeps fresh
(`--token-file`, preferred), or minted here from the App's key; never a personal access token.
Either file is the agent's own and owner-only, and the runners (every job) run as another
user (`--run-as`) that cannot read it. Registration data reaches the runner only in its
environment.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import platform
import pwd
import re
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from estate.agent.plan import Account, FileFacts, RunningSlot, plan_reconcile, separation_problems, slots_to_wake
from lambda_src.core.fleet_state import GithubRunner
from lambda_src.core.gpu_slots import NodeSlot
from lambda_src.github.client import GithubClient, GithubError

log = logging.getLogger("runner_estate.agent")

ARCH_LABELS = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64", "riscv64": "riscv64"}
RUNNER_SCOPE = {"organization_self_hosted_runners": "write", "actions": "read"}  # read: queued jobs of watched repos
MAX_BACKOFF_S = 300.0
TOKEN_MAX_LIFETIME_S = 3600.0 + 120.0  # installation tokens live one hour
INSTALLATION_TOKEN = re.compile(r"ghs_[A-Za-z0-9_.-]+")  # GitHub's prefix for App installation tokens
TOKEN_EXPIRY_HEADER = "GitHub-Authentication-Token-Expiration"  # noqa: S105 - a header name: GitHub tells the real expiry
# Groups whose members can act as root (sudo, or a daemon that mounts any file for them).
PRIVILEGED_GROUPS = ("root", "sudo", "wheel", "admin", "docker", "lxd", "disk")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class CredentialsError(RuntimeError):
    """The credentials cannot be used: wrong kind, within reach of the runners' user (or
    anyone but the agent's), or refused by GitHub."""


class RunningRunner(Protocol):
    def poll(self) -> int | None: ...
    def terminate(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


def arch_label(machine: str | None = None) -> str:
    found = ARCH_LABELS.get((machine or platform.machine()).lower())
    if found is None:
        raise RuntimeError(f"unsupported CPU architecture {machine or platform.machine()!r}: runners exist for x64, arm64 and riscv64")
    return found


def read_private_file(path: Path, what: str) -> str:
    """A credential file's text. It must be the agent's own (whoever owns a file may rewrite
    or chmod it) and readable by its owner only; a symbolic link is not followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise CredentialsError(f"{what} {path}: {exc.strerror}") from None
    with os.fdopen(fd, encoding="utf-8") as opened:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise CredentialsError(f"{what} {path} belongs to uid {info.st_uid}, not to the agent's user (uid {os.geteuid()}); chown it")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CredentialsError(f"{what} {path} is readable by group or others (mode {stat.S_IMODE(info.st_mode):o}); chmod 600 it")
        return opened.read()


def check_private_file(path: Path, what: str) -> None:
    """A credential file must be the agent's and readable by its owner only."""
    read_private_file(path, what)


@dataclass
class TokenFileClient(GithubClient):
    """A GitHub client whose installation token comes from a file the control plane keeps
    fresh (`{"token": ..., "expires_at": ...}`), read on every use (it is small).

    The expiry the file states is the minter's word, so it can only make the agent refuse
    the token; what the token really is, GitHub says: every answer carrying the token's
    expiry is checked against an installation token's one hour, and a refused token (401)
    stops the agent."""

    token_file: Path = Path("/nonexistent")

    def token(self, index: int = 0) -> str:
        return read_token_file(self.token_file, self.clock())

    def _exchange(
        self, method: str, path: str, body: dict[str, Any] | None, bearer: str, extra: dict[str, str], may_wait: bool = True
    ) -> tuple[Any, Any]:
        found, headers = super()._exchange(method, path, body, bearer, extra, may_wait)
        said = headers.get(TOKEN_EXPIRY_HEADER) if headers is not None else None
        expires = _header_time(said)
        if expires is not None and expires - self.clock() > TOKEN_MAX_LIFETIME_S:
            raise CredentialsError(f"token file {self.token_file}: GitHub says the token expires {said}; installation tokens live one hour")
        return found, headers


def _header_time(value: str | None) -> float | None:
    """GitHub's `2026-05-01 12:00:00 UTC` (or with a numeric offset), as epoch seconds."""
    if not value:
        return None
    try:
        return datetime.strptime(value.strip().replace("UTC", "+0000"), "%Y-%m-%d %H:%M:%S %z").timestamp()
    except ValueError:
        log.warning("cannot read GitHub's token expiry %r", value)
        return None


def read_token_file(path: Path, now: float) -> str:
    text = read_private_file(path, "token file")
    try:
        data = json.loads(text)
        token, expires = str(data["token"]), datetime.fromisoformat(str(data["expires_at"]).replace("Z", "+00:00")).timestamp()
    except (ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(f'token file {path}: want {{"token": ..., "expires_at": ...}} ({exc})') from None
    if not INSTALLATION_TOKEN.fullmatch(token):
        # An allow-list: GitHub marks installation tokens `ghs_`; personal, OAuth, user and
        # refresh tokens, and kinds not invented yet, carry other prefixes.
        raise CredentialsError(
            f"token file {path} holds no App installation token (ghs_...); the agent takes no personal or OAuth token, nor any other kind"
        )
    # The file's expiry can only refuse a token (the minter's own word against it), never vouch for one.
    if expires - now > TOKEN_MAX_LIFETIME_S:
        raise CredentialsError(f"token file {path}: the token lives {(expires - now) / 3600:.1f} h; installation tokens live one hour")
    if expires <= now:
        raise CredentialsError(f"token file {path}: the token expired at {data['expires_at']}; is its refresher running?")
    return token


# ---- who runs the runners ---------------------------------------------------------------------


def account(name: str) -> Account:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise CredentialsError(f"--run-as {name}: no such user") from None
    return Account(entry.pw_name, entry.pw_uid, frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid)))


def agent_account() -> Account:
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid {uid}"
    return Account(name, uid, frozenset({os.getegid(), *os.getgroups()}))


def file_facts(path: Path) -> FileFacts:
    info = path.stat()
    return FileFacts(str(path), info.st_uid, info.st_gid, info.st_mode)


def privileged_groups() -> dict[int, str]:
    found = {0: "root"}
    for name in PRIVILEGED_GROUPS:
        try:
            found[grp.getgrnam(name).gr_gid] = name
        except KeyError:
            continue
    return found


def separation_refusal(run_as: str | None, credentials: Iterable[Path]) -> str | None:
    """Why the runners' user could reach the agent's credential (the first reason), or None."""
    paths = [p.absolute() for p in credentials]
    try:
        problems = separation_problems(
            agent_account(),
            account(run_as) if run_as else None,
            [file_facts(p) for p in paths],
            [file_facts(p.parent) for p in paths],
            [file_facts(p) for p in (PROJECT_ROOT, PROJECT_ROOT / "estate", PROJECT_ROOT / "lambda_src", Path(sys.prefix))],
            privileged_groups(),
        )
    except OSError as exc:
        return f"{exc.filename}: {exc.strerror}"
    return problems[0] if problems else None


@dataclass
class Slot:
    index: int
    labels: list[str]
    env: dict[str, str]
    name: str  # <prefix><host>-s<index>; each registration adds a fresh suffix
    runner_name: str = ""  # the current registration's name
    runner_id: int | None = None
    process: RunningRunner | None = None
    started_at: float = 0.0
    idle_since: float | None = None
    busy_at: float | None = None  # when GitHub last showed this runner running a job
    parked: bool = False
    jobs: int = 0


@dataclass
class Agent:
    github: GithubClient
    launch: Callable[[Slot, str], RunningRunner]  # start the runner program with this JIT config
    slots: list[Slot]
    name_prefix: str  # "<prefix><host>-s": every registration named so is this agent's, and only those
    group: str = "Default"
    idle_timeout_s: float = 300.0
    health_interval_s: float = 30.0
    poll_interval_s: float = 30.0
    watch_repos: list[str] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    draining: bool = False
    # Why this agent may not start runners (no user of their own for them); checked first.
    refusal: str | None = None
    _health_at: float | None = None
    _poll_at: float = 0.0
    _poll_wait: float = 0.0
    _pause_until: float = 0.0
    _backoff: float = 0.0
    _etags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name_prefix or any(not s.name.startswith(self.name_prefix) for s in self.slots):
            raise ValueError("every slot's name must start with the agent's non-empty name prefix")

    # ---- life -------------------------------------------------------------------------
    def start(self) -> None:
        """Clear what an earlier run left registered, then bring every slot up."""
        if self.refusal:
            raise CredentialsError(self.refusal)
        self._guarded(self._reconcile)
        for slot in self.slots:
            self._guarded(partial(self._launch, slot))

    def tick(self) -> None:
        now = self.clock()
        for slot in self.slots:
            self._reap(slot)
        if now < self._pause_until:
            return
        if self._health_at is None or now - self._health_at >= self.health_interval_s:
            self._health_at = now
            self._guarded(self._reconcile)
        for slot in self.slots:
            if slot.process is None and not slot.parked and not self.draining:
                self._guarded(partial(self._launch, slot))
        if any(s.parked for s in self.slots) and not self.draining and now >= self._poll_at:
            self._guarded(self._wake_for_queued_jobs)

    def drain(self, sleep: Callable[[float], None] = time.sleep, timeout_s: float | None = None) -> None:
        """No new jobs; idle runners deregistered now, busy ones when their job ends."""
        self.draining = True
        deadline = None if timeout_s is None else self.clock() + timeout_s
        while any(s.process is not None for s in self.slots):
            self._guarded(self._reconcile)
            for slot in self.slots:
                self._reap(slot)
            if deadline is not None and self.clock() > deadline:
                break
            sleep(0.2)
        log.info("drained: every slot deregistered")

    # ---- steps ------------------------------------------------------------------------
    def _launch(self, slot: Slot) -> None:
        # A fresh name per registration: a runner that died mid-job stays busy at GitHub
        # until GitHub fails its job, and must not block the slot's next runner.
        if self.refusal:
            raise CredentialsError(self.refusal)
        name = f"{slot.name}-{secrets.token_hex(3)}"
        slot.runner_id, config = self.github.fresh_jitconfig(name, self.group, slot.labels)
        slot.runner_name = name
        slot.process, slot.started_at, slot.idle_since, slot.parked = self.launch(slot, config), self.clock(), None, False
        slot.busy_at = None
        log.info("slot %d: runner %s (%s) started", slot.index, name, slot.runner_id)

    def _reap(self, slot: Slot) -> None:
        """A runner process that ended: its job is done (or it died). The registration goes
        either way; the slot refills on this tick unless parked or draining."""
        if slot.process is None or (code := slot.process.poll()) is None:
            return
        slot.process, slot.jobs, slot.busy_at = None, slot.jobs + 1, None
        log.info("slot %d: runner exited with %d", slot.index, code)
        if slot.runner_id is not None:
            self._guarded(partial(self.github.delete_runner, slot.runner_id))
            slot.runner_id = None

    def _reconcile(self) -> None:
        """One runner listing, then estate/agent/plan.plan_reconcile's decisions. A slot's
        runner the listing missed is looked up by id first: a paged listing can miss it."""
        now = self.clock()
        listed = {r.name: r for r in self.github.list_runners() if r.name.startswith(self.name_prefix)}
        running = [
            RunningSlot(s.index, s.runner_name, s.started_at, s.idle_since, s.runner_id, s.busy_at)
            for s in self.slots
            if s.process is not None
        ]
        plan = plan_reconcile(running, listed, now, self.idle_timeout_s, self.draining)
        if plan.confirm:
            confirmed = {index: self._look_up(self.slots[index]) for index in plan.confirm}
            plan = plan_reconcile(running, listed, now, self.idle_timeout_s, self.draining, confirmed)
        for index, busy_at in plan.busy_at.items():
            self.slots[index].busy_at = busy_at
        for index, idle_since in plan.idle_since.items():
            self.slots[index].idle_since = idle_since
        for index in plan.restart:
            name = self.slots[index].runner_name
            log.warning("slot %d: GitHub no longer has registration %s while its runner runs; restarting it", index, name)
            self._stop(self.slots[index])
        for index, runner_id in plan.retire:
            if self.github.delete_runner(runner_id):
                slot = self.slots[index]
                self._stop(slot)
                slot.parked = not self.draining
                log.info("slot %d: %s", index, "deregistered (draining)" if self.draining else "idle; deregistered and parked")
        for runner_id in plan.leftovers:
            log.info("deleting runner %s: registered by an earlier run of this agent", runner_id)
            self.github.delete_runner(runner_id)

    def _look_up(self, slot: Slot) -> GithubRunner | None:
        if slot.runner_id is not None:
            return self.github.runner(slot.runner_id)
        return self.github.find_runner(slot.runner_name)

    def _stop(self, slot: Slot) -> None:
        if slot.process is not None:
            slot.process.terminate()
            try:
                slot.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("slot %d: runner did not stop within 10 s", slot.index)
        slot.process, slot.runner_id, slot.idle_since, slot.busy_at = None, None, None, None

    def _wake_for_queued_jobs(self) -> None:
        """Poll the watched repositories (conditional requests: an unchanged answer is free)
        and bring back one parked slot per queued job it can take. Quiet polls back off."""
        queued = [labels for repo in self.watch_repos for labels in self._queued_labels(repo)]
        woke = slots_to_wake(queued, {s.index: s.labels for s in self.slots if s.parked})
        for index in woke:
            self._launch(self.slots[index])
        self._poll_wait = self.poll_interval_s if woke else min(MAX_BACKOFF_S, max(self.poll_interval_s, 2 * self._poll_wait))
        self._poll_at = self.clock() + self._poll_wait

    def _queued_labels(self, repo: str) -> Iterable[list[str]]:
        jobs, etag = self.github.queued_jobs_if_changed(repo, self._etags.get(repo))
        if etag:
            self._etags[repo] = etag
        # None: unchanged since the last poll, nothing new to wake for.
        return [list(j.get("labels", [])) for j in jobs or []]

    def _guarded(self, step: Callable[[], Any]) -> None:
        """Run one step against GitHub. Refused credentials stop the agent (retrying cannot
        help); an outage pauses it with a doubling back-off, logged once per pause."""
        try:
            step()
        except GithubError as exc:
            if exc.status in {401, 403} and "rate limit" not in str(exc).lower():
                raise CredentialsError(f"GitHub refused the agent's credentials ({exc.status}): {exc}") from None
            self._backoff = min(MAX_BACKOFF_S, max(1.0, 2 * self._backoff))
            self._pause_until = self.clock() + self._backoff
            log.warning("GitHub unavailable (%s); pausing %.0f s", exc, self._backoff)
            return
        if self._backoff:
            log.info("GitHub reachable again")
        self._backoff = 0.0


def check_user_switch(run_as: str) -> None:
    """Without root, the agent reaches the runners' user through sudo: try it once at start
    rather than see every runner fail to start."""
    try:
        argv = ["sudo", "-n", "-u", run_as, "true"]  # sudo from PATH, as start_runner calls it
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603 - fixed argv, no shell
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"cannot switch to --run-as {run_as} through sudo: {exc}") from None
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise RuntimeError(f"sudo cannot start programs as {run_as} ({said}): install deploy/runner-estate-agent.sudoers")


# ---- building the slots ---------------------------------------------------------------------


def plain_slots(count: int, host: str, prefix: str, labels: list[str]) -> list[Slot]:
    return [Slot(i, list(labels), {}, f"{prefix}{host}-s{i}") for i in range(count)]


def gpu_slots(node_slots: Iterable[NodeSlot], host: str, prefix: str, labels: list[str]) -> list[Slot]:
    return [
        Slot(s.index, list(dict.fromkeys([*labels, "gpu", *s.labels])), s.environment, f"{prefix}{host}-s{s.index}") for s in node_slots
    ]


def host_name() -> str:
    return socket.gethostname().split(".")[0].lower()


def install_signal_handlers(agent: Agent) -> None:
    def drain(signum: int, frame: Any) -> None:
        log.info("signal %d: draining", signum)
        agent.draining = True

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)


def run(agent: Agent, sleep: Callable[[float], None] = time.sleep, tick_s: float = 1.0) -> int:
    """The agent's main loop, until SIGTERM; then it drains and returns 0."""
    os.umask(0o077)
    agent.start()
    while not agent.draining:
        agent.tick()
        sleep(tick_s)
    agent.drain(sleep)
    return 0


# ---- from the command line ----------------------------------------------------------------


def build_agent(args: Any) -> Agent:
    """The agent the `agent` command's arguments describe; errors are one line."""
    import shlex

    from lambda_src.core.gpu_slots import parse_layout
    from lambda_src.core.gpus import parse_nvidia_smi_xml
    from lambda_src.core.node_slots import plan_node
    from lambda_src.host.bootstrap import download, install_runner, start_runner
    from lambda_src.host.nvidia_smi import NoGpuDriverError, read_nvidia_smi
    from lambda_src.host.runner_files import fresh_job_dir
    from lambda_src.host.slot_manager import slot_runner_dirs

    labels = list(dict.fromkeys(["self-hosted", "linux", arch_label(), *[x.strip().lower() for x in args.labels if x.strip()]]))
    gpus = []
    try:
        text = Path(args.nvidia_smi_xml).read_text(encoding="utf-8") if args.nvidia_smi_xml else read_nvidia_smi()
        gpus = parse_nvidia_smi_xml(text)
    except NoGpuDriverError:
        if args.gpu_layout:
            raise
    host, prefix = args.host or host_name(), args.name_prefix
    if args.gpu_layout:
        slots = gpu_slots(plan_node(gpus, parse_layout(args.gpu_layout)).slots, host, prefix, labels)
    else:
        shared = ["gpu", *gpus[0].labels] if gpus else []
        slots = plain_slots(args.runners, host, prefix, [*labels, *shared])

    if args.app_key_file and args.app_id is None:
        raise CredentialsError("--app-key-file needs --app-id")
    if args.token_file:
        credential = Path(args.token_file)
        read_token_file(credential, time.time())  # the right kind, the agent's own, owner-only: say so now, not at the first call
        github: GithubClient = TokenFileClient(args.api_url, args.org, 0, _no_key, token_file=credential)
    elif args.app_key_file:
        credential = Path(args.app_key_file)
        github = app_key_client(args.api_url, args.org, args.app_id, credential, args.installation_id)
    else:
        raise CredentialsError("give --token-file (a token the control plane refreshes) or --app-id with --app-key-file")

    if args.runner_command:
        command = shlex.split(args.runner_command)
        dirs: list[Path] = []
    else:
        if arch_label() == "riscv64" and not (Path(args.runner_dir) / "run.sh").exists():
            raise RuntimeError(
                f"GitHub publishes no riscv64 runner: build one and point --runner-dir at it ({args.runner_dir} has no run.sh)"
            )
        if not args.runner_sha256 and not (Path(args.runner_dir) / "run.sh").exists():
            raise RuntimeError(
                f"no runner in {args.runner_dir}: give --runner-sha256 (from the release page) so the download can be checked"
            )
        # Without a checksum the runner the operator put in --runner-dir is used (and recorded), not a download.
        template = install_runner(Path(args.runner_dir), args.runner_version, arch_label(), args.runner_sha256, download,
                                  adopt=not args.runner_sha256)  # fmt: skip
        dirs = slot_runner_dirs(template, len(slots))
        command = []

    # Jobs run as the runners' user: it must not be able to reach the agent's credential. A
    # wrong --run-as is refused here; a missing one when the agent starts, so that an agent
    # can still be described (slots, labels) without one.
    refusal = separation_refusal(args.run_as, [credential])
    if refusal and args.run_as:
        raise CredentialsError(refusal)
    if args.run_as and os.geteuid() != 0:
        check_user_switch(args.run_as)

    def launch(slot: Slot, config: str) -> RunningRunner:
        if command:
            return start_runner(command, config, args.run_as, slot.env)
        folder = fresh_job_dir(template, dirs[slot.index], args.run_as)  # the install checked, a new folder per job
        return start_runner([str(folder / "run.sh")], config, args.run_as, slot.env, cwd=folder)

    return Agent(
        github=github,
        launch=launch,
        slots=slots,
        group=args.group,
        name_prefix=f"{prefix}{host}-s",
        idle_timeout_s=args.idle_timeout,
        health_interval_s=args.health_interval,
        poll_interval_s=args.poll_interval,
        watch_repos=list(args.watch_repos),
        refusal=refusal,
    )


def app_key_client(api_url: str, org: str, app_id: int, key_file: Path, installation_id: int | None, attempts: int = 4) -> GithubClient:
    """A client minting runner-administration tokens from an App key only its owner can read."""
    check_private_file(key_file, "App key file")
    return GithubClient(api_url, org, app_id, lambda: read_private_file(key_file, "App key file"), installation_id=installation_id,
                        token_permissions=RUNNER_SCOPE, attempts=attempts)  # fmt: skip


def mint_token_file(github: GithubClient, path: Path) -> str:
    """Where the App key lives (the control plane, an admin host): mint an installation token
    scoped to runner administration and write it for one agent host, owner-only and atomically,
    in the form `read_token_file` takes. Returns its expiry. Run it every ~30 minutes and ship
    the file to the host, owned there by the agent's user."""
    token, expires_at = github.token_with_expiry()
    if not INSTALLATION_TOKEN.fullmatch(token):
        raise CredentialsError("GitHub answered with something that is not an installation token (ghs_...)")
    expires = datetime.fromtimestamp(expires_at, UTC).isoformat().replace("+00:00", "Z")
    staged = path.with_name(path.name + ".tmp")
    try:
        staged.unlink(missing_ok=True)  # whatever was left there, a link included, is never written through
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(fd, 0o600)
            json.dump({"token": token, "expires_at": expires}, out)
            out.flush()
            os.fsync(fd)
        staged.replace(path)
    except OSError as exc:
        raise CredentialsError(f"cannot write {path}: {exc.strerror}") from None
    return expires


def _no_key() -> str:
    raise CredentialsError("this agent reads tokens from its token file; it holds no App key")
