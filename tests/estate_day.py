"""A day of the whole estate as deployed, on loopback: the scaler's three functions and the
capacity-block manager over one EC2 (our boundary fake), one ledger (DynamoDB in moto) and
one GitHub (our fake), with hosts and GitHub played as they behave:

- a host boots, reads its one-job runner config, registers; a node's slot manager does the
  same per slot and reports a slot free after each job; a host powers off after its job;
- a warm instance (issue 20.2) boots, finds the warm marker instead of a runner config and
  powers off into `stopped`; once the scaler starts it, it boots again and reads its one-job
  config as a fresh host does (lambda_src/host/bootstrap.py). The pools' warm sizes are
  adaptive, read from a launch history seeded with this day's own jobs in each past week;
- GitHub gives each queued job to an idle online runner whose labels cover the job's, as it
  does, and sends the webhooks; foreign runners of the org come and go, so listings page and
  shift under the controllers;
- EC2 ends a block's instances 30 minutes before its end, after its 40-minute warning.

Every controller termination is checked at the moment it happens: terminating a host whose
runner runs a job is a wrongful termination (a started warm host is a host like any other; a
stopped warm instance has no job). At the end every job must have run.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from estate.local.fake_block_ec2 import FakeBlockEc2, FakeInstance
from estate.local.fake_github import FakeGithub, FakeRunner, jit_runner
from estate.local.plane import LocalPlane
from estate.sim.timings import EC2_LAUNCH_TO_OS_S, EC2_START_STOPPED_TO_OS_S
from lambda_src.aws.block_ec2 import BlockEc2
from lambda_src.aws.ec2_fleet import Ec2Fleet
from lambda_src.aws.sigv4_client import AwsError
from lambda_src.core.block_planner import WARNING_LEAD_S
from lambda_src.core.fleet_state import instance_id_of, slot_of
from lambda_src.core.routing import normalise
from lambda_src.core.tags import WARM, WARM_CONFIG
from lambda_src.core.warm_pools import ADAPTIVE, WEEK_S, demand_bucket
from lambda_src.functions.block_manager import BlockManager
from lambda_src.functions.control_plane import Report

MINUTE = 60.0
HOUR = 3600.0
BOOT_S = 90.0  # launch to runner registered, a baked image (the simulator's figures are per image)
# A stopped warm instance started for a job: EC2's start instead of a launch before the OS is up,
# then the same bootstrap and runner connection (estate/sim/timings.py: launch -> OS 25.8 s, start
# of a stopped instance -> OS 21 s). Its disks were initialised on its first boot.
START_BOOT_S = BOOT_S - (EC2_LAUNCH_TO_OS_S - EC2_START_STOPPED_TO_OS_S)


@dataclass
class DayJob:
    labels: list[str]
    at: float  # seconds into the day it is queued
    duration_s: float
    repo: str
    github_id: int = 0
    started_at: float | None = None
    runner: str | None = None
    done: bool = False


@dataclass
class Block:
    id: str
    pool: str
    instance_type: str
    nodes: int
    start_h: float
    hours: float
    warned: bool = False


@dataclass
class Day:
    local: LocalPlane
    ec2: FakeBlockEc2
    manager: BlockManager
    jobs: list[DayJob]
    blocks: list[Block]
    foreign_runners: int = 150  # other machines' runners of the org, churning
    seed: int = 0
    t0: float = 0.0
    violations: list[str] = field(default_factory=list)
    terminations: int = 0
    peak_runners: int = 0
    _rng: random.Random = field(default_factory=random.Random)
    _booted: dict[str, float] = field(default_factory=dict)  # ordinary host -> when its runner registered
    _slots_up: set[tuple[str, int]] = field(default_factory=set)
    _by_github: dict[int, DayJob] = field(default_factory=dict)
    _to_deliver: bool = False
    # Stopped warm pools, as the control plane reported them (scale-up's and reconcile's reports).
    warm_launched: set[str] = field(default_factory=set)
    warm_started: set[str] = field(default_factory=set)
    warm_start_failed: list[str] = field(default_factory=list)
    warm_retired: set[str] = field(default_factory=set)
    warm_ended: set[str] = field(default_factory=set)
    warm_prepared: int = 0  # warm instances that found the marker and powered off

    @property
    def github(self) -> FakeGithub:
        return self.local.github

    # ---- set-up ---------------------------------------------------------------------------
    def start(self) -> None:
        self._rng.seed(self.seed)
        self.t0 = self.local.clock()
        env = self.local.settings.environment
        for b in self.blocks:
            self.ec2.add_block(b.id, b.instance_type, b.nodes, self.t0 + b.start_h * HOUR, b.hours)
            # Blocks beyond those a pool names are found by their tags, as bought ones are.
            self.ec2.reservations[b.id].tags = {"runner-estate:pool": b.pool, "runner-estate:environment": env}
        self.local.plane.fleet = Ec2Fleet(_Guarded(self, "scaler"), self.local.settings.environment)
        self.manager.ec2 = BlockEc2(_Guarded(self, "block manager"), self.local.settings.environment)
        for n in range(self.foreign_runners):
            self._foreign(n)
        self._page_churn()
        self._warm_pools_asked_for()
        self._seed_launch_history()

    def _warm_pools_asked_for(self) -> None:
        """Every pool that launches its own hosts keeps an adaptive warm pool, as if each pool file
        asked for one (`estate.warm_pool: {mode: adaptive}`): spot pools keep none by default,
        and the day's jobs go to spot pools first."""
        settings = self.local.settings
        pools = {
            name: pool if pool.capacity_type == "capacity-block" else replace(pool, warm=replace(pool.warm, mode=ADAPTIVE))
            for name, pool in settings.pools.items()
        }
        self.local.settings = replace(settings, pools=pools)
        self.local.plane.settings = self.local.settings
        self.local.plane.__dict__.pop("scaled_pools", None)  # a cached view of the settings

    def _seed_launch_history(self) -> None:
        """The launches each pool needed on this weekday in each of the past weeks, as the control
        plane counts them (one host per job of this day, in the bucket it was queued in): so the
        adaptive warm sizes are non-zero around the rushes, as after weeks of such days."""
        settings, ledger = self.local.settings, self.local.plane.ledger
        launches: Counter[tuple[str, int]] = Counter()
        for job in self.jobs:
            pool = settings.pools[settings.routing.route(job.labels)[0]]
            if pool.capacity_type == "capacity-block":  # a block's nodes are the manager's: never counted
                continue
            for weeks_ago in range(1, pool.warm.weeks + 1):
                launches[pool.name, demand_bucket(self.t0 + job.at - weeks_ago * WEEK_S)] += 1
        for (pool_name, bucket), count in sorted(launches.items()):
            ledger.count_launches(pool_name, bucket, count, settings.pools[pool_name].warm.weeks)

    def _foreign(self, n: int) -> None:
        runner = FakeRunner(next(self.github._ids), f"lab-box-{n}-{self._rng.randrange(10**6)}", ["self-hosted", "lab"], 1)
        runner.status = "online"
        self.github.runners[runner.id] = runner

    def _page_churn(self) -> None:
        """Between the pages of a runner listing, some foreign ephemeral runners finish and are
        deleted (lower ids shift the next page) and new ones register: as on a busy org."""
        fake, answer = self.github, self.github.answer

        def answer_then_churn(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
            result = answer(method, path, headers, body)
            if method == "GET" and "/actions/runners?" in path and "page=" in path and "name=" not in path:
                with fake._lock:
                    foreign = sorted(i for i, r in fake.runners.items() if r.name.startswith("lab-box-"))
                    for rid in foreign[: self._rng.randrange(0, 4)]:
                        del fake.runners[rid]
                    for _ in range(self._rng.randrange(0, 4)):
                        self._foreign(self._rng.randrange(10**6))
            return result

        fake.answer = answer_then_churn  # type: ignore[method-assign]

    # ---- the day ----------------------------------------------------------------------------
    def run(self, hours: float, settle_h: float = 3.0) -> None:
        pending = sorted(self.jobs, key=lambda j: j.at)
        end = self.t0 + (hours + settle_h) * HOUR
        while self.local.clock() < end:
            now = self.local.clock()
            self.ec2.settle()  # EC2's in-between states (pending, stopping, shutting-down) end as time passes
            while pending and self.t0 + pending[0].at <= now:
                self._queue(pending.pop(0))
            self._deliver()
            self._hosts_and_slots()
            self._github_assigns()
            self._jobs_finish()
            self._blocks()
            self._note(self.local.plane.reconcile())
            self.local.plane.scale_down()
            self.manager.manage()
            self.peak_runners = max(self.peak_runners, sum(1 for r in self.github.runners.values() if not r.name.startswith("lab-")))
            self.local.clock.advance(self._step(pending))

    def _step(self, pending: list[DayJob]) -> float:
        """A minute while anything is afoot (a job queued or running, a block starting or in its
        last 45 minutes, hosts still up); quiet hours in 10-minute steps (the functions run every
        minute when deployed; skipping quiet invocations only makes them later)."""
        now = self.local.clock()
        busy = any(not j.done and j.github_id for j in self.jobs) or any(
            -45 * MINUTE < now - (self.t0 + (b.start_h + b.hours) * HOUR) < 5 * MINUTE
            or abs(now - (self.t0 + b.start_h * HOUR)) < 5 * MINUTE
            for b in self.blocks
        )
        hosts_up = any(i.state == "running" and i.reservation is None for i in self.ec2.instances.values())
        soon = pending and self.t0 + pending[0].at - now < 10 * MINUTE
        return MINUTE if busy or hosts_up or soon else 10 * MINUTE

    def _queue(self, job: DayJob) -> None:
        fake = self.github.queue_job(job.labels, repo=job.repo)
        job.github_id = fake.id
        self._by_github[fake.id] = job
        self._to_deliver = True

    def _deliver(self) -> None:
        """SQS to the function each pool's queue is wired to, as the event source mappings do;
        only when something was queued or a batch failed (polling 13 empty queues costs time)."""
        if not self._to_deliver:
            return
        failed = False

        def either(records: list[dict[str, Any]]) -> list[str]:
            nonlocal failed
            self.local.plane.last_report = None
            retry = sorted(set(self.local.plane.scale_up(records)) | set(self.manager.scale_up(records)))
            if self.local.plane.last_report is not None:
                self._note(self.local.plane.last_report)
            failed = failed or bool(retry)
            return retry

        self.local.pump(either)
        self._to_deliver = failed

    # ---- what hosts and nodes do -----------------------------------------------------------
    def _hosts_and_slots(self) -> None:
        now = self.local.clock()
        jit = self.local.plane.jit
        for inst in list(self.ec2.instances.values()):
            if inst.state != "running":
                continue
            if inst.reservation is None:
                # LaunchTime is EC2's last launch or start: a started warm instance boots from its start.
                if inst.id not in self._booted and now - inst.launched_at >= (START_BOOT_S if inst.started else BOOT_S):
                    self._host_boots(inst.id, jit.name(inst.id))
            elif now - inst.launched_at >= BOOT_S:
                for slot in range(len(self.local.settings.pools[inst.tags["runner-estate:pool"]].slot_gpus)):
                    if (inst.id, slot) not in self._slots_up and self._read(jit.name(inst.id, slot)) is not None:
                        self._slots_up.add((inst.id, slot))

    def _host_boots(self, instance_id: str, parameter: str) -> None:
        """What lambda_src/host/bootstrap.py does at each boot: its one-job config registers the
        runner; the warm marker (a warm instance's first boot) means prepare and power off, which
        for a warm instance (shutdown behaviour `stop`) is `stopped`; nothing yet: it waits."""
        config = self._take(parameter)
        if config is None:
            return
        if config == WARM_CONFIG:
            self.ec2.guest_powers_off(instance_id)
            self.warm_prepared += 1
            return
        self._connect(config)
        self._booted[instance_id] = self.local.clock()

    def _read(self, parameter: str) -> str | None:
        """A slot's side of SSM: read its runner config once, delete it, register the runner."""
        config = self._take(parameter)
        return None if config is None else self._connect(config)

    def _take(self, parameter: str) -> str | None:
        """Read a stored runner config once and delete it; None while none is stored."""
        try:
            found = self.local.ssm.call("GetParameter", {"Name": parameter, "WithDecryption": True})
        except AwsError as exc:
            if exc.code == "ParameterNotFound":
                return None
            raise
        self.local.ssm.call("DeleteParameter", {"Name": parameter})
        return str(found["Parameter"]["Value"])

    def _connect(self, config: str) -> str:
        _, name = jit_runner(config)
        self.github.connect(name)
        return name

    # ---- what GitHub does ------------------------------------------------------------------
    def _github_assigns(self) -> None:
        now = self.local.clock()
        idle = [r for r in self.github.runners.values() if r.status == "online" and not r.busy and not r.name.startswith("lab-")]
        for job in sorted((j for j in self._by_github.values() if j.started_at is None), key=lambda j: j.at):
            wanted = normalise(job.labels)
            runner = next((r for r in idle if wanted <= normalise(r.labels)), None)
            if runner is None:
                continue
            idle.remove(runner)
            self.github.start_job(job.github_id, runner.name)
            job.started_at, job.runner = now, runner.name

    def _jobs_finish(self) -> None:
        now = self.local.clock()
        for job in self._by_github.values():
            if job.started_at is None or job.done or now < job.started_at + job.duration_s:
                continue
            self.github.finish_job(job.github_id)
            job.done = True
            assert job.runner is not None
            slot = slot_of(job.runner)
            if slot is None:
                iid = instance_id_of(job.runner)
                if iid is not None and iid in self.ec2.instances and self.ec2.instances[iid].state == "running":
                    self.ec2.guest_powers_off(iid)  # after its job: terminated, or stopped for a started warm instance
                continue
            iid, index = slot
            self._slots_up.discard((iid, index))
            pool = self.ec2.instances[iid].tags["runner-estate:pool"]
            report = {"kind": "slot-free", "instance": iid, "slot": index, "reason": "job done"}
            self.manager.handle_events([_record(self.local.settings.pools[pool].reports_queue_arn, report, iid)])

    # ---- what EC2 does with blocks -----------------------------------------------------------
    def _blocks(self) -> None:
        now = self.local.clock()
        for b in self.blocks:
            end = self.t0 + (b.start_h + b.hours) * HOUR
            if not b.warned and now >= end - WARNING_LEAD_S:
                b.warned = True
                detail = {"capacity-reservation-id": b.id, "end-date": datetime.fromtimestamp(end, UTC).isoformat()}
                body = {"source": "aws.ec2", "detail-type": "Capacity Block Expiration Warning", "detail": detail}
                self.manager.handle_events([_record(self.local.settings.pools[b.pool].events_queue_arn, body, None)])
        for iid in self.ec2.aws_terminates_ending_blocks():
            busy = [r.name for r in self._runners_of(iid) if r.busy]
            if busy:
                self.violations.append(f"EC2 ended block node {iid} with jobs still running on {busy}: the block drained too late")

    def _runners_of(self, instance_id: str) -> Iterator[FakeRunner]:
        return (r for r in list(self.github.runners.values()) if instance_id in r.name)

    # ---- the verdict -------------------------------------------------------------------------
    def check_termination(self, who: str, instance_ids: list[str]) -> None:
        """Judge a controller's termination: of a host running a job (a started warm host is
        one), wrongful; of another controller's instance, wrongful. A stopped warm instance
        or a host still booting runs no job."""
        self.terminations += len(instance_ids)
        self.ec2.settle()
        for iid in instance_ids:
            inst = self.ec2.instances.get(iid)
            if inst is None or inst.state in {"shutting-down", "terminated"}:
                continue
            running = [j.github_id for j in self._by_github.values() if j.started_at is not None and not j.done and iid in (j.runner or "")]
            if running:
                self.violations.append(f"{who} terminated {iid} while it ran jobs {running}")
            pool = inst.tags.get("runner-estate:pool", "")
            mine = self.local.settings.pools[pool].capacity_type == "capacity-block"
            if mine != (who == "block manager"):
                self.violations.append(f"{who} terminated {iid} of pool {pool}, which it does not own")

    def stranded(self) -> list[DayJob]:
        return [j for j in self.jobs if not j.done]

    def _note(self, report: Report) -> None:
        self.warm_launched.update(report.warm_launched)
        self.warm_started.update(report.warm_started)
        self.warm_start_failed += report.warm_start_failed
        self.warm_retired.update(report.warm_retired)
        self.warm_ended.update(report.warm_ended)

    def warm_instances(self) -> list[FakeInstance]:
        """Every instance EC2 launched into a warm pool (tagged warm), whatever became of it."""
        return [i for i in self.ec2.instances.values() if i.tags.get(WARM) == "true"]

    def warm_up_without_a_job(self) -> list[str]:
        """Warm-launched instances EC2 still runs whose runner runs no job: a prepared one that
        never powered off, or a started one that outlived its job."""
        running = [j.runner or "" for j in self._by_github.values() if j.started_at is not None and not j.done]
        up = (i for i in self.warm_instances() if i.state in {"pending", "running"})
        return [i.id for i in up if not any(i.id in runner for runner in running)]

    def warm_figures(self) -> dict[str, int]:
        return {
            "launched": len(self.warm_launched),
            "prepared": self.warm_prepared,
            "started": len(self.warm_started),
            "start_failed": len(self.warm_start_failed),
            "retired": len(self.warm_retired),  # never started: beyond a target, superseded, or a failed boot
            "ended_after_a_job": len(self.warm_ended),  # stopped after their job, then terminated
        }


def _record(queue_arn: str, body: dict[str, Any], sender_instance: str | None) -> dict[str, Any]:
    """An SQS record as Lambda hands it over, from `queue_arn`."""
    attributes = {"SenderId": f"AROAEXAMPLE:{sender_instance}"} if sender_instance else {"SenderId": "AIDAEVENTBRIDGE"}
    return {"messageId": f"m-{random.getrandbits(32):08x}", "body": json.dumps(body), "eventSourceARN": queue_arn, "attributes": attributes}


class _Guarded:
    """One EC2, as one controller's client sees it: every termination is judged as it happens."""

    def __init__(self, day: Day, who: str) -> None:
        self._day, self._who = day, who

    def terminate_instances(self, InstanceIds: list[str]) -> dict[str, Any]:  # noqa: N803 - EC2's names
        self._day.check_termination(self._who, list(InstanceIds))
        return self._day.ec2.terminate_instances(InstanceIds=InstanceIds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._day.ec2, name)


def pr_day(seed: int = 0) -> list[DayJob]:
    """A working day of pull requests on the example estate: bursts of CPU matrices (x64 and
    arm64), GPU tests on T4 and A10G, H100 and B200 jobs inside the blocks' hours; peaks of
    a few hundred runners at once."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    jobs: list[DayJob] = []
    kinds = [
        (["self-hosted", "linux", "x64", "cpu"], 30, (5, 25)),
        (["self-hosted", "linux", "arm64", "cpu"], 20, (5, 20)),
        (["self-hosted", "linux", "x64", "gpu", "t4"], 6, (10, 30)),
        (["self-hosted", "linux", "x64", "gpu", "a10g"], 6, (10, 30)),
    ]
    for hour, scale in ((8, 1), (10, 6), (12, 1), (15, 6), (17, 1)):  # two rushes: a few hundred runners at once
        for burst in range(2):
            at = (hour + burst / 2 + rng.random() / 4) * HOUR
            for labels, count, (lo, hi) in kinds:
                for _ in range(count * scale // 2):
                    repo = f"example-org/repo-{rng.randrange(40)}"
                    jobs.append(DayJob(labels, at + rng.uniform(0, 120), rng.uniform(lo, hi) * MINUTE, repo))
    for hour in (3, 5, 8, 11, 13, 17):  # capacity-block jobs, some before a block of their kind starts
        for labels in (["self-hosted", "linux", "x64", "gpu", "h100"], ["self-hosted", "linux", "x64", "gpu", "b200", "4gpu"]):
            for _ in range(rng.randrange(2, 6)):
                jobs.append(DayJob(labels, hour * HOUR + rng.uniform(0, 600), rng.uniform(15, 60) * MINUTE, "example-org/kernels"))
    return jobs


def day_blocks() -> list[Block]:
    """Two blocks per capacity-block pool: one ends mid-day (drained, then taken back by EC2),
    one starts later and outlives the day."""
    return [
        Block("cr-0a1b2c3d4e5f60718", "gpu-h100-cb", "p5.48xlarge", 1, start_h=1, hours=11),
        Block("cr-00000000000000b01", "gpu-h100-cb", "p5.48xlarge", 1, start_h=4, hours=24),
        Block("cr-0b1c2d3e4f5a60719", "gpu-b200-cb", "p6-b200.48xlarge", 1, start_h=2, hours=12),
        Block("cr-00000000000000b02", "gpu-b200-cb", "p6-b200.48xlarge", 1, start_h=6, hours=24),
    ]
