"""The delivery workflows our users run: preview on every pull request, gated `up` on main."""

from __future__ import annotations

from typing import Any

import yaml

from tests.conftest import PROJECT_DIR

WORKFLOWS = PROJECT_DIR / ".github" / "workflows"


def load(name: str) -> dict[str, Any]:
    raw: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    raw["on"] = raw.pop(True)  # YAML 1.1 reads the key `on` as true
    return {str(k): v for k, v in raw.items()}


def steps(job: dict[str, Any]) -> list[str]:
    """Each step as one line: its `uses`, or its `run` text."""
    return [str(s.get("uses") or s.get("run")) for s in job["steps"]]


def index_of(job: dict[str, Any], fragment: str) -> int:
    return next(i for i, line in enumerate(steps(job)) if fragment in line)


def test_every_stack_file_is_previewed_and_deployed() -> None:
    stacks = sorted(p.name.split(".")[1] for p in PROJECT_DIR.glob("Pulumi.*.yaml"))
    assert stacks == ["prod", "staging"]
    assert sorted(load("pull-request.yml")["jobs"]["preview"]["strategy"]["matrix"]["stack"]) == stacks
    assert load("deploy.yml")["jobs"]["up"]["strategy"]["matrix"]["stack"] == ["staging", "prod"]  # staging first


def test_pull_requests_run_tests_then_preview_with_policy_guard_and_comment() -> None:
    flow = load("pull-request.yml")
    assert "pull_request" in flow["on"]
    assert "bash scripts/test.sh" in steps(flow["jobs"]["test"])
    preview = flow["jobs"]["preview"]
    assert preview["needs"] == "test"
    (action,) = [s for s in preview["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@")]
    assert action["with"]["command"] == "preview"
    assert action["with"]["comment-on-pr"] is True
    assert action["with"]["policyPacks"] == "policy"
    # pulumi/actions does not install Python dependencies, and the functions need their build.
    assert index_of(preview, "pip install -r requirements.txt") < index_of(preview, "pulumi/actions@")
    assert index_of(preview, "build_lambda.sh") < index_of(preview, "pulumi/actions@")
    assert "python -m estate guard preview.json" in steps(preview)[-1]


def test_main_deploys_behind_an_environment_after_the_guard() -> None:
    flow = load("deploy.yml")
    assert flow["on"] == {"push": {"branches": ["main"]}}
    up = flow["jobs"]["up"]
    assert up["needs"] == "test"
    assert up["environment"] == "${{ matrix.stack }}"  # required reviewers live on the environment
    assert up["strategy"]["max-parallel"] == 1
    assert index_of(up, "estate guard") < index_of(up, "pulumi/actions@")
    (action,) = [s for s in up["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@")]
    assert (action["with"]["command"], action["with"]["policyPacks"]) == ("up", "policy")


def test_aws_access_is_by_oidc_only() -> None:
    for name in ("pull-request.yml", "deploy.yml"):
        text = (WORKFLOWS / name).read_text(encoding="utf-8")
        assert "AWS_ACCESS_KEY_ID" not in text
        assert "AWS_SECRET_ACCESS_KEY" not in text
        flow = load(name)
        assert flow["permissions"] == {"contents": "read"}  # least by default; jobs widen only what they need
        for job in flow["jobs"].values():
            if any("configure-aws-credentials" in line for line in steps(job)):
                assert job["permissions"]["id-token"] == "write"
                (creds,) = [s for s in job["steps"] if "configure-aws-credentials" in str(s.get("uses"))]
                assert "role-to-assume" in creds["with"]
