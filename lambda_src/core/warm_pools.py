"""Stopped warm pools (issue 20.2), the pure part: how many warm instances a pool keeps, which
to retire, and which a launch starts instead of booting a fresh host.

A warm instance was launched from the pool's baked image, booted once (runner unpacked, images
pulled, disks initialised), then stopped: it costs only its EBS until a queued job starts it and
it gets its one-job config as a fresh host does. It has never run a job. Its size is, by default,
*adaptive*: the launches the pool needed in a short window starting at this weekday and time of
day, over the last weeks, at a high percentile, bounded by the pool's maximum and the estate's
EBS budget. Scheduled sizes (`windows`, cron as `idle_config`) replace that where given.

The control plane (lambda_src/functions/control_plane.py) and the simulator (estate/sim) both
decide with these functions, so the simulator's figures are the planner's.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from lambda_src.core import cron

DEMAND_BUCKET_S = 300  # the ledger counts a pool's launches per 5-minute bucket
WEEK_S = 7 * 24 * 3600
ADAPTIVE, SCHEDULED, OFF = "adaptive", "scheduled", "off"
PREPARE_GRACE_S = 300.0  # past its boot timeout, a warm instance still preparing has failed its first boot


@dataclass(frozen=True)
class WarmWindow:
    """While `cron` matches (in `time_zone`), keep `size` warm instances."""

    cron: str
    time_zone: str
    size: int


@dataclass(frozen=True)
class WarmSettings:
    mode: str = ADAPTIVE  # adaptive | scheduled | off
    maximum: int = 4  # warm instances the pool keeps at most
    windows: tuple[WarmWindow, ...] = ()  # scheduled sizes (mode `scheduled`)
    lookahead_s: int = 600  # the short window of demand a warm instance is kept for
    weeks: int = 4  # how many past weeks the demand history is read over
    percentile: float = 0.9  # of the weeks' launches in that window
    max_age_s: int = 7 * 24 * 3600  # a warm instance older than this is replaced
    # A warm instance stays while the target within this much ahead still wants it: without it,
    # the adaptive target's minute-to-minute moves would retire and relaunch (each launch pays a
    # boot and a full volume initialization) instances wanted again minutes later.
    hold_s: int = 3600
    # From launch to stopped and ready (boot, image pulls, power-off, noticed): only demand after
    # that can use an instance launched now, so launches are sized that far ahead (`launch_size`).
    ready_s: int = 180
    volume_gib: float = 0.0  # EBS GiB a warm instance holds (for the budget)


@dataclass(frozen=True)
class WarmInstance:
    id: str
    pool: str
    launched_at: float
    image_id: str
    ready: bool  # booted once and stopped: it may be started for a job


@dataclass(frozen=True)
class WarmPlan:
    pool: str
    target: int
    launch: int  # warm instances to launch (each boots once, then stops itself)
    retire: tuple[str, ...]  # warm instances to terminate: superseded, too old, a failed boot, or beyond the target
    failed_boots: tuple[str, ...] = ()  # of those, the ones still preparing past their deadline


def demand_bucket(at: float) -> int:
    return int(at // DEMAND_BUCKET_S)


def weekly_samples(launches: Mapping[int, int], now: float, lookahead_s: int, weeks: int) -> list[int]:
    """Launches in the window [now - k weeks, now - k weeks + lookahead) for k = 1..weeks: the
    same weekday and time of day. `launches` maps a demand bucket to the launches counted in it."""
    span = max(1, math.ceil(lookahead_s / DEMAND_BUCKET_S))
    samples = []
    for k in range(1, weeks + 1):
        first = demand_bucket(now - k * WEEK_S)
        samples.append(sum(launches.get(b, 0) for b in range(first, first + span)))
    return samples


def history_buckets(settings: WarmSettings, now: float) -> list[int]:
    """The demand buckets `target_size` and `held_size` read at `now`: the lookahead and the
    hold after this weekday and time, in each of the past weeks (none unless adaptive)."""
    if settings.mode != ADAPTIVE:
        return []
    span = max(1, math.ceil((settings.lookahead_s + settings.hold_s) / DEMAND_BUCKET_S))
    firsts = [demand_bucket(now - k * WEEK_S) for k in range(1, settings.weeks + 1)]
    return [first + i for first in firsts for i in range(span)]


def percentile(values: Sequence[int], share: float) -> float:
    """The nearest-rank percentile: the smallest value with at least `share` of the values at or below it."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(share * len(ordered)))
    return float(ordered[rank - 1])


