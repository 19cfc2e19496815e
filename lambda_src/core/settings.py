"""The control plane's settings: one validated object, built once per cold start.

`estate` compiles them from the runner configs and the stack (see estate/derive/control_config.py)
and ships them as `control_plane.json` inside the Lambda package, so a handler never parses
YAML or environment variables deep inside business logic. Pure and stdlib-only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lambda_src.core.fleet_state import owning_pool
from lambda_src.core.routing import RoutingTable
from lambda_src.core.warm_pools import WarmSettings, WarmWindow

SETTINGS_FILE = "control_plane.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class IdleWindow:
    cron: str
    time_zone: str
    idle_count: int
    eviction: str  # oldest_first | newest_first


@dataclass(frozen=True)
class PoolWindow:
    """`pool_config`: when `schedule` fires, top the pool up to `size` unassigned runners."""

    schedule: str  # an EventBridge schedule expression
    time_zone: str
    size: int


@dataclass(frozen=True)
class PoolSettings:
    name: str
    capacity_type: str  # spot | on-demand | capacity-block
    instance_types: tuple[str, ...]
    labels: tuple[str, ...]  # the runner's labels, as registered
    runner_group: str
    max_instances: int  # runners_maximum_count, lowered by hard_limits.max_instances
    allocation_strategy: str = "lowest-price"
    max_spot_price: str | None = None
    failover_errors: tuple[str, ...] = ()
    name_prefix: str = ""
    minimum_running_s: int = 0
    boot_timeout_s: int = 300
    idle_windows: tuple[IdleWindow, ...] = ()  # idle runners scale-down keeps
    pool_windows: tuple[PoolWindow, ...] = ()  # runners the reconciler creates ahead of demand
    launch_template_id: str = ""
    subnet_ids: tuple[str, ...] = ()
    queue_url: str = ""
    max_hourly_usd: float | None = None  # hard_limits.max_hourly_usd: the pool's live hosts may not cost more
    host_hourly_usd: float = 0.0  # the dearest of its types at on-demand price: an upper bound per host
    # What one host-hour is expected to cost in the pool's own market (spot, on-demand or the
    # block's rate), averaged over its types: per-job cost in the ledger and the spend rate.
    hourly_usd: float = 0.0
    host_gpus: int = 0  # GPUs of one host (its types' most): idle paid GPU-hours
    max_jobs_per_host: int = 1  # estate.reuse_hosts.max_jobs: one-job runners a host may run in turn
    # How long a host may live (Pool.max_lifetime_minutes): past it, it is drained and terminated. 0: no limit.
    max_lifetime_s: int = 0
    keeps_volumes: bool = False  # a block device says delete_on_termination: false; the sweeper leaves its volumes
    # The SSM parameter naming the newest build of the pool's baked image (estate/derive/images.py),
    # which its launch template resolves at each launch; "" where hosts boot a stock AMI.
    image_parameter: str = ""
    warm: WarmSettings = field(default_factory=lambda: WarmSettings(mode="off"))  # its stopped warm pool (core/warm_pools.py)
    # Capacity-block pools only:
    gpus_per_node: int = 0
    slot_gpus: tuple[int, ...] = ()  # GPUs of each slot of a node, in slot order
    slot_labels: tuple[tuple[str, ...], ...] = ()  # each slot's own labels (model, compute capability, size)
    job_timeout_s: int = 6 * 3600  # the longest job the pool runs (a block stops taking jobs this long before its end)
    reservation_ids: tuple[str, ...] = ()  # blocks named in config; blocks tagged with the pool are found too
    renew: bool = False  # buy the next block when demand persists
    renew_max_price_usd: float | None = None
    renew_duration_hours: int | None = None
    renew_instance_count: int = 1
    # Where the manager hears of the pool: EventBridge's Capacity Block and instance events (only
    # EventBridge may send there) and the nodes' own slot reports (a node speaks only for itself).
    events_queue_arn: str = ""
    reports_queue_arn: str = ""
    security_group_ids: tuple[str, ...] = ()  # a node's network interface is given at launch (EFA needs it)
    public_ip: bool = False
    efa: bool = False

    def labels_of_slot(self, index: int) -> list[str]:
        """What a slot's runner registers with: the pool's labels and the slot's own."""
        return list(dict.fromkeys([*self.labels, *self.slot_labels[index]]))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoolSettings:
        values = dict(data)
        for key in ("instance_types", "labels", "failover_errors", "subnet_ids", "slot_gpus", "reservation_ids", "security_group_ids"):
            values[key] = tuple(values.get(key, ()))
        values["slot_labels"] = tuple(tuple(labels) for labels in values.get("slot_labels", ()))
        values["idle_windows"] = tuple(IdleWindow(**w) for w in values.get("idle_windows", ()))
        values["pool_windows"] = tuple(PoolWindow(**w) for w in values.get("pool_windows", ()))
        if "warm" in values:
            warm = dict(values["warm"])
            warm["windows"] = tuple(WarmWindow(**w) for w in warm.get("windows", ()))
            values["warm"] = WarmSettings(**warm)
        return cls(**values)


@dataclass(frozen=True)
class AppSettings:
    """A further GitHub App (issue 21.4): its id, the SecureString of its key, its installation."""

    app_id: int
    key_parameter: str
    installation_id: int | None = None


@dataclass(frozen=True)
class ControlPlaneSettings:
    environment: str
    region: str
    org: str
    app_id: int
    api_url: str
    table_name: str
    webhook_secret_parameter: str
    app_key_parameter: str
    jit_parameter_prefix: str  # "/runner-estate/<env>/jit/": one SecureString per instance below it
    pools: Mapping[str, PoolSettings]
    routing: RoutingTable
    installation_id: int | None = None
    ledger_ttl_s: int = 7 * 24 * 3600
    webhook_id: int | None = None  # the org hook whose failed deliveries are redelivered; None: found by URL
    more_apps: tuple[AppSettings, ...] = ()  # Apps the GitHub client spreads its calls over, besides app_id
    # The EBS GiB all pools' stopped warm instances may hold together (`warm_pools.ebs_budget_gib`); None: no budget.
    warm_ebs_budget_gib: float | None = None

    def pool(self, name: str) -> PoolSettings:
        return self.pools[name]

    def reusing_pool_of(self, runner_name: str) -> str | None:
        """The pool that named this runner, if that pool reuses hosts (`estate.reuse_hosts`)."""
        reusing = ((p.name, p.name_prefix) for p in self.pools.values() if p.max_jobs_per_host > 1)
        return owning_pool(reusing, self.environment, runner_name)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in {"pools", "routing"}}
        data["version"] = FORMAT_VERSION
        data["pools"] = {name: asdict(p) for name, p in self.pools.items()}
        data["routing"] = self.routing.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ControlPlaneSettings:
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"control-plane settings version {data.get('version')!r}; this code reads {FORMAT_VERSION}")
        values = {k: v for k, v in data.items() if k != "version"}
        values["pools"] = {name: PoolSettings.from_dict(p) for name, p in data["pools"].items()}
        values["routing"] = RoutingTable.from_dict(data["routing"])
        values["more_apps"] = tuple(AppSettings(**a) for a in data.get("more_apps", ()))
        return cls(**values)

    @classmethod
    def load(cls, path: Path | None = None) -> ControlPlaneSettings:
        """The settings shipped next to this module (or at `path`)."""
        target = path or Path(__file__).resolve().parents[1] / SETTINGS_FILE  # lambda_src/, beside the packages
        return cls.from_dict(json.loads(target.read_text(encoding="utf-8")))
