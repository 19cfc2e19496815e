"""A job plays against its host: on a capacity-block node it runs on one GPU slot, on an
ordinary host it is the one job. Whatever it runs, it must not reach another slot's runner
config or folder, the instance role's credentials (the metadata service), or root (sudo,
administrative groups). Real useradd, iptables and sudo cannot run here: the user-data that
sets them up is rendered and read, and the slot manager's commands are recorded."""

from __future__ import annotations

import json
import re
import shlex
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from estate.config.loader import load_pool
from estate.config.pool import Pool
from estate.derive.host_user_data import IMDS_ADDRESSES, INSTALL_DIR, node_user_data, user_data
from estate.local.aws_models import checked
from lambda_src.core.gpu_slots import NodeSlot, assign_slots, parse_layout
from lambda_src.core.job_isolation import slot_user
from lambda_src.host import slot_manager
from lambda_src.host.common import JIT_ENV, runner_argv
from lambda_src.host.slot_manager import JobSlots, SlotManager, SlotPorts
from tests.conftest import H100_POOL, MINIMAL_POOL, write_pool
from tests.test_runner_install import SHA, installed

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/runner-estate-prod-gpu-h100-cb-events"
PREFIX = "/runner-estate/prod/jit/"


def node_script(tmp_path: Path, extra: str = "") -> str:
    text = H100_POOL.replace("runners_maximum_count: 2", "runners_maximum_count: 2\n  runner_run_as: ubuntu")
    pool, _ = load_pool(write_pool(tmp_path, "gpu-h100-cb", text + extra))
    return node_user_data(pool, PREFIX, "2.329.0", SHA, QUEUE)


def host_script(tmp_path: Path, extra: str = "", run_as: str = "ubuntu") -> tuple[str, Pool]:
    text = MINIMAL_POOL.replace("runners_maximum_count: 4", f"runners_maximum_count: 4\n  runner_run_as: {run_as}") + extra
    pool, _ = load_pool(write_pool(tmp_path, "cpu", text))
    return user_data(pool, PREFIX, "2.329.0", SHA), pool


def before_any_runner(script: str) -> list[str]:
    """The shell lines that run before the host program (and so before any runner) starts."""
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"cd {INSTALL_DIR} && "))
    return [line for line in lines[:start] if not line.startswith("BUNDLE") and len(line) < 1000]


def imds_rules(lines: list[str]) -> dict[str, list[str]]:
    """address -> the words of the rule that covers it, from `iptables ... -I OUTPUT ...` lines."""
    found = {}
    for line in lines:
        for command in re.split(r"\s*(?:&&|\|\|)\s*", line):
            words = shlex.split(command) if command.startswith(("iptables", "ip6tables")) else []
            if "-d" in words:
                found[words[words.index("-d") + 1]] = words
    return found


# ---- the metadata service (the role's credentials) ----------------------------------------------


@pytest.mark.parametrize("kind", ["node", "host"])
def test_only_root_may_reach_the_instance_metadata_service_from_before_any_runner_starts(tmp_path: Path, kind: str) -> None:
    script = node_script(tmp_path) if kind == "node" else host_script(tmp_path)[0]
    rules = imds_rules(before_any_runner(script))
    assert set(rules) == {address for _, address in IMDS_ADDRESSES} == {"169.254.169.254/32", "fd00:ec2::254/128"}
    for words in rules.values():
        assert words[:5] == [words[0], "-w", "-I", "OUTPUT", "1"]  # first in the chain
        assert words[5:] == [words[5], words[6], "-m", "owner", "!", "--uid-owner", "0", "-j", "REJECT"]


@pytest.mark.parametrize("kind", ["node", "host"])
def test_a_host_that_cannot_block_the_metadata_service_starts_no_runner(tmp_path: Path, kind: str) -> None:
    script = node_script(tmp_path) if kind == "node" else host_script(tmp_path)[0]
    (line,) = [line for line in before_any_runner(script) if line.startswith("iptables")]
    assert line.endswith("|| fail 'cannot keep jobs from the instance metadata service'")
    (fail,) = [line for line in before_any_runner(script) if line.startswith("fail()")]
    assert "exit 1" in fail
    assert ("shutdown -h now" in fail) == (kind == "host")  # a node stays up for inspection


# ---- users: one per slot, unprivileged --------------------------------------------------------


def job_user_lines(script: str) -> list[str]:
    return [line for line in before_any_runner(script) if "useradd" in line or "sudoers" in line]


