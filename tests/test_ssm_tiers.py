"""Runner configs in SSM meet SSM's real limits (issue 18.1): GitHub's JIT configs are larger
than a Standard parameter holds, so each is written in a tier it fits, and our doubles refuse
what SSM refuses (moto alone stores any size in any tier)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from estate.config.loader import load_estate
from estate.config.prices import PriceTable
from estate.local import moto_fidelity
from estate.local.fake_github import FakeGithub, jit_config, jit_runner
from estate.local.plane import LocalPlane
from estate.sim.parameter_store import runner_config_cost_usd
from estate.sim.simulate import simulate
from estate.sim.workload import TraceJob
from lambda_src.aws.jit_parameters import JitParameters
from lambda_src.aws.sigv4_client import AwsError, AwsJsonClient
from lambda_src.github.client import GithubClient
from tests.conftest import EXAMPLE_CONFIGS, H100_POOL, MINIMAL_POOL, WORKING_HOURS, fixed_clock, write_pool

PREFIX = "/runner-estate/prod/jit/"
ARNS = "arn:aws:ec2:us-east-1:123456789012:instance/"
RUNNER_NAME = "estate-cpu-x64-spot-prod-cpu-x64-spot-i-0123456789abcdef0"


@pytest.fixture
def ssm(moto_url: str) -> AwsJsonClient:
    return AwsJsonClient("ssm", "us-east-1", endpoint_url=moto_url)


def tier_of(ssm: AwsJsonClient, name: str) -> str:
    (found,) = ssm.call("DescribeParameters", {"ParameterFilters": [{"Key": "Name", "Values": [name]}]})["Parameters"]
    return str(found["Tier"])


def real_sized_config() -> str:
    return jit_config(123456, RUNNER_NAME, 3, "gpu-runners", "example-org")


# ---- the fake GitHub's configs are GitHub's size -------------------------------------------


def test_the_fake_githubs_jit_config_is_shaped_and_sized_like_githubs() -> None:
    fake = FakeGithub("example-org", 1234, ["gpu-runners"]).start()
    try:
        client = GithubClient(fake.url, "example-org", 1234, lambda: fake.private_key_pem)
        runner_id, encoded = client.generate_jitconfig(RUNNER_NAME, fake.groups["gpu-runners"], ["self-hosted", "linux", "x64"])
    finally:
        fake.stop()
    assert len(encoded) > moto_fidelity.STANDARD_MAX_CHARS  # the reason for the Advanced tier
    assert len(encoded) < moto_fidelity.ADVANCED_MAX_CHARS
    files = json.loads(base64.b64decode(encoded, validate=True))
    assert sorted(files) == [".credentials", ".credentials_rsaparams", ".runner"]
    runner = json.loads(base64.b64decode(files[".runner"]))
    assert (runner["agentId"], runner["agentName"], runner["poolId"]) == (runner_id, RUNNER_NAME, fake.groups["gpu-runners"])
    assert json.loads(base64.b64decode(files[".credentials"]))["scheme"] == "OAuth"
    rsa = json.loads(base64.b64decode(files[".credentials_rsaparams"]))
    assert len(base64.b64decode(rsa["modulus"])) == 256  # a 2048-bit key
    assert rsa["exponent"] == "AQAB"
    assert jit_runner(encoded) == (runner_id, RUNNER_NAME)


# ---- SSM's tier limits, as the doubles answer them -----------------------------------------


@pytest.mark.parametrize("tier", [None, "Standard"])
def test_ssm_refuses_a_standard_parameter_over_4096_characters(ssm: AwsJsonClient, tier: str | None) -> None:
    request: dict[str, Any] = {"Name": f"{PREFIX}i-0", "Value": "x" * 4097, "Type": "SecureString"}
    if tier:
        request["Tier"] = tier
    with pytest.raises(AwsError) as refused:
        ssm.call("PutParameter", request)
    assert refused.value.code == "ValidationException"
    assert "Standard tier parameters support a maximum parameter value of 4096 characters" in str(refused.value)
    ssm.call("PutParameter", {**request, "Value": "x" * 4096})
    assert tier_of(ssm, f"{PREFIX}i-0") == "Standard"


def test_ssm_refuses_an_advanced_parameter_over_8192_characters(ssm: AwsJsonClient) -> None:
    request = {"Name": f"{PREFIX}i-0", "Value": "x" * 8193, "Type": "SecureString", "Tier": "Advanced"}
    with pytest.raises(AwsError, match="8192") as refused:
        ssm.call("PutParameter", request)
    assert refused.value.code == "ValidationException"
    ssm.call("PutParameter", {**request, "Value": "x" * 8192})
    assert tier_of(ssm, f"{PREFIX}i-0") == "Advanced"


def test_intelligent_tiering_stores_what_fits_as_standard_and_the_rest_as_advanced(ssm: AwsJsonClient) -> None:
    for name, size in (("small", 4096), ("large", 4097)):
        ssm.call("PutParameter", {"Name": f"{PREFIX}{name}", "Value": "x" * size, "Type": "SecureString", "Tier": "Intelligent-Tiering"})
    assert (tier_of(ssm, f"{PREFIX}small"), tier_of(ssm, f"{PREFIX}large")) == ("Standard", "Advanced")
    with pytest.raises(AwsError, match="8192"):
        ssm.call("PutParameter", {"Name": f"{PREFIX}huge", "Value": "x" * 8193, "Type": "SecureString", "Tier": "Intelligent-Tiering"})


def test_kinder_than_ssm_plain_moto_stores_any_size_in_any_tier() -> None:
    """Why the strict layer exists, shown on moto's own backend: without it a Standard value of
    10,000 characters is stored, and Intelligent-Tiering stays the parameter's tier."""
    from moto.ssm.models import ssm_backends

    plain = moto_fidelity.unpatched_put_parameter()
    backend = ssm_backends["123456789012"]["eu-west-3"]
    made = plain(
        backend, "/kind/standard", None, "x" * 10_000, "SecureString", None, None, False, [], "text", tier="Standard", policies=None
    )
    assert made.tier == "Standard"
    made = plain(
        backend,
        "/kind/intelligent",
        None,
        "x" * 5_000,
        "SecureString",
        None,
        None,
        False,
        [],
        "text",
        tier="Intelligent-Tiering",
        policies=None,
    )
    assert made.tier == "Intelligent-Tiering"
    backend.delete_parameters(["/kind/standard", "/kind/intelligent"])


