"""Several GitHub Apps (issue 21.4): calls spread over them, a rate-limited App passed over
until its reset, each App's installation checked to grant the same; on loopback, the scaler
keeps launching while one App's budget is spent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from estate.config.diagnostics import ConfigError
from estate.config.stack_config import parse_stack_config
from estate.local.fake_github import APP_PERMISSIONS, FakeGithub
from estate.local.plane import LocalPlane
from estate.preview import read_stack_file, validate_stack_config
from lambda_src.core.github_apps import installation_findings
from lambda_src.github.client import GithubApp, GithubClient, RateLimitedError
from tests.conftest import INSTANTS, PROJECT_DIR, served_example_plane

T4 = ["self-hosted", "linux", "x64", "gpu", "t4"]
POOL = "gpu-t4-spot"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeGithub]:
    server = FakeGithub("acme", 77, ["gpu"], clock=clock).start()
    server.add_app(78)
    server.add_app(79)
    yield server
    server.stop()


def three_apps(fake: FakeGithub, clock: Clock, sleeps: list[float]) -> GithubClient:
    more = [GithubApp(app_id, lambda app_id=app_id: fake.apps[app_id].private_key_pem) for app_id in (78, 79)]  # type: ignore[misc]
    return GithubClient(fake.url, "acme", 77, lambda: fake.private_key_pem, clock=clock, sleep=sleeps.append, more_apps=more)


# ---- spreading and failing over ----------------------------------------------------------


def test_calls_go_round_the_apps_each_with_its_own_installation_token(fake: FakeGithub, clock: Clock) -> None:
    github = three_apps(fake, clock, [])
    for n in range(9):
        github.generate_jitconfig(f"r{n}", 1, ["self-hosted"])
    assert fake.calls_by_app == {77: 3, 78: 3, 79: 3}
    assert fake.calls_to("/access_tokens") == 3  # one token per App, then cached


def test_a_rate_limited_app_is_passed_over_until_its_reset_without_waiting(fake: FakeGithub, clock: Clock) -> None:
    sleeps: list[float] = []
    github = three_apps(fake, clock, sleeps)
    github.list_runners()  # every App has its token now
    github.list_runners()
    github.list_runners()
    fake.rate_limit(78, reset_in_s=600)
    before = dict(fake.calls_by_app)
    for n in range(6):
        github.generate_jitconfig(f"r{n}", 1, ["self-hosted"])
    assert sleeps == []  # no wait: another App took each call at once
    assert len(fake.runners) == 6
    assert fake.calls_by_app[78] - before[78] == 1  # the one call that found it limited
    assert fake.calls_by_app[77] - before[77] + fake.calls_by_app[79] - before[79] == 6

    fake.faults.clear()  # its budget is back at the reset
    clock.now += 601
    for n in range(6, 9):
        github.generate_jitconfig(f"r{n}", 1, ["self-hosted"])
    assert fake.calls_by_app[78] - before[78] == 2


def test_when_every_app_is_limited_the_call_waits_or_fails_as_with_one(fake: FakeGithub, clock: Clock) -> None:
    sleeps: list[float] = []
    github = three_apps(fake, clock, sleeps)
    for app_id in (77, 78, 79):
        fake.rate_limit(app_id, reset_in_s=3600)
    with pytest.raises(RateLimitedError):
        github.list_runners()
    assert sleeps == []  # an hour is longer than an invocation may wait


def test_one_app_alone_behaves_as_before(fake: FakeGithub, clock: Clock) -> None:
    sleeps: list[float] = []
    github = GithubClient(fake.url, "acme", 77, lambda: fake.private_key_pem, clock=clock, sleep=sleeps.append)
    github.list_runners()
    fake.rate_limit(77, times=1, reset_in_s=5)
    github.list_runners()
    assert sleeps == [5.0]  # waits for the reset, as one App always did


# ---- the same permissions -------------------------------------------------------------------


def installation(permissions: dict[str, str] | None = None, selection: str = "all") -> dict[str, Any]:
    return {"permissions": dict(APP_PERMISSIONS if permissions is None else permissions), "repository_selection": selection}


def test_apps_installed_alike_are_ok() -> None:
    assert installation_findings({1: installation(), 2: installation()}) == [("ok", "2 Apps installed with the same permissions")]


def test_a_missing_app_a_weaker_grant_or_other_repositories_fail() -> None:
    weaker = {**APP_PERMISSIONS, "organization_self_hosted_runners": "read"}
    findings = installation_findings({1: installation(), 2: None, 3: installation(weaker), 4: installation(selection="selected")})
    failures = [detail for level, detail in findings if level == "fail"]
    assert any("App 2 is not installed" in f for f in failures)
    assert any("App 3 has organization_self_hosted_runners: read" in f for f in failures)
    assert any("App 3 is not installed with App 1's permissions" in f for f in failures)
    assert any("App 4 sees selected repositories" in f for f in failures)


def test_without_webhook_permission_the_app_fails_the_check() -> None:
    # `pulumi up` manages the org webhook with the App, and redelivery reads its deliveries.
    no_hooks = {k: v for k, v in APP_PERMISSIONS.items() if k != "organization_hooks"}
    ((level, detail),) = installation_findings({1: installation(no_hooks)})
    assert level == "fail"
    assert "organization_hooks: none" in detail


def test_with_actions_read_only_interrupted_jobs_are_not_re_run_and_said() -> None:
    ((level, detail),) = installation_findings({1: installation({**APP_PERMISSIONS, "actions": "read"})})
    assert level == "warn"
    assert "not re-run" in detail


def test_the_client_reads_each_apps_installation_for_the_check(fake: FakeGithub, clock: Clock) -> None:
    fake.apps[79].permissions["actions"] = "none"
    fake.add_app(80).installed = False
    more = [GithubApp(a, lambda a=a: fake.apps[a].private_key_pem) for a in (78, 79, 80)]  # type: ignore[misc]
    github = GithubClient(fake.url, "acme", 77, lambda: fake.private_key_pem, clock=clock, more_apps=more)
    found = github.app_installations()
    assert sorted(found) == [77, 78, 79, 80]
    assert found[80] is None
    failures = [d for level, d in installation_findings(found) if level == "fail"]
    assert any(d.startswith("App 79 has actions: none") for d in failures)
    assert any(d.startswith("App 80 is not installed") for d in failures)
    assert not any("App 78" in d for d in failures)


# ---- the stack ---------------------------------------------------------------------------------


def test_extra_apps_are_distinct_and_each_key_is_a_secret_of_its_own(tmp_path: Path) -> None:
    raw = {
        "environment": "prod",
        "region": "us-east-1",
        "github": {"org": "acme", "app_id": 1, "extra_apps": [{"app_id": 1}]},
        "secrets": {"github_app_private_key": "/k", "webhook_secret": "/h"},
    }
    with pytest.raises(ConfigError, match="each App is given once"):
        parse_stack_config(raw, "Pulumi.x.yaml")
    text = (PROJECT_DIR / "Pulumi.prod.yaml").read_text()
    missing = tmp_path / "Pulumi.prod.yaml"
    missing.write_text(text.replace("runner-estate:github_app_key_2345678:", "elsewhere:github_app_key_2345678:"))
    config, secret_keys = read_stack_file(missing)
    with pytest.raises(ConfigError, match="github_app_key_2345678: required secret is missing"):
        validate_stack_config(config, missing, secret_keys)


# ---- on loopback ----------------------------------------------------------------------------


@pytest.fixture(params=sorted(INSTANTS))
def local(request: pytest.FixtureRequest, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    with served_example_plane(moto_url, monkeypatch, INSTANTS[request.param], extra_apps=2) as plane:
        yield plane


def test_jobs_keep_launching_while_one_apps_budget_is_spent(local: LocalPlane) -> None:
    local.github.queue_job(T4)
    local.pump()  # every App's token minted as the calls go round
    local.github.rate_limit(1235, reset_in_s=3600)
    for _ in range(6):
        local.github.queue_job(T4)
    local.pump()
    assert len(local.running_instances(POOL)) == 7
    assert local.dlq_depth(POOL) == 0
    used = {app for app, count in local.github.calls_by_app.items() if count}
    assert used == {1234, 1235, 1236}