def test_each_slot_runs_as_its_own_unprivileged_user_without_sudo(tmp_path: Path) -> None:
    script = node_script(tmp_path)
    users = [slot_user("ubuntu", i) for i in range(5)]  # 1x4+4x1
    assert users == ["ubuntu-s0", "ubuntu-s1", "ubuntu-s2", "ubuntu-s3", "ubuntu-s4"]
    accounts, sudoers = job_user_lines(script)
    assert accounts == (
        f'for u in {" ".join(users)}; do id -u "$u" >/dev/null 2>&1 || useradd --create-home --user-group --shell /bin/bash "$u"'
        ' || fail "cannot create $u"; usermod -G \'\' "$u" || fail "cannot confine $u"; done'
    )  # in no group but its own: not sudo, adm, docker, lxd ...
    assert sudoers == (
        "printf '%s ALL=(ALL:ALL) !ALL\\n' " + " ".join(users) + " >/etc/sudoers.d/zz-runner-estate"
        " && chmod 440 /etc/sudoers.d/zz-runner-estate || fail 'cannot deny sudo to job users'"
    )  # read last of sudoers.d, so it overrides an image's grant (cloud-init's ubuntu NOPASSWD)
    assert "--run-as ubuntu " in script  # the slot manager runs slot N as ubuntu-sN


def test_an_ordinary_hosts_job_user_is_confined_the_same_way(tmp_path: Path) -> None:
    script, _ = host_script(tmp_path, run_as="ec2-user")
    accounts, sudoers = job_user_lines(script)
    assert "for u in ec2-user;" in accounts
    assert "usermod -G '' \"$u\"" in accounts
    assert sudoers.startswith("printf '%s ALL=(ALL:ALL) !ALL\\n' ec2-user >")


def test_sudo_and_groups_are_explicit_opt_outs_reported_by_validate(tmp_path: Path) -> None:
    extra = "estate:\n  allow_job_sudo: true\n  job_groups: [docker, video]\n"
    script, pool = host_script(tmp_path, extra=extra)
    accounts, sudoers = job_user_lines(script)
    assert 'usermod -G "$(getent group docker video | cut -d: -f1 | paste -sd,)" "$u"' in accounts
    assert sudoers.startswith("printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\\n' ubuntu >")
    warnings = {w.key: w.message for w in pool.check()}
    assert warnings["estate.allow_job_sudo"].startswith("security opt-out: jobs get passwordless sudo")
    assert warnings["estate.job_groups"].startswith("security opt-out: group docker")
    assert "video" not in warnings["estate.job_groups"]  # an unprivileged group is no opt-out


def test_the_example_estate_gives_jobs_neither_sudo_nor_groups() -> None:
    from estate.config.loader import load_estate
    from tests.conftest import EXAMPLE_CONFIGS

    estate = load_estate([EXAMPLE_CONFIGS])
    assert not [w for w in estate.warnings if w.key in {"estate.allow_job_sudo", "estate.job_groups"}]
    for pool in estate.pools:
        assert "!ALL" in user_data(pool, PREFIX, "2.329.0", SHA)


# ---- a job on slot 0 against slot 1 -----------------------------------------------------------


class Host:
    """Records what the slot manager asks of the node: folders given away, commands, runners."""

    def __init__(self) -> None:
        self.chowned: list[tuple[Path, str]] = []
        self.commands: list[list[str]] = []
        self.launched: list[dict[str, Any]] = []

    def chown(self, path: Path, user: str) -> None:
        self.chowned.append((path, user))

    def run(self, argv: list[str]) -> int:
        self.commands.append(argv)
        return 1 if argv[0] == "pkill" else 0  # no process left

    def launch(self, command: list[str], config: str, user: str | None, env: dict[str, str] | None, cwd: Path | None) -> Any:
        self.launched.append({"command": command, "config": config, "user": user, "env": dict(env or {}), "cwd": cwd})

        class Done:
            def poll(self) -> int | None:
                return 0

        return Done()


def two_slot_node(tmp_path: Path) -> tuple[JobSlots, Host, list[NodeSlot]]:
    install = installed(tmp_path)
    host = Host()
    slots = assign_slots(parse_layout("2x4"), list(range(8)), [f"GPU-{i}" for i in range(8)], ("h100", "sm90"))
    seats = JobSlots.for_node(install, "ubuntu", len(slots), chown=host.chown, run=host.run, launch=host.launch)
    return seats, host, slots


