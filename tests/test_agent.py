"""`estate agent` against our loopback fake GitHub, with a fake runner program that behaves
like the real one (reads its JIT config from the environment, takes one job, exits)."""

from __future__ import annotations

import getpass
import json
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from estate.agent.daemon import (
    RUNNER_SCOPE,
    Agent,
    CredentialsError,
    RunningRunner,
    Slot,
    TokenFileClient,
    arch_label,
    check_user_switch,
    mint_token_file,
    plain_slots,
    read_token_file,
)
from estate.agent.plan import START_GRACE_S
from estate.local.fake_github import FakeGithub
from lambda_src.github.client import GithubClient
from lambda_src.host.bootstrap import start_runner
from tests.conftest import PROJECT_DIR, WORKING_HOURS
from tests.test_gpus import H100_XML, needs_capture

FAKE_RUNNER = PROJECT_DIR / "tests" / "fake_runner.py"
NOBODY = pwd.getpwnam("nobody")
RUN_AS = NOBODY.pw_name  # the runners' user in these tests: not root, not the agent's
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="playing another user (chown, setpriv) needs root")
FAKE_SUDO = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    --preserve-env=*|-n) shift ;;
    -u) printf '%s\\n' "$2" >> "$FAKE_SUDO_LOG"; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
exec "$@"
"""
LABELS = ["self-hosted", "linux", "arm64", "lab"]
PREFIX = "agent-box-s"


@pytest.fixture
def github() -> Iterator[FakeGithub]:
    fake = FakeGithub("example-org", 4321).start()
    yield fake
    fake.stop()


def launcher(github: FakeGithub, job_seconds: float = 0.1) -> Callable[[Slot, str], RunningRunner]:
    def launch(slot: Slot, config: str) -> RunningRunner:
        env = {**slot.env, "FAKE_GITHUB_URL": github.url, "FAKE_JOB_SECONDS": str(job_seconds)}
        return start_runner([sys.executable, str(FAKE_RUNNER)], config, None, env)

    return launch


def make_agent(github: FakeGithub, slots: int = 2, job_seconds: float = 0.1, **kw: object) -> Agent:
    client = GithubClient(github.url, "example-org", 4321, lambda: github.private_key_pem, token_permissions=RUNNER_SCOPE,
                          sleep=lambda s: None, attempts=2)  # fmt: skip
    settings: dict[str, object] = {"idle_timeout_s": 60.0, "health_interval_s": 0.1, "poll_interval_s": 0.1, **kw}
    return Agent(client, launcher(github, job_seconds), plain_slots(slots, "box", "agent-", LABELS), PREFIX, **settings)  # type: ignore[arg-type]


class MovableClock:
    """Real time plus an offset a test moves forward (a runner that has run for minutes)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def until(agent: Agent, done: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        agent.tick()
        if done():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def online(github: FakeGithub) -> list[str]:
    return sorted(r.name for r in github.runners.values() if r.status == "online")


def stop(agent: Agent) -> None:
    agent.drain(timeout_s=10)


def test_slots_register_as_ephemeral_runners_with_detected_labels_and_a_scoped_token(github: FakeGithub) -> None:
    agent = make_agent(github, slots=3)
    agent.start()
    until(agent, lambda: len(online(github)) == 3)
    assert all(name.startswith(PREFIX) for name in online(github))
    assert {tuple(r.labels) for r in github.runners.values()} == {tuple(LABELS)}
    assert github.token_requests == [{"permissions": RUNNER_SCOPE}]  # runner administration only, not the App's whole grant
    stop(agent)


def test_each_job_gets_a_fresh_runner_in_its_slot(github: FakeGithub) -> None:
    agent = make_agent(github, slots=1)
    agent.start()
    until(agent, lambda: len(online(github)) == 1)
    first = online(github)[0]
    job = github.queue_job(LABELS[:2], send=False)
    until(agent, lambda: github.jobs[job.id].status == "completed" and len(online(github)) == 1 and online(github)[0] != first)
    assert agent.slots[0].jobs == 1
    stop(agent)


def test_an_idle_slot_deregisters_and_comes_back_for_a_queued_job(github: FakeGithub) -> None:
    agent = make_agent(github, slots=2, idle_timeout_s=0.5, watch_repos=["example-org/app"])
    agent.start()
    until(agent, lambda: len(online(github)) == 2)
    until(agent, lambda: all(s.parked for s in agent.slots))
    assert github.runners == {}
    assert all(s.process is None for s in agent.slots)

    until(agent, lambda: github.not_modified > 0)  # quiet polls are conditional requests
    job = github.queue_job(["self-hosted", "lab"], send=False)
    until(agent, lambda: github.jobs[job.id].status == "completed")
    assert sum(not s.parked for s in agent.slots) >= 1
    stop(agent)


def test_a_runner_that_dies_mid_job_is_replaced_and_its_registration_cleaned_once_github_lets_go(github: FakeGithub) -> None:
    agent = make_agent(github, slots=1)
    agent.start()
    until(agent, lambda: len(online(github)) == 1)
    dead = online(github)[0]
    github.queue_job([*LABELS[:2], "crash"], send=False)
    github.runner_named(dead).labels.append("crash")
    until(agent, lambda: agent.slots[0].jobs == 1 and any(name != dead for name in online(github)))
    assert github.runner_named(dead).busy  # GitHub has not failed its job yet: it cannot be deleted

    stuck = github.runner_named(dead)
    stuck.busy, stuck.status = False, "offline"  # GitHub fails the job
    until(agent, lambda: all(r.name != dead for r in github.runners.values()))
    stop(agent)


def test_a_busy_runner_that_paged_listings_miss_keeps_its_job(github: FakeGithub) -> None:
    """An org with hundreds of runners; ephemeral ones are deleted while the agent's listing
    pages, so its own runner slides onto a page already read and is missing from the listing,
    three times. It is running a job: the agent asks GitHub about it and leaves it alone."""
    others = {github.add_runner(f"org-runner-{i}", ["self-hosted"], busy=i % 2 == 0).id for i in range(350)}
    clock = MovableClock()
    agent = make_agent(github, slots=1, job_seconds=2.0, clock=clock)
    agent.start()
    ours = agent.slots[0].runner_id
    assert ours is not None
    until(agent, lambda: github.runners[ours].status == "online")
    job = github.queue_job(LABELS[:2], send=False)
    until(agent, lambda: github.jobs[job.id].status == "in_progress")
    clock.offset = 10 * START_GRACE_S  # the runner is long past its start grace

    missed: list[int] = []

    def churn(page: int) -> None:
        order = sorted(github.runners)
        at = order.index(ours) if ours in order else -1
        if at >= 100 and page == at // 100:  # the page before ours was just served
            older = [rid for rid in order[:at] if github.runners[rid].name.startswith("org-runner-")]
            for rid in older[: at % 100 + 1]:  # finished elsewhere: ours moves onto the served page
                del github.runners[rid]
            missed.append(page)

    github.between_runner_pages = churn
    until(agent, lambda: github.jobs[job.id].status == "completed" and agent.slots[0].jobs == 1)
    assert missed == [3, 2, 1]
    assert ("GET", f"/orgs/example-org/actions/runners/{ours}") in github.calls  # confirmed by id, not by absence
    deleted = {int(path.rsplit("/", 1)[1]) for method, path in github.calls if method == "DELETE"}
    assert ours in deleted
    assert not deleted & others
    stop(agent)


def test_registrations_left_by_an_earlier_run_are_deleted_at_start(github: FakeGithub) -> None:
    client = GithubClient(github.url, "example-org", 4321, lambda: github.private_key_pem)
    client.fresh_jitconfig(f"{PREFIX}0-old", "Default", LABELS)  # a crash or reboot left this behind
    client.fresh_jitconfig("someone-elses-runner", "Default", LABELS)
    agent = make_agent(github, slots=1)
    agent.start()
    names = {r.name for r in github.runners.values()}
    assert f"{PREFIX}0-old" not in names
    assert "someone-elses-runner" in names  # never touch runners that are not ours
    stop(agent)


def test_a_github_outage_pauses_with_back_off_and_recovers(github: FakeGithub) -> None:
    agent = make_agent(github, slots=2)
    github.fail_next(502, "/actions/runners", times=6)
    agent.start()
    assert agent._backoff >= 1.0  # paused, not spinning
    calls = len(github.calls)
    for _ in range(5):
        agent.tick()
    assert len(github.calls) - calls <= 2  # at most the retry of one call while paused
    agent._pause_until = 0.0  # the pause ends
    until(agent, lambda: len(online(github)) == 2)
    assert agent._backoff == 0.0
    stop(agent)


def test_refused_credentials_stop_the_agent_without_retrying(github: FakeGithub) -> None:
    agent = make_agent(github, slots=2)
    agent.github.private_key = lambda: FakeGithub("x", 1).private_key_pem  # a key GitHub does not know
    with pytest.raises(CredentialsError, match=r"refused the agent's credentials \(401\)"):
        agent.start()
    assert github.calls_to("/access_tokens") + github.calls_to("/installation") == 1


# ---- credentials on disk --------------------------------------------------------------------


NOW = WORKING_HOURS.timestamp()  # the clock the credential checks are told


def token_file(tmp_path: Path, token: str, minutes: float, mode: int = 0o600, now: float = NOW) -> Path:
    path = tmp_path / "token.json"
    expires = datetime.fromtimestamp(now + minutes * 60, UTC).isoformat().replace("+00:00", "Z")
    path.write_text(json.dumps({"token": token, "expires_at": expires}), encoding="utf-8")
    path.chmod(mode)
    return path


def test_token_files_hold_short_lived_installation_tokens_only(tmp_path: Path) -> None:
    assert read_token_file(token_file(tmp_path, "ghs_abc", 55), NOW) == "ghs_abc"
    with pytest.raises(CredentialsError, match="personal or OAuth token"):
        read_token_file(token_file(tmp_path, "ghp_abc", 55), NOW)
    with pytest.raises(CredentialsError, match="installation tokens live one hour"):
        read_token_file(token_file(tmp_path, "ghs_abc", 24 * 60), NOW)
    with pytest.raises(CredentialsError, match="expired"):
        read_token_file(token_file(tmp_path, "ghs_abc", -1), NOW)
    with pytest.raises(CredentialsError, match=r"readable by group or others \(mode 644\); chmod 600"):
        read_token_file(token_file(tmp_path, "ghs_abc", 55, mode=0o644), NOW)


@pytest.mark.parametrize(
    "token",
    ["github_pat_11AB", "gho_abc", "ghu_abc", "ghr_abc", "ghx_abc", "v1.0123456789abcdef", "0123456789abcdef", "ghs_abc\nX-Evil: 1", ""],
)
def test_only_installation_tokens_are_accepted_whatever_else_a_token_file_holds(tmp_path: Path, token: str) -> None:
    """An allow-list (`ghs_`), not a list of the kinds we happen to know to refuse."""
    with pytest.raises(CredentialsError, match="installation token"):
        read_token_file(token_file(tmp_path, token, 55), NOW)


@needs_root
def test_a_token_file_the_agent_does_not_own_is_refused(tmp_path: Path) -> None:
    path = token_file(tmp_path, "ghs_abc", 55)
    os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)  # whoever owns it can rewrite or chmod it
    with pytest.raises(CredentialsError, match=f"belongs to uid {NOBODY.pw_uid}"):
        read_token_file(path, NOW)


