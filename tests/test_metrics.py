"""What the functions emit for the dashboard and the alarms (issue 22.1): EMF lines with the
catalogue's units, and per-pool metrics dimensioned by environment and pool only, so the
metric bill stays per pool, never per host, job or repository."""

from __future__ import annotations

import json
from typing import Any

import pytest

from estate.local.fake_block_ec2 import FakeBlockEc2
from estate.local.plane import LocalPlane
from lambda_src.aws.block_ec2 import BlockEc2
from lambda_src.core.fleet_state import QUEUED, Job
from lambda_src.core.metric_catalog import FUNCTION_METRICS, POOL_METRICS, UNITS, metrics_of, pool_kind
from lambda_src.functions import handlers
from lambda_src.functions.metrics import pool_line
from tests.conftest import PROJECT_DIR
from tests.test_handlers import CONTEXT, wired  # noqa: F401 - the fixture, shared

T4 = ["self-hosted", "linux", "x64", "gpu", "t4"]


def emitted(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def pool_lines(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(line["pool"]): line for line in lines if "pool" in line}


def declared(line: dict[str, Any]) -> dict[str, str]:
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    return {m["Name"]: m["Unit"] for m in directive["Metrics"]}


def test_an_emf_line_names_each_metric_with_its_unit_and_two_dimensions() -> None:
    line = json.loads(pool_line("prod", "gpu-t4-spot", {"oldest_wait": 12.5, "job_wait": [3.0, 40.0]}, 1_780_000_000.0))
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["environment", "pool"]]
    assert declared(line) == {"job_wait": "Seconds", "oldest_wait": "Seconds"}
    assert (line["environment"], line["pool"], line["job_wait"]) == ("prod", "gpu-t4-spot", [3.0, 40.0])
    assert line["_aws"]["Timestamp"] == 1_780_000_000_000


def test_the_catalogue_uses_cloudwatch_units_and_no_name_twice() -> None:
    names = [m.name for m in (*POOL_METRICS, *FUNCTION_METRICS)]
    assert len(names) == len(set(names))
    assert set(UNITS.values()) <= {"Count", "Seconds", "None"}
    # What docs/observability.md states per pool: 9 (CPU), 10 (GPU hosts), 11 (capacity blocks).
    assert {kind: len(metrics_of(kind)) for kind in ("cpu", "gpu", "capacity-block")} == {"cpu": 9, "gpu": 10, "capacity-block": 11}


def test_reconcile_emits_each_pools_counts_and_the_spend_rate(wired: LocalPlane, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    wired.serve_webhook()
    wired.github.queue_job(T4)
    wired.pump()
    capsys.readouterr()
    handlers.reconcile_handler({}, CONTEXT)
    lines = emitted(capsys)
    (function,) = [line for line in lines if line.get("function") == "reconcile"]
    assert function["spend_rate"] == pytest.approx(wired.settings.pools["gpu-t4-spot"].hourly_usd + _others(wired), rel=1e-3)
    assert function["github_rate_remaining"] > 0
    assert declared(function)["spend_rate"] == "None"
    per_pool = pool_lines(lines)
    assert set(per_pool) == set(wired.settings.pools)
    t4 = per_pool["gpu-t4-spot"]
    assert (t4["queued_jobs"], t4["hosts_booting"], t4["idle_gpus"], t4["at_cap"], t4["launched"]) == (1, 1, 1, 0, 0)
    for name, line in per_pool.items():
        pool = wired.settings.pools[name]
        allowed = {m.name for m in metrics_of(pool_kind(pool.capacity_type, pool.host_gpus))}
        assert set(declared(line)) <= allowed, name
        assert line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["environment", "pool"]]
    assert "idle_gpus" not in per_pool["cpu-x64-spot"]
    assert set(declared(per_pool["gpu-h100-cb"])) == {"queued_jobs", "oldest_wait"}  # its slots are cb-manager's


