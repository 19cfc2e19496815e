"""What outlived its purpose, decided from EC2, SSM and GitHub alone — never from the ledger. Pure.

The scaler keeps the ledger and EC2 in step (planner.plan_host_sync), but a ledger item that
is lost, or a host that never read its runner config, or a pool taken out of the config, leaves
things behind that nothing else would end. The sweeper finds what is ours from tags (instances,
volumes, network interfaces: `runner-estate:managed`, `:environment`, `:pool`) and names (runner
configs under the environment's parameter prefix, runners named after a pool and an instance),
and removes what has no live owner once it has been ownerless for a grace period:

- an instance of a pool no longer in the config is retired (its idle runner deregistered first;
  one running a job is left to finish, up to the longest a job may take);
- an instance of a configured pool past its maximum lifetime plus the grace period is ended
  (scale-down normally retires it on time; this is the backstop when the ledger lost it);
- a volume no instance holds (`available`), unless its pool keeps volumes on purpose;
- a network interface no instance holds (`available`);
- a runner config whose instance is not live;
- a runner of ours whose instance is not live, and which is not running a job.

Capacity-block nodes of configured pools are the block manager's and are never ended here.
Resources without a creation time (network interfaces, runners) are timed from when the sweeper
first saw them ownerless (`first_seen`, kept by the shell).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lambda_src.core.fleet_state import GithubRunner, instance_id_of, owning_pool, runner_name, slot_of
from lambda_src.core.settings import PoolSettings

SWEEP_GRACE_S = 30 * 60.0  # ownerless this long before it is removed
SWEEP_PERIOD_S = 10 * 60.0
# A host of a pool no longer configured may finish the job it runs, up to GitHub's default job
# timeout and a margin; then it is ended whatever it does.
RETIRED_POOL_MAX_S = (360 + 15) * 60.0
LIVE_STATES = frozenset({"pending", "running", "stopping", "stopped"})
_INSTANCE_RE = re.compile(r"i-[0-9a-f]{8,17}")


@dataclass(frozen=True)
class TaggedInstance:
    id: str
    pool: str  # its `runner-estate:pool` tag ("" when missing)
    state: str
    launched_at: float

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


@dataclass(frozen=True)
class TaggedVolume:
    id: str
    pool: str
    state: str  # available: no instance holds it
    created_at: float


@dataclass(frozen=True)
class TaggedInterface:
    id: str
    pool: str
    status: str  # available: no instance holds it


@dataclass(frozen=True)
class RunnerConfig:
    name: str  # the SSM parameter's name
    modified_at: float


@dataclass(frozen=True)
class Leftovers:
    """Everything of one environment the sweeper looks at, as the services list it."""

    instances: tuple[TaggedInstance, ...] = ()
    volumes: tuple[TaggedVolume, ...] = ()
    interfaces: tuple[TaggedInterface, ...] = ()
    configs: tuple[RunnerConfig, ...] = ()
    runners: tuple[GithubRunner, ...] = ()


@dataclass(frozen=True)
class Removal:
    kind: str  # instance | volume | interface | config | runner
    id: str  # the resource's id (a runner's numeric id as text, a parameter's name)
    reason: str
    pool: str = ""
    runner_id: int | None = None  # an instance's runner to deregister first
    force: bool = False  # an instance ended even if its runner is busy (past its maximum lifetime)


@dataclass
class SweepPlan:
    remove: list[Removal] = field(default_factory=list)
    watch: list[str] = field(default_factory=list)  # ownerless now, first seen now: timed from here
    forget: list[str] = field(default_factory=list)  # watched before, owned (or gone) now

    def of(self, kind: str) -> list[Removal]:
        return [r for r in self.remove if r.kind == kind]


def _instance_of_config(prefix: str, name: str) -> str | None:
    """The instance a runner config belongs to: `<prefix><instance id>` or `.../s<slot>`."""
    if not name.startswith(prefix):
        return None
    head = name[len(prefix) :].split("/", 1)[0]
    return head if _INSTANCE_RE.fullmatch(head) else None


def runner_owner(pools: Mapping[str, PoolSettings], retired_pools: Iterable[str], environment: str, name: str) -> tuple[str, str] | None:
    """(pool, instance id) of a runner of ours: named by a configured pool (a host's runner, a
    reused host's next one, or a node's slot), or by a pool no longer configured whose hosts EC2
    still lists (its runner name prefix is unknown then: the name must end in
    `<environment>-<pool>-<instance id>`). None for anyone else's runner."""
    slot = slot_of(name)
    if slot is not None:
        node, _ = slot
        for settings in pools.values():
            if name.rsplit("-s", 1)[0] == runner_name(settings.name_prefix, environment, settings.name, node):
                return settings.name, node
    iid = instance_id_of(name)
    if iid is None:
        return None
    owner = owning_pool(((p.name, p.name_prefix) for p in pools.values()), environment, name)
    if owner is not None:
        return owner, iid
    for retired in retired_pools:
        if re.search(rf"(?:^|[^a-z0-9]){re.escape(environment)}-{re.escape(retired)}-{iid}(?:-r[1-9]\d*)?$", name):
            return retired, iid
    return None


