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


# ---- who may reach the agent's credential ---------------------------------------------------


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gids: frozenset[int]  # primary and supplementary groups


@dataclass(frozen=True)
class FileFacts:
    path: str
    owner: int
    group: int
    mode: int  # st_mode


def _may(account: Account, facts: FileFacts, bit: int) -> bool:
    """POSIX permission classes: the first that applies decides (owner, then group, then
    others); `bit` is 4 (read) or 2 (write). Root may do anything."""
    if account.uid == 0:
        return True
    if account.uid == facts.owner:
        return bool(facts.mode & (bit << 6))
    if facts.group in account.gids:
        return bool(facts.mode & (bit << 3))
    return bool(facts.mode & bit)


def separation_problems(
    agent: Account,
    run_as: Account | None,
    secrets: Iterable[FileFacts],
    secret_dirs: Iterable[FileFacts],
    code_dirs: Iterable[FileFacts],
    privileged_groups: Mapping[int, str],
) -> list[str]:
    """Why jobs could reach the agent's credential, one line each; none when they cannot.

    A job is whatever the runners' user can do. So that user is never root, never the
    agent's own user (compared by uid: a second name for the same uid is the same user),
    never in a group that is root by another name (sudo, docker, ...); the credential
    (token file or App key) belongs to the agent and only it may read it; and the runners'
    user may neither replace the credential nor write the agent's code."""
    if run_as is None:
        return [f"runners need a user of their own: give --run-as USER (not root, not the agent's user {agent.name})"]
    problems = []
    if run_as.uid == 0:
        problems.append(f"--run-as {run_as.name} is root: runners never run as root")
    elif run_as.uid == agent.uid:
        problems.append(f"--run-as {run_as.name} is the agent's own user: its jobs could read the agent's credential")
    for gid in sorted(run_as.gids & set(privileged_groups)):
        problems.append(f"--run-as {run_as.name} is in group {privileged_groups[gid]}, which can act as root: its jobs could too")
    for secret in secrets:
        if secret.owner != agent.uid:
            problems.append(f"{secret.path} belongs to uid {secret.owner}, not to the agent's user {agent.name}: chown it")
        elif secret.mode & 0o077:
            problems.append(f"{secret.path} is readable by group or others (mode {secret.mode & 0o7777:o}); chmod 600 it")
        elif _may(run_as, secret, 4):
            problems.append(f"{secret.path} is readable by the runners' user {run_as.name}")
    for folder in secret_dirs:
        # In a sticky folder (/tmp) only a file's or the folder's owner may replace a file.
        sticky = folder.mode & 0o1000 and folder.owner != run_as.uid
        if _may(run_as, folder, 2) and not sticky:
            problems.append(f"{folder.path} is writable by the runners' user {run_as.name}: a job could replace the credential")
    for folder in code_dirs:
        if _may(run_as, folder, 2):
            problems.append(f"{folder.path} is writable by the runners' user {run_as.name}: a job could change the agent's code")
    return problems