def test_kinder_than_ssm_no_parameter_quota_and_no_throttling(ssm: AwsJsonClient) -> None:
    """Not modelled, and said so here: SSM's 10,000 Standard parameters per account and region
    (Intelligent-Tiering would go Advanced past it) and its default 40 GetParameter calls a
    second (a throttled poll is answered ThrottlingException, which our client retries)."""
    for n in range(50):
        ssm.call("PutParameter", {"Name": f"{PREFIX}n{n}", "Value": "x", "Type": "SecureString"})
    assert all(ssm.call("GetParameter", {"Name": f"{PREFIX}n{n}"}) for n in range(50))


# ---- our writes fit ------------------------------------------------------------------------


def test_a_real_sized_runner_config_is_written_in_the_advanced_tier(ssm: AwsJsonClient) -> None:
    jit = JitParameters(ssm, PREFIX, ARNS)
    config = real_sized_config()
    assert jit.put("i-0123456789abcdef0", config) is True
    assert tier_of(ssm, jit.name("i-0123456789abcdef0")) == "Advanced"
    read = ssm.call("GetParameter", {"Name": jit.name("i-0123456789abcdef0"), "WithDecryption": True})["Parameter"]["Value"]
    assert read == config


def test_a_runner_config_that_fits_a_standard_parameter_costs_nothing(ssm: AwsJsonClient) -> None:
    """Intelligent-Tiering: Standard (free) while it fits, Advanced past 4,096 characters or past
    the account's 10,000 Standard parameters."""
    jit = JitParameters(ssm, PREFIX, ARNS)
    jit.put("i-0123456789abcdef0", "c" * 200, slot=1)
    assert tier_of(ssm, jit.name("i-0123456789abcdef0", 1)) == "Standard"


def test_a_config_no_tier_holds_is_refused_by_ssm_not_stored_cut(ssm: AwsJsonClient) -> None:
    jit = JitParameters(ssm, PREFIX, ARNS)
    with pytest.raises(AwsError) as refused:
        jit.put("i-0123456789abcdef0", "c" * 8193)
    assert refused.value.code == "ValidationException"


@pytest.fixture
def local(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    plane = LocalPlane([str(EXAMPLE_CONFIGS)], clock=fixed_clock(monkeypatch, WORKING_HOURS), endpoint=moto_url).start()
    plane.serve_webhook()
    yield plane
    plane.stop()


def test_every_launch_stores_its_real_sized_config_and_its_host_reads_it(local: LocalPlane) -> None:
    """The whole path with GitHub-sized configs: before the tier was set, SSM refused every
    write after the instance existed, and no host ever got a runner."""
    job = local.github.queue_job(["self-hosted", "linux", "x64", "gpu", "t4"])
    local.pump()
    (iid,) = local.running_instances("gpu-t4-spot")
    name = local.settings.jit_parameter_prefix + iid
    assert tier_of(local.ssm, name) == "Advanced"
    runner = local.boot(iid)
    local.github.start_job(job.id, runner)
    assert local.github.runner_named(runner).busy


# ---- what it costs -------------------------------------------------------------------------


def test_simulate_pays_parameter_store_for_every_runner_config(tmp_path: Path) -> None:
    """Each launch writes one Advanced parameter: one billed hour and three API calls."""
    estate = load_estate([write_pool(tmp_path, "cpu", MINIMAL_POOL)])
    trace = [TraceJob(f"j{i}", 60.0 * i, ("self-hosted", "linux", "x64", "cpu"), 600.0) for i in range(3)]
    report, sims = simulate(estate, trace, ["estate"], PriceTable())
    sim, got = sims["estate"], report["policies"]["estate"]
    assert got["runner_configs"] == len(sim.hosts) == 3
    assert got["ssm_cost_usd"] == pytest.approx(3 * (0.05 / 730 + 3 * 0.05 / 10_000), abs=1e-4)
    instances = sum(((h.ended_at or sim.end) - h.launched_at) / 3600 * h.price_per_hour for h in sim.hosts)
    builds = sum(got["image_builds_usd"].values())  # the estate's baked images (issue 20.1)
    assert got["cost_usd"] == pytest.approx(instances + runner_config_cost_usd(3) + builds, abs=0.011)


def test_a_capacity_block_slot_writes_a_config_for_each_runner(tmp_path: Path) -> None:
    estate = load_estate([write_pool(tmp_path, "h100", H100_POOL)])
    job = ("self-hosted", "linux", "x64", "gpu", "h100", "1gpu")
    _, sims = simulate(estate, [TraceJob("a", 600.0, job, 600.0), TraceJob("b", 1800.0, job, 600.0)], ["estate"], PriceTable())
    sim = sims["estate"]
    slots = sum(len(h.slots) for h in sim.hosts)
    assert sim.runner_configs == slots + 2  # one per slot at launch, one refill after each job
