"""The dashboard as code (issue 22.1): one per environment, its body a pure function of the pools,
drawing only metrics the functions emit (lambda_src/core/metric_catalog.py) and the queues and
functions the program really registers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from estate.config.loader import load_estate
from estate.derive.dashboard import DashboardPool, dashboard_body, dashboard_pools
from estate.preview import Registered, run_program
from lambda_src.core.metric_catalog import FUNCTION_METRICS, NAMESPACE, POOL_METRICS
from tests.conftest import EXAMPLE_CONFIGS, PROJECT_DIR

POOLS = dashboard_pools("prod", load_estate([EXAMPLE_CONFIGS]))


@pytest.fixture(scope="module")
def prod() -> list[Registered]:
    return run_program(PROJECT_DIR, "prod").records


def widgets(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["properties"]["title"]: w for w in body["widgets"] if w["type"] == "metric"}


def metric_lines(widget: dict[str, Any]) -> list[list[Any]]:
    return [m for m in widget["properties"]["metrics"] if isinstance(m[0], str)]


def test_the_program_registers_one_dashboard_named_for_the_environment(prod: list[Registered]) -> None:
    (board,) = [r for r in prod if r.type == "aws:cloudwatch/dashboard:Dashboard"]
    assert board.inputs["dashboardName"] == "runner-estate-prod"
    body = json.loads(board.inputs["dashboardBody"])
    assert body == json.loads(json.dumps(dashboard_body("prod", "us-east-1", POOLS, round(2 * 25000 / 730, 4))))
    assert len(board.inputs["dashboardBody"]) < 100_000  # well within what PutDashboard takes


def test_it_answers_the_issues_questions_per_pool() -> None:
    body = dashboard_body("prod", "us-east-1", POOLS)
    found = widgets(body)
    every = {p.name for p in POOLS}
    for title, metric in (
        ("Jobs queued", "queued_jobs"),
        ("Oldest queued job (seconds)", "oldest_wait"),
        ("Job wait p50 (seconds, queued to started)", "job_wait"),
        ("Job wait p95 (seconds)", "job_wait"),
        ("Hosts launched", "launched"),
        ("Launch failures", "launch_failures"),
    ):
        lines = metric_lines(found[title])
        assert {line[1] for line in lines} == {metric}, title
        assert {line[5] for line in lines} == every, title
    assert (
        found["Job wait p50 (seconds, queued to started)"]["properties"]["stat"],
        found["Job wait p95 (seconds)"]["properties"]["stat"],
    ) == (
        "p50",
        "p95",
    )
    hosts = {p.name for p in POOLS if p.kind != "capacity-block"}
    for state in ("booting", "idle", "busy"):
        assert {line[5] for line in metric_lines(found[f"Hosts {state}"])} == hosts
    slots = metric_lines(found["Capacity-block slots busy / idle / faulty"])
    assert {(line[1], line[5]) for line in slots} == {
        (f"slots_{s}", p) for p in ("gpu-b200-cb", "gpu-h100-cb") for s in ("busy", "idle", "faulty")
    }
    assert "Capacity block: hours left" in found
    idle = found["Idle paid GPU-hours (per hour)"]["properties"]["metrics"]
    assert {line[5] for line in idle if isinstance(line[0], str)} == {p.name for p in POOLS if p.kind != "cpu"}
    assert all(e[0]["expression"].endswith("/60") for e in idle if isinstance(e[0], dict))
    for title in (
        "Dead-letter queue depths",
        "Lambda errors",
        "Lambda throttles",
        "Lambda duration p95 (ms)",
        "Spend rate (USD/hour, estimate)",
    ):
        assert title in found
    assert "GitHub API rate-limit headroom (requests left this hour)" in found


def test_every_custom_metric_drawn_is_one_the_functions_emit() -> None:
    names = {m.name for m in (*POOL_METRICS, *FUNCTION_METRICS)}
    drawn = {
        line[1] for w in widgets(dashboard_body("prod", "us-east-1", POOLS)).values() for line in metric_lines(w) if line[0] == NAMESPACE
    }
    assert drawn <= names
    assert drawn == names  # and everything emitted is drawn


def test_queues_and_functions_are_the_ones_the_program_registers(prod: list[Registered]) -> None:
    found = widgets(dashboard_body("prod", "us-east-1", POOLS))
    dlqs = {line[3] for line in metric_lines(found["Dead-letter queue depths"])}
    registered = {r.inputs["name"] for r in prod if r.type == "aws:sqs/queue:Queue" and r.inputs["name"].endswith("dlq")}
    assert dlqs == registered
    functions = {line[3] for line in metric_lines(found["Lambda errors"])}
    assert functions == {r.inputs["name"] for r in prod if r.type == "aws:lambda/function:Function"}


def test_widgets_tile_the_grid_without_overlap() -> None:
    body = dashboard_body("prod", "us-east-1", POOLS)
    cells: set[tuple[int, int]] = set()
    for w in body["widgets"]:
        assert w["x"] >= 0
        assert w["x"] + w["width"] <= 24
        area = {(x, y) for x in range(w["x"], w["x"] + w["width"]) for y in range(w["y"], w["y"] + w["height"])}
        assert not cells & area
        cells |= area


def test_an_estate_without_blocks_or_gpus_draws_neither() -> None:
    body = dashboard_body("dev", "eu-west-1", [DashboardPool("cpu", "cpu", ("runner-estate-dev-cpu-dlq",))])
    titles = set(widgets(body))
    assert not {t for t in titles if "Capacity" in t or "GPU" in t}
    assert {line[3] for line in metric_lines(widgets(body)["Lambda errors"])} == {
        f"runner-estate-dev-{f}" for f in ("webhook", "scale-up", "reconcile", "scale-down", "redeliver", "sweep")
    }
    assert all(w["properties"]["region"] == "eu-west-1" for w in body["widgets"] if w["type"] == "metric")