def test_the_expiry_a_token_file_claims_is_not_believed_github_decides(github: FakeGithub, tmp_path: Path) -> None:
    """The file is written by whoever minted the token: it may say 55 minutes of a token
    that lives for weeks. GitHub's answers carry the token's real expiry."""
    github.tokens.add("ghs_longlived")
    github.token_expiry["ghs_longlived"] = github.clock() + 30 * 86400
    written = token_file(tmp_path, "ghs_longlived", 55, now=github.clock())
    client = TokenFileClient(github.url, "example-org", 0, lambda: "", clock=github.clock, token_file=written)
    agent = Agent(client, launcher(github), plain_slots(1, "box", "agent-", LABELS), PREFIX)
    with pytest.raises(CredentialsError, match="GitHub says the token expires"):
        agent.start()
    assert github.runners == {}

    revoked = token_file(tmp_path, "ghs_revoked", 55, now=github.clock())
    gone = TokenFileClient(github.url, "example-org", 0, lambda: "", clock=github.clock, token_file=revoked)
    with pytest.raises(CredentialsError, match=r"refused the agent's credentials \(401\)"):
        Agent(gone, launcher(github), plain_slots(1, "box", "agent-", LABELS), PREFIX).start()


def test_a_minted_token_file_is_owner_only_and_never_written_through_a_planted_link(github: FakeGithub, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep", encoding="utf-8")
    out = tmp_path / "token.json"
    (tmp_path / "token.json.tmp").symlink_to(victim)  # left where the writer stages its file
    mint_token_file(GithubClient(github.url, "example-org", 4321, lambda: github.private_key_pem, token_permissions=RUNNER_SCOPE), out)
    assert victim.read_text(encoding="utf-8") == "keep"
    assert not out.is_symlink()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert read_token_file(out, github.clock()).startswith("ghs_")  # what agent-token writes, the agent reads


def agent_command(github: FakeGithub, key: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "estate", "agent", "--org", "example-org", "--api-url", github.url, "--app-id", "4321",
            "--app-key-file", str(key), "--host", "box", "--runner-command", f"{sys.executable} {FAKE_RUNNER}", *extra]  # fmt: skip


@pytest.fixture
def fake_sudo(github: FakeGithub, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A stand-in for sudo on PATH: it records the user asked for, then runs the command as
    this test's user (the runner program needs this test's Python, which other users cannot
    reach here). What that user could do is played separately, with setpriv."""
    bin_dir, log = tmp_path / "bin", tmp_path / "sudo.log"
    bin_dir.mkdir()
    sudo = bin_dir / "sudo"
    sudo.write_text(FAKE_SUDO, encoding="utf-8")
    sudo.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_SUDO_LOG": str(log), "FAKE_GITHUB_URL": github.url}
    return env, log


def test_a_world_readable_app_key_is_refused_with_one_line(github: FakeGithub, tmp_path: Path) -> None:
    key = tmp_path / "app.pem"
    key.write_text(github.private_key_pem, encoding="utf-8")
    key.chmod(0o644)
    done = subprocess.run(agent_command(github, key), capture_output=True, text=True, timeout=60, check=False, cwd=PROJECT_DIR)
    assert done.returncode == 6
    assert done.stderr.strip().splitlines()[-1].startswith("error: App key file")
    assert github.runners == {}


def private_key(github: FakeGithub, tmp_path: Path) -> Path:
    key = tmp_path / "app.pem"
    key.write_text(github.private_key_pem, encoding="utf-8")
    key.chmod(0o600)
    return key


def test_the_agent_starts_no_runner_without_a_user_of_their_own(github: FakeGithub, tmp_path: Path) -> None:
    """Jobs running as the agent's user could read its credential and register runners."""
    done = subprocess.run(agent_command(github, private_key(github, tmp_path)), capture_output=True, text=True, timeout=60,
                          check=False, cwd=PROJECT_DIR)  # fmt: skip
    assert done.returncode == 6
    assert "--run-as" in done.stderr.strip().splitlines()[-1]
    assert github.calls == []  # refused before it asked GitHub for anything


@pytest.mark.parametrize("run_as", [getpass.getuser(), "root", "no-such-user-here"])
def test_runners_never_run_as_root_or_as_the_agents_own_user(github: FakeGithub, tmp_path: Path, run_as: str) -> None:
    command = agent_command(github, private_key(github, tmp_path), "--run-as", run_as)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, cwd=PROJECT_DIR)
    assert done.returncode == 6
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("error: --run-as")
    assert github.calls == []


