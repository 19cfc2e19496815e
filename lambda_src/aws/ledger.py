"""The idempotency ledger and fleet state, in one DynamoDB table.

Items (partition key `pk`):
  job#<id>       pool, state, repo, labels, public, queued_at, runner_name - one per GitHub job
  instance#<id>  pool, launched_at, job_id, registered_at, idle_since, jit_at, runner_name,
                 generation, jobs_done, finished_at (a reusable host's runner configs)
  repo#<name>    last_seen                                            - repos to re-scan
  lock#<name>    holder, lease_until                                  - one planner per pool at a time
  block#<id>     target, warned                                       - a capacity block's memory
  slot#<id>#<n>  issued_at, seen_at, faulty                           - a node slot's runner
  redelivery#<guid>  claimed_at, state                               - a webhook delivery we asked GitHub to resend
  sweep#<kind>:<id>  first_seen                                        - when the sweeper first saw it ownerless
  interrupt#<id>     pool, interrupted_at, state, checked_at           - a warned spot host whose job may be re-run
  breaker#<pool>     warnings, open_until                              - a pool's spot interruptions; off spot until
  steer#<repo>#<run> after_attempt, pool                               - a re-run job's retry goes on-demand
  failure#<pool> message, at, count                                  - the pool's last launch failure
  usage#<pool>#<hour>  paid_gpu_s, busy_gpu_s                        - capacity-block GPU time per hour
  launches#<pool>#<bucket>  count                                    - hosts the pool needed per 5 minutes (warm-pool sizing)
  warm#<id>      pool, launched_at, image_id, state                  - a stopped warm instance (booting, ready, starting, started)
A finished job also keeps what it cost (`cost_usd`, `host_s`: lambda_src/core/costs.py) with its
`workflow`, `started_at` and `completed_at`, for `estate report`.
Every item has a TTL (`expires_at`). While a job is queued, or an instance is live, the item
carries `open_key` = "job#<pool>" / "instance#<pool>" / "slot#<pool>" / "repo", the key of a sparse index, so
planning reads only what is open. Writes are conditional: a job is stored once and only moves
forward (queued -> in_progress -> completed), whatever order GitHub delivers events in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lambda_src.aws.sigv4_client import AwsError
from lambda_src.core.costs import JobCost, host_job_cost, slot_job_cost
from lambda_src.core.fleet_state import (
    COMPLETED,
    JOB_STATE_RANK,
    QUEUED,
    BlockRecord,
    Instance,
    Job,
    SlotRecord,
    instance_id_of,
    slot_of,
)
from lambda_src.core.interruptions import Interruption
from lambda_src.core.settings import PoolSettings
from lambda_src.core.warm_pools import WEEK_S, WarmInstance

# A run's workflow files, as stored: bounded like every other field (a run calls at most 20
# reusable workflows, GitHub's nesting and count limits; a ref is owner/repo/path@ref).
MAX_RUN_WORKFLOWS = 50
MAX_WORKFLOW_REF_CHARS = 1024
OPEN = "open_key"  # attribute of the sparse index: set while a job is queued or a host is live
OPEN_INDEX = "open"
RECENT_LAUNCH_S = 300.0  # how long a planning lock remembers launches the index may not show yet
LOCK_LEASE_S = 90.0  # longer than a planning invocation may run; a crashed holder's lease runs out
LOCK_WAIT_S = 10.0  # how long a planner waits for another one planning the same pool
# DynamoDB's item limit: 400 KB, attribute names and values together. moto enforces a kinder
# size (no per-element overhead in lists), so the adapter checks what it writes itself.
MAX_ITEM_BYTES = 400 * 1024
REDELIVERY = "redelivery"  # the open-index key of webhook deliveries already sent again
SWEEP = "sweep"  # the open-index key of what the sweeper watches
SWEEP_MARK_KEEP_S = 2 * 24 * 3600
INTERRUPT = "interrupt"  # the open-index key of warned hosts whose job is still to be judged
STEER = "steer"  # the open-index key of runs whose re-run goes on-demand
# A warm instance's states: launched and preparing (it powers itself off), stopped and ready to
# start, being started for a job, started (an ordinary host from then on: its record is closed).
BOOTING, READY, STARTING, STARTED = "booting", "ready", "starting", "started"
BATCH_GET_KEYS = 100  # DynamoDB's BatchGetItem limit


@dataclass(frozen=True)
class WarmRecord:
    id: str
    pool: str
    launched_at: float
    image_id: str
    state: str

    def warm(self) -> WarmInstance:
        return WarmInstance(self.id, self.pool, self.launched_at, self.image_id, ready=self.state == READY)


class ItemTooLargeError(ValueError):
    """What one write would store exceeds DynamoDB's item limit; nothing was sent."""


