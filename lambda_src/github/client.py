"""The one small GitHub client: App JWT -> installation token (cached), JIT runner configs,
runner list/delete, job lookups. Stdlib HTTP; PyJWT is imported only when a token is minted.

Retries: 5xx and network errors back off exponentially; rate limits (429, or 403 with no
requests left) wait for `Retry-After` / `x-ratelimit-reset` when that fits the budget. Every
request is counted, so tests and benchmarks can pin the calls made per job.

Several Apps (`more_apps`, issue 21.4): one App's rate limit and runner-registration budget cap a
large organisation, so calls go round the Apps in turn, each with its own installation token. An
App that answers with a rate limit is set aside until its reset and the call is made again with
the next App at once; only when every App is limited does a call wait (or fail) as with one.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lambda_src.core.fleet_state import GithubRunner

log = logging.getLogger("runner_estate.github")

API_VERSION = "2022-11-28"  # pinned: job GETs name their labels `labels` in this version
TOKEN_REFRESH_MARGIN_S = 300  # a cached installation token is replaced 5 min before it expires
JWT_BACKDATE_S = 60  # GitHub's advice against clock drift
JWT_LIFETIME_S = 540  # under GitHub's 10 minute ceiling


class GithubError(Exception):
    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        super().__init__(f"GitHub {method} {path} answered {status}: {message}")
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.status >= 500 or self.status in {0, 429}


class RateLimitedError(GithubError):
    """The wait GitHub asks for is longer than this invocation may spend (or another App may
    take the call instead); `reset_at` is when this App may be asked again."""

    def __init__(self, status: int, method: str, path: str, message: str, reset_at: float = 0.0) -> None:
        super().__init__(status, method, path, message)
        self.reset_at = reset_at


@dataclass
class GithubApp:
    """A further App the client spreads calls over: its id, its key (read lazily) and, when
    known, its installation on the org (else looked up once)."""

    app_id: int
    private_key: Callable[[], str]
    installation_id: int | None = None


@dataclass
class _Token:
    value: str
    expires_at: float


@dataclass
class GithubClient:
    api_url: str
    org: str
    app_id: int
    private_key: Callable[[], str]  # read lazily (SSM), only when a token must be minted
    installation_id: int | None = None
    # Scope of minted installation tokens (None: the App's whole grant). `estate agent` asks
    # for runner administration only.
    token_permissions: dict[str, str] | None = None
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    attempts: int = 4
    max_wait_s: float = 20.0
    timeout_s: float = 10.0
    calls: int = 0
    more_apps: list[GithubApp] = field(default_factory=list)  # further Apps, installed on the same org
    # GitHub's x-ratelimit-remaining on the last answer that carried it: the headroom the
    # functions report as a metric (None until GitHub has said).
    rate_remaining: int | None = None
    _token: _Token | None = field(default=None, repr=False)  # this client's own App's token
    _groups: dict[str, int] = field(default_factory=dict, repr=False)
    _tokens: dict[int, _Token] = field(default_factory=dict, repr=False)  # further Apps' tokens, by index
    _limited_until: dict[int, float] = field(default_factory=dict, repr=False)  # App index -> its rate limit's reset
    _turn: int = field(default=0, repr=False)
    calls_by_app: dict[int, int] = field(default_factory=dict, repr=False)  # App id -> requests made with its token

    # ---- authentication ---------------------------------------------------------------
    @property
    def app_ids(self) -> list[int]:
        return [self.app_id, *(a.app_id for a in self.more_apps)]

    def _credentials(self, index: int) -> tuple[int, Callable[[], str], int | None]:
        if index == 0:
            return self.app_id, self.private_key, self.installation_id
        app = self.more_apps[index - 1]
        return app.app_id, app.private_key, app.installation_id

    def _installed(self, index: int, installation_id: int) -> None:
        if index == 0:
            self.installation_id = installation_id
        else:
            self.more_apps[index - 1].installation_id = installation_id

    def app_jwt(self, index: int = 0) -> str:
        import jwt  # deferred: only a token mint pays for PyJWT and cryptography

        app_id, key, _ = self._credentials(index)
        now = int(self.clock())
        claims = {"iat": now - JWT_BACKDATE_S, "exp": now + JWT_LIFETIME_S, "iss": str(app_id)}
        return jwt.encode(claims, key(), algorithm="RS256")

    def token_with_expiry(self) -> tuple[str, float]:
        """The installation token (of this client's own App) and when it expires (epoch seconds)."""
        value = self.token()
        assert self._token is not None
        return value, self._token.expires_at

    def token(self, index: int = 0) -> str:
        cached = self._token if index == 0 else self._tokens.get(index)
        if cached is not None and self.clock() < cached.expires_at - TOKEN_REFRESH_MARGIN_S:
            return cached.value
        bearer = self.app_jwt(index)
        _, _, installation = self._credentials(index)
        if installation is None:
            found = self._send("GET", f"/orgs/{self.org}/installation", None, bearer)
            installation = int(found["id"])
            self._installed(index, installation)
        body = {"permissions": self.token_permissions} if self.token_permissions else {}
        minted = self._send("POST", f"/app/installations/{installation}/access_tokens", body, bearer)
        expires = datetime.fromisoformat(str(minted["expires_at"]).replace("Z", "+00:00")).timestamp()
        token = _Token(str(minted["token"]), expires)
        if index == 0:
            self._token = token
        else:
            self._tokens[index] = token
        return token.value

    def app_installations(self) -> dict[int, dict[str, Any] | None]:
        """Each App's installation on the org as GitHub describes it (`permissions`, `events`,
        `repository_selection`), None where the App is not installed: what
        core/github_apps.installation_findings checks (`estate doctor` reuses it)."""
        found: dict[int, dict[str, Any] | None] = {}
        for index, app_id in enumerate(self.app_ids):
            try:
                found[app_id] = self._send("GET", f"/orgs/{self.org}/installation", None, self.app_jwt(index))
            except GithubError as exc:
                if exc.status != 404:
                    raise
                found[app_id] = None
        return found

    # ---- runners ----------------------------------------------------------------------
    def runner_group_id(self, name: str) -> int:
        if name not in self._groups:
            for page in self._pages(f"/orgs/{self.org}/actions/runner-groups", "runner_groups"):
                for group in page:
                    self._groups[str(group["name"])] = int(group["id"])
        if name not in self._groups:
            raise GithubError(404, "GET", f"/orgs/{self.org}/actions/runner-groups", f"no runner group named {name!r}")
        return self._groups[name]

    def generate_jitconfig(self, name: str, runner_group_id: int, labels: list[str]) -> tuple[int, str]:
        """A one-job runner registration: (runner id, encoded config for `run.sh --jitconfig`)."""
        body = {"name": name, "runner_group_id": runner_group_id, "labels": labels, "work_folder": "_work"}
        made = self.call("POST", f"/orgs/{self.org}/actions/runners/generate-jitconfig", body)
        return int(made["runner"]["id"]), str(made["encoded_jit_config"])

    def fresh_jitconfig(self, name: str, group: str, labels: list[str]) -> tuple[int, str]:
        """A one-job registration under `name` (runner id, encoded config), replacing one a
        crashed run left behind (409)."""
        group_id = self.runner_group_id(group)
        try:
            return self.generate_jitconfig(name, group_id, labels)
        except GithubError as exc:
            if exc.status != 409:
                raise
        existing = self.find_runner(name)
        if existing is not None:
            self.delete_runner(existing.id)
        return self.generate_jitconfig(name, group_id, labels)

    def list_runners(self) -> list[GithubRunner]:
        """Every runner of the org, all pages; one listing serves every pool in a cycle."""
        found = []
        for page in self._pages(f"/orgs/{self.org}/actions/runners", "runners"):
            found += [GithubRunner(int(r["id"]), str(r["name"]), r["status"] == "online", bool(r["busy"])) for r in page]
        return found

    def runner(self, runner_id: int) -> GithubRunner | None:
        """One runner by id, None when GitHub no longer has it (404). A paged listing can miss
        a runner that exists (runners deleted while it pages shift the rest); this cannot."""
        try:
            r = self.call("GET", f"/orgs/{self.org}/actions/runners/{runner_id}")
        except GithubError as exc:
            if exc.status == 404:
                return None
            raise
        return GithubRunner(int(r["id"]), str(r["name"]), r["status"] == "online", bool(r["busy"]))

    def find_runner(self, name: str) -> GithubRunner | None:
        query = urllib.parse.urlencode({"name": name})
        page = self.call("GET", f"/orgs/{self.org}/actions/runners?{query}")
        for r in page.get("runners", []):
            if r["name"] == name:
                return GithubRunner(int(r["id"]), str(r["name"]), r["status"] == "online", bool(r["busy"]))
        return None

    def delete_runner(self, runner_id: int) -> bool:
        """False when GitHub refuses because the runner is running a job (422)."""
        try:
            self.call("DELETE", f"/orgs/{self.org}/actions/runners/{runner_id}")
        except GithubError as exc:
            if exc.status == 422:
                return False
            if exc.status != 404:  # already gone is what we wanted
                raise
        return True

    # ---- jobs -------------------------------------------------------------------------
    def job(self, repo: str, job_id: int) -> dict[str, Any] | None:
        try:
            return self.call("GET", f"/repos/{repo}/actions/jobs/{job_id}")
        except GithubError as exc:
            if exc.status == 404:
                return None
            raise

    def rerun_job(self, repo: str, job_id: int) -> None:
        """Re-run one job of a completed run (GitHub queues it as the run's next attempt)."""
        self.call("POST", f"/repos/{repo}/actions/jobs/{job_id}/rerun", {})

    def workflow_run(self, repo: str, run_id: int) -> dict[str, Any] | None:
        """A workflow run (its `path`, `head_branch`, `referenced_workflows`); None once gone."""
        try:
            return self.call("GET", f"/repos/{repo}/actions/runs/{run_id}")
        except GithubError as exc:
            if exc.status == 404:
                return None
            raise

    def queued_jobs(self, repo: str, max_runs: int = 20) -> list[dict[str, Any]]:
        """Jobs GitHub still has queued in a repository, newest runs first."""
        jobs, _ = self.queued_jobs_if_changed(repo, None, max_runs)
        return jobs or []

    def queued_jobs_if_changed(self, repo: str, etag: str | None, max_runs: int = 20) -> tuple[list[dict[str, Any]] | None, str | None]:
        """Like queued_jobs, with the run list fetched conditionally: (None, etag) when it has
        not changed since `etag` (a 304 costs no rate limit)."""
        found, etag = self.get_if_changed(f"/repos/{repo}/actions/runs?status=queued&per_page={max_runs}", etag)
        if found is None:
            return None, etag
        runs = found.get("workflow_runs", [])
        jobs: list[dict[str, Any]] = []
        for run in runs[:max_runs]:
            listed = self.call("GET", f"/repos/{repo}/actions/runs/{run['id']}/jobs?filter=latest&per_page=100")
            jobs += [j for j in listed.get("jobs", []) if j.get("status") == "queued"]
        return jobs, etag

    # ---- preflight (`estate doctor`) --------------------------------------------------
    def installation(self) -> dict[str, Any]:
        """The App's installation on the org as the App sees it (JWT, no token): its id,
        `permissions`, `repository_selection` and `suspended_at`."""
        return self._send("GET", f"/orgs/{self.org}/installation", None, self.app_jwt())

    def listing(self, path: str, max_pages: int = 10) -> Iterator[Any]:
        """A GET listing page by page (each page's JSON as GitHub sends it, an object or an
        array), following GitHub's `Link: <URL>; rel="next"` whether it pages by number or by
        cursor; at most `max_pages` pages. A next link to another host is not followed: the
        token goes nowhere but the API."""
        next_path: str | None = path
        for _ in range(max_pages):
            if next_path is None:
                return
            found, headers = self._request("GET", next_path, None, {})
            yield found
            next_path = _next_link(headers.get("Link"), self.api_url)

    # ---- the org webhook: its deliveries and redelivery ----------------------------------
    def org_hooks(self) -> list[dict[str, Any]]:
        """The org's webhooks (their `id` and `config.url`), every page."""
        return [hook for page in self._linked_pages(f"/orgs/{self.org}/hooks?per_page=100", 10) for hook in page]

    def hook_deliveries(self, hook_id: int, since: float, max_pages: int) -> list[dict[str, Any]]:
        """The hook's deliveries, newest first as GitHub lists them, back to `since` (epoch
        seconds) or `max_pages` pages of 100, whichever comes first."""
        found: list[dict[str, Any]] = []
        for page in self._linked_pages(f"/orgs/{self.org}/hooks/{hook_id}/deliveries?per_page=100", max_pages):
            found += page
            if page and _delivered_before(page[-1], since):
                break
        return found

    def redeliver(self, hook_id: int, delivery_id: int) -> None:
        """Ask GitHub to send one delivery again (it answers 202 and sends it shortly)."""
        self.call("POST", f"/orgs/{self.org}/hooks/{hook_id}/deliveries/{delivery_id}/attempts")

    # ---- transport --------------------------------------------------------------------
    def _linked_pages(self, path: str, max_pages: int) -> Iterator[list[dict[str, Any]]]:
        """`listing` of a JSON array: each page's objects; it stops at an empty page."""
        for found in self.listing(path, max_pages):
            items = [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []
            yield items
            if not items:
                return

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        found, _ = self._request(method, path, body, {})
        assert isinstance(found, dict)
        return found

    def _request(self, method: str, path: str, body: dict[str, Any] | None, extra: dict[str, str]) -> tuple[Any, Any]:
        """One request with an installation token, the Apps taking turns; a rate-limited App
        is set aside until its reset and the next one takes the request at once."""
        count = len(self.more_apps) + 1
        for _ in range(count):
            index = self._next_app()
            others = any(self._limited_until.get(i, 0.0) <= self.clock() for i in range(count) if i != index)
            app_id = self.app_ids[index]
            self.calls_by_app[app_id] = self.calls_by_app.get(app_id, 0) + 1
            try:
                return self._exchange(method, path, body, self.token(index), extra, may_wait=not others)
            except RateLimitedError as exc:
                if not others:
                    raise
                self._limited_until[index] = exc.reset_at
                log.warning("GitHub App %s is rate limited until %s; its calls go to the other Apps", app_id, int(exc.reset_at))
        raise AssertionError("unreachable: the last App left waits or raises")

    def _next_app(self) -> int:
        """The next App in turn that is not rate limited (else the one free soonest)."""
        count = len(self.more_apps) + 1
        now = self.clock()
        for step in range(count):
            index = (self._turn + step) % count
            if self._limited_until.get(index, 0.0) <= now:
                self._turn = index + 1
                return index
        return min(range(count), key=lambda i: self._limited_until.get(i, 0.0))

    def _pages(self, path: str, key: str) -> Iterator[list[dict[str, Any]]]:
        page = 1
        while True:
            sep = "&" if "?" in path else "?"
            data = self.call("GET", f"{path}{sep}per_page=100&page={page}")
            items = list(data.get(key, []))
            yield items
            if len(items) < 100 or page * 100 >= int(data.get("total_count", 0)):
                return
            page += 1

    def get_if_changed(self, path: str, etag: str | None) -> tuple[dict[str, Any] | None, str | None]:
        """A conditional GET: (None, etag) when nothing changed since `etag` (a 304 does not
        count against the rate limit), else (body, new etag)."""
        headers = {"If-None-Match": etag} if etag else {}
        found, answer_headers = self._request("GET", path, None, headers)
        return (found if found is None or isinstance(found, dict) else {}), answer_headers.get("ETag") or etag

    def _send(self, method: str, path: str, body: dict[str, Any] | None, bearer: str) -> dict[str, Any]:
        found, _ = self._exchange(method, path, body, bearer, {})
        assert isinstance(found, dict)
        return found

    def _exchange(
        self, method: str, path: str, body: dict[str, Any] | None, bearer: str, extra: dict[str, str], may_wait: bool = True
    ) -> tuple[Any, Any]:
        payload = None if body is None else json.dumps(body).encode()
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {bearer}",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "runner-estate",
        }
        if payload is not None:
            headers["Content-Type"] = "application/json"
        headers.update(extra)
        delay = 0.5
        for attempt in range(1, self.attempts + 1):
            self.calls += 1
            request = urllib.request.Request(self.api_url.rstrip("/") + path, data=payload, headers=headers, method=method)  # noqa: S310 - api_url is validated config (https, or loopback in tests)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:  # noqa: S310
                    self._note_rate(answer.headers)
                    raw = answer.read()
                    return (json.loads(raw) if raw else {}), answer.headers
            except urllib.error.HTTPError as exc:
                self._note_rate(exc.headers)
                if exc.code == 304:
                    return None, exc.headers
                text = exc.read().decode(errors="replace")[:200]
                wait = _rate_limit_wait(exc.code, exc.headers, self.clock())
                if wait is not None:
                    error: GithubError = RateLimitedError(exc.code, method, path.split("?")[0], _message(text), self.clock() + wait)
                    if not may_wait:
                        raise error from None  # another App takes the call now
                else:
                    error = GithubError(exc.code, method, path.split("?")[0], _message(text))
                    if exc.code < 500:
                        raise error from None
                wait = delay if wait is None else wait
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                error = GithubError(0, method, path.split("?")[0], f"unreachable: {exc}")
                wait = delay
            if attempt == self.attempts or wait > self.max_wait_s:
                raise error
            self.sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")

    def _note_rate(self, headers: Any) -> None:
        remaining = headers.get("x-ratelimit-remaining") if headers is not None else None
        if remaining is not None and str(remaining).isdigit():
            self.rate_remaining = int(remaining)


def _rate_limit_wait(status: int, headers: Any, now: float) -> float | None:
    """Seconds GitHub asks us to wait, or None when the answer is not a rate limit."""
    if status not in {403, 429}:
        return None
    retry_after = headers.get("Retry-After")
    if retry_after is not None and str(retry_after).isdigit():
        return float(retry_after)
    if status == 429 or headers.get("x-ratelimit-remaining") == "0":
        reset = headers.get("x-ratelimit-reset")
        return max(1.0, float(reset) - now) if reset and str(reset).isdigit() else 60.0
    return None


def _next_link(header: str | None, api_url: str) -> str | None:
    """The path (and query) of a `Link` header's rel="next" page, when it is on the API's host."""
    base = api_url.rstrip("/")
    for part in (header or "").split(","):
        url, _, params = part.strip().partition(";")
        if 'rel="next"' in params and url.startswith("<") and url.endswith(">"):
            target = url[1:-1]
            return target[len(base) :] if target.startswith(base + "/") else None
    return None


def _delivered_before(item: dict[str, Any], since: float) -> bool:
    try:
        return datetime.fromisoformat(str(item["delivered_at"]).replace("Z", "+00:00")).timestamp() < since
    except (KeyError, ValueError):
        return False


def _message(text: str) -> str:
    try:
        return str(json.loads(text).get("message", text))
    except (ValueError, AttributeError):
        return text
