"""Label routing: GitHub's subset rule, then exact, priority, capacity kind, name."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from estate.config.loader import load_estate
from lambda_src.core.routing import PoolRoute, RoutingTable, normalise
from tests.conftest import EXAMPLE_CONFIGS, FLASHINFER_CONFIGS, needs_shared

EXAMPLE = load_estate([EXAMPLE_CONFIGS]).routing_table()


@pytest.mark.parametrize(
    ("labels", "pools"),
    [
        # FlashInfer's PR workload, as its workflow asks.
        ("self-hosted,linux,x64,cpu,on-demand", ["cpu-x64-ondemand"]),
        ("self-hosted,linux,arm64,cpu,on-demand", ["cpu-arm64-ondemand"]),
        ("self-hosted,linux,x64,gpu,sm86,on-demand", ["gpu-a10g-ondemand"]),
        ("self-hosted,linux,x64,gpu,sm75,on-demand", ["gpu-t4-ondemand"]),
        ("self-hosted,linux,x64,gpu,h100", ["gpu-h100-cb"]),
        # Spot first, its on-demand failover second.
        ("self-hosted,linux,x64,cpu", ["cpu-x64-spot", "cpu-x64-ondemand"]),
        ("self-hosted,linux,x64,gpu,a10g", ["gpu-a10g-spot", "gpu-a10g-ondemand"]),
        ("self-hosted,linux,x64,cpu,spot", ["cpu-x64-spot"]),
        # Slot sizes on capacity-block nodes.
        ("self-hosted,linux,x64,gpu,h100,4gpu", ["gpu-h100-cb"]),
        ("self-hosted,linux,x64,gpu,b200,1gpu", ["gpu-b200-cb"]),
        ("self-hosted,linux,x64,gpu,h100,2gpu", []),
        # Case does not matter; unknown hardware is served by nobody.
        ("Self-Hosted,Linux,X64,GPU,H100", ["gpu-h100-cb"]),
        ("self-hosted,linux,x64,gpu,mi300x", []),
        ("ubuntu-latest", []),
        ("", []),
    ],
)
def test_example_estate_routes(labels: str, pools: list[str]) -> None:
    assert EXAMPLE.route([s for s in labels.split(",") if s]) == pools


@needs_shared
def test_flashinfer_pools_route_their_own_workflow_labels() -> None:
    table = load_estate([FLASHINFER_CONFIGS]).routing_table()
    assert table.route(["self-hosted", "linux", "x64", "gpu", "sm86"]) == ["gpu-g5-spot", "gpu-g5-ondemand"]
    assert table.route(["self-hosted", "linux", "x64", "gpu", "t4", "on-demand"]) == ["gpu-g4dn-ondemand"]
    # FlashInfer had no H100 pool in this set: the job is reported, not dropped.
    assert table.route(["self-hosted", "linux", "x64", "gpu", "h100"]) == []


def _route(
    pool: str, *, exact: bool = True, priority: int = 999, capacity: str = "spot", labels: str = "self-hosted,linux,x64"
) -> PoolRoute:
    label_set = normalise(labels.split(","))
    return PoolRoute(pool, exact, priority, capacity, (label_set,), (label_set,))


def test_exact_matchers_come_before_loose_ones() -> None:
    table = RoutingTable((_route("a-loose", exact=False, priority=1), _route("z-exact", priority=50)))
    assert table.route(["self-hosted"]) == ["z-exact", "a-loose"]


def test_lower_priority_comes_first() -> None:
    table = RoutingTable((_route("a", priority=10), _route("b", priority=1)))
    assert table.route(["linux"]) == ["b", "a"]


def test_paid_capacity_blocks_then_spot_then_on_demand() -> None:
    table = RoutingTable((_route("a", capacity="on-demand"), _route("b", capacity="spot"), _route("c", capacity="capacity-block")))
    assert table.route(["x64"]) == ["c", "b", "a"]


def test_exact_pool_serves_only_its_matchers_even_when_runner_labels_would_fit() -> None:
    route = PoolRoute(
        "p",
        True,
        1,
        "spot",
        (normalise(["self-hosted", "linux", "x64", "cpu", "on-demand"]),),
        (normalise(["self-hosted", "linux", "x64", "cpu", "on-demand", "extra"]),),
    )
    assert not route.serves(normalise(["self-hosted", "extra"]))
    assert route.serves(normalise(["self-hosted", "cpu"]))


def test_explain_names_the_missing_labels() -> None:
    reasons = dict(EXAMPLE.explain(["self-hosted", "linux", "x64", "gpu", "h100"]))
    assert reasons["gpu-h100-cb"].startswith("yes")
    assert reasons["gpu-b200-cb"].startswith("no")
    assert "lacks h100" in reasons["gpu-b200-cb"]


def test_table_survives_json_as_the_lambdas_read_it() -> None:
    data = json.loads(json.dumps(EXAMPLE.to_dict()))
    again = RoutingTable.from_dict(data)
    assert again == EXAMPLE


def test_unknown_table_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        RoutingTable.from_dict({"version": 2, "routes": []})


# ---- properties --------------------------------------------------------------------------

ALL_LABELS = sorted({label for r in EXAMPLE.routes for s in r.runner_label_sets for label in s} | {"windows", "mi300x", "tpu"})
job_labels = st.lists(st.sampled_from(ALL_LABELS), min_size=1, max_size=7).map(
    lambda ls: [label.upper() if i % 2 else label for i, label in enumerate(ls)]
)


@given(job_labels)
def test_every_pool_routed_to_has_a_runner_that_can_take_the_job(labels: list[str]) -> None:
    wanted = normalise(labels)
    for pool in EXAMPLE.route(labels):
        assert any(wanted <= s for s in EXAMPLE.get(pool).runner_label_sets)


@given(job_labels)
def test_order_is_deterministic_and_independent_of_table_order(labels: list[str]) -> None:
    shuffled = RoutingTable(tuple(reversed(EXAMPLE.routes)))
    assert EXAMPLE.route(labels) == shuffled.route(labels) == EXAMPLE.route(list(reversed(labels)))


@given(job_labels)
def test_results_follow_preference_order(labels: list[str]) -> None:
    keys = [EXAMPLE.get(p).preference for p in EXAMPLE.route(labels)]
    assert keys == sorted(keys)


@given(job_labels, st.sampled_from(ALL_LABELS))
def test_asking_for_more_labels_never_adds_pools(labels: list[str], extra: str) -> None:
    assert set(EXAMPLE.route([*labels, extra])) <= set(EXAMPLE.route(labels))