def _conditional_failed(exc: AwsError) -> bool:
    return exc.code == "ConditionalCheckFailedException"


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def to_attr(value: Any) -> dict[str, Any]:
    """A plain value as a DynamoDB attribute value."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": repr(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, list):
        return {"L": [to_attr(v) for v in value]}
    raise TypeError(f"cannot store {type(value).__name__} in the ledger")


def attr_bytes(attr: dict[str, Any]) -> int:
    """An attribute value's size as DynamoDB counts it ("Item sizes and formats" in its
    developer guide): strings and binaries by UTF-8/byte length, a number about one byte per
    two significant digits plus one, a boolean or null one byte, a list or map three bytes
    plus one per element (and a map's keys) plus the elements; sets the sum of their members."""
    kind, value = next(iter(attr.items()))
    if kind == "S":
        return len(str(value).encode("utf-8", errors="surrogatepass"))
    if kind == "B":
        return len(value)
    if kind == "N":
        digits = str(value).lstrip("-").replace(".", "").lower().split("e")[0].strip("0")
        return (len(digits) + 1) // 2 + 1
    if kind in {"BOOL", "NULL"}:
        return 1
    if kind == "L":
        return 3 + sum(1 + attr_bytes(v) for v in value)
    if kind == "M":
        return 3 + sum(1 + len(k.encode("utf-8", errors="surrogatepass")) + attr_bytes(v) for k, v in value.items())
    if kind == "SS":
        return sum(len(v.encode("utf-8", errors="surrogatepass")) for v in value)
    if kind == "NS":
        return sum(attr_bytes({"N": v}) for v in value)
    return sum(len(v) for v in value)  # BS


def written_bytes(request: dict[str, Any]) -> int:
    """What a PutItem or UpdateItem request writes, by DynamoDB's count: the item (key and
    attributes) or the key plus every value and name the update sets. For an update this is
    a lower bound of the item afterwards; our items' other attributes are small and bounded."""
    if "Item" in request:
        return sum(len(k.encode("utf-8", errors="surrogatepass")) + attr_bytes(v) for k, v in request["Item"].items())
    names = request.get("ExpressionAttributeNames", {}).values()
    key = sum(len(k.encode()) + attr_bytes(v) for k, v in request.get("Key", {}).items())
    values = sum(attr_bytes(v) for v in request.get("ExpressionAttributeValues", {}).values())
    return key + values + sum(len(str(n).encode("utf-8", errors="surrogatepass")) for n in names)


def from_attr(attr: dict[str, Any]) -> Any:
    kind, value = next(iter(attr.items()))
    if kind == "N":
        number = float(value)
        return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
    if kind == "L":
        return [from_attr(v) for v in value]
    if kind == "NULL":
        return None
    return value


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: from_attr(v) for k, v in item.items()}


