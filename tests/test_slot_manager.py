"""The node's slot manager with real runner processes (a fake runner program that reads its
JIT config from the environment, does its one job and exits) and fake control-plane ports."""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from pathlib import Path

import pytest

from lambda_src.core.gpu_slots import NodeSlot, assign_slots, parse_layout
from lambda_src.host import slot_manager
from lambda_src.host.bootstrap import JIT_ENV, start_runner
from lambda_src.host.nvidia_smi import NoGpuDriverError
from lambda_src.host.runner_files import RunnerTamperedError
from lambda_src.host.slot_manager import RunningRunner, SlotManager, SlotPorts

FAKE_RUNNER = f"""
import json, os, sys, time
config = json.loads(os.environ["{JIT_ENV}"])
with open(config["log"], "a") as log:
    log.write(json.dumps({{"name": config["name"], "argv": sys.argv[1:], "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                          "nvidia": os.environ.get("NVIDIA_VISIBLE_DEVICES")}}) + "\\n")
time.sleep(config.get("seconds", 0))
sys.exit(config.get("exit", 0))
"""

UUIDS = [f"GPU-{i}" for i in range(8)]


class Node:
    """Fake control-plane side: per-slot config queues and the reports the node sends."""

    def __init__(self, tmp_path: Path, layout: str = "1x4+4x1") -> None:
        self.script = tmp_path / "run.py"
        self.script.write_text(FAKE_RUNNER, encoding="utf-8")
        self.log = tmp_path / "runs.jsonl"
        self.slots = assign_slots(parse_layout(layout), list(range(8)), UUIDS, ("h100", "sm90"))
        self.configs: dict[int, deque[str]] = {s.index: deque() for s in self.slots}
        self.reports: list[tuple[str, int, str]] = []
        self.faults: dict[str, str] = {}
        self.fetches: dict[int, int] = dict.fromkeys(self.configs, 0)

    def give(self, slot: int, name: str, seconds: float = 0.0, code: int = 0) -> None:
        self.configs[slot].append(json.dumps({"name": name, "log": str(self.log), "seconds": seconds, "exit": code}))

    def fetch(self, slot: int) -> str | None:
        self.fetches[slot] += 1
        return self.configs[slot].popleft() if self.configs[slot] else None

    def start(self, slot: NodeSlot, config: str) -> RunningRunner:
        return start_runner([sys.executable, str(self.script)], config, None, slot.environment)

    def health(self) -> dict[str, str]:
        return dict(self.faults)

    def manager(self) -> SlotManager:
        ports = SlotPorts(self.fetch, self.start, lambda kind, slot, why: self.reports.append((kind, slot, why)), self.health)
        return SlotManager(self.slots, ports)

    def runs(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()] if self.log.exists() else []


