"""The webhook handler: signature, parsing, routing, one enqueue per job; never 5xx on bad input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from estate.config.loader import load_estate
from estate.local.plane import LocalPlane
from lambda_src.aws.ledger import MAX_ITEM_BYTES, ItemTooLargeError, attr_bytes, to_attr, written_bytes
from lambda_src.aws.sigv4_client import AwsError, AwsJsonClient
from lambda_src.core.fleet_state import JOB_STATE_RANK, Job
from lambda_src.core.routing import Admission
from lambda_src.functions import webhook
from tests.conftest import EXAMPLE_CONFIGS, SHARED_FIXTURES, WORKING_HOURS, fixed_clock, needs_shared

SECRET = b"It's a Secret to Everybody"
ROUTING = load_estate([EXAMPLE_CONFIGS]).routing_table()
WEBHOOKS = SHARED_FIXTURES / "github" / "webhooks"


class MemoryLedger:
    """Stores each job once and only moves it forward, like the DynamoDB ledger's condition,
    and refuses an item over DynamoDB's 400 KB as DynamoDB does."""

    def __init__(self) -> None:
        self.jobs: dict[int, Job] = {}

    def record_job(self, job: Job) -> bool:
        item = {"pk": f"job#{job.id}", "pool": job.pool, "repo": job.repo, "labels": list(job.labels), "runner_name": job.runner_name or ""}
        if written_bytes({"Item": {k: to_attr(v) for k, v in item.items()}}) > MAX_ITEM_BYTES:
            raise AwsError("ValidationException", "Item size has exceeded the maximum allowed size", 400)
        old = self.jobs.get(job.id)
        if old is not None and JOB_STATE_RANK[old.state] >= JOB_STATE_RANK[job.state]:
            return False
        self.jobs[job.id] = job
        return True


class MemoryQueue:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[Job] = []
        self.fail = fail

    def enqueue(self, job: Job, delivery: str) -> None:
        if self.fail:
            raise ConnectionError("SQS unreachable")
        self.sent.append(job)