def target_size(settings: WarmSettings, launches: Mapping[int, int], now: float) -> int:
    """How many warm instances the pool keeps now, before the EBS budget."""
    if settings.mode == OFF or settings.maximum <= 0:
        return 0
    if settings.mode == SCHEDULED:
        when = datetime.fromtimestamp(now, UTC)
        wanted = max((w.size for w in settings.windows if cron.matches(w.cron, when, w.time_zone)), default=0)
    else:
        wanted = math.ceil(percentile(weekly_samples(launches, now, settings.lookahead_s, settings.weeks), settings.percentile))
    return max(0, min(settings.maximum, wanted))


def launch_size(settings: WarmSettings, launches: Mapping[int, int], now: float) -> int:
    """How many warm instances the pool launches up to now: the target once an instance launched
    now is ready. Sized at `now`, the end of a rush would launch instances whose demand is over
    before they have prepared, and they would be retired unused."""
    return target_size(settings, launches, now + settings.ready_s)


def held_size(settings: WarmSettings, launches: Mapping[int, int], now: float) -> int:
    """The most warm instances the target asks for from now to `hold_s` ahead: what a pool
    keeps (it launches only up to `launch_size`, which this covers while `ready_s` <= `hold_s`)."""
    steps = range(0, settings.hold_s + 1, DEMAND_BUCKET_S)
    return max(target_size(settings, launches, now + step) for step in steps)


def within_budget(targets: Mapping[str, int], volume_gib: Mapping[str, float], budget_gib: float | None) -> dict[str, int]:
    """The targets, trimmed one instance at a time from the pool holding the most EBS until all
    warm instances together fit `budget_gib` (None: no budget)."""
    trimmed = dict(targets)
    if budget_gib is None:
        return trimmed

    def total() -> float:
        return sum(trimmed[p] * volume_gib.get(p, 0.0) for p in trimmed)

    while total() > budget_gib:
        heaviest = max((p for p in trimmed if trimmed[p] > 0), key=lambda p: (trimmed[p] * volume_gib.get(p, 0.0), p))
        trimmed[heaviest] -= 1
    return trimmed


def prepare_deadline_s(boot_timeout_s: float) -> float:
    """How long after its launch a warm instance may still be preparing: the pool's boot timeout
    and the preparation's own time (images pulled, disks read) on top."""
    return boot_timeout_s + PREPARE_GRACE_S


def plan_warm_pool(
    pool: str,
    settings: WarmSettings,
    warm: Iterable[WarmInstance],
    target: int,
    newest_image: str,
    now: float,
    keep: int | None = None,
    boot_timeout_s: float | None = None,
) -> WarmPlan:
    """Retire what is superseded (another image than the newest), older than the maximum age,
    still preparing past `prepare_deadline_s` (it never powered itself off: a failed first
    boot), or beyond `keep` (at least the target; `held_size` where the caller has the history),
    oldest first; launch what brings the pool back to its target."""
    mine = [w for w in warm if w.pool == pool]

    def failed_boot(w: WarmInstance) -> bool:
        return boot_timeout_s is not None and not w.ready and now - w.launched_at > prepare_deadline_s(boot_timeout_s)

    def worn(w: WarmInstance) -> bool:  # superseded, aged or a failed boot: never worth keeping
        return (bool(newest_image) and w.image_id != newest_image) or now - w.launched_at > settings.max_age_s or failed_boot(w)

    stale = [w for w in mine if worn(w)]
    fresh = sorted((w for w in mine if w not in stale), key=lambda w: (w.launched_at, w.id))
    excess = fresh[: max(0, len(fresh) - max(target, keep or 0))]
    kept = len(fresh) - len(excess)
    failed = tuple(w.id for w in stale if failed_boot(w))
    return WarmPlan(pool, target, max(0, target - kept), tuple(w.id for w in [*stale, *excess]), failed)


def pick_warm(warm: Iterable[WarmInstance], pool: str, count: int, newest_image: str) -> list[str]:
    """The ready warm instances a launch of `count` starts instead of fresh hosts: the newest
    image's only, the oldest first (it is the first to age out)."""
    ready = [w for w in warm if w.pool == pool and w.ready and (not newest_image or w.image_id == newest_image)]
    return [w.id for w in sorted(ready, key=lambda w: (w.launched_at, w.id))[: max(0, count)]]


def warm_launch_token(pool: str, warm: Iterable[WarmInstance], count: int, now: float) -> str:
    """A warm launch's idempotency token: the same for the same pool, minute, warm pool and count
    (a retried or repeated request launches nothing twice), another for any other launch (EC2
    refuses a token reused with other parameters: IdempotentParameterMismatch)."""
    seen = ",".join(sorted(w.id for w in warm if w.pool == pool))
    return "warm-" + hashlib.sha256(f"{pool}|{int(now // 60)}|{count}|{seen}".encode()).hexdigest()[:24]
