"""End to end on loopback: the real webhook, planners and adapters; AWS in moto_server, GitHub
as our fake. Each fault the control plane must survive is injected here."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import shutil
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from estate.local.aws_models import checked
from estate.local.plane import LocalPlane
from lambda_src.aws.jit_parameters import INSTANCE_ARN_TAG
from lambda_src.core.fleet_state import GithubRunner, runner_name
from lambda_src.core.planner import IDLE_CONFIRM_S
from lambda_src.functions.control_plane import MAX_JOB_CHECKS, MAX_REPO_SCANS, STALE_JOB_S
from tests.conftest import EXAMPLE_CONFIGS, INSTANTS, fixed_clock

T4 = ["self-hosted", "linux", "x64", "gpu", "t4"]
POOL = "gpu-t4-spot"


@pytest.fixture(params=sorted(INSTANTS))
def instant(request: pytest.FixtureRequest) -> datetime:
    """Each test runs at every fixed instant: working hours, night, weekend, a DST change."""
    return INSTANTS[request.param]


@pytest.fixture
def local(moto_url: str, monkeypatch: pytest.MonkeyPatch, instant: datetime) -> Iterator[LocalPlane]:
    plane = LocalPlane([str(EXAMPLE_CONFIGS)], clock=fixed_clock(monkeypatch, instant), endpoint=moto_url).start()
    plane.serve_webhook()
    yield plane
    plane.stop()


def jit_parameter(local: LocalPlane, instance_id: str) -> dict[str, Any]:
    name = local.settings.jit_parameter_prefix + instance_id
    found = local.ssm.call("DescribeParameters", {"ParameterFilters": [{"Key": "Name", "Values": [name]}]})["Parameters"]
    if not found:
        return {}
    tags = local.ssm.call("ListTagsForResource", {"ResourceType": "Parameter", "ResourceId": name})["TagList"]
    return {"type": found[0]["Type"], "tags": {t["Key"]: t["Value"] for t in tags}}


def name_of(local: LocalPlane, instance_id: str) -> str:
    return runner_name(local.settings.pools[POOL].name_prefix, "local", POOL, instance_id)


# ---- the whole path ---------------------------------------------------------------------


def test_queued_job_gets_one_host_whose_runner_config_only_it_can_read(local: LocalPlane) -> None:
    job = local.github.queue_job(T4)
    assert local.github.deliveries[-1][0] == 202
    local.pump()
    (iid,) = local.running_instances(POOL)
    assert jit_parameter(local, iid) == {
        "type": "SecureString",
        "tags": {INSTANCE_ARN_TAG: f"arn:aws:ec2:us-east-1:123456789012:instance/{iid}"},
    }
    user_data = local.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData").get("UserData", {})
    assert "Value" not in user_data  # the config never travels in user-data

    name = local.boot(iid)
    assert jit_parameter(local, iid) == {}  # the host deleted it once read
    local.github.start_job(job.id, name)
    assert local.plane.ledger.instance(iid).job_id == job.id  # type: ignore[union-attr]
    local.github.finish_job(job.id)
    local.power_off(iid)

    local.clock.advance(200)
    report = local.plane.scale_down()
    assert report.retired == []
    assert local.plane.ledger.live_instances() == []
    assert local.github.runners == {}


def test_github_calls_per_job_on_the_hot_path(local: LocalPlane) -> None:
    local.github.queue_job(T4)
    local.pump()  # first job also pays for the installation, token and runner-group lookups
    before = len(local.github.calls)
    for _ in range(5):
        local.github.queue_job(T4)
    local.pump()
    assert len(local.running_instances(POOL)) == 6
    assert (len(local.github.calls) - before) / 5 <= 2


def test_scale_down_retires_idle_runners_orphans_and_ghosts(local: LocalPlane) -> None:
    first = local.github.queue_job(T4)
    second = local.github.queue_job(T4)
    local.pump()
    idle_host, orphan_host = local.running_instances(POOL)
    local.boot(idle_host)
    # The job is cancelled before any runner takes it: its runner stays idle.
    local.github.finish_job(first.id)
    local.github.finish_job(second.id)
    ghost = local.github._jit(None, {}, {"name": name_of(local, "i-00000000deadbeef"), "runner_group_id": 1, "labels": T4})  # type: ignore[arg-type]
    assert ghost[0] == 201

    local.clock.advance(13 * 60)  # past the pool's 12 min boot time and 5 min minimum running time
    first_pass = local.plane.scale_down()
    retired = {(r["instance"], r["reason"].split(":")[0].split(" after")[0]) for r in first_pass.retired}
    assert retired == {(orphan_host, "never registered"), (None, "ghost")}
    assert idle_host in local.running_instances(POOL)  # seen idle once: kept

    local.clock.advance(IDLE_CONFIRM_S)
    second_pass = local.plane.scale_down()
    assert [r["instance"] for r in second_pass.retired] == [idle_host]
    assert local.running_instances(POOL) == []
    assert local.github.runners == {}


def test_a_runner_that_takes_a_job_between_listings_is_not_retired(local: LocalPlane) -> None:
    job = local.github.queue_job(T4)
    local.pump()
    (iid,) = local.running_instances(POOL)
    name = local.boot(iid)
    local.github.jobs[job.id].status = "completed"  # pretend the job went elsewhere; the host idles
    local.plane.ledger.close_job(job.id)
    local.clock.advance(10 * 60)
    local.plane.scale_down()
    local.clock.advance(IDLE_CONFIRM_S)
    runner = local.github.runner_named(name)
    runner.busy = True  # a new job arrived just before the second listing
    assert local.plane.scale_down().retired == []
    assert iid in local.running_instances(POOL)


# ---- duplicates and order ---------------------------------------------------------------


def test_duplicate_delivery_launches_one_host(local: LocalPlane) -> None:
    job = local.github.queue_job(T4)
    local.github.send_job_event(job, "queued")
    local.github.send_job_event(job, "queued")
    local.pump()
    assert len(local.running_instances(POOL)) == 1
    assert local.ports.counters["duplicate"] == 2


def test_completed_before_queued_launches_nothing(local: LocalPlane) -> None:
    job = local.github.queue_job(T4, send=False)
    job.status = "completed"
    local.github.send_job_event(job, "completed")
    local.github.send_job_event(job, "queued")
    local.pump()
    local.plane.reconcile()
    assert local.running_instances(POOL) == []


# ---- faults -----------------------------------------------------------------------------


class Ec2Faults:
    """Wraps the EC2 client: scripted answers for create_fleet, everything else passes through."""

    def __init__(self, real: Any, script: list[Any]) -> None:
        self.real, self.script, self.requests = real, script, []  # type: ignore[var-annotated]

    def create_fleet(self, **request: Any) -> Any:
        checked("ec2", "CreateFleet", request)
        self.requests.append(request)
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Exception):
            raise step
        if isinstance(step, dict):
            return step
        return self.real.create_fleet(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def with_ec2_faults(local: LocalPlane, script: list[Any]) -> Ec2Faults:
    faulty = Ec2Faults(local.ec2, script)
    local.plane.fleet.ec2 = faulty
    return faulty


def test_spot_capacity_error_fails_over_to_on_demand(local: LocalPlane) -> None:
    no_capacity = {"Instances": [], "Errors": [{"ErrorCode": "InsufficientInstanceCapacity", "ErrorMessage": "none left"}]}
    faulty = with_ec2_faults(local, [no_capacity])
    local.github.queue_job(T4)
    local.pump()
    markets = [r["TargetCapacitySpecification"]["DefaultTargetCapacityType"] for r in faulty.requests]
    assert markets == ["spot", "on-demand"]
    assert len({o["InstanceType"] for o in faulty.requests[0]["LaunchTemplateConfigs"][0]["Overrides"]}) > 1  # all the pool's types
    assert len(local.running_instances(POOL)) == 1


def test_ec2_throttling_is_retried_through_the_queue(local: LocalPlane) -> None:
    throttled = ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}}, "CreateFleet")
    with_ec2_faults(local, [throttled])
    local.github.queue_job(T4)
    local.pump()
    assert local.running_instances(POOL) == []
    local.pump()  # the message became visible again
    assert len(local.running_instances(POOL)) == 1


def test_github_502_on_jit_is_retried_in_place(local: LocalPlane) -> None:
    local.github.fail_next(502, "generate-jitconfig", times=2)
    local.github.queue_job(T4)
    local.pump()
    (iid,) = local.running_instances(POOL)
    assert jit_parameter(local, iid)["type"] == "SecureString"


def test_github_down_undoes_the_launch_and_the_reconciler_recovers(local: LocalPlane) -> None:
    local.github.fail_next(502, "generate-jitconfig", times=100)
    local.github.queue_job(T4)
    for _ in range(4):
        local.pump()
    assert local.running_instances(POOL) == []  # hosts without a runner config are terminated at once
    assert local.dlq_depth(POOL) == 1
    local.github.faults.clear()
    local.clock.advance(60)
    report = local.plane.reconcile()  # the job is still queued in the ledger
    assert len(report.launched[POOL]) == 1  # (other pools may top up their pool_config at this hour)
    assert len(local.running_instances(POOL)) == 1


def test_github_rate_limit_is_waited_out(local: LocalPlane) -> None:
    local.github.fail_next(429, "generate-jitconfig", headers={"Retry-After": "2"})
    local.github.queue_job(T4)
    local.pump()
    assert len(local.running_instances(POOL)) == 1


class Killed(BaseException):
    """The Lambda runtime ending an invocation (timeout, OOM): nothing after it runs."""


def test_invocation_killed_after_launch_completes_exactly_once_on_redrive(local: LocalPlane) -> None:
    real_launch = local.plane.fleet.launch

    def launch_then_die(*args: Any) -> Any:
        real_launch(*args)
        raise Killed

    local.plane.fleet.launch = launch_then_die  # type: ignore[method-assign,assignment]
    local.github.queue_job(T4)
    with pytest.raises(Killed):
        local.pump()
    local.plane.fleet.launch = real_launch  # type: ignore[method-assign]
    (iid,) = local.running_instances(POOL)
    assert local.plane.ledger.instance(iid) is None  # the crash came before the ledger write

    local.pump()  # SQS redelivers the message
    assert local.running_instances(POOL) == [iid]  # adopted, not launched again
    assert local.plane.ledger.instance(iid) is not None
    assert jit_parameter(local, iid)["type"] == "SecureString"
    assert [r.name for r in local.github.runners.values()] == [name_of(local, iid)]


def test_poison_message_ends_in_the_dead_letter_queue(local: LocalPlane) -> None:
    url = local.settings.pools[POOL].queue_url
    local.sqs.send_message(QueueUrl=url, MessageBody="{not a job")
    for _ in range(4):
        local.pump()
    assert local.dlq_depth(POOL) == 1
    assert local.running_instances(POOL) == []


# ---- the reconciler ---------------------------------------------------------------------


def test_a_dropped_queued_webhook_is_found_by_the_reconciler(local: LocalPlane) -> None:
    local.github.queue_job(T4)  # makes the repository known
    local.pump()
    lost = local.github.queue_job(T4, send=False)
    local.clock.advance(60)
    report = local.plane.reconcile()
    assert report.found_jobs == [lost.id]
    assert len(local.running_instances(POOL)) == 2


@pytest.mark.parametrize("status", [403, 404])
def test_a_repository_the_app_cannot_read_is_counted_and_skipped_not_fatal(local: LocalPlane, status: int) -> None:
    """Deleted, renamed or outside the installation: that repository's calls fail, the rest of
    the reconcile (lost jobs elsewhere, launches) goes on."""
    local.github.queue_job(T4, repo="example-org/app")
    local.github.queue_job(T4, repo="example-org/archived")  # both repositories are known now
    local.pump()
    local.github.fail_next(status, "/repos/example-org/archived/", times=1000)
    lost = local.github.queue_job(T4, repo="example-org/app", send=False)
    local.clock.advance(STALE_JOB_S + 1)
    report = local.plane.reconcile()
    assert report.found_jobs == [lost.id]
    assert set(report.repo_errors) == {"example-org/archived"}
    assert report.summary()["repo_errors"] == 1
    # Planning went on: a 404 means the job is gone (closed), a 403 leaves it queued and counted.
    assert report.orders[POOL].queued == (2 if status == 404 else 3)


def test_every_active_repository_is_scanned_for_lost_jobs_within_a_bounded_number_of_cycles(local: LocalPlane) -> None:
    repos = [f"example-org/repo-{i:02d}" for i in range(25)]
    for repo in repos:
        local.github.queue_job(T4, repo=repo)
    lost = {local.github.queue_job(T4, repo=repo, send=False).id for repo in repos}
    found: set[int] = set()
    for _ in range(-(-len(repos) // MAX_REPO_SCANS)):  # the documented bound: ceil(n / 10) cycles
        local.clock.advance(60)
        found |= set(local.plane.reconcile().found_jobs)
    assert found == lost


def test_jobs_github_will_not_answer_for_do_not_starve_the_other_checks(local: LocalPlane) -> None:
    """More unreadable stale jobs than one cycle's budget: the readable one is still checked."""
    for _ in range(MAX_JOB_CHECKS + 5):
        local.github.queue_job(T4, repo="example-org/private")
    done = local.github.queue_job(T4, repo="example-org/app")
    local.github.finish_job(done.id, send=False)  # its completion webhook is lost
    local.github.fail_next(403, "/repos/example-org/private/", times=10_000)
    local.clock.advance(STALE_JOB_S + 1)
    closed: list[int] = []
    for _ in range(2):
        local.clock.advance(60)
        closed += local.plane.reconcile().closed_jobs
    assert closed == [done.id]