def ports(queue: MemoryQueue | None = None) -> webhook.WebhookPorts:
    return webhook.WebhookPorts(lambda: SECRET, MemoryLedger(), queue or MemoryQueue(), ROUTING, {})


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def event(body: bytes, kind: str = "workflow_job", signature: str | None = "auto", b64: bool = False) -> dict[str, Any]:
    headers = {"X-GitHub-Event": kind, "X-GitHub-Delivery": "d-1"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = sign(body) if signature == "auto" else signature
    text = base64.b64encode(body).decode() if b64 else body.decode("utf-8", errors="surrogateescape")
    return {"headers": headers, "body": text, "isBase64Encoded": b64}


def job_body(action: str = "queued", labels: list[str] | None = None, job_id: int = 42, runner: str | None = None) -> bytes:
    wj = {"id": job_id, "labels": labels if labels is not None else ["self-hosted", "linux", "x64", "gpu", "t4"], "runner_name": runner}
    return json.dumps({"action": action, "workflow_job": wj, "repository": {"full_name": "org/repo"}}).encode()


def test_githubs_own_signature_vector() -> None:
    assert webhook.signature_matches(SECRET, b"Hello, World!", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
    assert not webhook.signature_matches(SECRET, b"Hello, World!", "sha256=" + "0" * 64)
    assert not webhook.signature_matches(SECRET, b"Hello, World!", None)
    assert not webhook.signature_matches(SECRET, b"Hello, World!", "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59")


@needs_shared
def test_signature_vectors_from_the_fixtures() -> None:
    for v in json.loads((WEBHOOKS / "signature-vectors.json").read_text())["vectors"]:
        assert webhook.signature_matches(v["secret"].encode(), v["payload_utf8"].encode(), v["x_hub_signature_256"])


def test_queued_job_is_routed_recorded_and_enqueued_once() -> None:
    p = ports()
    first = webhook.handle(event(job_body()), p, 100.0)
    again = webhook.handle(event(job_body()), p, 101.0)  # GitHub redelivers
    assert (first.status, first.body["pool"]) == (202, "gpu-t4-spot")
    assert (again.status, again.body.get("duplicate")) == (202, True)
    assert [j.id for j in p.queue.sent] == [42]  # type: ignore[attr-defined]


def test_completed_before_queued_never_enqueues() -> None:
    p = ports()
    assert webhook.handle(event(job_body("completed")), p, 1.0).status == 202
    late = webhook.handle(event(job_body("queued")), p, 2.0)
    assert late.body.get("duplicate") is True
    assert p.queue.sent == []  # type: ignore[attr-defined]


def test_in_progress_records_the_runner() -> None:
    p = ports()
    webhook.handle(event(job_body()), p, 1.0)
    webhook.handle(event(job_body("in_progress", runner="prod-gpu-t4-spot-i-0123456789abcdef0")), p, 2.0)
    assert p.ledger.jobs[42].runner_name == "prod-gpu-t4-spot-i-0123456789abcdef0"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("evt", "status"),
    [
        (event(b"{}", kind="ping"), 200),
        (event(job_body(), signature=None), 401),
        (event(job_body(), signature="sha256=" + "ab" * 32), 401),
        (event(job_body(), signature=sign(job_body(), b"other secret")), 401),
        (event(b"{not json"), 400),
        (event(b"[1, 2]"), 400),
        (event(json.dumps({"action": "queued", "workflow_job": {"id": "7", "labels": []}}).encode()), 400),
        (event(json.dumps({"action": "queued", "workflow_job": {"id": 7, "labels": [1]}}).encode()), 400),
        (event(job_body(labels=["windows", "gpu"])), 202),
        (event(job_body("waiting")), 202),
        (event(b"{}", kind="push"), 202),
        (event(job_body(), b64=True), 202),
        ({"headers": {}, "body": "!!!", "isBase64Encoded": True}, 400),
    ],
)
def test_status_codes(evt: dict[str, Any], status: int) -> None:
    assert webhook.handle(evt, ports(), 1.0).status == status


def test_body_over_one_mebibyte_is_refused_before_anything_else() -> None:
    big = b"x" * (webhook.MAX_BODY_BYTES + 1)
    assert webhook.handle(event(big), ports(), 1.0).status == 413


def test_unserved_labels_are_ignored_and_counted() -> None:
    p = ports()
    answer = webhook.handle(event(job_body(labels=["ubuntu-latest"])), p, 1.0)
    assert (answer.status, p.counters) == (202, {"ignored": 1})
    assert "ignored" in answer.body


def test_a_failed_enqueue_is_left_to_the_reconciler_not_lost() -> None:
    p = ports(MemoryQueue(fail=True))
    answer = webhook.handle(event(job_body()), p, 1.0)
    assert (answer.status, answer.body.get("deferred")) == (202, True)
    assert 42 in p.ledger.jobs  # type: ignore[attr-defined]


@needs_shared
@pytest.mark.parametrize("name", sorted(p.name for p in (WEBHOOKS / "workflow_job").glob("*.json")) if WEBHOOKS.is_dir() else [])
def test_real_payloads_are_accepted(name: str) -> None:
    body = (WEBHOOKS / "workflow_job" / name).read_bytes()
    answer = webhook.handle(event(body), ports(), 1.0)
    assert answer.status == 202, answer.body


@needs_shared
def test_real_ping_payload() -> None:
    body = (WEBHOOKS / "ping" / "payload.json").read_bytes()
    assert webhook.handle(event(body, kind="ping"), ports(), 1.0).status == 200


def test_lambda_response_shape() -> None:
    out = webhook.Response(202, {"pool": "x"}).to_lambda()
    assert out["statusCode"] == 202
    assert json.loads(out["body"]) == {"pool": "x"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    body=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())),
    kind=st.sampled_from(["workflow_job", "ping", "push", ""]),
    signed=st.booleans(),
    b64=st.booleans(),
)
def test_fuzz_never_5xx_never_crashes_never_echoes_the_secret(body: bytes, kind: str, signed: bool, b64: bool) -> None:
    answer = webhook.handle(event(body, kind=kind, signature="auto" if signed else None, b64=b64), ports(), 1.0)
    assert answer.status in {200, 202, 400, 401, 413}
    assert SECRET.decode() not in json.dumps(answer.body)