@needs_root
def test_a_credential_the_runners_user_owns_is_refused(github: FakeGithub, tmp_path: Path) -> None:
    key = private_key(github, tmp_path)
    os.chown(key, NOBODY.pw_uid, NOBODY.pw_gid)
    done = subprocess.run(agent_command(github, key, "--run-as", RUN_AS), capture_output=True, text=True, timeout=60, check=False,
                          cwd=PROJECT_DIR)  # fmt: skip
    assert done.returncode == 6
    assert f"belongs to uid {NOBODY.pw_uid}" in done.stderr


def test_sigterm_drains_running_jobs_finish_and_every_slot_is_deregistered(
    github: FakeGithub, tmp_path: Path, fake_sudo: tuple[dict[str, str], Path]
) -> None:
    env, sudo_log = fake_sudo
    env["FAKE_JOB_SECONDS"] = "2"
    command = agent_command(github, private_key(github, tmp_path), "--runners", "3", "--labels", "lab", "--run-as", RUN_AS)
    agent = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(online(github)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(online(github)) == 3
        job = github.queue_job(["self-hosted", "lab"], send=False)
        while github.jobs[job.id].status != "in_progress" and time.monotonic() < deadline:
            time.sleep(0.05)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    finally:
        agent.kill()
    assert github.jobs[job.id].status == "completed"  # the running job finished
    assert github.runners == {}  # and nothing is left registered
    assert sudo_log.read_text(encoding="utf-8").split() == [RUN_AS] * 3  # every runner started as the runners' user


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) plays the runners' user")
def test_a_job_on_an_agent_host_cannot_read_the_agents_token_or_signal_it(
    github: FakeGithub, tmp_path: Path, fake_sudo: tuple[dict[str, str], Path]
) -> None:
    """The agent accepts its token file and starts its runners as RUN_AS; a job is whatever
    RUN_AS can do. Played here with setpriv: read the token, stop the agent."""
    env, _ = fake_sudo
    tmp_path.chmod(0o755)  # only the token file's own mode and owner protect it
    token = tmp_path / "token.json"
    mint_token_file(GithubClient(github.url, "example-org", 4321, lambda: github.private_key_pem, token_permissions=RUNNER_SCOPE), token)
    command = [sys.executable, "-m", "estate", "agent", "--org", "example-org", "--api-url", github.url, "--token-file", str(token),
               "--host", "box", "--run-as", RUN_AS, "--runner-command", f"{sys.executable} {FAKE_RUNNER}"]  # fmt: skip
    agent = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(online(github)) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(online(github)) == 1
        as_job = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups", "--"]
        read = subprocess.run([*as_job, "cat", str(token)], capture_output=True, text=True, timeout=10, check=False)
        assert read.returncode != 0
        assert "Permission denied" in read.stderr
        signal_it = subprocess.run([*as_job, "kill", "-TERM", str(agent.pid)], capture_output=True, timeout=10, check=False)
        assert signal_it.returncode != 0
        assert agent.poll() is None
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    finally:
        agent.kill()