@pytest.mark.parametrize("in_progress_webhook", [True, False], ids=["job-recorded", "job-webhook-lost"])
def test_a_busy_runner_missing_from_one_listing_keeps_its_host(local: LocalPlane, in_progress_webhook: bool) -> None:
    """A paged listing lost the busy runner (ephemeral runners deleted while it paged shift the
    pages). Whether or not the ledger knows the job started, the host and its job live on."""
    job = local.github.queue_job(T4)
    local.pump()
    (iid,) = local.running_instances(POOL)
    name = local.boot(iid)
    local.github.start_job(job.id, name, send=in_progress_webhook)
    real_listing = local.plane.github.list_runners
    local.plane.github.list_runners = lambda: [r for r in real_listing() if r.name != name]  # type: ignore[method-assign]
    for _ in range(3):
        local.clock.advance(13 * 60)  # past the pool's boot time: absence would once have meant "gone"
        assert local.plane.scale_down().retired == []
    assert local.running_instances(POOL) == [iid]
    assert local.github.runner_named(name).busy


def test_hundreds_of_runners_and_deletions_while_the_listing_pages_never_end_a_running_job(local: LocalPlane) -> None:
    """An org with 250 runners of other machines, ephemeral ones finishing while our listing
    pages: each listing shifts by the deleted runners and one page skips ours. The job runs on."""
    for n in range(250):  # ours registers after them: third page, oldest first
        local.github.add_runner(f"lab-{n}", ["self-hosted", "lab"])
    job = local.github.queue_job(T4)
    local.pump()
    (iid,) = local.running_instances(POOL)
    name = local.boot(iid)
    local.github.start_job(job.id, name, send=False)  # its in_progress webhook is lost, too

    def others_finish(page: int) -> None:
        if page == 2:  # 60 runners already listed leave: ours moves back onto the page just served
            for rid in sorted(r.id for r in local.github.runners.values() if r.name.startswith("lab-"))[:60]:
                del local.github.runners[rid]

    local.github.between_runner_pages = others_finish
    listed: list[str] = []
    real_listing = local.plane.github.list_runners

    def recorded() -> list[GithubRunner]:
        found = real_listing()
        listed.extend(r.name for r in found)
        return found

    local.plane.github.list_runners = recorded  # type: ignore[method-assign]
    local.clock.advance(13 * 60)  # past the pool's boot time: absence would once have meant "gone"
    assert local.plane.scale_down().retired == []
    assert listed
    assert name not in listed
    assert local.running_instances(POOL) == [iid]
    assert local.github.runner_named(name).busy