@settings(max_examples=200, deadline=None)
@given(
    action=st.sampled_from(["queued", "in_progress", "completed", "waiting", "requested", ""]),
    labels=st.lists(st.sampled_from(["self-hosted", "linux", "x64", "arm64", "gpu", "t4", "a10g", "h100", "LINUX", " x64 "]), max_size=6),
    job_id=st.integers(min_value=-(2**63), max_value=2**63),
)
def test_fuzz_workflow_job_shapes(action: str, labels: list[str], job_id: int) -> None:
    body = json.dumps({"action": action, "workflow_job": {"id": job_id, "labels": labels}}).encode()
    assert webhook.handle(event(body), ports(), 1.0).status in {202, 400}


def test_the_secret_never_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    p = ports()
    for evt in (event(job_body()), event(job_body(), signature="sha256=" + "0" * 64), event(b"{}", kind="ping"), event(b"{bad")):
        webhook.handle(evt, p, 1.0)
    assert caplog.records
    assert SECRET.decode() not in caplog.text


def test_during_a_rotation_both_secrets_are_accepted() -> None:
    p = ports()
    p.secret = lambda: b"new-secret\n" + SECRET
    for secret in (b"new-secret", SECRET):
        body = job_body(job_id=len(secret))
        evt = event(body, signature="sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest())
        assert webhook.handle(evt, p, 1.0).status == 202


def test_a_mismatch_rereads_a_rotated_secret_once() -> None:
    current = [SECRET]
    p = ports()
    p.secret = lambda: current[0]

    def rotate() -> bool:
        current[0] = b"rotated"
        return True

    p.refresh_secret = rotate
    body = job_body()
    evt = event(body, signature="sha256=" + hmac.new(b"rotated", body, hashlib.sha256).hexdigest())
    assert webhook.handle(evt, p, 1.0).status == 202


def test_a_finished_job_wakes_the_pool_of_a_reusable_host_only() -> None:
    reusing = "prod-gpu-t4-spot-i-0123456789abcdef0-r1"
    p = webhook.WebhookPorts(
        lambda: SECRET, MemoryLedger(), MemoryQueue(), ROUTING, {}, reusing_pool_of=lambda name: "gpu-t4-spot" if name == reusing else None
    )
    webhook.handle(event(job_body(job_id=1, runner="prod-gpu-t4-spot-i-0aaaaaaaaaaaaaaaa")), p, 1.0)
    webhook.handle(event(job_body("completed", job_id=1, runner="prod-gpu-t4-spot-i-0aaaaaaaaaaaaaaaa")), p, 2.0)
    webhook.handle(event(job_body("completed", job_id=2, runner=reusing)), p, 3.0)
    webhook.handle(event(job_body("completed", job_id=3)), p, 4.0)  # cancelled while queued: no runner
    assert [(j.id, j.pool, j.state) for j in p.queue.sent] == [(1, "gpu-t4-spot", "queued"), (2, "gpu-t4-spot", "completed")]  # type: ignore[attr-defined]


# ---- hostile payloads: what is stored is bounded (issue 17.15) ----------------------------


def signed_event(payload: dict[str, Any]) -> dict[str, Any]:
    return event(json.dumps(payload).encode())


def queued(labels: list[str], repo: Any = None, job_id: int = 42) -> dict[str, Any]:
    payload: dict[str, Any] = {"action": "queued", "workflow_job": {"id": job_id, "labels": labels}}
    payload["repository"] = repo if repo is not None else {"full_name": "org/repo", "private": True}
    return payload


T4 = ["self-hosted", "linux", "x64", "gpu", "t4"]


@pytest.fixture
def local(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPlane]:
    plane = LocalPlane([str(EXAMPLE_CONFIGS)], clock=fixed_clock(monkeypatch, WORKING_HOURS), endpoint=moto_url).start()
    yield plane
    plane.stop()


def handled(local: LocalPlane, payload: dict[str, Any]) -> webhook.Response:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(local.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
    return local.handle_http({"X-GitHub-Event": "workflow_job", "X-Hub-Signature-256": signature, "X-GitHub-Delivery": "d"}, body)


def test_many_duplicate_labels_under_one_mebibyte_are_stored_once_each(local: LocalPlane) -> None:
    payload = queued([*T4, *(["GPU", "gpu", " Linux "] * 40_000)])
    assert len(json.dumps(payload)) < webhook.MAX_BODY_BYTES
    answer = handled(local, payload)  # was: DynamoDB refused the 400 KB+ item and the handler answered 503
    assert (answer.status, answer.body["pool"]) == (202, "gpu-t4-spot")
    (job,) = local.plane.ledger.queued_jobs("gpu-t4-spot")
    assert job.labels == ("self-hosted", "linux", "x64", "gpu", "t4")
    local.pump()  # the SQS message carries the same bounded labels
    assert local.running_instances("gpu-t4-spot")


def test_a_repository_name_longer_than_github_allows_is_refused_not_stored(local: LocalPlane) -> None:
    answer = handled(local, queued(T4, {"full_name": "org/" + "r" * 500_000, "private": True}))
    assert answer.status == 400
    assert local.plane.ledger.queued_jobs() == []


@pytest.mark.parametrize(
    "repo",
    [
        {"full_name": "org/" + "r" * 101},
        {"full_name": "o" * 40 + "/repo"},
        {"full_name": "org/re po"},
        {"full_name": "org/\ud800"},
        {"full_name": 7},
        "org/repo",
    ],
)
def test_repository_names_outside_githubs_limits_are_a_400(repo: Any) -> None:
    assert webhook.handle(signed_event(queued(T4, repo)), ports(), 1.0).status == 400


def test_more_distinct_labels_than_a_runner_can_carry_is_ignored_with_the_reason() -> None:
    p = ports()
    answer = webhook.handle(signed_event(queued([*T4, *(f"l{i}" for i in range(webhook.MAX_LABELS))])), p, 1.0)
    assert (answer.status, p.counters) == (202, {"ignored": 1})
    assert "103 distinct labels" in answer.body["ignored"]
    assert p.ledger.jobs == {}  # type: ignore[attr-defined]


def test_a_runner_name_that_cannot_be_ours_is_not_stored() -> None:
    p = ports()
    for i, name in enumerate(("x" * 10_000, "\ud800name")):
        webhook.handle(event(job_body("in_progress", job_id=i + 1, runner=name)), p, 1.0)
        assert p.ledger.jobs[i + 1].runner_name is None  # type: ignore[attr-defined]


def test_a_lone_surrogate_in_the_body_is_a_400_not_an_exception() -> None:
    evt = {"headers": {"X-GitHub-Event": "workflow_job", "X-Hub-Signature-256": sign(b"x")}, "body": "{\ud800}", "isBase64Encoded": False}
    assert webhook.handle(evt, ports(), 1.0).status == 400


def test_a_lone_surrogate_in_the_signature_header_is_a_401_not_an_exception() -> None:
    assert webhook.handle(event(job_body(), signature="sha256=\ud800" + "0" * 63), ports(), 1.0).status == 401


def test_an_id_github_never_gives_is_a_400() -> None:
    for job_id in (0, -1, 2**63, 10**40):
        assert webhook.handle(event(job_body(job_id=job_id)), ports(), 1.0).status == 400


def test_moto_is_kinder_than_dynamodb_to_long_lists_so_the_ledger_checks_400_kb_itself(local: LocalPlane) -> None:
    # 210,000 one-character strings: DynamoDB counts 3 + 2 bytes each (over 400 KB), moto 1 each.
    item = {"pk": {"S": "probe"}, "labels": {"L": [{"S": "a"}] * 210_000}}
    assert written_bytes({"Item": item}) > MAX_ITEM_BYTES
    raw: AwsJsonClient = local.plane.ledger.dynamodb
    raw.call("PutItem", {"TableName": local.plane.ledger.table_name, "Item": item})  # moto takes it; DynamoDB would not
    with pytest.raises(ItemTooLargeError, match="over DynamoDB's 409600"):
        local.plane.ledger.table.put_item(Item={"pk": "probe", "labels": ["a"] * 210_000})


def test_item_sizes_are_counted_as_dynamodb_documents_them() -> None:
    assert attr_bytes({"S": "h\u00e9llo"}) == 6
    assert attr_bytes({"N": "12345"}) == 4  # 5 significant digits: 3 bytes + 1
    assert attr_bytes({"BOOL": True}) == attr_bytes({"NULL": True}) == 1
    assert attr_bytes({"L": [{"S": "ab"}, {"S": "c"}]}) == 3 + (1 + 2) + (1 + 1)
    assert attr_bytes({"M": {"k": {"S": "v"}}}) == 3 + 1 + 1 + 1


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    labels=st.lists(st.sampled_from([*T4, "GPU", " T4 ", "", "\ud800", "x" * 300, "LINUX"]), max_size=400),
    repo=st.one_of(st.none(), st.text(max_size=200).map(lambda n: {"full_name": n, "private": True})),
    runner=st.one_of(st.none(), st.text(max_size=300)),
)
def test_fuzz_hostile_jobs_never_5xx_and_what_is_stored_is_bounded(labels: list[str], repo: Any, runner: str | None) -> None:
    p = ports()
    payload = queued(labels, repo)
    payload["workflow_job"]["runner_name"] = runner
    payload["action"] = "in_progress"
    answer = webhook.handle(signed_event(payload), p, 1.0)
    assert answer.status in {202, 400}
    for job in p.ledger.jobs.values():  # type: ignore[attr-defined]
        assert len(job.labels) == len({label.lower() for label in job.labels}) <= webhook.MAX_LABELS
        assert len(job.repo) <= 140
        assert job.runner_name is None or len(job.runner_name) <= webhook.MAX_RUNNER_NAME_CHARS


# ---- runner groups: jobs no pool admits are ignored and counted (issue 17.6) ---------------

GROUPS = {
    "gpu": {"repositories": ["kernels", "serving"]},
    "gpu-h100": {"repositories": ["kernels"]},
    "gpu-b200": {"repositories": ["kernels"]},
}
H100 = ["self-hosted", "linux", "x64", "gpu", "h100"]


def test_a_job_from_a_repository_no_group_admits_never_reaches_the_ledger_or_a_queue() -> None:
    admitted = {r.pool: Admission(r.admission.group if r.admission else "Default") for r in ROUTING.routes}
    admitted["gpu-h100-cb"] = Admission("gpu-h100", frozenset({"org/kernels"}))
    p = webhook.WebhookPorts(lambda: SECRET, MemoryLedger(), MemoryQueue(), load_estate([EXAMPLE_CONFIGS]).routing_table(admitted), {})
    answer = webhook.handle(signed_event(queued(H100, {"full_name": "org/serving", "private": True})), p, 1.0)
    assert (answer.status, answer.outcome, p.counters) == (202, "not_admitted", {"not_admitted": 1})
    assert answer.body["ignored"] == "runner group gpu-h100 does not admit repository org/serving"
    assert p.ledger.jobs == {}  # type: ignore[attr-defined]
    assert p.queue.sent == []  # type: ignore[attr-defined]
    assert webhook.handle(signed_event(queued(H100, {"full_name": "Org/Kernels", "private": True})), p, 2.0).body["pool"] == "gpu-h100-cb"


def test_a_public_repository_gets_no_self_hosted_runner_unless_a_pool_allows_it() -> None:
    p = ports()
    for repo in ({"full_name": "org/site", "private": False}, {"full_name": "org/site", "visibility": "public"}):
        answer = webhook.handle(signed_event(queued(T4, repo)), p, 1.0)
        assert (answer.status, answer.outcome) == (202, "not_admitted")
        assert "public repository" in answer.body["ignored"]
    assert p.ledger.jobs == {}  # type: ignore[attr-defined]


def test_unadmitted_jobs_launch_nothing_and_are_no_capacity_block_demand(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    plane = LocalPlane(
        [str(EXAMPLE_CONFIGS)], clock=fixed_clock(monkeypatch, WORKING_HOURS), endpoint=moto_url, runner_groups=GROUPS
    ).start()
    try:
        plane.serve_webhook()
        plane.github.queue_job(H100, repo="example-org/serving")
        plane.github.queue_job(T4, repo="example-org/docs")
        assert [status for status, _ in plane.github.deliveries] == [202, 202]
        assert plane.ports.counters == {"not_admitted": 2}
        plane.pump()
        plane.plane.reconcile()
        assert plane.plane.ledger.queued_jobs() == []  # nothing the block manager would count as demand
        assert plane.running_instances("gpu-t4-spot") == []
        plane.github.queue_job(T4, repo="example-org/serving")
        plane.pump()
        assert len(plane.running_instances("gpu-t4-spot")) == 1
    finally:
        plane.stop()
