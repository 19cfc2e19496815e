"""The agent's decisions, pure: which slots to park, restart or wake and which registrations
to delete, from one runner listing and the slots' state. `estate/agent/daemon.py` applies them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lambda_src.core.fleet_state import GithubRunner
from lambda_src.core.routing import normalise

START_GRACE_S = 60.0  # a fresh runner must show in GitHub's list within this
# GitHub removes an ephemeral runner when its job ends and the process exits a moment later:
# a runner seen busy this recently and now gone is left to exit by itself.
JOB_EXIT_GRACE_S = 120.0


@dataclass(frozen=True)
class RunningSlot:
    """A slot whose runner process is running."""

    index: int
    runner_name: str
    started_at: float
    idle_since: float | None
    runner_id: int | None = None
    busy_at: float | None = None  # when GitHub last showed its runner running a job


@dataclass
class AgentPlan:
    idle_since: dict[int, float | None] = field(default_factory=dict)  # new idle marks per running slot
    busy_at: dict[int, float] = field(default_factory=dict)  # slots GitHub shows running a job now
    confirm: list[int] = field(default_factory=list)  # slots whose runner a listing missed: ask GitHub about it
    restart: list[int] = field(default_factory=list)  # registration confirmed gone under a running process
    retire: list[tuple[int, int]] = field(default_factory=list)  # (slot, runner id): deregister, then stop (park unless draining)
    leftovers: list[int] = field(default_factory=list)  # runner ids of ours that no slot owns


def plan_reconcile(
    running: Iterable[RunningSlot],
    listed: Mapping[str, GithubRunner],
    now: float,
    idle_timeout_s: float,
    draining: bool,
    confirmed: Mapping[int, GithubRunner | None] | None = None,
) -> AgentPlan:
    """`listed`: the org's runners named with this agent's prefix, from one paged listing.
    `confirmed`: for slots an earlier plan asked to confirm, GitHub's answer for that one
    runner (None: 404, gone).

    A paged listing is no proof of absence: runners deleted while it pages shift the rest,
    and one can fall between two pages. So a slot's runner missing from the listing is only
    asked about (`confirm`); the slot restarts only when GitHub answers that the runner is
    gone, and not while it may still be finishing a job. A busy runner is never retired or
    deleted: its job finishes first."""
    plan = AgentPlan()
    confirmed = confirmed or {}
    owned = set()
    for slot in running:
        owned.add(slot.runner_name)
        runner = listed.get(slot.runner_name) or confirmed.get(slot.index)
        if runner is None:
            if now - slot.started_at <= START_GRACE_S:
                continue  # a fresh registration may not be listed yet
            if slot.index not in confirmed:
                plan.confirm.append(slot.index)
            elif slot.busy_at is None or now - slot.busy_at > JOB_EXIT_GRACE_S:
                plan.restart.append(slot.index)
            continue
        if runner.busy:
            plan.busy_at[slot.index] = now
        idle_since = (slot.idle_since or now) if runner.online and not runner.busy else None
        plan.idle_since[slot.index] = idle_since
        timed_out = idle_since is not None and now - idle_since >= idle_timeout_s
        if (draining or timed_out) and not runner.busy:
            plan.retire.append((slot.index, runner.id))
    plan.leftovers = [r.id for name, r in listed.items() if name not in owned and not r.busy]
    return plan


def slots_to_wake(queued_label_sets: Iterable[Iterable[str]], parked: Mapping[int, Iterable[str]]) -> list[int]:
    """One parked slot per queued job it can take (a job's labels a subset of the slot's,
    case-insensitive, as GitHub matches), first fitting slot first."""
    free = {index: normalise(labels) for index, labels in parked.items()}
    woken = []
    for labels in queued_label_sets:
        wanted = normalise(labels)
        found = next((i for i, have in free.items() if wanted <= have), None)
        if found is not None:
            woken.append(found)
            del free[found]
    return woken