def _others(local: LocalPlane) -> float:
    """Hosts pool_config keeps up in working hours, besides the T4 the job launched."""
    hosts = [i for i in local.plane.ledger.live_instances() if i.pool != "gpu-t4-spot"]
    return sum(local.settings.pools[h.pool].hourly_usd for h in hosts)


def test_a_started_job_emits_its_wait_and_scale_up_its_launches(wired: LocalPlane, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    job = wired.github.queue_job(T4)
    records = [{"messageId": "m", "body": json.dumps({"job_id": job.id, "pool": "gpu-t4-spot", "repo": job.repo, "labels": T4})}]
    capsys.readouterr()
    handlers.scale_up_handler({"Records": records}, CONTEXT)
    assert pool_lines(emitted(capsys))["gpu-t4-spot"]["launched"] == 1
    (iid,) = wired.running_instances("gpu-t4-spot")
    runner = wired.boot(iid)
    wired.clock.advance(75)
    wired.github.start_job(job.id, runner, send=False)
    payload = wired.github.job_payload(wired.github.jobs[job.id], "in_progress")
    body = json.dumps(payload)
    import hashlib
    import hmac

    signature = "sha256=" + hmac.new(wired.webhook_secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    event = {"headers": {"x-github-event": "workflow_job", "x-hub-signature-256": signature}, "body": body}
    handlers.webhook_handler(event, CONTEXT)
    line = pool_lines(emitted(capsys))["gpu-t4-spot"]
    assert line["job_wait"] == [75.0]
    assert declared(line) == {"job_wait": "Seconds"}


def test_the_block_manager_emits_slots_hours_left_and_block_use(wired: LocalPlane, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    manager = handlers._block_manager("123456789012")
    pool = wired.settings.pools["gpu-h100-cb"]
    fake = FakeBlockEc2(wired.clock, dict.fromkeys(pool.subnet_ids, "us-east-1a"))
    fake.add_block("cr-0a1b2c3d4e5f60718", "p5.48xlarge", total=1, start=wired.clock(), hours=24)
    manager.ec2 = BlockEc2(fake, wired.settings.environment)
    wired.plane.ledger.record_job(Job(11, "gpu-h100-cb", QUEUED, wired.clock(), "org/r"))
    handlers.cb_manager_handler({"source": "aws.events"}, CONTEXT)  # launches the node
    capsys.readouterr()
    handlers.cb_manager_handler({"source": "aws.events"}, CONTEXT)
    lines = emitted(capsys)
    (function,) = [line for line in lines if line.get("function") == "cb_manager"]
    assert function["spend_rate"] == pytest.approx(pool.hourly_usd)  # one node's block, paid whether used or not
    h100 = pool_lines(lines)["gpu-h100-cb"]
    slots = len(pool.slot_gpus)
    assert (h100["slots_busy"], h100["slots_idle"], h100["slots_faulty"]) == (0, slots, 0)
    assert 23 < h100["block_hours_left"] <= 24
    assert h100["idle_gpus"] == pool.gpus_per_node
    assert declared(h100)["block_hours_left"] == "None"
    (usage,) = [i for i in wired.plane.ledger.items(("usage#",)) if i["pool"] == "gpu-h100-cb"]
    assert usage["paid_gpu_s"] == 2 * 60 * pool.gpus_per_node  # two cycles of the minute schedule
    assert usage["busy_gpu_s"] == 0


def test_the_docs_list_every_metric_and_how_many_a_pool_costs() -> None:
    text = (PROJECT_DIR / "docs" / "observability.md").read_text(encoding="utf-8")
    for metric in (*POOL_METRICS, *FUNCTION_METRICS):
        assert f"`{metric.name}`" in text, metric.name
    counts = {kind: len(metrics_of(kind)) for kind in ("cpu", "gpu", "capacity-block")}
    assert (
        f"{counts['cpu']} custom metrics per CPU pool, {counts['gpu']} per GPU pool of spot or on-demand hosts, "
        f"{counts['capacity-block']} per\ncapacity-block pool"
    ) in text
    for kind, count in counts.items():
        assert f"${0.30 * count:.2f}" in text, kind  # at $0.30 a metric-month
