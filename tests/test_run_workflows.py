"""A runner group restricted to selected workflows: the scaler and the block manager ask GitHub
which workflow files a job's run has, and launch (or buy) nothing for a job GitHub will never
give their runners. A `workflow_job` webhook does not name the file; the run does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from estate.local.fake_block_ec2 import FakeBlockEc2
from estate.local.plane import LocalPlane
from lambda_src.aws.block_ec2 import BlockEc2
from lambda_src.core.routing import Admission, JobOrigin, run_workflow_files
from lambda_src.functions.block_manager import BlockManager
from tests.conftest import EXAMPLE_CONFIGS, WORKING_HOURS, fixed_clock

T4 = ["self-hosted", "linux", "x64", "gpu", "t4"]
H100 = ["self-hosted", "linux", "x64", "gpu", "h100"]
GPU_TESTS = "example-org/app/.github/workflows/gpu-tests.yml@refs/heads/main"
GROUPS = {
    "gpu": {"repositories": ["app"], "workflows": [GPU_TESTS]},
    "gpu-h100": {"repositories": ["app"], "workflows": [GPU_TESTS]},
    "gpu-b200": {"repositories": ["app"], "workflows": [GPU_TESTS]},
}


# ---- the decision, on plain data -----------------------------------------------------------


def test_a_runs_workflow_files_are_its_own_and_those_it_calls() -> None:
    run = {
        "path": ".github/workflows/ci.yml",
        "head_branch": "feature/x",
        "referenced_workflows": [{"path": "example-org/shared/.github/workflows/gpu.yml@v2", "sha": "a" * 40, "ref": "refs/tags/v2"}],
    }
    assert run_workflow_files("example-org/app", run) == (
        "example-org/app/.github/workflows/ci.yml@feature/x",
        "example-org/shared/.github/workflows/gpu.yml@v2",
    )


def test_a_group_refuses_a_job_only_when_no_file_of_its_run_is_selected() -> None:
    group = Admission("gpu", workflows=(GPU_TESTS,))
    other = JobOrigin("example-org/app", run_workflows=("example-org/app/.github/workflows/lint.yml@main",))
    assert group.refusal(other) is not None
    called = JobOrigin("example-org/app", run_workflows=("example-org/app/.github/workflows/ci.yml@main", GPU_TESTS))
    assert group.refusal(called) is None
    # The same file from another ref: GitHub judges the ref (a pull request's run resolves its own).
    branch = JobOrigin("example-org/app", run_workflows=("example-org/app/.github/workflows/gpu-tests.yml@feature/x",))
    assert group.refusal(branch) is None
    assert group.refusal(JobOrigin("example-org/app")) is None  # not asked yet: GitHub decides


# ---- as deployed -----------------------------------------------------------------------


@pytest.fixture
def local(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    plane = LocalPlane([str(EXAMPLE_CONFIGS)], clock=fixed_clock(monkeypatch, WORKING_HOURS), endpoint=moto_url, runner_groups=GROUPS)
    plane.start().serve_webhook()
    yield plane
    plane.stop()


def test_a_job_of_a_workflow_its_group_does_not_select_launches_nothing_and_stops_counting(local: LocalPlane) -> None:
    lint = local.github.queue_job(T4, workflow=".github/workflows/lint.yml")
    local.pump()
    assert local.running_instances("gpu-t4-spot") == []
    local.plane.reconcile()
    assert [j.id for j in local.plane.ledger.queued_jobs()] == []
    assert local.plane.ledger.job(lint.id) is not None  # its record stays, with why
    assert local.running_instances("gpu-t4-spot") == local.running_instances("gpu-t4-ondemand") == []

    tests = local.github.queue_job(T4, workflow=".github/workflows/gpu-tests.yml")
    local.pump()
    assert len(local.running_instances("gpu-t4-spot")) == 1
    assert [j.id for j in local.plane.ledger.queued_jobs()] == [tests.id]


def test_a_job_whose_run_calls_a_selected_reusable_workflow_is_served(local: LocalPlane) -> None:
    job = local.github.queue_job(T4, workflow=".github/workflows/ci.yml", send=False)
    job.calls = (GPU_TESTS,)
    local.github.send_job_event(job, "queued")
    local.pump()
    assert len(local.running_instances("gpu-t4-spot")) == 1


def test_a_run_is_asked_of_github_once_for_all_its_jobs(local: LocalPlane) -> None:
    first = local.github.queue_job(T4, workflow=".github/workflows/lint.yml", send=False)
    for _ in range(5):
        local.github.jobs[next(local.github._ids)] = type(first)(next(local.github._ids), first.repo, first.run_id, T4)
    for job in list(local.github.jobs.values()):
        job.workflow = first.workflow
        local.github.send_job_event(job, "queued")
    local.pump()
    local.plane.reconcile()
    asked = [p for _, p in local.github.calls if p.split("?")[0].endswith(f"/actions/runs/{first.run_id}")]
    assert len(asked) == 1  # then known from the ledger
    assert local.running_instances("gpu-t4-spot") == local.running_instances("gpu-t4-ondemand") == []


def test_a_capacity_block_pool_counts_no_demand_from_a_workflow_its_group_does_not_select(local: LocalPlane) -> None:
    pool = local.settings.pools["gpu-h100-cb"]
    fake = FakeBlockEc2(local.clock, {s: f"us-east-1{'ab'[i % 2]}" for i, s in enumerate(pool.subnet_ids)})
    fake.add_block("cr-0a1b2c3d4e5f60718", "p5.48xlarge", total=1, start=local.clock(), hours=24)
    manager = BlockManager(local.settings, local.plane.ledger, BlockEc2(fake, local.settings.environment), local.plane.jit,
                           local.plane.github, local.clock, lambda s: None)  # fmt: skip
    local.github.queue_job(H100, workflow=".github/workflows/benchmarks.yml")
    local.pump(manager.scale_up)
    manager.manage()
    assert fake.live() == []  # no node: a node lives (and is paid) for the whole block
    local.github.queue_job(H100, workflow=".github/workflows/gpu-tests.yml")
    local.pump(manager.scale_up)
    assert len(fake.live()) == 1
