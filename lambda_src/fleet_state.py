"""Plain data the planners read: jobs, our instances, and runners as GitHub lists them."""

from __future__ import annotations

import re
from dataclasses import dataclass

QUEUED = "queued"
IN_PROGRESS = "in_progress"
COMPLETED = "completed"
# A job's state only moves forward; a late `queued` never undoes an `in_progress`.
JOB_STATE_RANK = {QUEUED: 0, IN_PROGRESS: 1, COMPLETED: 2}

_INSTANCE_ID_RE = re.compile(r"(i-[0-9a-f]{8,17})$")
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

    @property
    def assigned(self) -> bool:
        return self.job_id is not None


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


def runner_name(prefix: str, environment: str, pool: str, instance_id: str) -> str:
    """Runner names end in the instance id, so a listing maps back to hosts without a lookup."""
    return f"{prefix}{environment}-{pool}-{instance_id}"


def instance_id_of(name: str) -> str | None:
    found = _INSTANCE_ID_RE.search(name)
    return found.group(1) if found else None


def slot_runner_name(prefix: str, environment: str, pool: str, instance_id: str, slot: int) -> str:
    """A capacity-block node runs one runner per GPU slot; the name ends in node and slot."""
    return f"{runner_name(prefix, environment, pool, instance_id)}-s{slot}"


def slot_of(name: str) -> tuple[str, int] | None:
    found = _SLOT_RE.search(name)
    return (found.group(1), int(found.group(2))) if found else None