def test_the_systemd_unit_runs_the_agent_and_its_runners_as_different_users() -> None:
    text = (PROJECT_DIR / "deploy" / "runner-estate-agent.service").read_text(encoding="utf-8").replace("\\\n", " ")
    unit = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    argv = shlex.split(unit["ExecStart"])
    run_as = argv[argv.index("--run-as") + 1]
    assert unit["User"] not in {"root", run_as}
    assert run_as != "root"
    assert "--token-file" in argv
    assert unit.get("NoNewPrivileges", "false") != "true"  # the agent switches to the runners' user through sudo
    sudoers = (PROJECT_DIR / "deploy" / "runner-estate-agent.sudoers").read_text(encoding="utf-8")
    rules = [line.split() for line in sudoers.splitlines() if line.strip() and not line.startswith(("#", "Defaults"))]
    assert rules
    assert all(rule[0] == unit["User"] and rule[1] == f"ALL=({run_as})" for rule in rules)  # the runners' user only, never root


def test_the_control_plane_mints_a_scoped_token_file_that_the_agent_runs_on(github: FakeGithub, tmp_path: Path) -> None:
    key = tmp_path / "app.pem"
    key.write_text(github.private_key_pem, encoding="utf-8")
    key.chmod(0o600)
    out = tmp_path / "token.json"
    minted = subprocess.run(
        [sys.executable, "-m", "estate", "agent-token", "--org", "example-org", "--app-id", "4321", "--app-key-file", str(key),
         "--api-url", github.url, "--out", str(out)],
        capture_output=True, text=True, timeout=60, check=False, cwd=PROJECT_DIR,
    )  # fmt: skip
    assert minted.returncode == 0, minted.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert github.token_requests == [{"permissions": RUNNER_SCOPE}]

    client = TokenFileClient(github.url, "example-org", 0, lambda: "", token_file=out)
    agent = Agent(client, launcher(github), plain_slots(1, "box", "agent-", LABELS), PREFIX, health_interval_s=0.1)
    agent.start()
    until(agent, lambda: len(online(github)) == 1)
    stop(agent)


