"""Label routing: GitHub's subset rule and runner-group admission, then exact, priority, least
capable pool, capacity kind, price, name."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from estate import cli
from estate.config.loader import load_estate
from lambda_src.core.routing import Admission, JobOrigin, PoolRoute, RoutingTable, normalise, workflow_matches
from tests.conftest import EXAMPLE_CONFIGS, FLASHINFER_CONFIGS, MINIMAL_POOL, PROJECT_DIR, needs_shared, write_pool

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
    table = load_estate([FLASHINFER_CONFIGS], drop_unknown_types=True).routing_table()  # m7g/m6g.24xlarge do not exist
    assert table.route(["self-hosted", "linux", "x64", "gpu", "sm86"]) == ["gpu-g5-spot", "gpu-g5-ondemand"]
    assert table.route(["self-hosted", "linux", "x64", "gpu", "t4", "on-demand"]) == ["gpu-g4dn-ondemand"]
    # FlashInfer had no H100 pool in this set: the job is reported, not dropped.
    assert table.route(["self-hosted", "linux", "x64", "gpu", "h100"]) == []


def _route(
    pool: str,
    *,
    exact: bool = True,
    priority: int = 999,
    capacity: str = "spot",
    labels: str = "self-hosted,linux,x64",
    runner: str | None = None,
    price: float | None = None,
    max_runners: int | None = None,
    admission: Admission | None = None,
) -> PoolRoute:
    label_set = normalise(labels.split(","))
    runner_set = label_set | normalise((runner or "").split(","))
    return PoolRoute(pool, exact, priority, capacity, (label_set,), (runner_set,), max_runners, price, admission)


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
def test_results_follow_the_design_order(labels: list[str]) -> None:
    wanted = normalise(labels)
    keys = [EXAMPLE.get(p).rank(wanted) for p in EXAMPLE.route(labels)]
    assert keys == sorted(keys)


@given(job_labels)
def test_a_less_capable_pool_never_comes_after_a_more_capable_one_of_equal_standing(labels: list[str]) -> None:
    wanted = normalise(labels)
    routed = [EXAMPLE.get(p) for p in EXAMPLE.route(labels)]
    for before, after in itertools.pairwise(routed):
        if before.preference[:2] == after.preference[:2]:
            assert before.extra_labels(wanted) <= after.extra_labels(wanted)


@given(job_labels, st.sampled_from(ALL_LABELS))
def test_asking_for_more_labels_never_adds_pools(labels: list[str], extra: str) -> None:
    assert set(EXAMPLE.route([*labels, extra])) <= set(EXAMPLE.route(labels))


# ---- the design's order (issue 17.12) ------------------------------------------------------


def test_a_plain_job_goes_to_a_cpu_pool_never_first_to_a_gpu_slot() -> None:
    # Reproduces 17.12: on the example estate gpu-b200-cb came first for these labels.
    assert EXAMPLE.route(["self-hosted", "linux", "x64"]) == [
        "cpu-x64-spot",  # priority 1 and 2 labels beyond the job's: the least capable
        "gpu-h100-cb",  # 6 beyond; capacity blocks before spot, then the cheaper runner-hour
        "gpu-b200-cb",
        "gpu-t4-spot",
        "gpu-a10g-spot",
        "cpu-x64-ondemand",  # priority 10: the failover pools come after every priority-1 pool
        "gpu-t4-ondemand",
        "gpu-a10g-ondemand",
    ]
    assert EXAMPLE.route(["self-hosted"])[:2] == ["cpu-arm64-spot", "cpu-x64-spot"]  # equally capable: the cheaper first


def test_the_cli_lists_a_cpu_pool_first_for_plain_labels(capsys: pytest.CaptureFixture[str]) -> None:
    for labels in ("self-hosted,linux,x64", "self-hosted"):
        assert cli.main(["route", labels]) == 0
        first = capsys.readouterr().out.split()[0]
        assert first.startswith("cpu-"), labels


def test_fewer_labels_beyond_the_job_wins_before_capacity_kind_and_price() -> None:
    table = RoutingTable(
        (
            _route("block", capacity="capacity-block", runner="gpu,b200,sm100", price=0.1),
            _route("cpu", capacity="on-demand", runner="cpu", price=9.0),
        )
    )
    assert table.route(["self-hosted", "linux"]) == ["cpu", "block"]


def test_price_then_name_break_ties() -> None:
    table = RoutingTable((_route("b", price=2.0), _route("a", price=3.0), _route("c", price=2.0), _route("d")))
    assert table.route(["linux"]) == ["b", "c", "a", "d"]  # no price known: last


def test_priority_still_comes_before_capability() -> None:
    table = RoutingTable((_route("plain", priority=10), _route("gpu", priority=1, runner="gpu,t4")))
    assert table.route(["x64"]) == ["gpu", "plain"]


def test_explain_gives_the_reasons_of_the_order_in_route_order() -> None:
    lines = EXAMPLE.explain(["self-hosted", "linux", "x64"])
    assert [pool for pool, _ in lines[:2]] == ["cpu-x64-spot", "gpu-h100-cb"]
    assert "priority 1, 2 runner labels beyond the job's, spot, $" in lines[0][1]
    assert "capacity-block" in lines[1][1]
    assert lines[-1][1].startswith("no:")


# ---- pools that cannot take the job at all fall through -----------------------------------


def test_a_drained_pool_is_passed_over_for_the_next_match(tmp_path: Path) -> None:
    write_pool(tmp_path, "cpu-a", MINIMAL_POOL.replace("runners_maximum_count: 4", "runners_maximum_count: 0"))
    write_pool(tmp_path, "cpu-b", MINIMAL_POOL.replace("exactMatch: true", "exactMatch: true\n  priority: 5"))
    table = load_estate([tmp_path]).routing_table()
    assert table.route(["self-hosted", "linux", "x64", "cpu"]) == ["cpu-b"]
    assert dict(table.explain(["self-hosted", "cpu"]))["cpu-a"] == "no: drained (runners_maximum_count: 0)"


def test_hard_limit_of_zero_drains_too(tmp_path: Path) -> None:
    write_pool(tmp_path, "cpu-a", MINIMAL_POOL + "estate:\n  hard_limits:\n    max_instances: 0\n")
    assert load_estate([tmp_path]).routing_table().route(["self-hosted", "cpu"]) == []


KERNELS = Admission("gpu-h100", frozenset({"org/kernels"}), ("org/kernels/.github/workflows/gpu.yml@refs/heads/main",), public=False)


def test_a_group_that_does_not_admit_the_repository_passes_the_job_on() -> None:
    table = RoutingTable((_route("h100", priority=1, admission=KERNELS), _route("any", priority=2, admission=Admission("Default"))))
    assert table.route(["linux"], JobOrigin("org/kernels")) == ["h100", "any"]
    assert table.route(["linux"], JobOrigin("Org/Serving")) == ["any"]
    assert table.route(["linux"], JobOrigin("org/kernels", public=True)) == []  # public repositories: only where a config says so
    assert table.route(["linux"]) == ["h100", "any"]  # no origin: labels alone (the CLI's question)
    (match,) = [m for m in table.matches(["linux"], JobOrigin("org/serving")) if m.refusal]
    assert match.refusal == "runner group gpu-h100 does not admit repository org/serving"


def test_a_known_workflow_must_be_one_the_group_selected() -> None:
    route = _route("h100", admission=KERNELS)
    assert route.refusal(JobOrigin("org/kernels", workflow="org/kernels/.github/workflows/gpu.yml@refs/heads/main")) is None
    assert route.refusal(JobOrigin("org/kernels", workflow="org/kernels/.github/workflows/gpu.yml@refs/pull/7/merge"))
    assert route.refusal(JobOrigin("org/kernels", workflow="org/kernels/.github/workflows/evil.yml@refs/heads/main"))
    # The payload does not name the workflow: GitHub applies the restriction; see docs/architecture.md.
    assert route.refusal(JobOrigin("org/kernels")) is None


@pytest.mark.parametrize(
    ("entry", "workflow", "same"),
    [
        ("o/r/.github/workflows/a.yml@main", "o/r/.github/workflows/a.yml@refs/heads/main", True),
        ("o/r/.github/workflows/a.yml@v2", "o/r/.github/workflows/a.yml@refs/tags/v2", True),
        ("O/R/.github/workflows/a.yml@refs/heads/main", "o/r/.github/workflows/a.yml@refs/heads/main", True),
        ("o/r/.github/workflows/a.yml@refs/heads/main", "o/r/.github/workflows/a.yml@refs/tags/main", False),
        ("o/r/.github/workflows/a.yml@refs/heads/main", "o/r/.github/workflows/A.yml@refs/heads/main", False),
        ("o/r/.github/workflows/a.yml@" + "A" * 40, "o/r/.github/workflows/a.yml@" + "a" * 40, True),
        ("o/r/.github/workflows/a.yml@main", "o/other/.github/workflows/a.yml@main", False),
        ("o/r/.github/workflows/a.yml", "o/r/.github/workflows/a.yml@main", False),
    ],
)
def test_workflow_pins_compare_as_github_does(entry: str, workflow: str, same: bool) -> None:
    assert workflow_matches(entry, workflow) is same


def test_the_stack_s_runner_groups_reach_the_table_the_lambdas_read() -> None:
    from estate.derive.control_config import control_settings
    from estate.preview import read_stack_file, validate_stack_config

    path = PROJECT_DIR / "Pulumi.prod.yaml"
    config, secret_keys = read_stack_file(path)
    stack = validate_stack_config(config, path, secret_keys)
    estate = load_estate([EXAMPLE_CONFIGS])
    table = control_settings(stack, estate, table_name="t", pools={}).routing
    again = RoutingTable.from_dict(json.loads(json.dumps(table.to_dict())))
    h100 = ["self-hosted", "linux", "x64", "gpu", "h100"]
    assert again.route(h100, JobOrigin("example-gpu-project/kernels")) == ["gpu-h100-cb"]
    assert again.route(h100, JobOrigin("example-gpu-project/serving")) == []
    assert again.route(["self-hosted", "linux", "x64", "gpu", "t4"], JobOrigin("example-gpu-project/docs")) == []
    cpu = ["self-hosted", "linux", "x64", "cpu"]
    # The CPU pools are in the Default group: any private repository of the org.
    assert again.route(cpu, JobOrigin("example-gpu-project/docs")) == ["cpu-x64-spot", "cpu-x64-ondemand"]
    assert again.route(cpu, JobOrigin("example-gpu-project/docs", public=True)) == []


def test_route_cli_applies_the_stack_s_groups_to_a_repository(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["route", "--repo", "serving", "self-hosted,linux,x64,gpu,h100"]) == cli.EXIT_UNROUTED
    assert "no pool admits a job from example-gpu-project/serving" in capsys.readouterr().err
    assert cli.main(["route", "--repo", "kernels", "self-hosted,linux,x64,gpu,h100"]) == 0
    assert capsys.readouterr().out.split() == ["gpu-h100-cb"]
