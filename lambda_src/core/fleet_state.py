"""Plain data the planners read: jobs, our instances, and runners as GitHub lists them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

QUEUED = "queued"
IN_PROGRESS = "in_progress"
COMPLETED = "completed"
# A job's state only moves forward; a late `queued` never undoes an `in_progress`.
JOB_STATE_RANK = {QUEUED: 0, IN_PROGRESS: 1, COMPLETED: 2}

# A host's runner name ends in its instance id, then `-r<k>` for the k-th reuse of the host.
_INSTANCE_ID_RE = re.compile(r"(i-[0-9a-f]{8,17})(?:-r[1-9]\d*)?$")
_GENERATION_RE = re.compile(r"-r[1-9]\d*$")
_SLOT_RE = re.compile(r"(i-[0-9a-f]{8,17})-s(\d+)$")


@dataclass(frozen=True)
class Job:
    id: int
    pool: str
    state: str
    queued_at: float
    repo: str = ""
    labels: tuple[str, ...] = ()
    runner_name: str | None = None
    checked_at: float | None = None  # the reconciler last asked GitHub about it (a job whose webhooks may be lost)
    run_id: int | None = None  # the workflow run it belongs to
    run_workflows: tuple[str, ...] | None = None  # that run's workflow files, once asked of GitHub (routing.JobOrigin)
    public: bool = False  # from a public repository: only pools whose group admits public ones may take it
    run_attempt: int | None = None  # which attempt of its run (a re-run job comes back as a later attempt)
    conclusion: str | None = None  # once completed: success, failure, cancelled, ...
    on_demand: bool = False  # steered to on-demand capacity (the re-run of a spot-interrupted job)
    workflow: str = ""  # the run's workflow name as GitHub shows it (`workflow_name`), for cost reports
    started_at: float | None = None  # when a runner took it (GitHub's `started_at`)
    completed_at: float | None = None  # when it ended (GitHub's `completed_at`)


@dataclass(frozen=True)
class Instance:
    """One of our runner hosts, as the ledger knows it."""

    id: str
    pool: str
    launched_at: float
    job_id: int | None = None  # the job its ephemeral runner took; None while unassigned
    registered_at: float | None = None  # first seen online in GitHub's runner list
    idle_since: float | None = None  # first listing that saw it online and idle
    jit_at: float | None = None  # when its runner config was stored for it
    runner_name: str = ""
    block: str | None = None  # the capacity block a node runs in (capacity-block pools)
    generation: int = 0  # which runner config the host runs: 0 at launch, k after k reuses
    jobs_done: int = 0  # jobs its runners have finished
    finished_at: float | None = None  # its current runner finished a job; cleared by a reuse
    interrupted_at: float | None = None  # EC2's two-minute spot interruption warning came for it
    rebalance_at: float | None = None  # EC2 recommended moving off it (an early hint of interruption)

    @property
    def leaving(self) -> bool:
        """EC2 warned it is (or may soon be) reclaimed: it takes no new work."""
        return self.interrupted_at is not None or self.rebalance_at is not None

    @property
    def assigned(self) -> bool:
        return self.job_id is not None

    @property
    def spent(self) -> bool:
        """Its runner finished a job: the host powers off unless it is given another config."""
        return self.finished_at is not None

    def given_next_runner(self, name: str, now: float) -> Instance:
        """The spent host once it has its next runner config (as `Ledger.reuse` records it)."""
        return replace(
            self,
            generation=self.generation + 1,
            jit_at=now,
            runner_name=name,
            finished_at=None,
            job_id=None,
            registered_at=None,
            idle_since=None,
        )

    @property
    def runner_since(self) -> float:
        """When its current runner's config was given: boot and registration time count from here."""
        return self.launched_at if self.generation == 0 else (self.jit_at or self.launched_at)


@dataclass(frozen=True)
class BlockRecord:
    """What the ledger remembers about a block between cycles."""

    target: int = 0  # nodes it should run: the most demand has asked of it (nodes live for the block)
    warned: bool = False  # the expiration-warning event arrived


@dataclass(frozen=True)
class SlotRecord:
    issued_at: float | None = None  # a runner config was stored for this slot
    seen_at: float | None = None  # its runner was last seen online (after that issue)
    faulty: str | None = None  # out of rotation: a GPU of the slot is unhealthy


@dataclass(frozen=True)
class GithubRunner:
    id: int
    name: str
    online: bool
    busy: bool


def runner_name(prefix: str, environment: str, pool: str, instance_id: str, generation: int = 0) -> str:
    """Runner names end in the instance id, so a listing maps back to hosts without a lookup;
    a reused host's k-th next runner adds `-r<k>`, since GitHub may still list the last one."""
    return f"{prefix}{environment}-{pool}-{instance_id}" + (f"-r{generation}" if generation else "")


def first_runner_name(name: str) -> str:
    """The name without a reuse suffix: the name the host's first runner had."""
    return _GENERATION_RE.sub("", name)


def instance_id_of(name: str) -> str | None:
    found = _INSTANCE_ID_RE.search(name)
    return found.group(1) if found else None


def slot_runner_name(prefix: str, environment: str, pool: str, instance_id: str, slot: int) -> str:
    """A capacity-block node runs one runner per GPU slot; the name ends in node and slot."""
    return f"{runner_name(prefix, environment, pool, instance_id)}-s{slot}"


def slot_of(name: str) -> tuple[str, int] | None:
    found = _SLOT_RE.search(name)
    return (found.group(1), int(found.group(2))) if found else None


def owning_pool(pools: Iterable[tuple[str, str]], environment: str, name: str) -> str | None:
    """Which of `pools` ((name, runner name prefix) pairs) named this runner, reuse suffix or
    not; None for anyone else's runner."""
    iid = instance_id_of(name)
    if iid is None:
        return None
    first = first_runner_name(name)
    return next((pool for pool, prefix in pools if runner_name(prefix, environment, pool, iid) == first), None)
