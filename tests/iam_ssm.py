"""SSM as a runner host meets it: behind IAM. moto evaluates no IAM at all, so a host polling
moto for a config not yet written hears `ParameterNotFound`; AWS answers
`AccessDeniedException`, because the runner role may read only a parameter tagged with the
host's own instance ARN and a parameter that does not exist has no tags.

`IamScopedSsm` is a loopback endpoint in front of moto_server that answers as AWS does. Each
request is signed with credentials it handed out for one instance (as IMDS hands a host its
role's session); it evaluates the role's real policy documents (estate/derive/iam_policies.py)
with tests/iam_eval.py against what AWS would put in the request context (the caller's
`ec2:SourceInstanceARN`, the parameter's tags as they are in moto at that moment) and either
forwards the request to moto or answers 400 `AccessDeniedException` in SSM's JSON error shape.
Unknown credentials are answered `UnrecognizedClientException`, as AWS does.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lambda_src.aws.sigv4_client import AwsJsonClient, Credentials
from tests.iam_eval import ContextValue, Decision, Document, Request, decide

REGION, ACCOUNT = "us-east-1", "123456789012"
ROLE = f"arn:aws:sts::{ACCOUNT}:assumed-role/runner-estate-prod-runner"


@dataclass(frozen=True)
class HostSession:
    instance_arn: str
    documents: Sequence[Document]


@dataclass
class IamScopedSsm:
    moto_url: str
    sessions: dict[str, HostSession] = field(default_factory=dict)  # access key id -> whose role session
    decisions: list[tuple[str, str, Decision]] = field(default_factory=list)  # (action, parameter, decision)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> IamScopedSsm:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def host_client(self, instance_id: str, documents: Sequence[Document], **kwargs: Any) -> AwsJsonClient:
        """The SSM client a host builds, with the role credentials IMDS gives that instance."""
        creds = Credentials(f"ASIA{secrets.token_hex(8).upper()}", secrets.token_hex(20), secrets.token_hex(32))
        self.sessions[creds.access_key] = HostSession(f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}", documents)
        return AwsJsonClient("ssm", REGION, credentials=lambda: creds, endpoint_url=self.url, **kwargs)

    def denials(self) -> list[tuple[str, str]]:
        return [(action, name) for action, name, d in self.decisions if d is not Decision.ALLOW]

    # ---- what AWS does with one request -------------------------------------------------
    def tags_of(self, name: str) -> dict[str, str] | None:
        """The parameter's tags as IAM sees them; None when it does not exist."""
        admin = AwsJsonClient("ssm", REGION, endpoint_url=self.moto_url)
        found = admin.call("DescribeParameters", {"ParameterFilters": [{"Key": "Name", "Values": [name]}]})["Parameters"]
        if not found:
            return None
        tags = admin.call("ListTagsForResource", {"ResourceType": "Parameter", "ResourceId": name})["TagList"]
        return {t["Key"]: t["Value"] for t in tags}

    def authorise(self, access_key: str, action: str, body: Mapping[str, Any]) -> tuple[int, dict[str, str]] | None:
        """None to let the request through to SSM, else AWS's error answer."""
        session = self.sessions.get(access_key)
        if session is None:
            return 400, {"__type": "UnrecognizedClientException", "message": "The security token included in the request is invalid."}
        name = str(body.get("Name", ""))
        resource = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{name}"
        context: dict[str, ContextValue] = {"ec2:SourceInstanceARN": session.instance_arn, "aws:RequestedRegion": REGION}
        for key, value in (self.tags_of(name) or {}).items():
            context[f"ssm:resourceTag/{key}"] = value
            context[f"aws:ResourceTag/{key}"] = value
        decision = decide(Request(f"ssm:{action}", resource, context, principal=ROLE), session.documents)
        self.decisions.append((action, name, decision))
        if decision is Decision.ALLOW:
            return None
        why = "an explicit deny in an identity-based policy" if decision is Decision.EXPLICIT_DENY else "no identity-based policy allows"
        message = f"User: {ROLE}/{session.instance_arn.rsplit('/', 1)[-1]} is not authorized to perform: ssm:{action} on resource: {resource} because {why} the ssm:{action} action"  # noqa: E501
        return 400, {"__type": "AccessDeniedException", "Message": message}

    def forward(self, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        keep = {k: v for k, v in headers.items() if k.lower() in {"content-type", "x-amz-target", "x-amz-date", "authorization"}}
        request = urllib.request.Request(f"{self.moto_url}/", data=body, headers=keep, method="POST")  # noqa: S310 - loopback
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def _handler(ssm: IamScopedSsm) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            found = re.search(r"Credential=([^/]+)/", self.headers.get("authorization", ""))
            action = self.headers.get("x-amz-target", "").rsplit(".", 1)[-1]
            refused = ssm.authorise(found.group(1) if found else "", action, json.loads(body or b"{}"))
            if refused is None:
                status, raw = ssm.forward(dict(self.headers.items()), body)
            else:
                status, raw = refused[0], json.dumps(refused[1]).encode()
            self.send_response(status)
            self.send_header("content-type", "application/x-amz-json-1.1")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