def test_a_dropped_completion_stops_counting_after_a_check(local: LocalPlane) -> None:
    job = local.github.queue_job(T4)
    local.pump()
    (iid,) = local.running_instances(POOL)
    local.github.start_job(job.id, local.boot(iid), send=False)
    local.github.finish_job(job.id, send=False)
    local.power_off(iid)
    local.clock.advance(STALE_JOB_S + 1)
    report = local.plane.reconcile()
    assert report.closed_jobs == [job.id]
    assert local.running_instances(POOL) == []  # nothing relaunched for a finished job


def test_webhook_rejects_forged_deliveries_end_to_end(local: LocalPlane) -> None:
    local.github.webhook_secret = "not the secret"
    local.github.queue_job(T4)
    assert local.github.deliveries[-1][0] == 401
    local.pump()
    assert local.running_instances(POOL) == []


def test_scale_up_report_is_json(local: LocalPlane) -> None:
    local.github.queue_job(T4)
    local.pump()
    assert json.loads(json.dumps(local.plane.reconcile().summary()))["failed_pools"] == {}


# ---- one planner per pool ---------------------------------------------------------------


def second_plane(local: LocalPlane) -> Any:
    """Another invocation of the scaler: same ledger and clients, its own identity."""
    return dataclasses.replace(local.plane, holder="other-invocation")