@needs_capture
def test_gpus_and_architecture_become_labels_and_each_gpu_slot_is_pinned(tmp_path: Path) -> None:
    from estate.agent.daemon import build_agent
    from estate.cli import build_parser

    key = tmp_path / "app.pem"
    key.write_text("unused", encoding="utf-8")
    key.chmod(0o600)
    args = build_parser().parse_args(
        ["agent", "--org", "example-org", "--app-id", "1", "--app-key-file", str(key), "--host", "lab", "--labels", "Lab",
         "--gpu-layout", "1x1", "--nvidia-smi-xml", str(H100_XML), "--runner-command", "true"]
    )  # fmt: skip
    agent = build_agent(args)
    (slot,) = agent.slots
    assert slot.labels[:4] == ["self-hosted", "linux", arch_label(), "lab"]
    assert {"gpu", "h100", "sm90", "1gpu"} <= set(slot.labels)
    assert slot.env["CUDA_VISIBLE_DEVICES"] == "GPU-37a94c4f-bf3d-cf9f-3dee-8246d608ab49"
    assert agent.name_prefix == "agent-lab-s"


def test_a_runner_download_without_a_checksum_is_refused(tmp_path: Path) -> None:
    from estate.agent.daemon import build_agent
    from estate.cli import build_parser

    key = tmp_path / "app.pem"
    key.write_text("unused", encoding="utf-8")
    key.chmod(0o600)
    args = build_parser().parse_args(
        ["agent", "--org", "o", "--app-id", "1", "--app-key-file", str(key), "--runner-dir", str(tmp_path / "none")]
    )
    with pytest.raises(RuntimeError, match="give --runner-sha256"):
        build_agent(args)


def test_an_agent_without_root_checks_once_that_sudo_lets_it_become_the_runners_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusing = tmp_path / "bin" / "sudo"
    refusing.parent.mkdir()
    refusing.write_text("#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n", encoding="utf-8")
    refusing.chmod(0o755)
    monkeypatch.setenv("PATH", f"{refusing.parent}:{os.environ['PATH']}")
    with pytest.raises(RuntimeError, match=r"sudo cannot start programs as runner \(sudo: a password is required\)"):
        check_user_switch("runner")
