"""The GitHub App client against our loopback fake: auth, caching, retries, rate limits."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest

from estate.local.fake_github import FakeGithub
from lambda_src.github.client import GithubClient, GithubError, RateLimitedError


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
    yield server
    server.stop()


def client(fake: FakeGithub, clock: Clock, sleeps: list[float] | None = None, installation: int | None = None) -> GithubClient:
    record = sleeps if sleeps is not None else []
    return GithubClient(fake.url, "acme", 77, lambda: fake.private_key_pem, installation, clock=clock, sleep=record.append)


def test_app_jwt_is_rs256_backdated_and_short_lived(fake: FakeGithub, clock: Clock) -> None:
    token = client(fake, clock).app_jwt()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert claims["iat"] == clock.now - 60
    assert claims["exp"] - clock.now <= 600
    assert claims["iss"] == "77"


def test_installation_is_found_then_the_token_is_cached(fake: FakeGithub, clock: Clock) -> None:
    c = client(fake, clock)
    c.generate_jitconfig("r1", 1, ["self-hosted"])
    c.generate_jitconfig("r2", 1, ["self-hosted"])
    assert fake.calls_to("/orgs/acme/installation") == 1
    assert fake.calls_to("/access_tokens") == 1
    assert fake.calls_to("generate-jitconfig") == 2


def test_token_is_renewed_five_minutes_before_it_expires(fake: FakeGithub, clock: Clock) -> None:
    c = client(fake, clock, installation=4242)
    c.token()
    assert c._token is not None
    clock.now = c._token.expires_at - 301
    c.token()
    assert fake.calls_to("/access_tokens") == 1
    clock.now = c._token.expires_at - 299
    c.token()
    assert fake.calls_to("/access_tokens") == 2


def test_jit_config_needs_an_existing_runner_group(fake: FakeGithub, clock: Clock) -> None:
    c = client(fake, clock)
    assert c.runner_group_id("gpu") == 2
    with pytest.raises(GithubError, match="no runner group named 'cpu'"):
        c.runner_group_id("cpu")


def test_5xx_is_retried_with_backoff(fake: FakeGithub, clock: Clock) -> None:
    sleeps: list[float] = []
    c = client(fake, clock, sleeps, installation=4242)
    c.token()
    fake.fail_next(502, "generate-jitconfig", times=2)
    _, config = c.generate_jitconfig("r1", 1, ["self-hosted"])
    assert config
    assert sleeps == [0.5, 1.0]


def test_persistent_5xx_gives_up_with_a_retryable_error(fake: FakeGithub, clock: Clock) -> None:
    c = client(fake, clock, installation=4242)
    c.token()
    fake.fail_next(503, "generate-jitconfig", times=10)
    with pytest.raises(GithubError) as caught:
        c.generate_jitconfig("r1", 1, [])
    assert caught.value.retryable
    assert fake.calls_to("generate-jitconfig") == c.attempts


def test_rate_limit_waits_for_retry_after(fake: FakeGithub, clock: Clock) -> None:
    sleeps: list[float] = []
    c = client(fake, clock, sleeps, installation=4242)
    c.token()
    fake.fail_next(429, "actions/runners", headers={"Retry-After": "7"})
    c.list_runners()
    assert sleeps == [7.0]


def test_rate_limit_reset_too_far_away_is_not_slept_through(fake: FakeGithub, clock: Clock) -> None:
    sleeps: list[float] = []
    c = client(fake, clock, sleeps, installation=4242)
    c.token()
    reset = str(int(clock.now) + 1800)
    fake.fail_next(403, "actions/runners", headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset})
    with pytest.raises(RateLimitedError):
        c.list_runners()
    assert sleeps == []


def test_4xx_is_not_retried(fake: FakeGithub, clock: Clock) -> None:
    c = client(fake, clock, installation=4242)
    c.token()
    fake.fail_next(401, "actions/runners")
    with pytest.raises(GithubError) as caught:
        c.list_runners()
    assert (caught.value.status, caught.value.retryable) == (401, False)
    assert fake.calls_to("actions/runners") == 1


def test_runner_listing_follows_every_page(fake: FakeGithub, clock: Clock) -> None:
    c = client(fake, clock, installation=4242)
    for i in range(230):
        c.generate_jitconfig(f"r{i}", 1, [])
    assert len(c.list_runners()) == 230
    assert fake.calls_to("actions/runners?per_page=100") == 3


def test_deleting_a_busy_runner_reports_false(fake: FakeGithub, clock: Clock) -> None:
    c = client(fake, clock, installation=4242)
    runner_id, _ = c.generate_jitconfig("r1", 1, [])
    fake.runners[runner_id].busy = True
    assert c.delete_runner(runner_id) is False
    fake.runners[runner_id].busy = False
    assert c.delete_runner(runner_id) is True
    assert c.delete_runner(runner_id) is True  # already gone is fine


def test_a_bad_app_key_is_refused_by_github(fake: FakeGithub, clock: Clock) -> None:
    other = FakeGithub("acme", 77)
    c = GithubClient(fake.url, "acme", 77, lambda: other.private_key_pem, clock=clock, sleep=lambda s: None)
    with pytest.raises(GithubError) as caught:
        c.token()
    assert caught.value.status == 401


def test_runner_listings_page_as_github_pages_them(fake: FakeGithub, clock: Clock) -> None:
    """At most 100 a page, whatever is asked, and a Link header to the next and last pages."""
    c = client(fake, clock, installation=4242)
    for i in range(230):
        fake.add_runner(f"r{i}")
    page = c.call("GET", "/orgs/acme/actions/runners?per_page=500&page=2")
    assert [r["name"] for r in page["runners"]] == [f"r{i}" for i in range(100, 200)]
    _, headers = c._exchange("GET", "/orgs/acme/actions/runners?per_page=100&page=2", None, c.token(), {})
    assert 'page=3>; rel="next"' in headers["Link"]
    assert 'page=3>; rel="last"' in headers["Link"]
    assert 'page=1>; rel="prev"' in headers["Link"]


def test_a_runner_deleted_while_a_listing_pages_makes_one_fall_between_pages(fake: FakeGithub, clock: Clock) -> None:
    """Why absence from a listing proves nothing, and what does: a GET of that runner."""
    c = client(fake, clock, installation=4242)
    ids = [fake.add_runner(f"r{i}").id for i in range(150)]

    def finished_elsewhere(page: int) -> None:
        if page == 1:
            del fake.runners[ids[0]]  # r100 moves onto page 1, already read

    fake.between_runner_pages = finished_elsewhere
    names = {r.name for r in c.list_runners()}
    assert "r100" not in names
    assert len(names) == 149
    found = c.runner(ids[100])
    assert found is not None
    assert found.name == "r100"
    assert c.runner(ids[0]) is None  # 404: gone
