"""`estate status` and `estate report` against `estate serve` (issue 22.3, 22.4): the real webhook
and planners on loopback write the ledger; the commands read it back, with EC2 (moto) and the
fake GitHub, as they read a deployed stack."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from estate import cli
from estate.config.loader import load_estate
from estate.local.plane import LocalPlane
from estate.local.serve import write_session
from estate.ops.gather import Reader
from estate.ops.report_view import build_report, parse_duration, render_report
from estate.ops.status_view import build_status, render_status
from estate.ops.target import serve_target, stack_target
from tests.conftest import EXAMPLE_CONFIGS, PROJECT_DIR, WORKING_HOURS, fixed_clock

T4 = ["self-hosted", "linux", "x64", "gpu", "t4"]
POOL = "gpu-t4-spot"


@pytest.fixture
def local(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    plane = LocalPlane([str(EXAMPLE_CONFIGS)], clock=fixed_clock(monkeypatch, WORKING_HOURS), endpoint=moto_url).start()
    plane.serve_webhook()
    yield plane
    plane.stop()


@pytest.fixture
def session(local: LocalPlane, tmp_path: Path) -> Path:
    path = tmp_path / "serve.json"
    write_session(local, path)
    return path


def test_a_finished_job_is_charged_its_hosts_time_at_the_pools_price(local: LocalPlane) -> None:
    job = local.github.queue_job(T4)
    local.pump()
    (iid,) = local.running_instances(POOL)
    local.clock.advance(90)
    name = local.boot(iid)
    local.github.start_job(job.id, name)
    local.clock.advance(600)
    local.github.finish_job(job.id)
    item = local.plane.ledger.table.get_item(Key={"pk": f"job#{job.id}"})["Item"]
    price = local.settings.pools[POOL].hourly_usd
    assert price > 0
    assert item["host_s"] == pytest.approx(690)  # from the launch (boot and wait included) to the job's end
    assert item["cost_usd"] == pytest.approx(690 / 3600 * price, rel=1e-4)
    assert (item["cost_pool"], item["workflow"]) == (POOL, "CI")
    assert item["completed_at"] - item["started_at"] == pytest.approx(600)
    # A redelivered `completed` changes nothing: the job is charged once.
    local.github.send_job_event(local.github.jobs[job.id], "completed")
    assert local.plane.ledger.table.get_item(Key={"pk": f"job#{job.id}"})["Item"]["cost_usd"] == item["cost_usd"]


def test_status_shows_each_pool_and_why_the_oldest_job_waits(local: LocalPlane, session: Path) -> None:
    waiting = local.github.queue_job(T4)
    local.pump()
    (iid,) = local.running_instances(POOL)
    local.clock.advance(45)
    local.plane.ledger.record_failure("cpu-x64-spot", "EC2 launched 0 of 1: InsufficientInstanceCapacity", local.clock())
    target = serve_target(session)
    facts = Reader(target, local.clock).status(target.where)
    assert facts.unread == [f for f in facts.unread if "capacity blocks" in f]  # moto has no capacity reservations
    status = build_status(facts)
    pool = status["pools"][POOL]
    assert (pool["queued"], pool["booting"], pool["idle"], pool["busy"], pool["ec2_running"]) == (1, 1, 0, 0, 1)
    assert pool["oldest"]["job"] == waiting.id
    assert pool["oldest"]["why"] == "waiting for 1 booting host(s) of the pool"
    assert status["oldest"]["pool"] == POOL
    assert status["failures"][0]["pool"] == "cpu-x64-spot"
    text = render_status(status)
    assert f"oldest waiting job: {waiting.id} of example-org/app" in text
    assert "InsufficientInstanceCapacity" in text

    local.boot(iid)
    local.plane.scale_down()  # marks the runner registered
    local.github.start_job(waiting.id, local.plane.ledger.instance(iid).runner_name)  # type: ignore[union-attr]
    busy = build_status(Reader(target, local.clock).status(target.where))
    assert (busy["pools"][POOL]["busy"], busy["pools"][POOL]["queued"], busy["oldest"]) == (1, 0, None)


def test_a_capped_pool_and_a_job_no_pool_admits_are_named(local: LocalPlane, session: Path) -> None:
    cap = local.settings.pools[POOL].max_instances
    for _ in range(cap + 1):
        local.github.queue_job(T4)
    local.pump()
    local.clock.advance(30)
    status = build_status(Reader(serve_target(session), local.clock).status("serve"))
    # The overflow moved the extra job on to the next pool of its route, or it waits capped.
    waits = {p: v["oldest"]["why"] for p, v in status["pools"].items() if v["oldest"]}
    assert any(why.endswith("capped") or "launch pending" in why or "booting" in why for why in waits.values()), waits


def test_report_prices_jobs_per_pool_repository_and_workflow(local: LocalPlane, session: Path) -> None:
    for repo in ("example-org/app", "example-org/app", "example-org/docs"):
        job = local.github.queue_job(T4, repo=repo)
        local.pump()
        iid = local.running_instances(POOL)[-1]
        local.clock.advance(60)
        local.github.start_job(job.id, local.boot(iid))
        local.clock.advance(300)
        local.github.finish_job(job.id)
        local.power_off(iid)
        local.clock.advance(200)
        local.plane.reconcile()  # the host is gone from EC2: the ledger marks it
    target = serve_target(session)
    now = local.clock()
    report = build_report(Reader(target, local.clock).items(), target.settings.pools, now - parse_duration("7d"), now)
    price = target.settings.pools[POOL].hourly_usd
    row = report["pools"][POOL]
    assert row["jobs"] == 3
    assert row["job_cost_usd"] == pytest.approx(3 * 360 / 3600 * price, abs=0.01)
    assert row["cost_usd"] >= row["job_cost_usd"]  # every host's whole life, charged to a job or idle
    assert row["idle_gpu_hours"] > 0  # the T4 sat booting and idle before its job
    assert list(report["repositories"]) == ["example-org/app", "example-org/docs"]
    assert report["repositories"]["example-org/app"]["jobs"] == 2
    assert list(report["workflows"]) == ["example-org/app / CI", "example-org/docs / CI"]
    text = render_report(report)
    assert POOL in text
    assert "example-org/docs" in text


def test_the_cli_reads_a_running_serve(moto_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`serve` writes its session file; `status --serve FILE` and `report --serve FILE` read it. (moto_url:
    serve's own moto_server shares this process's moto state, emptied first.)"""
    from estate.local import serve

    session = tmp_path / "serve.json"
    stop = threading.Event()
    thread = threading.Thread(target=serve.serve, args=([str(EXAMPLE_CONFIGS)], 0, stop, session), daemon=True)
    thread.start()
    try:
        for _ in range(300):
            if session.exists():
                break
            time.sleep(0.05)
        assert session.exists()
        capsys.readouterr()
        assert cli.main(["status", "--serve", str(session), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert set(out["pools"]) == {p.name for p in load_estate([EXAMPLE_CONFIGS]).pools}
        assert out["oldest"] is None
        assert cli.main(["report", "--serve", str(session), "--since", "7d", "--plot", str(tmp_path / "r.png")]) == 0
        assert "0 jobs finished" in capsys.readouterr().out
        assert (tmp_path / "r.png").stat().st_size > 1000
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not session.exists()  # serve removes it once it stops


def test_a_stack_is_found_from_its_file_by_stable_names() -> None:
    target = stack_target(PROJECT_DIR, "prod")
    s = target.settings
    assert (s.environment, s.region, s.table_name) == ("prod", "us-east-1", "runner-estate-prod-ledger")
    assert target.dlqs["gpu-h100-cb"] == ["runner-estate-prod-gpu-h100-cb-dlq", "runner-estate-prod-gpu-h100-cb-events-dlq"]
    assert target.aws_url is None
    assert target.credentials is None
    assert all(p.hourly_usd > 0 for p in s.pools.values())


@pytest.mark.parametrize(("text", "seconds"), [("90m", 5400), ("24h", 86400), ("7d", 604800), ("2w", 1209600), ("1.5h", 5400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_a_bad_duration_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "--since", "a week"]) == 64  # a usage error (README's exit codes)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "not a duration like 90m, 24h, 7d or 2w" in err


def test_a_capacity_block_job_is_charged_its_slots_share_while_it_ran(local: LocalPlane) -> None:
    from lambda_src.core.fleet_state import COMPLETED, IN_PROGRESS, Instance, Job, slot_runner_name

    pool = local.settings.pools["gpu-h100-cb"]
    ledger = local.plane.ledger
    ledger.add_instance(Instance("i-0123456789abcdef0", pool.name, local.clock() - 7200, block="cr-0a1b2c3d4e5f60718"))
    slot = len(pool.slot_gpus) - 1  # a 1-GPU slot of the 1x4+4x1 layout
    runner = slot_runner_name(pool.name_prefix, "local", pool.name, "i-0123456789abcdef0", slot)
    start = local.clock()
    ledger.record_job(Job(77, pool.name, IN_PROGRESS, start - 60, "org/r", runner_name=runner, started_at=start, workflow="GPU"))
    ledger.record_job(Job(77, pool.name, COMPLETED, start - 60, "org/r", runner_name=runner, completed_at=start + 1800))
    item = ledger.table.get_item(Key={"pk": "job#77"})["Item"]
    share = pool.slot_gpus[slot] / pool.gpus_per_node
    assert item["host_s"] == pytest.approx(1800 * share)
    assert item["cost_usd"] == pytest.approx(0.5 * pool.hourly_usd * share, rel=1e-4)