def message(job_id: int) -> dict[str, str]:
    return {"messageId": f"m-{job_id}", "body": json.dumps({"job_id": job_id, "pool": POOL, "repo": "example-org/app", "labels": T4})}


def test_a_pool_being_planned_elsewhere_is_retried_not_planned_twice(local: LocalPlane) -> None:
    other = second_plane(local)
    assert other.ledger.try_lock(f"plan#{POOL}", other.holder, 90) is not None
    local.plane.sleep = lambda s: None
    assert local.plane.scale_up([message(1)]) == ["m-1"]
    assert local.running_instances(POOL) == []


def test_concurrent_invocations_launch_once_per_job(local: LocalPlane) -> None:
    jobs = [local.github.queue_job(T4, send=False) for _ in range(2)]
    for job in jobs:
        local.handle_http(*signed(local, job))
    planes = [local.plane, second_plane(local)]
    threads = [threading.Thread(target=p.scale_up, args=([message(j.id)],)) for p, j in zip(planes, jobs, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(local.running_instances(POOL)) == 2


def test_a_lagging_index_does_not_hide_a_fresh_launch(local: LocalPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    first = local.github.queue_job(T4, send=False)
    local.handle_http(*signed(local, first))
    local.plane.scale_up([message(first.id)])
    # The next invocation's index read misses the host just launched, as a GSI may for a moment.
    other = second_plane(local)
    monkeypatch.setattr(other.ledger, "live_instances", lambda pool=None: [])
    monkeypatch.setattr(other.fleet, "hosts", lambda pools: [])
    assert other.scale_up([message(first.id)]) == []
    assert len(local.running_instances(POOL)) == 1


def signed(local: LocalPlane, job: Any) -> tuple[dict[str, str], bytes]:
    body = json.dumps(local.github.job_payload(job, "queued")).encode()
    signature = "sha256=" + hmac.new(local.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": "workflow_job", "X-Hub-Signature-256": signature}, body


# ---- estate.reuse_hosts: a spent host takes a waiting job on a fresh one-job runner ------


@pytest.fixture
def reusing(moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instant: datetime) -> Iterator[LocalPlane]:
    """The example estate with POOL capped at one host that may run two jobs in turn."""
    configs = tmp_path / "configs"
    shutil.copytree(EXAMPLE_CONFIGS, configs)
    pool_file = configs / f"{POOL}.yaml"
    text = pool_file.read_text().replace("max_instances: 20", "max_instances: 1")
    pool_file.write_text(text + "  reuse_hosts:\n    max_jobs: 2\n")
    # No next pool for its jobs: with one, a job the cap holds back moves there (core/overflow.py).
    (configs / "gpu-t4-ondemand.yaml").unlink()
    plane = LocalPlane([str(configs)], clock=fixed_clock(monkeypatch, instant), endpoint=moto_url).start()
    plane.serve_webhook()
    yield plane
    plane.stop()


def test_a_spent_host_gets_a_fresh_runner_for_a_waiting_job_up_to_its_limit(reusing: LocalPlane) -> None:
    first = reusing.github.queue_job(T4)
    reusing.pump()
    (iid,) = reusing.running_instances(POOL)
    reusing.github.start_job(first.id, reusing.boot(iid))
    second = reusing.github.queue_job(T4)
    reusing.pump()
    assert reusing.running_instances(POOL) == [iid]  # capped: the second job waits

    reusing.github.finish_job(first.id)  # the completed webhook wakes the pool's scale-up
    reusing.pump()
    assert reusing.running_instances(POOL) == [iid]  # no new host: the spent one is reused
    assert jit_parameter(reusing, iid)["tags"] == {INSTANCE_ARN_TAG: f"arn:aws:ec2:us-east-1:123456789012:instance/{iid}"}
    next_name = reusing.boot(iid)
    assert next_name == runner_name(reusing.settings.pools[POOL].name_prefix, "local", POOL, iid, 1) == name_of(reusing, iid) + "-r1"
    reusing.github.start_job(second.id, next_name)
    assert reusing.plane.ledger.instance(iid).job_id == second.id  # type: ignore[union-attr]

    third = reusing.github.queue_job(T4)
    reusing.github.finish_job(second.id)
    reusing.pump()
    assert jit_parameter(reusing, iid) == {}  # two jobs done: the host powers off, a new one boots
    host = reusing.plane.ledger.instance(iid)
    assert host is not None
    assert (host.jobs_done, host.generation) == (2, 1)
    reusing.power_off(iid)
    reusing.clock.advance(200)
    reusing.plane.reconcile()
    (replacement,) = reusing.running_instances(POOL)
    assert replacement != iid
    assert reusing.github.jobs[third.id].status == "queued"


def test_a_spent_host_with_no_waiting_job_is_not_kept(reusing: LocalPlane) -> None:
    job = reusing.github.queue_job(T4)
    reusing.pump()
    (iid,) = reusing.running_instances(POOL)
    reusing.github.start_job(job.id, reusing.boot(iid))
    reusing.github.finish_job(job.id)
    reusing.pump()
    assert jit_parameter(reusing, iid) == {}


def test_a_reused_runner_is_scaled_down_like_any_idle_runner(reusing: LocalPlane) -> None:
    first, second = reusing.github.queue_job(T4), None
    reusing.pump()
    (iid,) = reusing.running_instances(POOL)
    reusing.github.start_job(first.id, reusing.boot(iid))
    second = reusing.github.queue_job(T4)
    reusing.pump()
    reusing.github.finish_job(first.id)
    reusing.pump()
    reusing.boot(iid)
    reusing.github.finish_job(second.id)  # cancelled while queued: the reused runner stays idle
    reusing.clock.advance(6 * 60)
    assert reusing.plane.scale_down().retired == []  # seen idle once
    reusing.clock.advance(IDLE_CONFIRM_S)
    (retired,) = reusing.plane.scale_down().retired
    assert (retired["instance"], retired["reason"]) == (iid, "idle past 5 min")
    assert reusing.github.runners == {}