def plan_sweep(
    pools: Mapping[str, PoolSettings],
    environment: str,
    jit_prefix: str,
    found: Leftovers,
    first_seen: Mapping[str, float],
    now: float,
    grace_s: float = SWEEP_GRACE_S,
) -> SweepPlan:
    plan = SweepPlan()
    live = {i.id for i in found.instances if i.live}
    retired_pools = sorted({i.pool for i in found.instances if i.pool and i.pool not in pools})
    by_instance: dict[str, GithubRunner] = {}
    ours: list[tuple[GithubRunner, str, str]] = []
    for runner in found.runners:
        owner = runner_owner(pools, retired_pools, environment, runner.name)
        if owner is not None:
            ours.append((runner, *owner))
            by_instance.setdefault(owner[1], runner)
    watched: set[str] = set()

    def timed(key: str) -> float | None:
        """How long `key` has been ownerless; first sight starts the clock."""
        watched.add(key)
        if key not in first_seen:
            plan.watch.append(key)
            return None
        return now - first_seen[key]

    for inst in found.instances:
        if not inst.live or now - inst.launched_at < grace_s:
            continue
        age = now - inst.launched_at
        held = by_instance.get(inst.id)
        pool = pools.get(inst.pool)
        if pool is None:
            # A pool taken out of the config: retire its hosts, letting a running job finish.
            if held is not None and held.busy and age < RETIRED_POOL_MAX_S:
                continue
            why = f"its pool {inst.pool or '(untagged)'} is no longer in the config"
            busy = held is not None and held.busy  # only past the longest a job may take
            plan.remove.append(Removal("instance", inst.id, why, inst.pool, held.id if held else None, force=busy))
        elif pool.capacity_type != "capacity-block" and pool.max_lifetime_s and age >= pool.max_lifetime_s + grace_s:
            why = f"{age / 60:.0f} min old, past the pool's maximum lifetime of {pool.max_lifetime_s // 60} min"
            plan.remove.append(Removal("instance", inst.id, why, inst.pool, held.id if held else None, force=True))

    for volume in found.volumes:
        pool = pools.get(volume.pool)
        if volume.state != "available" or (pool is not None and pool.keeps_volumes):
            continue
        if now - volume.created_at >= grace_s:
            plan.remove.append(Removal("volume", volume.id, "no instance holds it", volume.pool))

    for nic in found.interfaces:
        if nic.status != "available":
            continue
        since = timed(f"interface:{nic.id}")
        if since is not None and since >= grace_s:
            plan.remove.append(Removal("interface", nic.id, "no instance holds it", nic.pool))

    for config in found.configs:
        iid = _instance_of_config(jit_prefix, config.name)
        if iid is not None and iid not in live and now - config.modified_at >= grace_s:
            plan.remove.append(Removal("config", config.name, f"its instance {iid} is not running"))

    for runner, pool_name, iid in ours:
        if iid in live or runner.busy:
            continue
        since = timed(f"runner:{runner.id}")
        if since is not None and since >= grace_s:
            plan.remove.append(Removal("runner", str(runner.id), f"its instance {iid} is not running", pool_name, runner.id))

    plan.forget = sorted(set(first_seen) - watched)
    return plan