def settle(manager: SlotManager, until: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        manager.tick()
        if callable(until) and until():
            return
        time.sleep(0.02)
    raise AssertionError("the slots did not settle")


def test_each_slot_runs_its_runner_on_its_own_gpus_and_refills_after_every_job(tmp_path: Path) -> None:
    node = Node(tmp_path)
    for slot in range(5):
        node.give(slot, f"runner-s{slot}")
    manager = node.manager()
    settle(manager, lambda: len([r for r in node.reports if r[0] == "slot-free"]) == 5)

    runs = {r["name"]: r for r in node.runs()}
    assert runs["runner-s0"]["cuda"] == "GPU-0,GPU-1,GPU-2,GPU-3"
    assert runs["runner-s0"]["nvidia"] == "GPU-0,GPU-1,GPU-2,GPU-3"
    assert [runs[f"runner-s{i}"]["cuda"] for i in range(1, 5)] == ["GPU-4", "GPU-5", "GPU-6", "GPU-7"]
    assert all(r["argv"] == [] for r in runs.values())  # the config never travels on a command line

    # A fresh config after the job: the slot runs again. None (the block drains): it waits.
    node.give(2, "runner-s2-second")
    settle(manager, lambda: len([r for r in node.reports if r[0] == "slot-free"]) == 6)
    before = dict(node.fetches)
    manager.tick()
    assert all(node.fetches[s] == before[s] + 1 for s in node.fetches)  # still asking, nothing started
    assert len(node.runs()) == 6


def test_a_crashed_runner_is_reported_so_its_slot_restarts(tmp_path: Path) -> None:
    node = Node(tmp_path, layout="8x1")
    node.give(3, "crashing", code=1)
    manager = node.manager()
    settle(manager, lambda: ("slot-free", 3, "runner exited with 1") in node.reports)
    node.give(3, "restarted")
    settle(manager, lambda: [r["name"] for r in node.runs()] == ["crashing", "restarted"])


def test_a_faulty_gpu_takes_its_slot_out_once_without_killing_the_running_job(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.give(1, "long-job", seconds=0.5)
    manager = node.manager()
    manager.health_interval_s = 0.0
    settle(manager, lambda: len(node.runs()) == 1)

    node.faults = {"GPU-4": "XID 79"}
    manager.tick()
    manager.tick()
    assert node.reports == [("slot-faulty", 1, "GPU GPU-4: XID 79")]  # reported once
    assert manager.out_of_rotation == {1: "GPU GPU-4: XID 79"}

    node.give(1, "never-started")
    settle(manager, lambda: manager._state[1].runner is None)
    fetched = node.fetches[1]
    manager.tick()
    assert node.fetches[1] == fetched  # out of rotation: no new runner is asked for
    assert [r["name"] for r in node.runs()] == ["long-job"]
    assert ("slot-free", 1, "runner exited with 0") not in node.reports


def test_a_failing_health_probe_does_not_stop_the_runners(tmp_path: Path) -> None:
    node = Node(tmp_path)

    def broken() -> dict[str, str]:
        raise RuntimeError("nvidia-smi hung")

    node.health = broken  # type: ignore[method-assign]
    node.give(0, "still-runs")
    settle(node.manager(), lambda: len(node.runs()) == 1)


def test_a_report_that_cannot_be_sent_is_logged_and_the_slot_goes_on(tmp_path: Path) -> None:
    node = Node(tmp_path)

    def unreachable(kind: str, slot: int, why: str) -> None:
        raise OSError("network unreachable")

    manager = SlotManager(node.slots, SlotPorts(node.fetch, node.start, unreachable, node.health))
    node.give(0, "first")
    node.give(0, "second")
    settle(manager, lambda: len(node.runs()) == 2)


def test_a_node_without_nvidia_driver_stops_with_a_clear_message(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def no_driver(run: object = None) -> str:
        raise NoGpuDriverError("nvidia-smi not found: this machine has no NVIDIA driver installed (or it is not on PATH)")

    monkeypatch.setattr(slot_manager, "read_nvidia_smi", no_driver)
    args = ["--parameter-prefix", "/p/", "--reports-queue-url", "https://q", "--layout", "1x4+4x1", "--runner-version", "2.330.0",
            "--runner-arch", "x64"]  # fmt: skip
    assert slot_manager.main(args) == 2
    assert "no NVIDIA driver" in caplog.text


def test_a_runner_that_cannot_be_started_safely_takes_only_its_slot_out_of_rotation(tmp_path: Path) -> None:
    node = Node(tmp_path, layout="8x1")

    def start(slot: NodeSlot, config: str) -> RunningRunner:
        if slot.index == 2:
            raise RunnerTamperedError("/opt/actions-runner: run.sh changed since it was installed")
        return node.start(slot, config)

    manager = SlotManager(
        node.slots, SlotPorts(node.fetch, start, lambda kind, slot, why: node.reports.append((kind, slot, why)), node.health)
    )
    node.give(2, "never-runs")
    node.give(3, "runs")
    settle(manager, lambda: ("slot-free", 3, "runner exited with 0") in node.reports)
    assert ("slot-faulty", 2, "runner not started: /opt/actions-runner: run.sh changed since it was installed") in node.reports
    assert manager.out_of_rotation == {2: "runner not started: /opt/actions-runner: run.sh changed since it was installed"}
    assert [r["name"] for r in node.runs()] == ["runs"]
