"""A fake GitHub on loopback, for `estate serve` and the end-to-end tests.

It speaks the REST endpoints the control plane uses, checks what real GitHub checks (the App
JWT's RS256 signature and lifetime, installation tokens, runner groups, 422 on deleting a busy
runner), plays the runner side (`connect`, `start_job`, `finish_job`), sends signed
`workflow_job` webhooks, and injects faults (`fail_next`). Its JIT configs are shaped and sized
like GitHub's (`jit_config`), not toy tokens, so what stores them meets the real limits. For
`estate doctor` it also answers what a preflight reads: the App installation with its
permissions, org webhooks and their recent deliveries, runner groups with their repositories,
and repositories. Listings page as GitHub's do
(`per_page` at most 100, `page`, a `Link` header), and `between_runner_pages` lets a test
change the runners while a listing pages, as ephemeral runners come and go on a busy org.
Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

INSTALLATION_ID = 4242
HOOK_ID = 5150001  # the org webhook `register_webhook` creates
DELIVERIES_KEPT_S = 3 * 24 * 3600  # GitHub keeps a hook's deliveries (and redelivers them) for 3 days


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def jit_config(runner_id: int, runner_name: str, group_id: int, group_name: str, org: str) -> str:
    """An `encoded_jit_config` as GitHub's generate-jitconfig answers one: base64 of a JSON
    object mapping the runner's three settings files to their base64 contents (`run.sh
    --jitconfig` writes them out): `.runner` (its id, name, group and service URLs), `.credentials`
    (OAuth client id and token URL) and `.credentials_rsaparams` (the runner's 2048-bit RSA
    private key as .NET's RSAParameters). The values are random, the shape and size are GitHub's:
    a little over 4 KB for our runner names, more than SSM's Standard tier holds (upstream
    terraform-aws-github-runner moved to the Advanced tier when GitHub's configs outgrew it,
    PR #4613). The docs' example response shows only `"abc123"`."""

    def file(settings: dict[str, Any]) -> str:
        return _b64(json.dumps(settings, indent=2).encode())  # the runner's settings files are indented JSON

    def key_part(size: int) -> str:
        return _b64(secrets.token_bytes(size))

    runner = {
        "agentId": runner_id,
        "agentName": runner_name,
        "poolId": group_id,
        "poolName": group_name,
        "serverUrl": f"https://pipelinesghubeus{runner_id % 30 + 1}.actions.githubusercontent.com/{secrets.token_urlsafe(40)[:54]}/",
        "gitHubUrl": f"https://github.com/{org}",
        "workFolder": "_work",
        "ephemeral": True,
        "useV2Flow": True,
        "serverUrlV2": "https://broker.actions.githubusercontent.com/",
    }
    client_id = str(uuid.uuid4())
    credentials = {
        "scheme": "OAuth",
        "data": {
            "clientId": client_id,
            "authorizationUrl": f"https://vstoken.actions.githubusercontent.com/_apis/oauth2/token/{uuid.uuid4()}",
            "requireFipsCryptography": "True",
        },
    }
    rsa_parameters = {  # a 2048-bit key: 256-byte modulus and private exponent, 128-byte CRT parts
        "d": key_part(256),
        "dp": key_part(128),
        "dq": key_part(128),
        "exponent": "AQAB",
        "inverseQ": key_part(128),
        "modulus": key_part(256),
        "p": key_part(128),
        "q": key_part(128),
    }
    files = {".runner": file(runner), ".credentials": file(credentials), ".credentials_rsaparams": file(rsa_parameters)}
    return _b64(json.dumps(files).encode())


def jit_runner(encoded: str) -> tuple[int, str]:
    """The runner id and name inside an encoded JIT config (what `run.sh` registers as)."""
    files = json.loads(base64.b64decode(encoded))
    runner = json.loads(base64.b64decode(files[".runner"]))
    return int(runner["agentId"]), str(runner["agentName"])


@dataclass
class FakeRunner:
    id: int
    name: str
    labels: list[str]
    group_id: int
    status: str = "offline"
    busy: bool = False

    def to_json(self) -> dict[str, Any]:
        labels = [{"id": i, "name": name, "type": "custom"} for i, name in enumerate(self.labels, 1)]
        return {
            "id": self.id,
            "name": self.name,
            "os": "linux",
            "status": self.status,
            "busy": self.busy,
            "ephemeral": True,
            "labels": labels,
        }


@dataclass
class FakeJob:
    id: int
    repo: str
    run_id: int
    labels: list[str]
    status: str = "queued"
    runner_name: str | None = None
    workflow: str = ".github/workflows/ci.yml"  # the run's own file, run from `main`
    calls: tuple[str, ...] = ()  # reusable workflows the run calls, as OWNER/REPO/PATH@REF
    run_attempt: int = 1
    conclusion: str | None = None  # set when it completes (success unless told otherwise)
    # GitHub's times of the job (on the fake's clock): queued, taken by a runner, ended.
    created_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "run_attempt": self.run_attempt,
            "status": self.status,
            "conclusion": (self.conclusion or "success") if self.status == "completed" else None,
            "labels": self.labels,
            "runner_name": self.runner_name,
            "name": f"job-{self.id}",
            "workflow_name": "CI",
            # As GitHub: a queued job's started_at repeats its creation time.
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.created_at if self.started_at is None else self.started_at),
            "completed_at": None if self.completed_at is None else _iso(self.completed_at),
        }


@dataclass
class HookDelivery:
    """One attempt of one delivery of the org webhook, as GitHub records it."""

    id: int
    guid: str
    delivered_at: float
    status_code: int  # 0: no answer (connection refused, timeout)
    event: str
    action: str | None
    redelivery: bool
    body: bytes  # what was sent, sent again on redelivery

    def to_json(self) -> dict[str, Any]:
        if 200 <= self.status_code < 300:
            status = "OK"
        elif self.status_code == 0:
            status = "failed to connect"
        else:
            status = f"Invalid HTTP Response: {self.status_code}"
        return {
            "id": self.id,
            "guid": self.guid,
            "delivered_at": _iso(self.delivered_at),
            "redelivery": self.redelivery,
            "duration": 0.05,
            "status": status,
            "status_code": self.status_code,
            "event": self.event,
            "action": self.action,
            "installation_id": None,
            "repository_id": None,
            "throttled_at": None,
        }


@dataclass
class FakeHook:
    """An organization webhook, with its delivery log (every attempt)."""

    id: int
    url: str
    events: list[str]
    active: bool = True
    content_type: str = "json"
    deliveries: list[HookDelivery] = field(default_factory=list)  # oldest first

    def to_json(self, api: str, org: str) -> dict[str, Any]:
        base = f"{api}/orgs/{org}/hooks/{self.id}"
        return {
            "type": "Organization",
            "id": self.id,
            "name": "web",
            "active": self.active,
            "events": list(self.events),
            "config": {"url": self.url, "content_type": self.content_type, "insecure_ssl": "0", "secret": "********"},
            "url": base,
            "ping_url": f"{base}/pings",
            "deliveries_url": f"{base}/deliveries",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }


@dataclass
class Fault:
    status: int
    path_contains: str
    remaining: int
    headers: dict[str, str] = field(default_factory=dict)
    app_id: int | None = None  # only calls made with this App's installation token


# What our App is granted on the org (docs/deploy.md, step 1), as an installation lists it.
APP_PERMISSIONS = {"organization_self_hosted_runners": "write", "organization_hooks": "write", "actions": "write", "metadata": "read"}


@dataclass
class FakeApp:
    """A GitHub App and its installation on the org."""

    app_id: int
    private_key_pem: str
    public_key: Any
    installation_id: int
    permissions: dict[str, str]
    repository_selection: str = "all"
    installed: bool = True
    suspended_at: str | None = None

    @classmethod
    def make(cls, app_id: int, installation_id: int, permissions: dict[str, str] | None = None) -> FakeApp:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
        return cls(app_id, pem.decode(), key.public_key(), installation_id, dict(APP_PERMISSIONS if permissions is None else permissions))


class FakeGithub:
    def __init__(
        self, org: str = "example-org", app_id: int = 1234, groups: list[str] | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.org = org
        self.clock = clock
        self.app_id = app_id
        # Our App first; `add_app` installs more (issue 21.4). Each has its own key and installation.
        self.apps: dict[int, FakeApp] = {app_id: FakeApp.make(app_id, INSTALLATION_ID)}
        self.private_key_pem = self.apps[app_id].private_key_pem
        self.token_apps: dict[str, int] = {}  # installation token -> the App it was minted for
        self.calls_by_app: dict[int, int] = {}  # App id -> requests made with its installation tokens
        self._caller: int | None = None  # the App of the request being answered
        self.groups = {name: i for i, name in enumerate(dict.fromkeys(["Default", *(groups or [])]), 1)}
        self.runners: dict[int, FakeRunner] = {}
        self.jobs: dict[int, FakeJob] = {}
        self.tokens: set[str] = set()
        self.token_expiry: dict[str, float] = {}
        self.calls: list[tuple[str, str]] = []
        self.faults: list[Fault] = []
        self.webhook_url: str | None = None
        self.webhook_secret = ""
        self.deliveries: list[tuple[int, dict[str, Any]]] = []
        self.token_requests: list[dict[str, Any]] = []  # bodies of installation-token requests
        # Redeliveries asked for but not yet sent (each hook keeps its own delivery log).
        self._pending_redeliveries: list[HookDelivery] = []
        self._pending_jobs: list[FakeJob] = []  # re-run jobs whose `queued` webhook is still to go out
        self.reruns: list[int] = []  # job ids GitHub was asked to re-run
        self.webhook_down = False  # deliveries fail to connect, as during an outage of our endpoint
        self.not_modified = 0
        # What `estate doctor` reads: the installation (the Apps'), org hooks, group settings, repositories.
        self.hooks: dict[int, FakeHook] = {}
        self.repositories: dict[str, dict[str, Any]] = {}  # lower-case full name -> GitHub's repository object
        self.group_settings: dict[int, dict[str, Any]] = {}  # group id -> visibility, repository names, allows_public_repositories
        # Called (lock held) after each page of a runner listing is served, with that page's
        # number: a test deletes or adds runners here to play churn during paging.
        self.between_runner_pages: Callable[[int], None] | None = None
        self._response_headers: dict[str, str] = {}  # extra headers of the answer being built
        self._ids = itertools.count(100)
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # ---- lifecycle --------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeGithub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---- our (first) App's installation, as `estate doctor` tests change it ----------------
    @property
    def installed(self) -> bool:
        return self.apps[self.app_id].installed

    @installed.setter
    def installed(self, value: bool) -> None:
        self.apps[self.app_id].installed = value

    @property
    def installation_permissions(self) -> dict[str, str]:
        return self.apps[self.app_id].permissions

    @installation_permissions.setter
    def installation_permissions(self, value: dict[str, str]) -> None:
        self.apps[self.app_id].permissions = value

    @property
    def suspended_at(self) -> str | None:
        return self.apps[self.app_id].suspended_at

    @suspended_at.setter
    def suspended_at(self, value: str | None) -> None:
        self.apps[self.app_id].suspended_at = value

    def register_webhook(self, url: str, secret: str) -> FakeHook:
        """Where deliveries go, as `pulumi up` registers the org webhook: the hook HOOK_ID."""
        with self._lock:
            self.webhook_url, self.webhook_secret = url, secret
            hook = self.hooks.get(HOOK_ID)
            if hook is None:
                hook = self.hooks[HOOK_ID] = FakeHook(HOOK_ID, url, ["workflow_job"])
            hook.url = url
            return hook

    @property
    def hook_deliveries(self) -> list[HookDelivery]:
        """Every attempt to deliver to our webhook, oldest first."""
        return [d for h in self.hooks.values() if h.url == self.webhook_url for d in h.deliveries]

    def add_app(self, app_id: int, permissions: dict[str, str] | None = None) -> FakeApp:
        """Another App, installed on the org (with our App's permissions unless given)."""
        with self._lock:
            app = FakeApp.make(app_id, INSTALLATION_ID + len(self.apps), permissions)
            self.apps[app_id] = app
            return app

    # ---- fault injection --------------------------------------------------------------
    def fail_next(
        self, status: int, path_contains: str = "", times: int = 1, headers: dict[str, str] | None = None, app_id: int | None = None
    ) -> None:
        """The next `times` requests whose path contains `path_contains` (made with `app_id`'s
        token, when given) are answered `status` with `headers`."""
        with self._lock:
            self.faults.append(Fault(status, path_contains, times, headers or {}, app_id))

    def rate_limit(self, app_id: int, times: int = 1_000_000, reset_in_s: float = 3600) -> None:
        """The App's primary rate limit is spent: 403 with no requests left until the reset."""
        reset = str(int(self.clock() + reset_in_s))
        self.fail_next(403, "", times, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}, app_id=app_id)

    def calls_to(self, fragment: str) -> int:
        return sum(1 for _, path in self.calls if fragment in path)

    # ---- the runner and workflow side -------------------------------------------------
    def queue_job(
        self,
        labels: list[str],
        repo: str = "example-org/app",
        send: bool = True,
        workflow: str = ".github/workflows/ci.yml",
        run_id: int | None = None,
    ) -> FakeJob:
        """A job of a new run (or of run `run_id`), queued."""
        with self._lock:
            job = FakeJob(next(self._ids), repo, run_id or next(self._ids), labels, workflow=workflow, created_at=self.clock())
            self.jobs[job.id] = job
        if send:
            self.send_job_event(job, "queued")
        return job

    def connect(self, runner_name: str) -> FakeRunner:
        with self._lock:
            runner = self.runner_named(runner_name)
            runner.status = "online"
            return runner

    def start_job(self, job_id: int, runner_name: str, send: bool = True) -> None:
        with self._lock:
            runner, job = self.runner_named(runner_name), self.jobs[job_id]
            runner.busy, job.status, job.runner_name, job.started_at = True, "in_progress", runner_name, self.clock()
        if send:
            self.send_job_event(job, "in_progress")

    def finish_job(self, job_id: int, send: bool = True, conclusion: str = "success") -> None:
        """The job ends; its ephemeral runner deregisters itself."""
        with self._lock:
            job = self.jobs[job_id]
            job.status, job.conclusion, job.completed_at = "completed", conclusion, self.clock()
            self.runners = {i: r for i, r in self.runners.items() if r.name != job.runner_name}
        if send:
            self.send_job_event(job, "completed")

    def lose_runner(self, job_id: int, send: bool = True) -> None:
        """The host running the job went away (a spot interruption): GitHub loses the runner and
        fails the job; the runner stays registered, offline, until someone deletes it."""
        with self._lock:
            job = self.jobs[job_id]
            runner = self.runner_named(str(job.runner_name))
            runner.status, runner.busy = "offline", False
            job.status, job.conclusion = "completed", "failure"
            job.completed_at = self.clock()
        if send:
            self.send_job_event(job, "completed")

    def runner_named(self, name: str) -> FakeRunner:
        return next(r for r in self.runners.values() if r.name == name)

    def add_runner(self, name: str, labels: list[str] | None = None, busy: bool = False, group: str = "Default") -> FakeRunner:
        """A runner someone else registered (another host, another tool), online."""
        with self._lock:
            runner = FakeRunner(next(self._ids), name, list(labels or []), self.groups[group], "online", busy)
            self.runners[runner.id] = runner
            return runner

    # ---- org settings a preflight reads ----------------------------------------------------
    def add_repository(self, name: str, private: bool = True) -> dict[str, Any]:
        with self._lock:
            rid = next(self._ids)
            repo: dict[str, Any] = {
                "id": rid,
                "node_id": f"R_{rid}",
                "name": name,
                "full_name": f"{self.org}/{name}",
                "owner": {"login": self.org, "type": "Organization"},
                "private": private,
                "visibility": "private" if private else "public",
                "archived": False,
            }
            self.repositories[repo["full_name"].lower()] = repo
            return repo

    def add_group(
        self, name: str, repositories: list[str] | None = None, visibility: str = "selected", allows_public_repositories: bool = False
    ) -> int:
        """A runner group as an org owner (or an earlier deploy) made it: `repositories` by name."""
        with self._lock:
            gid = self.groups.setdefault(name, max(self.groups.values()) + 1)
            self.group_settings[gid] = {
                "visibility": visibility,
                "repositories": list(repositories or []),
                "allows_public_repositories": allows_public_repositories,
            }
            return gid

    def add_hook(self, url: str, events: list[str] | None = None, active: bool = True) -> FakeHook:
        with self._lock:
            hook = FakeHook(next(self._ids), url, list(events or ["workflow_job"]), active)
            self.hooks[hook.id] = hook
            return hook

    def record_delivery(
        self, hook: FakeHook, status_code: int, at: float, event: str = "workflow_job", action: str | None = "queued"
    ) -> None:
        """One delivery in the hook's log at `at`, as GitHub records it (status text and code)."""
        with self._lock:
            did = next(self._ids)
            body = json.dumps({"action": action}).encode()
            hook.deliveries.append(HookDelivery(did, f"0b989ba4-242f-11e5-81e1-{did:012x}", at, status_code, event, action, False, body))

    # ---- webhooks ---------------------------------------------------------------------
    def job_payload(self, job: FakeJob, action: str) -> dict[str, Any]:
        return {
            "action": action,
            "workflow_job": {**job.to_json(), "status": action if action != "completed" else "completed"},
            "repository": {"full_name": job.repo, "owner": {"login": self.org}},
            "organization": {"login": self.org},
            "installation": {"id": INSTALLATION_ID},
        }

    def send_job_event(self, job: FakeJob, action: str) -> int:
        return self.deliver("workflow_job", self.job_payload(job, action))

    def deliver(self, event: str, payload: dict[str, Any], body: bytes | None = None) -> int:
        """POST a signed delivery to the registered webhook URL, as GitHub does; the status.
        Each attempt goes into the hook's delivery log (`hook_deliveries`)."""
        if self.webhook_url is None:
            return 0
        raw = body if body is not None else json.dumps(payload).encode()
        action = payload.get("action") if isinstance(payload.get("action"), str) else None
        status = self._post(event, raw, str(uuid.uuid4()), action, redelivery=False)
        self.deliveries.append((status, payload))
        return status

    def _post(self, event: str, raw: bytes, guid: str, action: str | None, redelivery: bool) -> int:
        assert self.webhook_url is not None
        signature = "sha256=" + hmac.new(self.webhook_secret.encode(), raw, hashlib.sha256).hexdigest()
        request = urllib.request.Request(  # noqa: S310 - loopback only
            self.webhook_url,
            data=raw,
            method="POST",
            headers={"X-GitHub-Event": event, "X-Hub-Signature-256": signature, "X-GitHub-Delivery": guid},
        )
        if self.webhook_down:
            status = 0
        else:
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                    status = int(answer.status)
            except urllib.error.HTTPError as exc:
                status = exc.code
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                status = 0
        with self._lock:
            for hook in self.hooks.values():
                if hook.url == self.webhook_url:
                    hook.deliveries.append(HookDelivery(next(self._ids), guid, self.clock(), status, event, action, redelivery, raw))
        return status

    def send_pending(self) -> int:
        """Send what GitHub sends within moments of a request: redeliveries asked for, and the
        `queued` webhooks of re-run jobs; how many."""
        with self._lock:
            pending, self._pending_redeliveries = self._pending_redeliveries, []
            queued, self._pending_jobs = self._pending_jobs, []
        for original in pending:
            self._post(original.event, original.body, original.guid, original.action, redelivery=True)
        for job in queued:
            self.send_job_event(job, "queued")
        return len(pending) + len(queued)

    # ---- HTTP -------------------------------------------------------------------------
    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self.calls.append((method, path))
            auth = headers.get("authorization", "")
            self._caller = self.token_apps.get(auth.removeprefix("Bearer ").strip())
            if self._caller is not None:
                self.calls_by_app[self._caller] = self.calls_by_app.get(self._caller, 0) + 1
            for fault in self.faults:
                if fault.remaining > 0 and fault.path_contains in path and fault.app_id in (None, self._caller):
                    fault.remaining -= 1
                    return fault.status, {"message": "injected fault"}, fault.headers
            url = urlparse(path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            self._response_headers = {}
            for pattern, route_method, needs, action in _ROUTES:
                found = re.fullmatch(pattern.replace("{org}", re.escape(self.org)), url.path)
                if found and method == route_method:
                    problem = self._check_auth(auth, needs)
                    if problem:
                        return 401, {"message": problem}, {}
                    data = json.loads(body) if body else {}
                    status, payload = action(self, found, query, data)
                    extra = self._response_headers
                    if method == "GET" and status == 200:
                        # Conditional requests, as GitHub answers them: 304 when nothing changed.
                        etag = '"' + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32] + '"'
                        if headers.get("if-none-match") == etag:
                            self.not_modified += 1
                            return 304, {}, {"ETag": etag}
                        return status, payload, {**extra, "ETag": etag}
                    return status, payload, extra
            return 404, {"message": f"fake GitHub has no {method} {url.path}"}, {}

    def _check_auth(self, auth: str, needs: str) -> str | None:
        token = auth.removeprefix("Bearer ").strip()
        if needs == "jwt":
            try:
                issuer = str(jwt.decode(token, options={"verify_signature": False}).get("iss", ""))
                app = self.apps.get(int(issuer)) if issuer.isdigit() else None
                if app is None:
                    return "JWT of an unknown App"
                # Signature checked here; times against our own (possibly virtual) clock below.
                claims = jwt.decode(
                    token,
                    app.public_key,
                    algorithms=["RS256"],
                    options={"require": ["iat", "exp", "iss"], "verify_exp": False, "verify_iat": False},
                )
            except jwt.PyJWTError as exc:
                return f"bad JWT: {exc}"
            self._caller = app.app_id
            now = self.clock()
            if claims["exp"] - claims["iat"] > 600:
                return "JWT lifetime over 10 minutes"
            if not claims["iat"] <= now + 60 < claims["exp"] + 60:
                return "JWT not valid at this time"
            return None
        if needs == "none":
            return None
        if token not in self.tokens:
            return "bad credentials"
        expires = self.token_expiry.get(token)
        if expires is not None:
            if self.clock() >= expires:
                return "token expired"
            # GitHub tells a token's real expiry on every answer it authenticates.
            self._response_headers["GitHub-Authentication-Token-Expiration"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires))
        return None

    # ---- endpoints --------------------------------------------------------------------
    def _installation(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The calling App's installation on the org, as GitHub describes it; 404 where the App
        is not installed."""
        app = self.apps[self._caller or self.app_id]
        if not app.installed:
            return 404, {"message": "Not Found"}
        return 200, {
            "id": app.installation_id,
            "account": {"login": self.org, "type": "Organization"},
            "app_id": app.app_id,
            "app_slug": f"runner-estate-{app.app_id}",
            "target_id": 1,
            "target_type": "Organization",
            "repository_selection": app.repository_selection,
            "permissions": dict(app.permissions),
            "events": ["workflow_job"],
            "suspended_at": app.suspended_at,
            "single_file_name": None,
            "access_tokens_url": f"{self.url}/app/installations/{app.installation_id}/access_tokens",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }

    def _token(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        app = self.apps[self._caller or self.app_id]
        if int(m.group(1)) != app.installation_id or not app.installed:
            return 404, {"message": "no such installation"}
        self.token_requests.append(d)
        token = f"ghs_fake{next(self._ids)}"
        self.tokens.add(token)
        self.token_apps[token] = app.app_id
        # Installation tokens live one hour, on this fake's (possibly virtual) clock.
        expires = datetime.fromtimestamp(self.clock() + 3600, UTC).isoformat().replace("+00:00", "Z")
        self.token_expiry[token] = self.clock() + 3600
        return 201, {"token": token, "expires_at": expires}

    def _groups(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        groups = []
        for name, gid in self.groups.items():
            settings = self.group_settings.get(gid, {})
            visibility = settings.get("visibility", "all")
            group = {
                "id": gid,
                "name": name,
                "visibility": visibility,
                "default": name == "Default",
                "runners_url": f"{self.url}/orgs/{self.org}/actions/runner-groups/{gid}/runners",
                "inherited": False,
                "allows_public_repositories": settings.get("allows_public_repositories", False),
                "restricted_to_workflows": False,
                "selected_workflows": [],
                "workflow_restrictions_read_only": False,
            }
            if visibility == "selected":
                group["selected_repositories_url"] = f"{self.url}/orgs/{self.org}/actions/runner-groups/{gid}/repositories"
            groups.append(group)
        return 200, {"total_count": len(groups), "runner_groups": groups}

    def _group_repositories(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        gid = int(m.group(1))
        if gid not in self.groups.values():
            return 404, {"message": "Not Found"}
        names = self.group_settings.get(gid, {}).get("repositories", [])
        repos = [self.repositories[f"{self.org}/{n}".lower()] for n in names if f"{self.org}/{n}".lower() in self.repositories]
        return 200, {"total_count": len(repos), "repositories": repos}

    def _repository(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        repo = self.repositories.get(m.group(1).lower())
        return (200, repo) if repo is not None else (404, {"message": "Not Found"})

    def _jit(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if d.get("runner_group_id") not in self.groups.values():
            return 422, {"message": "runner_group_id is required and must exist"}
        if any(r.name == d.get("name") for r in self.runners.values()):
            return 409, {"message": "Already exists - A runner with the same name already exists"}
        runner = FakeRunner(next(self._ids), str(d["name"]), list(d.get("labels", [])), int(d["runner_group_id"]))
        self.runners[runner.id] = runner
        group = next(name for name, i in self.groups.items() if i == runner.group_id)
        encoded = jit_config(runner.id, runner.name, runner.group_id, group, self.org)
        return 201, {"runner": runner.to_json(), "encoded_jit_config": encoded}

    def _list_runners(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One page, as GitHub pages: oldest first, `per_page` capped at 100, a `Link` header
        to the next and last pages. Each page is cut from the runners as they are now, so a
        runner deleted before a later page shifts the rest (one may fall between pages)."""
        runners = sorted(self.runners.values(), key=lambda r: r.id)
        if "name" in q:
            runners = [r for r in runners if r.name == q["name"]]
        per_page, page = max(1, min(100, int(q.get("per_page", 30)))), max(1, int(q.get("page", 1)))
        chunk = runners[(page - 1) * per_page : page * per_page]
        last = max(1, -(-len(runners) // per_page))
        links = {"prev": page - 1, "next": page + 1, "first": 1, "last": last}
        shown = {rel: n for rel, n in links.items() if (rel in {"prev", "first"} and page > 1) or (rel in {"next", "last"} and page < last)}
        if shown:
            base = {k: v for k, v in q.items() if k not in {"page", "per_page"}}
            path = m.group(0)
            self._response_headers["Link"] = ", ".join(
                f'<{self.url}{path}?{urlencode({**base, "per_page": per_page, "page": n})}>; rel="{rel}"' for rel, n in shown.items()
            )
        if self.between_runner_pages is not None and "name" not in q:
            self.between_runner_pages(page)
        return 200, {"total_count": len(runners), "runners": [r.to_json() for r in chunk]}

    def _get_runner(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        runner = self.runners.get(int(m.group(1)))
        return (200, runner.to_json()) if runner is not None else (404, {"message": "Not Found"})

    def _delete_runner(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        runner = self.runners.get(int(m.group(1)))
        if runner is None:
            return 404, {"message": "Not Found"}
        if runner.busy:
            return 422, {"message": "Bad request - Runner is currently running a job"}
        del self.runners[runner.id]
        return 204, {}

    def _runner_online(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        runner = self.runners.get(int(m.group(1)))
        if runner is None:
            return 404, {"message": "runner deregistered"}
        runner.status = "online"
        return 200, {}

    def _runner_assignment(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The runner's long poll: a queued job whose labels it carries, or nothing yet; 404
        once the runner was deregistered (the real runner then exits)."""
        runner = self.runners.get(int(m.group(1)))
        if runner is None:
            return 404, {"message": "runner deregistered"}
        runner.status = "online"
        if runner.busy:
            job = next(j for j in self.jobs.values() if j.runner_name == runner.name and j.status == "in_progress")
            return 200, {"job": job.id, "labels": job.labels}
        have = {label.lower() for label in runner.labels}
        for job in sorted(self.jobs.values(), key=lambda j: j.id):
            if job.status == "queued" and {label.lower() for label in job.labels} <= have:
                runner.busy, job.status, job.runner_name = True, "in_progress", runner.name
                return 200, {"job": job.id, "labels": job.labels}
        return 200, {"job": None}

    def _runner_done(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The job ended; the ephemeral runner is removed."""
        runner = self.runners.pop(int(m.group(1)), None)
        if runner is not None:
            for job in self.jobs.values():
                if job.runner_name == runner.name and job.status == "in_progress":
                    job.status = "completed"
        return 200, {}

    def _job(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        job = self.jobs.get(int(m.group(2)))
        return (200, job.to_json()) if job and job.repo == m.group(1) else (404, {"message": "Not Found"})

    def _rerun_job(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Re-run one job: it comes back queued as the run's next attempt (a new job id). The
        App needs Actions write; GitHub re-runs jobs of a run that has completed."""
        job = self.jobs.get(int(m.group(2)))
        if job is None or job.repo != m.group(1):
            return 404, {"message": "Not Found"}
        if self.apps[self._caller or self.app_id].permissions.get("actions") != "write":
            return 403, {"message": "Resource not accessible by integration"}
        if any(j.run_id == job.run_id and j.status != "completed" for j in self.jobs.values()):
            return 403, {"message": "Unable to re-run this job: its workflow run is still in progress"}
        again = FakeJob(
            next(self._ids), job.repo, job.run_id, list(job.labels), workflow=job.workflow, calls=job.calls, created_at=self.clock()
        )
        again.run_attempt = max(j.run_attempt for j in self.jobs.values() if j.run_id == job.run_id) + 1
        self.jobs[again.id] = again
        self.reruns.append(job.id)
        self._pending_jobs.append(again)
        return 201, {}

    def _run(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A workflow run as the REST API describes it: its file, branch and the reusable
        workflows it calls."""
        job = next((j for j in self.jobs.values() if j.repo == m.group(1) and j.run_id == int(m.group(2))), None)
        if job is None:
            return 404, {"message": "Not Found"}
        called = [{"path": c, "sha": "0" * 40, "ref": c.rpartition("@")[2]} for c in job.calls]
        return 200, {"id": job.run_id, "path": job.workflow, "head_branch": "main", "head_sha": "f" * 40, "referenced_workflows": called}

    def _runs(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        runs = sorted({j.run_id for j in self.jobs.values() if j.repo == m.group(1) and j.status == q.get("status", j.status)})
        return 200, {"total_count": len(runs), "workflow_runs": [{"id": r} for r in runs]}

    # ---- the org webhook (read by the redelivery function) --------------------------------
    def _hooks(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, Any]:
        """The org's hooks, as GitHub lists them: a JSON array; the secret is never shown."""
        return 200, [h.to_json(self.url, self.org) for h in sorted(self.hooks.values(), key=lambda h: h.id)]

    def _kept_deliveries(self, hook_id: int) -> list[HookDelivery] | None:
        """The hook's deliveries GitHub still keeps, newest first; None where there is no such hook."""
        hook = self.hooks.get(hook_id)
        if hook is None:
            return None
        kept = [h for h in hook.deliveries if self.clock() - h.delivered_at <= DELIVERIES_KEPT_S]
        return sorted(kept, key=lambda h: (h.delivered_at, h.id), reverse=True)

    def _list_deliveries(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, Any]:
        """Newest first, paged by an opaque `cursor` (a `Link` header names the next page),
        `per_page` at most 100; a cursor GitHub did not hand out is a 400."""
        kept = self._kept_deliveries(int(m.group(1)))
        if kept is None:
            return 404, {"message": "Not Found"}
        per_page = max(1, min(100, int(q.get("per_page", 30))))
        start = 0
        if "cursor" in q:
            found = re.fullmatch(r"v1_(\d+)", q["cursor"])
            ids = [h.id for h in kept]
            if found is None or int(found.group(1)) not in ids:
                return 400, {"message": "Invalid cursor"}
            start = ids.index(int(found.group(1)))
        chunk = kept[start : start + per_page]
        if start + per_page < len(kept):
            following = urlencode({"per_page": per_page, "cursor": f"v1_{kept[start + per_page].id}"})
            self._response_headers["Link"] = f'<{self.url}{m.group(0)}?{following}>; rel="next"'
        return 200, [h.to_json() for h in chunk]

    def _redeliver(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """202, and the delivery is sent again shortly (`send_pending`)."""
        found = next((h for h in self._kept_deliveries(int(m.group(1))) or [] if h.id == int(m.group(2))), None)
        if found is None:
            return 404, {"message": "Not Found"}
        self._pending_redeliveries.append(found)
        return 202, {}

    def _run_jobs(self, m: re.Match[str], q: dict[str, str], d: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        jobs = [j.to_json() for j in self.jobs.values() if j.repo == m.group(1) and j.run_id == int(m.group(2))]
        return 200, {"total_count": len(jobs), "jobs": jobs}


Action = Callable[[FakeGithub, "re.Match[str]", dict[str, str], dict[str, Any]], tuple[int, Any]]
_REPO = r"([\w.-]+/[\w.-]+)"
_ROUTES: list[tuple[str, str, str, Action]] = [
    # What a runner process does, for our fake runner program (tests/fake_runner.py).
    (r"/_fake/runners/(\d+)/online", "POST", "none", FakeGithub._runner_online),
    (r"/_fake/runners/(\d+)/assignment", "GET", "none", FakeGithub._runner_assignment),
    (r"/_fake/runners/(\d+)/done", "POST", "none", FakeGithub._runner_done),
    (r"/orgs/{org}/installation", "GET", "jwt", FakeGithub._installation),
    (r"/app/installations/(\d+)/access_tokens", "POST", "jwt", FakeGithub._token),
    (r"/orgs/{org}/actions/runner-groups", "GET", "token", FakeGithub._groups),
    (r"/orgs/{org}/actions/runner-groups/(\d+)/repositories", "GET", "token", FakeGithub._group_repositories),
    (r"/orgs/{org}/actions/runners/generate-jitconfig", "POST", "token", FakeGithub._jit),
    (r"/orgs/{org}/actions/runners", "GET", "token", FakeGithub._list_runners),
    (r"/orgs/{org}/actions/runners/(\d+)", "GET", "token", FakeGithub._get_runner),
    (r"/orgs/{org}/actions/runners/(\d+)", "DELETE", "token", FakeGithub._delete_runner),
    (rf"/repos/{_REPO}/actions/jobs/(\d+)", "GET", "token", FakeGithub._job),
    (rf"/repos/{_REPO}/actions/jobs/(\d+)/rerun", "POST", "token", FakeGithub._rerun_job),
    (rf"/repos/{_REPO}/actions/runs", "GET", "token", FakeGithub._runs),
    (rf"/repos/{_REPO}/actions/runs/(\d+)/jobs", "GET", "token", FakeGithub._run_jobs),
    (rf"/repos/{_REPO}/actions/runs/(\d+)", "GET", "token", FakeGithub._run),
    (rf"/repos/{_REPO}", "GET", "token", FakeGithub._repository),
    # The org webhook's deliveries and their redelivery (issue 21.2).
    (r"/orgs/{org}/hooks", "GET", "token", FakeGithub._hooks),
    (r"/orgs/{org}/hooks/(\d+)/deliveries", "GET", "token", FakeGithub._list_deliveries),
    (r"/orgs/{org}/hooks/(\d+)/deliveries/(\d+)/attempts", "POST", "token", FakeGithub._redeliver),
]


def _handler_for(fake: FakeGithub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, payload, extra = fake.answer(self.command, self.path, headers, body)
            fake.send_pending()  # outside the fake's lock: our webhook answers them
            raw = b"" if status in {204, 304} else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            # GitHub states the caller's hourly budget on every answer (5,000 for an installation).
            rate = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": str(max(0, 5000 - len(fake.calls)))}
            for k, v in {**rate, **extra}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_DELETE = _serve  # noqa: N815 - http.server's method names

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
