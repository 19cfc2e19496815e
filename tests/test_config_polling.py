"""A host asks for its runner config before the control plane has written it (issue 18.2).

Behind the runner role's tag-scoped policy AWS answers that read `AccessDeniedException`, not
`ParameterNotFound` (tests/iam_ssm.py evaluates the real policy document for each request). The
bootstrap and the slot manager treat both as "not yet" within their wait; any other error still
fails at once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from estate.derive.control_config import jit_parameter_prefix
from estate.derive.iam_policies import jit_parameter_policy
from estate.local.fake_github import jit_config
from lambda_src.aws.jit_parameters import JitParameters
from lambda_src.aws.sigv4_client import AwsError, AwsJsonClient
from lambda_src.host import bootstrap, slot_manager
from tests.iam_eval import Decision
from tests.iam_ssm import ACCOUNT, REGION, IamScopedSsm

PREFIX = jit_parameter_prefix("prod")
HOST, OTHER = "i-0123456789abcdef0", "i-0fedcba9876543210"
RUNNER_ROLE = [jit_parameter_policy(f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{PREFIX}")]  # the role's real document


@pytest.fixture
def iam(moto_url: str) -> Iterator[IamScopedSsm]:
    endpoint = IamScopedSsm(moto_url).start()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def scaler(moto_url: str) -> JitParameters:
    """The control plane's writer, with its own (unscoped) role: straight to SSM."""
    return JitParameters(AwsJsonClient("ssm", REGION, endpoint_url=moto_url), PREFIX, f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/")


class Clock:
    """The host's monotonic clock, moved only by its sleeps."""

    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, list[float]()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def config_for(instance_id: str) -> str:
    return jit_config(7, f"estate-cpu-{instance_id}", 1, "Default", "example-org")


def test_the_double_follows_the_policy_a_host_reads_only_its_own_config(iam: IamScopedSsm, scaler: JitParameters) -> None:
    """The positive control: the same policy lets a host read its own config and refuses it
    another host's, so the denials below are IAM's, not a broken double's."""
    mine = config_for(HOST)
    scaler.put(HOST, mine)
    scaler.put(OTHER, config_for(OTHER))
    host = iam.host_client(HOST, RUNNER_ROLE)
    assert host.call("GetParameter", {"Name": scaler.name(HOST), "WithDecryption": True})["Parameter"]["Value"] == mine
    with pytest.raises(AwsError) as refused:
        host.call("GetParameter", {"Name": scaler.name(OTHER), "WithDecryption": True})
    assert refused.value.code == "AccessDeniedException"


def test_reading_a_config_not_yet_written_is_denied_not_found(iam: IamScopedSsm) -> None:
    host = iam.host_client(HOST, RUNNER_ROLE)
    with pytest.raises(AwsError) as refused:
        host.call("GetParameter", {"Name": f"{PREFIX}{HOST}", "WithDecryption": True})
    assert refused.value.code == "AccessDeniedException"
    assert "is not authorized to perform: ssm:GetParameter" in str(refused.value)


# ---- the one-job bootstrap ------------------------------------------------------------------


def test_a_host_polling_before_its_config_is_written_waits_for_it(iam: IamScopedSsm, scaler: JitParameters) -> None:
    host = iam.host_client(HOST, RUNNER_ROLE)
    written = config_for(HOST)
    sleeps: list[float] = []

    def scaler_writes_while_the_host_sleeps(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            scaler.put(HOST, written)

    got = bootstrap.fetch_runner_config(host, scaler.name(HOST), wait_s=60, sleep=scaler_writes_while_the_host_sleeps)
    assert got == written
    assert iam.denials() == [("GetParameter", scaler.name(HOST))] * 2  # what the host heard while it waited
    assert iam.tags_of(scaler.name(HOST)) is None  # read once, then deleted


def test_a_config_that_never_comes_ends_the_wait_within_its_bound(iam: IamScopedSsm) -> None:
    host, clock = iam.host_client(HOST, RUNNER_ROLE), Clock()
    with pytest.raises(AwsError) as gave_up:
        bootstrap.fetch_runner_config(host, f"{PREFIX}{HOST}", wait_s=20, sleep=clock.sleep, clock=clock)
    assert gave_up.value.code == "AccessDeniedException"
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0]  # it waited, and no longer than its 20 s
    assert len(iam.denials()) == 5


def test_another_hosts_config_is_never_read_however_long_the_wait(iam: IamScopedSsm, scaler: JitParameters) -> None:
    scaler.put(OTHER, config_for(OTHER))
    host, clock = iam.host_client(HOST, RUNNER_ROLE), Clock()
    with pytest.raises(AwsError, match="AccessDenied"):
        bootstrap.fetch_runner_config(host, scaler.name(OTHER), wait_s=5, sleep=clock.sleep, clock=clock)
    assert iam.tags_of(scaler.name(OTHER)) is not None  # still there for its own host
    assert all(d is not Decision.ALLOW for _, _, d in iam.decisions)


def test_any_other_error_while_polling_fails_at_once(iam: IamScopedSsm, moto_url: str) -> None:
    """Credentials AWS does not know (a role session gone stale): not a config still to come."""
    stranger = AwsJsonClient("ssm", REGION, endpoint_url=iam.url)  # signed with the test's env keys, no host session
    sleeps: list[float] = []
    with pytest.raises(AwsError) as refused:
        bootstrap.fetch_runner_config(stranger, f"{PREFIX}{HOST}", wait_s=60, sleep=sleeps.append)
    assert refused.value.code == "UnrecognizedClientException"
    assert sleeps == []


def test_a_reused_host_with_no_next_config_powers_off_instead_of_crashing(iam: IamScopedSsm, scaler: JitParameters) -> None:
    """`estate.reuse_hosts`: after its job the host waits `reuse_wait` for a next config that only
    comes when a job waits. None comes: it stops serving (and powers off), it does not crash."""
    host = iam.host_client(HOST, RUNNER_ROLE)
    first = config_for(HOST)
    scaler.put(HOST, first)
    ran: list[str] = []

    def run(config: str) -> int:
        ran.append(config)
        return 0

    clock = Clock()
    served = bootstrap.serve_jobs(
        fetch=lambda wait_s: bootstrap.fetch_runner_config(host, scaler.name(HOST), wait_s, sleep=clock.sleep, clock=clock),
        run=run,
        tidy=lambda: None,
        first_wait_s=60,
        reuse_wait_s=0.5,
        max_jobs=5,
    )
    assert served == 1
    assert ran == [first]
    assert iam.denials() == [("GetParameter", scaler.name(HOST))]  # the next config, never written


# ---- the capacity-block slot manager -------------------------------------------------------


def test_a_slot_polling_before_its_config_is_written_waits_for_it(iam: IamScopedSsm, scaler: JitParameters) -> None:
    fetch = slot_manager.ssm_config_fetcher(iam.host_client(HOST, RUNNER_ROLE), PREFIX, HOST)
    assert fetch(2) is None  # denied: not written yet
    written = config_for(HOST)
    scaler.put(HOST, written, slot=2)
    assert fetch(2) == written
    assert fetch(2) is None  # read once and deleted
    assert iam.denials() == [("GetParameter", scaler.name(HOST, 2))] * 2


def test_a_slot_fetch_fails_loudly_on_any_other_error(iam: IamScopedSsm) -> None:
    fetch = slot_manager.ssm_config_fetcher(AwsJsonClient("ssm", REGION, endpoint_url=iam.url), PREFIX, HOST)
    with pytest.raises(AwsError, match="UnrecognizedClientException"):
        fetch(0)
