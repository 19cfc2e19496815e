"""GitHub org settings as code: who may use which pools, and the org webhook."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from estate.config.diagnostics import ConfigError
from estate.config.loader import load_estate
from estate.config.stack_config import parse_stack_config
from estate.derive.runner_groups import plan_runner_groups
from estate.preview import Registered, run_program
from tests.conftest import EXAMPLE_CONFIGS, MINIMAL_POOL, PROJECT_DIR, write_pool

BASE = {
    "environment": "prod",
    "region": "us-east-1",
    "github": {"org": "acme", "app_id": 1},
    "secrets": {"github_app_private_key": "/k", "webhook_secret": "/w"},
}


def stack(**groups: Any) -> Any:
    return parse_stack_config({**BASE, "runner_groups": groups}, "Pulumi.prod.yaml")


def pool_in(tmp_path: Path, name: str, group: str | None, public: bool = False) -> Path:
    extra = "estate:\n" + (f"  runner_group: {group}\n" if group else "") + f"  allow_public_repositories: {str(public).lower()}\n"
    return write_pool(tmp_path, name, MINIMAL_POOL + extra)


def test_every_group_a_pool_uses_must_be_declared(tmp_path: Path) -> None:
    estate = load_estate([pool_in(tmp_path, "pool-a", "gpu")])
    with pytest.raises(ConfigError) as caught:
        plan_runner_groups(stack(), estate, "Pulumi.prod.yaml")
    assert (caught.value.pool, caught.value.key) == ("pool-a", "estate.runner_group")
    assert "not declared in runner-estate:runner_groups of Pulumi.prod.yaml" in caught.value.message


def test_a_group_admits_public_repositories_only_if_every_pool_in_it_says_so(tmp_path: Path) -> None:
    estate = load_estate([pool_in(tmp_path, "pool-a", "gpu", public=True), pool_in(tmp_path, "pool-b", "gpu")])
    (plan,), _ = plan_runner_groups(stack(gpu={"repositories": ["kernels"]}), estate, "Pulumi.prod.yaml")
    assert plan.pools == ("pool-a", "pool-b")
    assert plan.allows_public_repositories is False
    estate = load_estate([pool_in(tmp_path, "pool-c", "cpu", public=True)])
    (plan,), _ = plan_runner_groups(stack(cpu={"repositories": ["docs"]}), estate, "Pulumi.prod.yaml")
    assert plan.allows_public_repositories is True


def test_default_group_is_warned_about_and_cannot_be_declared(tmp_path: Path) -> None:
    estate = load_estate([pool_in(tmp_path, "pool-a", None)])
    plans, warnings = plan_runner_groups(stack(), estate, "Pulumi.prod.yaml")
    assert plans == []
    assert [w.key for w in warnings] == ["estate.runner_group"]
    with pytest.raises(ConfigError, match="built-in group"):
        plan_runner_groups(stack(Default={"repositories": ["x"]}), estate, "Pulumi.prod.yaml")


def test_a_declared_group_with_no_pool_is_warned_about(tmp_path: Path) -> None:
    estate = load_estate([pool_in(tmp_path, "pool-a", None)])
    _, warnings = plan_runner_groups(stack(spare={"repositories": ["x"]}), estate, "Pulumi.prod.yaml")
    assert "runner-estate:runner_groups.spare" in [w.key for w in warnings]


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ({"repositories": []}, "at least 1 item"),
        ({"repositories": ["acme/kernels"]}, "without the org"),
        ({"repositories": ["k"], "workflows": ["kernels/ci.yml"]}, "OWNER/REPO/.github/workflows/FILE.yml@REF"),
    ],
)
def test_bad_group_settings_are_refused(group: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        stack(gpu=group)
    assert message in caught.value.message
    assert caught.value.key is not None
    assert caught.value.key.startswith("runner-estate:runner_groups.gpu")


# ---- the component under mocks ----------------------------------------------------------


@pytest.fixture(scope="module")
def github_records() -> list[Registered]:
    return [r for r in run_program(PROJECT_DIR, "prod").records if r.parent == "github" or r.type.startswith("pulumi:providers:github")]


def test_org_webhook_sends_only_workflow_jobs_as_json_to_the_scaler(github_records: list[Registered]) -> None:
    (hook,) = [r for r in github_records if r.type.endswith(":OrganizationWebhook")]
    assert hook.inputs["events"] == ["workflow_job"]
    assert hook.inputs["active"] is True
    config = hook.inputs["configuration"]
    assert (config["contentType"], config["insecureSsl"]) == ("json", False)
    assert config["url"] == "https://scaler-webhook-url.lambda-url.us-east-1.on.aws/"


def test_runner_groups_are_selected_and_closed_to_public_repositories(github_records: list[Registered]) -> None:
    groups = {r.inputs["name"]: r.inputs for r in github_records if r.type.endswith(":ActionsRunnerGroup")}
    assert set(groups) == {"gpu", "gpu-h100", "gpu-b200"}
    for inputs in groups.values():
        assert inputs["visibility"] == "selected"
        assert inputs["allowsPublicRepositories"] is False
        assert inputs["selectedRepositoryIds"]
    assert groups["gpu-h100"]["restrictedToWorkflows"] is True
    assert groups["gpu-h100"]["selectedWorkflows"] == ["example-gpu-project/kernels/.github/workflows/gpu-tests.yml@refs/heads/main"]
    assert groups["gpu"]["restrictedToWorkflows"] is False


def test_github_provider_is_explicit_and_authenticates_as_the_app(github_records: list[Registered]) -> None:
    (provider,) = [r for r in github_records if r.type == "pulumi:providers:github"]
    assert provider.inputs["owner"] == "example-gpu-project"
    assert "token" not in provider.inputs
    app_auth = json.loads(provider.inputs["appAuth"])  # provider inputs travel as JSON text
    assert (app_auth["id"], app_auth["installationId"], app_auth["pemFile"]) == ("1234567", "76543210", "[secret]")


def test_managing_the_org_needs_the_installation_id(tmp_path: Path) -> None:
    data = yaml.safe_load((PROJECT_DIR / "Pulumi.prod.yaml").read_text())
    del data["config"]["runner-estate:github"]["installation_id"]
    data["config"]["runner-estate:runner_configs"] = str(EXAMPLE_CONFIGS)
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(Exception, match=r"runner-estate:github.installation_id.*required"):
        run_program(PROJECT_DIR, "prod", stack_path=path)
