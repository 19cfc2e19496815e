"""A small stdlib client for AWS's JSON protocol (DynamoDB, SQS, SSM), signed with SigV4.

Why not boto3 here: importing boto3 costs ~170 ms, more than the webhook's whole cold-start
budget, and Ubuntu runner hosts have no AWS SDK or CLI at all. The webhook and the host
bootstrap need four calls (UpdateItem, SendMessage, GetParameter, DeleteParameter), so they
use this; the scaler keeps boto3 for EC2.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# service -> (signing name, JSON protocol version, X-Amz-Target prefix)
SERVICES = {
    "dynamodb": ("dynamodb", "1.0", "DynamoDB_20120810"),
    "sqs": ("sqs", "1.0", "AmazonSQS"),
    "ssm": ("ssm", "1.1", "AmazonSSM"),
}
_RETRYABLE = {"ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded", "InternalServerError"}


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None


def env_credentials() -> Credentials:
    """What the Lambda runtime puts in the environment."""
    try:
        return Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"], os.environ.get("AWS_SESSION_TOKEN"))
    except KeyError as exc:
        raise AwsError("MissingCredentials", f"{exc.args[0]} is not set", 0) from None


class AwsError(Exception):
    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.status >= 500 or self.status == 0 or self.code in _RETRYABLE


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign(creds: Credentials, service: str, region: str, host: str, headers: dict[str, str], body: bytes, when: datetime) -> dict[str, str]:
    """Headers with SigV4 `Authorization` for a POST to `/` with no query string."""
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {k.lower(): v.strip() for k, v in headers.items()}
    signed["host"] = host
    signed["x-amz-date"] = amz_date
    if creds.token:
        signed["x-amz-security-token"] = creds.token
    names = sorted(signed)
    canonical = "\n".join(["POST", "/", "", *(f"{n}:{signed[n]}" for n in names), "", ";".join(names), hashlib.sha256(body).hexdigest()])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{creds.secret_key}".encode(), day), region), service), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    signed["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return signed


@dataclass
class AwsJsonClient:
    service: str
    region: str
    credentials: Callable[[], Credentials] = env_credentials
    endpoint_url: str | None = None  # defaults to AWS_ENDPOINT_URL, else the regional endpoint
    attempts: int = 3
    timeout_s: float = 5.0
    sleep: Callable[[float], None] = time.sleep
    calls: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.service not in SERVICES:
            raise ValueError(f"no JSON-protocol settings for service {self.service!r}")
        self.endpoint_url = (
            self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or f"https://{self.service}.{self.region}.amazonaws.com"
        ).rstrip("/")

    def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        signing_name, version, target = SERVICES[self.service]
        body = json.dumps(payload).encode()
        url = f"{self.endpoint_url}/"
        host = url.split("://", 1)[1].split("/", 1)[0]
        delay = 0.1
        for attempt in range(1, self.attempts + 1):
            headers = sign(
                self.credentials(),
                signing_name,
                self.region,
                host,
                {"content-type": f"application/x-amz-json-{version}", "x-amz-target": f"{target}.{action}"},
                body,
                datetime.now(UTC),
            )
            headers.pop("host")
            self.calls += 1
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - https endpoint, or loopback in tests
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:  # noqa: S310
                    raw = answer.read()
                    return json.loads(raw) if raw else {}
            except urllib.error.HTTPError as exc:
                error = _error(exc.code, exc.read())
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                error = AwsError("Unreachable", str(exc), 0)
            if not error.retryable or attempt == self.attempts:
                raise error
            self.sleep(delay)
            delay *= 4
        raise AssertionError("unreachable")


def _error(status: int, raw: bytes) -> AwsError:
    try:
        data = json.loads(raw)
    except ValueError:
        return AwsError("HttpError", raw[:200].decode(errors="replace"), status)
    code = str(data.get("__type") or data.get("code") or "Unknown").rsplit("#", 1)[-1]
    message = str(data.get("message") or data.get("Message") or "")
    return AwsError(code, message, status)
