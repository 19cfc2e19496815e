"""Figures for the control plane. Prints; asserts nothing.

    .venv/bin/python bench/control_plane_bench.py [--jobs N]

- webhook -> launch decision: a signed delivery from the fake GitHub through the real webhook
  (HTTP on loopback), the ledger and SQS (moto_server), to the scale-up planner's decision and
  the CreateFleet call (goal: p99 < 2 s). SQS -> Lambda polling latency is not in it;
- handler cold import, fresh process, `-X importtime` (goal < 150 ms): the webhook handler, and
  the scaler's path once it has loaded boto3 for EC2;
- planner: plan_launches for 10,000 queued jobs over 50 pools (goal < 100 ms), and
  plan_scale_down over 5,000 hosts and runners;
- GitHub calls per job on the hot path (goal <= 2), after the first job's one-time lookups;
- the capacity-block planner: one cycle's decision over 64 nodes of 5 slots.
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from estate.local.plane import Clock, LocalPlane  # noqa: E402 - after the path set-up
from lambda_src.core.block_planner import Block, plan_blocks  # noqa: E402
from lambda_src.core.fleet_state import QUEUED, GithubRunner, Instance, Job, SlotRecord, runner_name, slot_runner_name  # noqa: E402
from lambda_src.core.planner import plan_launches, plan_scale_down  # noqa: E402
from lambda_src.core.settings import PoolSettings  # noqa: E402

T4 = ["self-hosted", "linux", "x64", "gpu", "t4"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def webhook_to_launch(jobs: int) -> tuple[list[float], float]:
    local = LocalPlane([str(ROOT / "runner_configs")], clock=Clock(time.time())).start()
    try:
        local.serve_webhook()
        decided: list[float] = []
        real_launch = local.plane.fleet.launch

        def launch(*args: Any) -> Any:
            decided.append(time.perf_counter())
            return real_launch(*args)

        local.plane.fleet.launch = launch  # type: ignore[method-assign,assignment]
        latencies: list[float] = []
        seen: set[str] = set()
        calls_before = 0
        for i in range(jobs + 1):  # the first job is a warm-up: it pays for the one-time lookups
            if i == 1:
                calls_before, latencies = len(local.github.calls), []
            start = time.perf_counter()
            job = local.github.queue_job(T4)
            local.pump()
            if len(decided) != i + 1:
                raise RuntimeError("a job got no launch decision")
            latencies.append(decided[-1] - start)
            # The host serves the job and goes away, so the pool's cap never binds.
            new = set(local.running_instances()) - seen
            if len(new) != 1:
                raise RuntimeError(f"expected one new host, found {new}; report {local.plane.ledger.live_instances()}")
            (iid,) = new
            seen.add(iid)
            local.github.start_job(job.id, local.boot(iid))
            local.github.finish_job(job.id)
            local.power_off(iid)
            local.clock.advance(180)
        per_job = (len(local.github.calls) - calls_before) / jobs
        return latencies, per_job
    finally:
        local.stop()


def cold_import(statement: str, runs: int = 5) -> float:
    """Median cumulative import time (ms) of the last module imported by `statement`."""
    found = []
    for _ in range(runs):
        done = subprocess.run(  # noqa: S603 - our own interpreter and a fixed statement
            [sys.executable, "-X", "importtime", "-c", statement], cwd=ROOT, capture_output=True, text=True, check=True
        )
        totals = [int(m.group(1)) for m in re.finditer(r"\|\s+(\d+) \|", done.stderr)]
        top = [int(m.group(1)) for m in re.finditer(r"\|\s+(\d+) \| [^ ]", done.stderr)]
        found.append(sum(top) if top else max(totals))
    return statistics.median(found) / 1000


def planner_times() -> tuple[float, float]:
    pools = {
        f"p{i}": PoolSettings(f"p{i}", "spot", ("m7i.large",), ("self-hosted",), "Default", max_instances=10_000, boot_timeout_s=300)
        for i in range(50)
    }
    now = time.time()
    jobs = [Job(i, f"p{i % 50}", QUEUED, now) for i in range(10_000)]
    hosts = [Instance(f"i-{i:017x}", f"p{i % 50}", now - 600, registered_at=now - 500) for i in range(2_500)]
    runs = []
    for _ in range(20):
        start = time.perf_counter()
        plan_launches(pools, jobs, hosts, now)
        runs.append(time.perf_counter() - start)
    listing = [GithubRunner(i, runner_name("", "prod", h.pool, h.id), True, i % 3 == 0) for i, h in enumerate(hosts)]
    down = []
    for _ in range(20):
        start = time.perf_counter()
        plan_scale_down(pools, "prod", hosts, listing, jobs, now)
        down.append(time.perf_counter() - start)
    return statistics.median(runs) * 1000, statistics.median(down) * 1000


def block_planner_time() -> float:
    """One capacity-block cycle's decision: 4 blocks of 16 nodes, 5 slots each, half busy."""
    pool = PoolSettings("h100", "capacity-block", ("p5.48xlarge",), ("self-hosted",), "gpu", max_instances=64, gpus_per_node=8,
                        slot_gpus=(4, 1, 1, 1, 1), slot_labels=(("h100", "sm90", "4gpu"), *[("h100", "sm90", "1gpu")] * 4))  # fmt: skip
    now = time.time()
    blocks = [Block(f"cr-{b}", "p5.48xlarge", "us-east-1a", 16, 0, "active", now - 3600, now + 20 * 3600) for b in range(4)]
    nodes = [Instance(f"i-{n:017x}", "h100", now - 1800, block=f"cr-{n % 4}") for n in range(64)]
    slots = {(n.id, s): SlotRecord(issued_at=now - 1700, seen_at=now - 1600) for n in nodes for s in range(5)}
    runners = [GithubRunner(i, slot_runner_name("", "prod", "h100", n.id, s), True, (i % 2) == 0)
               for i, (n, s) in enumerate((n, s) for n in nodes for s in range(5))]  # fmt: skip
    runs = []
    for _ in range(20):
        start = time.perf_counter()
        plan_blocks(pool, "prod", blocks, {}, nodes, slots, runners, 200, now)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)

    latencies, per_job = webhook_to_launch(args.jobs)
    print(f"webhook -> launch decision ({args.jobs} jobs, local end to end): p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
          f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")  # fmt: skip
    print(f"GitHub calls per job on the hot path: {per_job:.2f}")
    print(f"cold import, webhook handler: {cold_import('import lambda_src.functions.handlers'):.0f} ms")
    scaler_path = "import boto3, lambda_src.functions.handlers, lambda_src.aws.ec2_fleet"
    print(f"cold import, scaler path (boto3 + EC2 adapter): {cold_import(scaler_path):.0f} ms")
    launches, scale_down = planner_times()
    print(f"planner: plan_launches 10,000 queued jobs over 50 pools: {launches:.1f} ms (median of 20)")
    print(f"planner: plan_scale_down 2,500 hosts and runners, 10,000 jobs: {scale_down:.1f} ms (median of 20)")
    print(f"planner: plan_blocks 4 blocks, 64 nodes, 320 slots, 200 queued jobs: {block_planner_time():.1f} ms (median of 20)")


if __name__ == "__main__":
    main()
