"""Runs on a capacity-block node for the life of its block (started by the launch template's
user-data): detect the GPUs, split them into the pool's slots, and keep one ephemeral JIT
runner per slot, each pinned to its own GPUs.

The node never holds the App key: each slot's one-job runner config is a SecureString the
control plane stores for this instance only (lambda_src/aws/jit_parameters.py); the slot reads it
once, deletes it, and runs the runner with the config in its environment. After each job the
slot tells the control plane it is free (a message on the pool's events queue) and waits for
a fresh config; while the block drains none comes. A GPU with uncorrectable ECC errors, a
failed row remap or a fault XID takes its slot out of rotation, reported once. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lambda_src.aws.sigv4_client import AwsError, AwsJsonClient
from lambda_src.core.gpu_slots import NodeSlot, parse_layout
from lambda_src.core.gpus import faulty_gpus, parse_nvidia_smi_xml, xid_faults
from lambda_src.core.job_isolation import slot_user
from lambda_src.core.node_slots import faulty_slots, plan_node
from lambda_src.host.common import Imds, add_host_arguments, download, not_written_yet, start_runner
from lambda_src.host.job_users import Run, run_command, tidy_after_job
from lambda_src.host.nvidia_smi import NoGpuDriverError, read_nvidia_smi
from lambda_src.host.runner_files import fresh_job_dir, give_folder, install_runner

log = logging.getLogger("runner_estate.slots")
TICK_S = 2.0


class RunningRunner(Protocol):
    def poll(self) -> int | None: ...


@dataclass
class SlotPorts:
    """What a slot manager does outside itself; tests replace each."""

    fetch_config: Callable[[int], str | None]  # the slot's runner config, read once and deleted; None while absent
    start: Callable[[NodeSlot, str], RunningRunner]  # run the runner for one job with this config
    report: Callable[[str, int, str], None]  # (kind, slot, reason) to the control plane
    faults: Callable[[], Mapping[str, str]]  # GPU uuid -> why it must leave rotation
    tidy: Callable[[int], None] = lambda slot: None  # after each job, before the next fetch (JobSlots.tidy on a node)


@dataclass
class _Slot:
    plan: NodeSlot
    runner: RunningRunner | None = None
    faulty: str | None = None
    runs: int = 0


@dataclass
class SlotManager:
    slots: list[NodeSlot]
    ports: SlotPorts
    clock: Callable[[], float] = time.monotonic
    health_interval_s: float = 30.0
    _state: list[_Slot] = field(default_factory=list)
    _health_at: float | None = None

    def __post_init__(self) -> None:
        self._state = [_Slot(s) for s in self.slots]

    def tick(self) -> None:
        """One pass: health check when due, reap finished runners, start configured ones."""
        now = self.clock()
        if self._health_at is None or now - self._health_at >= self.health_interval_s:
            self._health_at = now
            self._check_health()
        for slot in self._state:
            if slot.runner is not None:
                code = slot.runner.poll()
                if code is None:
                    continue
                log.info("slot %d: runner exited with %d after job %d", slot.plan.index, code, slot.runs)
                slot.runner = None
                try:  # nothing of the job may live on when the slot takes its next config
                    self.ports.tidy(slot.plan.index)
                except Exception as exc:
                    log.exception("slot %d: not tidied", slot.plan.index)
                    if slot.faulty is None:
                        self._leave_rotation(slot, f"not tidied after its job: {exc}")
                if slot.faulty is None:
                    self._report("slot-free", slot.plan.index, f"runner exited with {code}")
            if slot.faulty is not None:
                continue
            config = self.ports.fetch_config(slot.plan.index)
            if config is not None:
                slot.runs += 1
                try:
                    slot.runner = self.ports.start(slot.plan, config)
                except Exception as exc:  # a changed runner install, a folder that cannot be built: never run it
                    log.exception("slot %d: runner %d not started", slot.plan.index, slot.runs)
                    self._leave_rotation(slot, f"runner not started: {exc}")
                    continue
                log.info("slot %d: runner %d started on GPUs %s", slot.plan.index, slot.runs, slot.plan.device_indices)

    def _check_health(self) -> None:
        try:
            faults = self.ports.faults()
        except Exception:  # a failing health probe must not stop the runners; it is logged
            log.exception("GPU health check failed")
            return
        faulty = faulty_slots([slot.plan for slot in self._state], faults)
        for slot in self._state:
            if slot.plan.index in faulty and slot.faulty is None:
                self._leave_rotation(slot, faulty[slot.plan.index])

    def _leave_rotation(self, slot: _Slot, reason: str) -> None:
        slot.faulty = reason
        log.error("slot %d leaves rotation: %s", slot.plan.index, reason)
        self._report("slot-faulty", slot.plan.index, reason)

    def _report(self, kind: str, slot: int, reason: str) -> None:
        try:
            self.ports.report(kind, slot, reason)
        except Exception:  # the control plane's schedule finds the slot anyway, a minute later
            log.exception("could not report %s for slot %d", kind, slot)

    @property
    def out_of_rotation(self) -> dict[int, str]:
        return {s.plan.index: s.faulty for s in self._state if s.faulty is not None}

    def run_forever(self, sleep: Callable[[float], None] = time.sleep) -> None:
        while True:
            self.tick()
            sleep(TICK_S)


# ---- the real ports on an EC2 node ----------------------------------------------------------


def ssm_config_fetcher(ssm: AwsJsonClient, prefix: str, instance_id: str) -> Callable[[int], str | None]:
    def fetch(slot: int) -> str | None:
        name = f"{prefix}{instance_id}/s{slot}"
        try:
            value = str(ssm.call("GetParameter", {"Name": name, "WithDecryption": True})["Parameter"]["Value"])
        except AwsError as exc:
            if not_written_yet(exc):  # not written yet (or, on a draining block, never): ask again next tick
                return None
            raise
        ssm.call("DeleteParameter", {"Name": name})
        return value

    return fetch


def sqs_reporter(sqs: AwsJsonClient, queue_url: str, instance_id: str) -> Callable[[str, int, str], None]:
    def report(kind: str, slot: int, reason: str) -> None:
        body = {"kind": kind, "instance": instance_id, "slot": slot, "reason": reason}
        sqs.call("SendMessage", {"QueueUrl": queue_url, "MessageBody": json.dumps(body)})

    return report


def node_faults() -> dict[str, str]:
    gpus = parse_nvidia_smi_xml(read_nvidia_smi())
    kernel = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout  # noqa: S607 - root's PATH
    return faulty_gpus(gpus, xid_faults(kernel.splitlines()))


def slot_runner_dirs(template: Path, count: int) -> list[Path]:
    """Where each slot's jobs run, beside the install: built afresh for every job
    (runner_files.fresh_job_dir), never a long-lived copy a job could change."""
    return [template.parent / f"{template.name}-s{index}" for index in range(count)]


@dataclass
class JobSlots:
    """The slots' side of a node: slot N's jobs run as its own user (`runner_run_as`-sN, set up
    by user-data: unprivileged, no sudo) from a fresh folder of the checked install, and what a
    job leaves is cleared before the slot takes its next config."""

    install: Path
    users: list[str]
    folders: list[Path]
    chown: Callable[[Path, str], None] = give_folder
    run: Run = run_command
    launch: Callable[[list[str], str, str | None, dict[str, str] | None, Path | None], RunningRunner] = start_runner

    @classmethod
    def for_node(cls, install: Path, base_user: str, count: int, **ports: Any) -> JobSlots:
        return cls(install, [slot_user(base_user, i) for i in range(count)], slot_runner_dirs(install, count), **ports)

    def start(self, slot: NodeSlot, config: str) -> RunningRunner:
        user = self.users[slot.index]
        folder = fresh_job_dir(self.install, self.folders[slot.index], user, self.chown)
        return self.launch([str(folder / "run.sh")], config, user, slot.environment, folder)

    def tidy(self, index: int) -> None:
        tidy_after_job(self.users[index], self.folders[index], self.run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_host_arguments(parser)
    parser.add_argument("--reports-queue-url", required=True)
    parser.add_argument("--layout", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    try:
        gpus = parse_nvidia_smi_xml(read_nvidia_smi())
    except NoGpuDriverError as exc:
        log.error("%s", exc)
        return 2
    imds = Imds(args.imds_url)
    instance_id = imds.get("meta-data/instance-id")
    region = imds.get("meta-data/placement/region")
    plan = plan_node(gpus, parse_layout(args.layout), node_faults())
    log.info("node %s: %d GPUs, slots %s", instance_id, len(gpus), json.dumps(plan.to_json()["slots"]))
    template = install_runner(Path(args.runner_dir), args.runner_version, args.runner_arch, args.runner_sha256, download)
    jobs = JobSlots.for_node(template, args.run_as, len(plan.slots))
    ssm = AwsJsonClient("ssm", region, credentials=imds.credentials)
    sqs = AwsJsonClient("sqs", region, credentials=imds.credentials)
    fetch = ssm_config_fetcher(ssm, args.parameter_prefix, instance_id)
    ports = SlotPorts(fetch, jobs.start, sqs_reporter(sqs, args.reports_queue_url, instance_id), node_faults, jobs.tidy)
    SlotManager(list(plan.slots), ports).run_forever()  # its first health check reports faulty slots
    return 0


if __name__ == "__main__":
    os.umask(0o077)  # runner configs never land in world-readable files
    sys.exit(main())
