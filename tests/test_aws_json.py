"""The stdlib AWS client: SigV4 identical to botocore's, errors and retries as AWS sends them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from lambda_src.aws.sigv4_client import AwsError, AwsJsonClient, Credentials, sign


@pytest.mark.parametrize("token", [None, "session-token-value"])
def test_signature_matches_botocore(token: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    when = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
    body = b'{"Name": "/runner-estate/prod/jit/i-0123456789abcdef0", "WithDecryption": true}'
    headers = {"content-type": "application/x-amz-json-1.1", "x-amz-target": "AmazonSSM.GetParameter"}
    key = ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    ours = sign(Credentials(*key), "ssm", "us-east-1", "ssm.us-east-1.amazonaws.com", headers, body, when)

    request = AWSRequest(method="POST", url="https://ssm.us-east-1.amazonaws.com/", data=body, headers=dict(headers))
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: when.replace(tzinfo=None))
    SigV4Auth(BotoCredentials(*key), "ssm", "us-east-1").add_auth(request)
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours["x-amz-date"] == request.headers["X-Amz-Date"]


def test_errors_carry_the_aws_code_and_only_throttling_and_5xx_are_retried(moto_url: str) -> None:
    sleeps: list[float] = []
    ssm = AwsJsonClient("ssm", "us-east-1", endpoint_url=moto_url, sleep=sleeps.append)
    with pytest.raises(AwsError) as caught:
        ssm.call("GetParameter", {"Name": "/nope"})
    assert caught.value.code == "ParameterNotFound"
    assert not caught.value.retryable
    assert sleeps == []


def test_unreachable_endpoint_is_retried_then_raised() -> None:
    sleeps: list[float] = []
    client = AwsJsonClient("sqs", "us-east-1", endpoint_url="http://127.0.0.1:9", sleep=sleeps.append, timeout_s=0.5)
    with pytest.raises(AwsError) as caught:
        client.call("ListQueues", {})
    assert caught.value.code == "Unreachable"
    assert len(sleeps) == 2


def test_unknown_service_is_refused() -> None:
    with pytest.raises(ValueError, match="ec2"):
        AwsJsonClient("ec2", "us-east-1")