@dataclass
class _Table:
    """The few table operations the ledger uses, taking and giving plain values."""

    client: Any
    name: str

    def _marshal(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        out = {"TableName": self.name, **kwargs}
        for key in ("Key", "Item", "ExpressionAttributeValues", "ExclusiveStartKey"):
            if key in out:
                out[key] = {k: to_attr(v) if not isinstance(v, dict) else v for k, v in out[key].items()}
        return out

    def _write(self, action: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        request = self._marshal(kwargs)
        size = written_bytes(request)
        if size > MAX_ITEM_BYTES:
            key = next(iter(request.get("Key", request.get("Item", {})).get("pk", {}).values()), "?")
            raise ItemTooLargeError(f"{action} of {str(key)[:80]} would store {size} bytes, over DynamoDB's {MAX_ITEM_BYTES}")
        return dict(self.client.call(action, request))

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        return self._write("UpdateItem", kwargs)

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        return self._write("PutItem", kwargs)

    def delete_item(self, **kwargs: Any) -> dict[str, Any]:
        return dict(self.client.call("DeleteItem", self._marshal(kwargs)))

    def put_if(self, **kwargs: Any) -> dict[str, Any] | None:
        """A conditional PutItem: None when its ConditionExpression does not hold."""
        return self._if("PutItem", kwargs)

    def update_if(self, **kwargs: Any) -> dict[str, Any] | None:
        """A conditional UpdateItem: None when its ConditionExpression does not hold."""
        return self._if("UpdateItem", kwargs)

    def _if(self, action: str, kwargs: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self._write(action, kwargs)
        except AwsError as exc:
            if _conditional_failed(exc):
                return None
            raise

    def get_item(self, **kwargs: Any) -> dict[str, Any]:
        found = self.client.call("GetItem", self._marshal(kwargs))
        return {"Item": from_item(found["Item"])} if "Item" in found else {}

    def query(self, **kwargs: Any) -> dict[str, Any]:
        return self._items(self.client.call("Query", self._marshal(kwargs)))

    def scan(self, **kwargs: Any) -> dict[str, Any]:
        return self._items(self.client.call("Scan", self._marshal(kwargs)))

    @staticmethod
    def _items(page: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"Items": [from_item(i) for i in page.get("Items", [])]}
        if "LastEvaluatedKey" in page:
            out["LastEvaluatedKey"] = page["LastEvaluatedKey"]  # passed back as is
        return out


class PoolBusyError(RuntimeError):
    """Another invocation kept planning this pool for longer than we may wait."""


@contextmanager
def planning_lock(ledger: Ledger, pool: str, holder: str, sleep: Callable[[float], None]) -> Iterator[list[tuple[str, float]]]:
    """One planner per pool at a time: two invocations reading the same state would each act
    on it. Waits a little for the other one, then gives up. Yields the recent launches
    (instance id, time), which the caller may append to; they are left with the lock."""
    waited = 0.0
    while (recent := ledger.try_lock(f"plan#{pool}", holder, LOCK_LEASE_S)) is None:
        if waited >= LOCK_WAIT_S:
            raise PoolBusyError(f"pool {pool} is being planned by another invocation")
        sleep(0.2)
        waited += 0.2
    try:
        yield recent
    finally:
        ledger.unlock(f"plan#{pool}", holder, recent)


@dataclass
class Ledger:
    dynamodb: Any  # AwsJsonClient("dynamodb", ...)
    table_name: str
    ttl_s: int
    clock: Any  # () -> float
    # The pools' compiled settings, for what a finished job cost (PoolSettings.hourly_usd); without
    # them no cost is recorded.
    pools: Mapping[str, PoolSettings] = field(default_factory=dict)

    @property
    def table(self) -> _Table:
        return _Table(self.dynamodb, self.table_name)

    # ---- jobs -------------------------------------------------------------------------
    def record_job(self, job: Job) -> bool:
        """Store a job, or move it forward. False for a duplicate or a stale (older) event."""
        now = self.clock()
        sets = {"state": job.state, "rank": JOB_STATE_RANK[job.state], "expires_at": int(now + self.ttl_s)}
        first = {"pool": job.pool, "repo": job.repo, "labels": list(job.labels), "public": job.public, "queued_at": job.queued_at or now}
        if job.runner_name:
            sets["runner_name"] = job.runner_name
        if job.run_id is not None:
            first["run_id"] = job.run_id
        if job.run_attempt is not None:
            first["run_attempt"] = job.run_attempt
        if job.workflow:
            first["workflow"] = job.workflow
        if job.started_at is not None:
            first["started_at"] = job.started_at
        if job.state == COMPLETED:
            if job.conclusion is not None:
                sets["conclusion"] = job.conclusion
            sets["completed_at"] = job.completed_at if job.completed_at is not None else now
        if job.state == QUEUED:
            sets[OPEN] = f"job#{job.pool}"
        clauses = [f"#{k} = :{k}" for k in sets] + [f"#{k} = if_not_exists(#{k}, :{k})" for k in first]
        update = "SET " + ", ".join(clauses) + ("" if job.state == QUEUED else f" REMOVE #{OPEN}")
        fields = [*sets, *first, OPEN]
        stored = self.table.update_if(
            Key={"pk": f"job#{job.id}"},
            UpdateExpression=update,
            ConditionExpression="attribute_not_exists(pk) OR #rank < :rank",
            ExpressionAttributeNames={f"#{k}": k for k in fields},
            ExpressionAttributeValues={f":{k}": v for k, v in {**sets, **first}.items()},
            ReturnValues="ALL_NEW",
        )
        if stored is None:
            return False
        if job.repo:
            self._touch_repo(job.repo, now)
        if job.state != QUEUED and job.runner_name:
            iid = instance_id_of(job.runner_name)
            if iid is not None and job.state != COMPLETED:
                self.assign(iid, job.id)
            elif job.state == COMPLETED:
                self._finished(job, from_item(stored.get("Attributes", {})), now)
        return True

    def _finished(self, job: Job, item: dict[str, Any], now: float) -> None:
        """A job's `completed`, stored once: its host is spent, and the job is charged what it
        cost (core/costs.py), a host of its own from its runner's start or a node slot's share."""
        assert job.runner_name is not None
        end = job.completed_at or now
        cost: JobCost | None = None
        pool: PoolSettings | None = None
        iid = instance_id_of(job.runner_name)
        if iid is not None:
            host = self.finish(iid, job.id)
            pool = None if host is None else self.pools.get(host.pool)
            if host is not None and pool is not None:
                cost = host_job_cost(pool, host.runner_since, end)
        elif (slot := slot_of(job.runner_name)) is not None:
            # The node's pool from the runner's name (<prefix><env>-<pool>-<node>-s<n>), the longest
            # pool name that fits: the webhook may write the ledger but not read it.
            suffix = f"-{slot[0]}-s{slot[1]}"
            pool = max(
                (p for p in self.pools.values() if p.slot_gpus and job.runner_name.endswith(f"-{p.name}{suffix}")),
                key=lambda p: len(p.name),
                default=None,
            )
            started = item.get("started_at")
            if pool is not None and started is not None:
                cost = slot_job_cost(pool, slot[1], float(started), end)
        if cost is not None and pool is not None:  # the pool whose host ran it (GitHub may give a job to any matching runner)
            self.table.update_if(
                Key={"pk": f"job#{job.id}"},
                UpdateExpression="SET cost_usd = :usd, host_s = :s, cost_pool = :pool",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":usd": cost.usd, ":s": cost.host_s, ":pool": pool.name},
            )

    def queued_jobs(self, pool: str | None = None) -> list[Job]:
        return [self._job(item) for item in self._active("job#", pool)]

    def job(self, job_id: int) -> Job | None:
        item = self.table.get_item(Key={"pk": f"job#{job_id}"}, ConsistentRead=True).get("Item")
        return None if item is None else self._job(item)

    def _job(self, item: dict[str, Any]) -> Job:
        return Job(
            id=int(item["pk"].split("#", 1)[1]),
            pool=str(item["pool"]),
            state=str(item["state"]),
            queued_at=float(item["queued_at"]),
            repo=str(item.get("repo", "")),
            labels=tuple(item.get("labels", [])),
            runner_name=item.get("runner_name"),
            checked_at=_num(item.get("checked_at")),
            run_id=None if item.get("run_id") is None else int(item["run_id"]),
            run_workflows=None if item.get("run_workflows") is None else tuple(item["run_workflows"]),
            public=bool(item.get("public", False)),
            run_attempt=None if item.get("run_attempt") is None else int(item["run_attempt"]),
            conclusion=item.get("conclusion"),
            completed_at=_num(item.get("completed_at")),
            on_demand=bool(item.get("on_demand", False)),
        )

    def job_on_demand(self, job_id: int) -> None:
        """The job is the retry of an interrupted one: its pool launches on-demand for it."""
        self.table.update_if(
            Key={"pk": f"job#{job_id}"},
            UpdateExpression="SET on_demand = :yes",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":yes": True},
        )

    def job_run_workflows(self, job_id: int, files: tuple[str, ...]) -> None:
        """Remember the workflow files of the job's run, once GitHub has named them."""
        self.table.update_if(
            Key={"pk": f"job#{job_id}"},
            UpdateExpression="SET run_workflows = :files",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":files": [f[:MAX_WORKFLOW_REF_CHARS] for f in files[:MAX_RUN_WORKFLOWS]]},
        )

    def job_checked(self, job_id: int, now: float) -> None:
        """The reconciler asked GitHub about this queued job: the next check goes to others first."""
        self.table.update_if(
            Key={"pk": f"job#{job_id}"},
            UpdateExpression="SET checked_at = :now",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":now": now},
        )

    def move_job(self, job_id: int, from_pool: str, to_pool: str) -> bool:
        """A queued job goes to another pool (the one that can take it now). False when it is
        no longer queued on `from_pool` (it started, or another invocation moved it)."""
        return self._requeue(job_id, from_pool, f"SET #pool = :to, #{OPEN} = :open", {":to": to_pool, ":open": f"job#{to_pool}"})

    def drop_job(self, job_id: int, from_pool: str, reason: str) -> bool:
        """A queued job no pool may take stops counting as demand (its record stays, with why)."""
        return self._requeue(job_id, from_pool, f"SET #ignored = :why REMOVE #{OPEN}", {":why": reason[:200]})

    def _requeue(self, job_id: int, from_pool: str, update: str, values: dict[str, Any]) -> bool:
        stored = self.table.update_if(
            Key={"pk": f"job#{job_id}"},
            UpdateExpression=update,
            ConditionExpression=f"#pool = :from AND #state = :queued AND attribute_exists(#{OPEN})",
            ExpressionAttributeNames={
                "#pool": "pool",
                "#state": "state",
                f"#{OPEN}": OPEN,
                **({"#ignored": "ignored"} if ":why" in values else {}),
            },
            ExpressionAttributeValues={":from": from_pool, ":queued": QUEUED, **values},
        )
        return stored is not None

    def close_job(self, job_id: int, state: str = COMPLETED) -> bool:
        """GitHub no longer has the job queued (its webhook was lost): stop counting it."""
        return self.record_job(Job(job_id, "", state, 0.0)) if self.job(job_id) else False

    # ---- instances --------------------------------------------------------------------
    def add_instance(self, inst: Instance) -> bool:
        stored = self.table.put_if(
            Item={
                "pk": f"instance#{inst.id}",
                "pool": inst.pool,
                "launched_at": inst.launched_at,
                "runner_name": inst.runner_name,
                **({"block": inst.block} if inst.block else {}),
                OPEN: f"instance#{inst.pool}",
                "expires_at": int(self.clock() + self.ttl_s),
            },
            ConditionExpression="attribute_not_exists(pk)",
        )
        return stored is not None

    def live_instances(self, pool: str | None = None) -> list[Instance]:
        return [self._instance(item) for item in self._active("instance#", pool)]

    def instance(self, instance_id: str, live_only: bool = False) -> Instance | None:
        """A consistent read of one host; with `live_only`, None once it is gone."""
        item = self.table.get_item(Key={"pk": f"instance#{instance_id}"}, ConsistentRead=True).get("Item")
        return None if item is None or (live_only and OPEN not in item) else self._instance(item)

    def _instance(self, item: dict[str, Any]) -> Instance:
        job_id = item.get("job_id")
        return Instance(
            id=item["pk"].split("#", 1)[1],
            pool=str(item["pool"]),
            launched_at=float(item["launched_at"]),
            job_id=None if job_id is None else int(job_id),
            registered_at=_num(item.get("registered_at")),
            idle_since=_num(item.get("idle_since")),
            jit_at=_num(item.get("jit_at")),
            runner_name=str(item.get("runner_name", "")),
            block=item.get("block"),
            generation=int(item.get("generation", 0)),
            jobs_done=int(item.get("jobs_done", 0)),
            finished_at=_num(item.get("finished_at")),
            interrupted_at=_num(item.get("interrupted_at")),
            rebalance_at=_num(item.get("rebalance_at")),
        )

    def mark_leaving(self, instance_id: str, field: str, now: float) -> bool:
        """Record EC2's warning (`interrupted_at`) or hint (`rebalance_at`) for a host, once;
        False when it was recorded before (SQS delivers at least once) or the host is unknown."""
        stored = self.table.update_if(
            Key={"pk": f"instance#{instance_id}"},
            UpdateExpression="SET #f = :now",
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(#f)",
            ExpressionAttributeNames={"#f": field},
            ExpressionAttributeValues={":now": now},
        )
        return stored is not None

    def assign(self, instance_id: str, job_id: int) -> None:
        self._set_if_exists(instance_id, {"job_id": job_id})

    def finish(self, instance_id: str, job_id: int) -> Instance | None:
        """The host's runner finished `job_id` (each job's `completed` is stored once, so
        counted once): the host is spent until it is given another config. Returns the host as
        it was before (None when the ledger does not know it)."""
        old = self.table.update_if(
            Key={"pk": f"instance#{instance_id}"},
            UpdateExpression="SET jobs_done = if_not_exists(jobs_done, :zero) + :one, finished_at = :now, job_id = :job",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":zero": 0, ":one": 1, ":now": self.clock(), ":job": job_id},
            ReturnValues="ALL_OLD",
        )
        return None if old is None or not old.get("Attributes") else self._instance(from_item(old["Attributes"]))

    def reuse(self, instance_id: str, generation: int, runner_name: str, now: float) -> bool:
        """Record that a spent host was given runner config `generation`. False when another
        invocation already did (the generation moved) or the host is not spent."""
        stored = self.table.update_if(
            Key={"pk": f"instance#{instance_id}"},
            UpdateExpression="SET generation = :g, jit_at = :now, runner_name = :name"
            " REMOVE finished_at, job_id, registered_at, idle_since",
            ConditionExpression="attribute_exists(finished_at) AND (attribute_not_exists(generation) OR generation = :before)",
            ExpressionAttributeValues={":g": generation, ":before": generation - 1, ":now": now, ":name": runner_name},
        )
        return stored is not None

    def mark(self, instance_id: str, **fields: float | None) -> None:
        """Set (or, with None, remove) timestamps such as jit_at, registered_at, idle_since."""
        self._set_if_exists(instance_id, fields)

    def instance_gone(self, instance_id: str) -> None:
        self.table.update_if(
            Key={"pk": f"instance#{instance_id}"},
            UpdateExpression=f"REMOVE {OPEN} SET gone_at = :g",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":g": self.clock()},
        )

    def _set_if_exists(self, instance_id: str, fields: dict[str, Any]) -> None:
        sets = {k: v for k, v in fields.items() if v is not None}
        removes = [k for k, v in fields.items() if v is None]
        parts = []
        if sets:
            parts.append("SET " + ", ".join(f"#{k} = :{k}" for k in sets))
        if removes:
            parts.append("REMOVE " + ", ".join(f"#{k}" for k in removes))
        values = {f":{k}": v for k, v in sets.items()}
        self.table.update_if(
            Key={"pk": f"instance#{instance_id}"},
            UpdateExpression=" ".join(parts),
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames={f"#{k}": k for k in fields},
            **({"ExpressionAttributeValues": values} if values else {}),
        )

    # ---- stopped warm pools (core/warm_pools.py) -------------------------------------
    def count_launches(self, pool: str, bucket: int, count: int, weeks: int) -> None:
        """Add `count` hosts the pool needed (fresh launches and warm starts) to its demand
        bucket; kept a week longer than the `weeks` its warm pool is sized over."""
        if count <= 0:
            return
        self.table.update_item(
            Key={"pk": f"launches#{pool}#{bucket}"},
            UpdateExpression="SET expires_at = :exp ADD #count :n",
            ExpressionAttributeNames={"#count": "count"},
            ExpressionAttributeValues={":exp": int(self.clock() + (weeks + 1) * WEEK_S), ":n": count},
        )

    def launch_history(self, pool: str, buckets: list[int]) -> dict[int, int]:
        """The launches counted in each of these demand buckets (absent: none), in batched reads."""
        found: dict[int, int] = {}
        for first in range(0, len(buckets), BATCH_GET_KEYS):
            keys: list[dict[str, Any]] = [{"pk": {"S": f"launches#{pool}#{b}"}} for b in buckets[first : first + BATCH_GET_KEYS]]
            for _ in range(5):  # unprocessed keys (throttling) are asked again a few times, then counted as none
                answer = self.dynamodb.call("BatchGetItem", {"RequestItems": {self.table_name: {"Keys": keys}}})
                for raw in answer.get("Responses", {}).get(self.table_name, []):
                    item = from_item(raw)
                    found[int(str(item["pk"]).rsplit("#", 1)[1])] = int(item.get("count", 0))
                keys = answer.get("UnprocessedKeys", {}).get(self.table_name, {}).get("Keys", [])
                if not keys:
                    break
        return found

    def add_warm(self, instance_id: str, pool: str, launched_at: float, image_id: str, keep_s: float) -> bool:
        """A warm instance just launched (booting): never a host with a job until it is started."""
        stored = self.table.put_if(
            Item={
                "pk": f"warm#{instance_id}",
                "pool": pool,
                "launched_at": launched_at,
                "image_id": image_id,
                "state": BOOTING,
                OPEN: f"warm#{pool}",
                "expires_at": int(self.clock() + keep_s + self.ttl_s),
            },
            ConditionExpression="attribute_not_exists(pk)",
        )
        return stored is not None

    def warm_instances(self, pool: str | None = None) -> list[WarmRecord]:
        """The warm instances not yet started (booting, ready or being started)."""
        return [self._warm(item) for item in self._active("warm#", pool)]

    def warm_record(self, instance_id: str) -> WarmRecord | None:
        item = self.table.get_item(Key={"pk": f"warm#{instance_id}"}, ConsistentRead=True).get("Item")
        return None if item is None else self._warm(item)

    @staticmethod
    def _warm(item: dict[str, Any]) -> WarmRecord:
        iid = str(item["pk"]).split("#", 1)[1]
        return WarmRecord(iid, str(item["pool"]), float(item["launched_at"]), str(item.get("image_id", "")), str(item["state"]))

    def warm_moved(self, instance_id: str, to: str, from_states: tuple[str, ...]) -> bool:
        """Move a warm instance to state `to` if it is in one of `from_states` (False otherwise:
        another invocation moved it first). `started` and `gone` close the record: a started
        instance is an ordinary host from then on, and never returns to the warm pool."""
        closing = to in {STARTED, "gone"}  # an open record's index key stays while it moves between open states
        stored = self.table.update_if(
            Key={"pk": f"warm#{instance_id}"},
            UpdateExpression="SET #state = :to" + (f" REMOVE {OPEN}" if closing else ""),
            ConditionExpression=f"#state IN ({', '.join(f':s{i}' for i in range(len(from_states)))})",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":to": to, **{f":s{i}": state for i, state in enumerate(from_states)}},
        )
        return stored is not None

    # ---- capacity blocks: per-block memory and per-slot runner state ---------------------
    def block_record(self, block_id: str) -> BlockRecord:
        item = self.table.get_item(Key={"pk": f"block#{block_id}"}, ConsistentRead=True).get("Item")
        if item is None:
            return BlockRecord()
        return BlockRecord(target=int(item.get("target", 0)), warned=bool(item.get("warned", False)))

    def set_block(self, block_id: str, end: float, **fields: int | bool) -> None:
        """Remember a block's node target or its expiration warning until a week past its end."""
        sets = {**fields, "expires_at": int(end + 7 * 24 * 3600)}
        self.table.update_item(
            Key={"pk": f"block#{block_id}"},
            UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in sets),
            ExpressionAttributeNames={f"#{k}": k for k in sets},
            ExpressionAttributeValues={f":{k}": v for k, v in sets.items()},
        )

    def slots(self, pool: str) -> dict[tuple[str, int], SlotRecord]:
        """Every slot record of the pool's live nodes."""
        found = {}
        for item in self._query(f"slot#{pool}"):
            _, iid, index = str(item["pk"]).split("#")
            found[(iid, int(index))] = SlotRecord(_num(item.get("issued_at")), _num(item.get("seen_at")), item.get("faulty"))
        return found

    def set_slot(self, pool: str, instance_id: str, slot: int, **fields: float | str) -> None:
        sets = {**fields, OPEN: f"slot#{pool}", "expires_at": int(self.clock() + self.ttl_s)}
        self.table.update_item(
            Key={"pk": f"slot#{instance_id}#{slot}"},
            UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in sets),
            ExpressionAttributeNames={f"#{k}": k for k in sets},
            ExpressionAttributeValues={f":{k}": v for k, v in sets.items()},
        )

    def slots_gone(self, instance_id: str, count: int) -> None:
        """A node went away: its slots no longer count (the records expire with their TTL)."""
        for slot in range(count):
            self.table.update_if(
                Key={"pk": f"slot#{instance_id}#{slot}"}, UpdateExpression=f"REMOVE {OPEN}", ConditionExpression="attribute_exists(pk)"
            )

    # ---- per-pool planning lock -------------------------------------------------------
    def try_lock(self, name: str, holder: str, ttl_s: float) -> list[tuple[str, float]] | None:
        """Take `name` unless another holder's lease is still running; None if we may not.
        A crashed holder's lease simply runs out, so a lock is never stuck.

        On success, the hosts the previous holders launched in the last few minutes: the
        index behind `live_instances` is eventually consistent, this item is not."""
        now = self.clock()
        old = self.table.put_if(
            Item={"pk": f"lock#{name}", "holder": holder, "lease_until": now + ttl_s, "expires_at": int(now + 3600)},
            ConditionExpression="attribute_not_exists(pk) OR lease_until < :now OR holder = :me",
            ExpressionAttributeValues={":now": now, ":me": holder},
            ReturnValues="ALL_OLD",
        )
        if old is None:
            return None
        recent = [str(entry).split("|") for entry in from_item(old.get("Attributes", {})).get("recent", [])]
        return [(iid, float(at)) for iid, at in recent if now - float(at) < RECENT_LAUNCH_S]

    def unlock(self, name: str, holder: str, launched: list[tuple[str, float]]) -> None:
        """Release the lease, leaving behind what this holder (and recent ones) launched."""
        now = self.clock()
        recent = [f"{iid}|{at!r}" for iid, at in launched if now - at < RECENT_LAUNCH_S]
        self.table.put_if(
            Item={"pk": f"lock#{name}", "holder": "", "lease_until": 0.0, "recent": recent, "expires_at": int(now + 3600)},
            ConditionExpression="holder = :me",
            ExpressionAttributeValues={":me": holder},
        )

    # ---- repositories -----------------------------------------------------------------
    def _touch_repo(self, repo: str, now: float) -> None:
        """The repository had a job now; when it was last scanned is kept."""
        self.table.update_item(
            Key={"pk": f"repo#{repo}"},
            UpdateExpression=f"SET last_seen = :now, {OPEN} = :open, expires_at = :expires",
            ExpressionAttributeValues={":now": now, ":open": "repo", ":expires": int(now + 3600)},
        )

    def recent_repos(self, since: float) -> list[tuple[str, float | None]]:
        """(repository, when the reconciler last scanned it) for each with a job since `since`."""
        return [
            (item["pk"].split("#", 1)[1], _num(item.get("scanned_at"))) for item in self._query("repo") if float(item["last_seen"]) >= since
        ]

    def repo_scanned(self, repo: str, now: float) -> None:
        self.table.update_if(
            Key={"pk": f"repo#{repo}"},
            UpdateExpression="SET scanned_at = :now",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":now": now},
        )

    # ---- webhook redeliveries ---------------------------------------------------------
    def redelivered(self) -> set[str]:
        """The guids of deliveries already sent again (within their TTL: longer than the
        redelivery window, so one that expired is no longer listed for redelivery either)."""
        return {str(item["pk"]).split("#", 1)[1] for item in self._query(REDELIVERY)}

    def claim_redelivery(self, guid: str, now: float, keep_s: float) -> bool:
        """Take the one redelivery of `guid`; False when it was taken before (by this pass's
        predecessor or a concurrent one). A claim whose request failed may be taken again."""
        stored = self.table.put_if(
            Item={"pk": f"{REDELIVERY}#{guid}", "claimed_at": now, "state": "claimed", OPEN: REDELIVERY, "expires_at": int(now + keep_s)},
            ConditionExpression="attribute_not_exists(pk) OR #state = :failed",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":failed": "failed"},
        )
        return stored is not None

    def redelivery_failed(self, guid: str) -> None:
        """GitHub did not take the request: the next pass may try this delivery again."""
        self.table.update_if(
            Key={"pk": f"{REDELIVERY}#{guid}"},
            UpdateExpression=f"SET #state = :failed REMOVE {OPEN}",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":failed": "failed"},
        )

    # ---- spot interruptions ------------------------------------------------------------
    def add_interruption(self, instance_id: str, pool: str, now: float) -> None:
        """A warned host whose job the reconciler judges (re-run or not) until it is closed."""
        self.table.put_if(
            Item={
                "pk": f"{INTERRUPT}#{instance_id}",
                "pool": pool,
                "interrupted_at": now,
                "state": "pending",
                OPEN: INTERRUPT,
                "expires_at": int(now + self.ttl_s),
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def interruptions(self) -> list[Interruption]:
        return [
            Interruption(str(i["pk"]).split("#", 1)[1], str(i["pool"]), float(i["interrupted_at"]), _num(i.get("checked_at")))
            for i in self._query(INTERRUPT)
        ]

    def interruption_checked(self, instance_id: str, now: float) -> None:
        self.table.update_if(
            Key={"pk": f"{INTERRUPT}#{instance_id}"},
            UpdateExpression="SET checked_at = :now",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":now": now},
        )

    def close_interruption(self, instance_id: str, outcome: str, reason: str) -> bool:
        """Judged for good (`rerun` or `skipped`, with why); False when another invocation did first."""
        stored = self.table.update_if(
            Key={"pk": f"{INTERRUPT}#{instance_id}"},
            UpdateExpression=f"SET #state = :outcome, reason = :why REMOVE {OPEN}",
            ConditionExpression="#state = :pending",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":outcome": outcome, ":why": reason[:200], ":pending": "pending"},
        )
        return stored is not None

    def reopen_interruption(self, instance_id: str) -> None:
        """The re-run was claimed but GitHub refused it for now: judge it again next cycle."""
        self.table.update_if(
            Key={"pk": f"{INTERRUPT}#{instance_id}"},
            UpdateExpression=f"SET #state = :pending, {OPEN} = :open",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":pending": "pending", ":open": INTERRUPT},
        )

    def spot_warned(self, pool: str, now: float) -> list[float]:
        """Add a warning to the pool's breaker; the warnings it remembers, this one included."""
        answer = self.table.update_item(
            Key={"pk": f"breaker#{pool}"},
            UpdateExpression="SET warnings = list_append(if_not_exists(warnings, :none), :one), expires_at = :expires",
            ExpressionAttributeValues={":none": [], ":one": [now], ":expires": int(now + 86400)},
            ReturnValues="ALL_NEW",
        )
        return [float(from_attr(v)) for v in answer.get("Attributes", {}).get("warnings", {}).get("L", [])]

    def open_breaker(self, pool: str, until: float) -> bool:
        """Keep the pool off spot until `until`; False when it already was (as long)."""
        stored = self.table.update_if(
            Key={"pk": f"breaker#{pool}"},
            UpdateExpression="SET open_until = :until",
            ConditionExpression="attribute_not_exists(open_until) OR open_until < :until",
            ExpressionAttributeValues={":until": until},
        )
        return stored is not None

    def forget_warnings(self, pool: str, keep: list[float]) -> None:
        """Bound the breaker's memory (a warning appended meanwhile may be dropped: it is old news soon)."""
        self.table.update_item(
            Key={"pk": f"breaker#{pool}"}, UpdateExpression="SET warnings = :keep", ExpressionAttributeValues={":keep": keep}
        )

    def off_spot_until(self, pool: str) -> float:
        """Until when the pool's breaker keeps it off spot (0: it is not)."""
        item = self.table.get_item(Key={"pk": f"breaker#{pool}"}, ConsistentRead=True).get("Item") or {}
        return float(item.get("open_until", 0.0))

    def steer(self, repo: str, run_id: int, after_attempt: int, pool: str, until: float) -> None:
        """Attempts of the run after `after_attempt` (the re-run) go to on-demand capacity.
        Written before the re-run is asked for, so the retry's webhook finds it."""
        self.table.put_item(
            Item={
                "pk": f"steer#{repo}#{run_id}",
                "after_attempt": after_attempt,
                "pool": pool,
                "until": until,
                "rerun": False,
                OPEN: STEER,
                "expires_at": int(until + 86400),
            }
        )

    def steered_rerun(self, repo: str, run_id: int) -> None:
        """GitHub took the re-run: the run has had its one re-run for an interruption."""
        self.table.update_if(
            Key={"pk": f"steer#{repo}#{run_id}"},
            UpdateExpression="SET rerun = :yes",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":yes": True},
        )

    def steering(self, now: float) -> dict[tuple[str, int], int]:
        """Runs whose later attempts go on-demand now: (repository, run id) -> the attempt re-run.
        One query a cycle (few items: a re-run steers for hours, then drops out)."""
        found = {}
        for item in self._query(STEER):
            if float(item.get("until", 0.0)) >= now:
                repo, _, run = str(item["pk"]).split("#", 1)[1].rpartition("#")
                found[(repo, int(run))] = int(item["after_attempt"])
        return found

    def was_rerun(self, repo: str, run_id: int) -> bool:
        """The run was re-run for an interruption before (while the record lives: a day past its steering)."""
        item = self.table.get_item(Key={"pk": f"steer#{repo}#{run_id}"}, ConsistentRead=True).get("Item") or {}
        return bool(item.get("rerun", False))

    # ---- the sweeper's memory: since when something has been ownerless ------------------
    def sweep_marks(self) -> dict[str, float]:
        return {str(item["pk"]).split("#", 1)[1]: float(item["first_seen"]) for item in self._query(SWEEP)}

    def mark_sweep(self, key: str, now: float) -> None:
        self.table.put_item(Item={"pk": f"{SWEEP}#{key}", "first_seen": now, OPEN: SWEEP, "expires_at": int(now + SWEEP_MARK_KEEP_S)})

    def unmark_sweep(self, key: str) -> None:
        """It has an owner again (or is gone): a later ownerless spell starts its clock anew."""
        self.table.update_if(Key={"pk": f"{SWEEP}#{key}"}, UpdateExpression=f"REMOVE {OPEN}", ConditionExpression="attribute_exists(pk)")

    # ---- what operators read: failures, capacity-block use, everything ------------------
    def record_failure(self, pool: str, message: str, now: float) -> None:
        """A pool's launch (or cycle) failed: the last message is kept, with how often, for a day."""
        self.table.update_item(
            Key={"pk": f"failure#{pool}"},
            UpdateExpression=f"SET #pool = :pool, message = :m, #at = :now, {OPEN} = :open, expires_at = :exp ADD #count :one",
            ExpressionAttributeNames={"#pool": "pool", "#at": "at", "#count": "count"},
            ExpressionAttributeValues={
                ":pool": pool,
                ":m": message[:300],
                ":now": now,
                ":open": "failure",
                ":exp": int(now + 24 * 3600),
                ":one": 1,
            },
        )

    def failures(self) -> list[dict[str, Any]]:
        """Each pool's last failure of the last day: {pool, message, at, count}."""
        return sorted(({k: item[k] for k in ("pool", "message", "at", "count") if k in item} for item in self._query("failure")),
                      key=lambda f: -float(f.get("at", 0)))  # fmt: skip

    def add_usage(self, pool: str, at: float, paid_gpu_s: float, busy_gpu_s: float) -> None:
        """GPU time a pool's capacity blocks were paid for and ran jobs, added to the hour of `at`."""
        hour = datetime.fromtimestamp(at, UTC).strftime("%Y%m%d%H")
        self.table.update_item(
            Key={"pk": f"usage#{pool}#{hour}"},
            UpdateExpression="SET #pool = :pool, #hour = :start, expires_at = :exp ADD paid_gpu_s :paid, busy_gpu_s :busy",
            ExpressionAttributeNames={"#pool": "pool", "#hour": "hour"},
            ExpressionAttributeValues={
                ":pool": pool,
                ":start": float(int(at // 3600) * 3600),
                ":exp": int(at + self.ttl_s),
                ":paid": round(paid_gpu_s, 3),
                ":busy": round(busy_gpu_s, 3),
            },
        )

    def items(self, kinds: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        """Every item whose key starts with one of `kinds` (`job#`, `instance#`, `usage#`), open or
        not: one paged scan of the table, for `estate report`."""
        values = {f":k{i}": kind for i, kind in enumerate(kinds)}
        kwargs: dict[str, Any] = {
            "FilterExpression": " OR ".join(f"begins_with(pk, {name})" for name in values),
            "ExpressionAttributeValues": values,
        }
        while True:
            page = self.table.scan(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # ---- reads ------------------------------------------------------------------------
    def _active(self, kind: str, pool: str | None) -> Iterator[dict[str, Any]]:
        if pool is not None:
            yield from self._query(f"{kind}{pool}")
            return
        kwargs: dict[str, Any] = {"IndexName": OPEN_INDEX}
        while True:
            page = self.table.scan(**kwargs)
            yield from (item for item in page.get("Items", []) if str(item.get(OPEN, "")).startswith(kind))
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _query(self, key: str) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "IndexName": OPEN_INDEX,
            "KeyConditionExpression": f"{OPEN} = :a",
            "ExpressionAttributeValues": {":a": key},
        }
        while True:
            page = self.table.query(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