def test_a_job_on_one_slot_cannot_reach_another_slots_config_folder_or_processes(tmp_path: Path) -> None:
    seats, host, slots = two_slot_node(tmp_path)
    seats.start(slots[0], "config-for-slot-0")
    seats.start(slots[1], "config-for-slot-1")

    job0, job1 = host.launched
    assert (job0["user"], job1["user"]) == ("ubuntu-s0", "ubuntu-s1")
    assert job0["config"] == "config-for-slot-0"  # only its own config, and only in its environment
    assert "config-for-slot-1" not in json.dumps(job0, default=str)
    assert job0["env"]["CUDA_VISIBLE_DEVICES"] == "GPU-0,GPU-1,GPU-2,GPU-3"

    folder0, folder1 = job0["cwd"], job1["cwd"]
    assert folder0 != folder1
    assert stat.S_IMODE(folder0.stat().st_mode) == stat.S_IMODE(folder1.stat().st_mode) == 0o700  # closed to other users
    assert {user for path, user in host.chowned if folder0 in (path, *path.parents)} == {"ubuntu-s0"}
    assert {user for path, user in host.chowned if folder1 in (path, *path.parents)} == {"ubuntu-s1"}

    # Slot 0's job ends: only its user's processes and its own folder go; slot 1 runs on untouched.
    seats.tidy(0)
    assert ["pkill", "-KILL", "-u", "ubuntu-s0"] in host.commands
    assert not any("ubuntu-s1" in argv for argv in host.commands)
    assert not folder0.exists()
    assert (folder1 / "run.sh").exists()


def test_a_slots_config_is_read_by_the_root_slot_manager_for_that_slot_only() -> None:
    reads: list[str] = []

    class Ssm:
        def call(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
            checked("ssm", action, body)
            reads.append(f"{action} {body['Name']}")
            return {"Parameter": {"Value": "config"}}

    fetch = slot_manager.ssm_config_fetcher(Ssm(), PREFIX, "i-0123456789abcdef0")  # type: ignore[arg-type]
    assert fetch(1) == "config"
    assert reads == [f"GetParameter {PREFIX}i-0123456789abcdef0/s1", f"DeleteParameter {PREFIX}i-0123456789abcdef0/s1"]


def test_a_slot_is_tidied_after_each_job_before_its_next_config_is_fetched(tmp_path: Path) -> None:
    events: list[str] = []
    slots = assign_slots(parse_layout("1x8"), list(range(8)), [f"GPU-{i}" for i in range(8)], ("h100", "sm90"))
    configs = ["first", "second"]

    def fetch(index: int) -> str | None:
        events.append("fetch")
        return configs.pop(0) if configs else None

    class Finished:
        def poll(self) -> int | None:
            return 0

    def start(slot: NodeSlot, config: str) -> Finished:
        events.append(f"start {config}")
        return Finished()

    ports = SlotPorts(fetch, start, lambda kind, slot, why: events.append(kind), lambda: {}, tidy=lambda index: events.append("tidy"))
    manager = SlotManager(slots, ports)
    for _ in range(3):
        manager.tick()
    assert events == ["fetch", "start first", "tidy", "slot-free", "fetch", "start second", "tidy", "slot-free", "fetch"]


def test_a_slot_that_cannot_be_tidied_leaves_rotation(tmp_path: Path) -> None:
    reports: list[tuple[str, int, str]] = []
    slots = assign_slots(parse_layout("1x8"), list(range(8)), [f"GPU-{i}" for i in range(8)], ("h100", "sm90"))
    configs = ["first", "second"]

    class Finished:
        def poll(self) -> int | None:
            return 0

    def tidy(index: int) -> None:
        raise RuntimeError("processes of ubuntu-s0 outlive 50 rounds of pkill")

    fetch: Callable[[int], str | None] = lambda index: configs.pop(0) if configs else None  # noqa: E731
    ports = SlotPorts(fetch, lambda slot, config: Finished(), lambda k, s, why: reports.append((k, s, why)), lambda: {}, tidy=tidy)
    manager = SlotManager(slots, ports)
    manager.tick()
    manager.tick()
    assert reports == [("slot-faulty", 0, "not tidied after its job: processes of ubuntu-s0 outlive 50 rounds of pkill")]
    assert configs == ["second"]  # its next config is never fetched


def test_the_runner_a_slot_starts_gets_no_aws_credentials_from_the_slot_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session")
    seen = tmp_path / "env.json"
    from lambda_src.host.common import start_runner

    script = f"import json, os; json.dump(dict(os.environ), open({str(seen)!r}, 'w'))"
    assert start_runner([sys.executable, "-c", script], "config", None, {"CUDA_VISIBLE_DEVICES": "GPU-0"}).wait() == 0
    env = json.loads(seen.read_text())
    assert env[JIT_ENV] == "config"
    assert not [key for key in env if key.startswith("AWS_")]


def test_the_node_starts_each_slot_as_its_own_user_through_sudo() -> None:
    argv = runner_argv(["/opt/actions-runner-s1/run.sh"], "ubuntu-s1", ["CUDA_VISIBLE_DEVICES"])
    assert argv == ["sudo", f"--preserve-env={JIT_ENV},CUDA_VISIBLE_DEVICES", "-u", "ubuntu-s1", "/opt/actions-runner-s1/run.sh"]
