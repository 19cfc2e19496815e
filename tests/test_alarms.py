"""Alarms notify someone (issue 18.6): one encrypted topic, subscriptions from the stack, and
every alarm with a stable physical name the runbook uses and the topic as its action."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from estate.config.diagnostics import ConfigError
from estate.config.loader import load_estate
from estate.config.names import BLOCK_POOL_ALARMS, BUDGET_ALARMS, POOL_ALARMS
from estate.config.stack_config import parse_stack_config, stack_warnings
from estate.preview import Registered, run_program
from lambda_src.core.metric_catalog import POOL_METRICS
from tests.conftest import EXAMPLE_CONFIGS, MINIMAL_POOL, PROJECT_DIR, write_pool

POOLS = load_estate([EXAMPLE_CONFIGS]).pools
FUNCTIONS = ("webhook", "scale-up", "reconcile", "scale-down", "redeliver", "sweep", "spot", "cb-scale-up", "cb-manager")
RUNBOOK = (PROJECT_DIR / "docs" / "runbook.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def prod() -> list[Registered]:
    return run_program(PROJECT_DIR, "prod").records


def of_type(records: list[Registered], suffix: str) -> list[Registered]:
    return [r for r in records if r.type.endswith(suffix)]


def alarm_topic(records: list[Registered]) -> str:
    (topic,) = of_type(records, "sns/topic:Topic")
    return f"arn:aws:sns:us-east-1:123456789012:{topic.name}"  # the ARN the mocks give it


def test_every_alarm_notifies_the_topic_under_a_stable_physical_name(prod: list[Registered]) -> None:
    alarms = of_type(prod, ":MetricAlarm")
    assert len(alarms) >= 4 + len(FUNCTIONS) + len(POOLS)
    topic = alarm_topic(prod)
    for alarm in alarms:
        assert alarm.inputs["alarmActions"] == [topic], alarm.name
        assert alarm.inputs["okActions"] == [topic], alarm.name
        # Set explicitly (not auto-named with a random suffix) and ours.
        assert re.fullmatch(r"runner-estate-prod-[a-z0-9-]+", alarm.inputs.get("name", "")), alarm.name
        assert len(alarm.inputs["name"]) <= 255
    names = [a.inputs["name"] for a in alarms]
    assert len(set(names)) == len(names)


def test_alarm_names_are_the_ones_the_runbook_names(prod: list[Registered]) -> None:
    """Each alarm matches a row of the runbook's alarm table and each row names a real alarm."""
    rows = re.findall(r"^\| `(runner-estate-<env>-[^`]+)`", RUNBOOK, re.M)
    assert rows
    pools = "|".join(re.escape(p.name) for p in POOLS)
    functions = "|".join(FUNCTIONS)
    patterns = {
        row: re.compile(re.escape(row).replace("<env>", "prod").replace("<pool>", f"(?:{pools})").replace("<function>", f"(?:{functions})"))
        for row in rows
    }
    names = {a.inputs["name"] for a in of_type(prod, ":MetricAlarm")}
    unlisted = sorted(n for n in names if not any(p.fullmatch(n) for p in patterns.values()))
    assert unlisted == []
    stale = sorted(row for row, p in patterns.items() if not any(p.fullmatch(n) for n in names))
    assert stale == []
    expected = {f"runner-estate-prod-{p.name}-dlq" for p in POOLS} | {f"runner-estate-prod-{f}-errors" for f in FUNCTIONS}
    assert expected <= names


def test_the_topic_is_encrypted_with_a_key_cloudwatch_may_use(prod: list[Registered]) -> None:
    (topic,) = of_type(prod, "sns/topic:Topic")
    (key,) = of_type(prod, "kms/key:Key")
    assert topic.inputs["name"] == "runner-estate-prod-alarms"
    assert topic.inputs["kmsMasterKeyId"] == f"arn:aws:kms:us-east-1:123456789012:{key.name}"
    assert topic.inputs["kmsMasterKeyId"] != "alias/aws/sns"  # CloudWatch cannot publish to a topic under it
    assert key.inputs["enableKeyRotation"] is True
    statements = {s["Sid"]: s for s in json.loads(key.inputs["policy"])["Statement"]}
    cloudwatch = statements["CloudWatchAlarmsOfThisAccount"]
    assert cloudwatch["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert set(cloudwatch["Action"]) == {"kms:GenerateDataKey", "kms:Decrypt"}
    assert cloudwatch["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


def test_only_cloudwatch_and_budgets_of_this_account_may_publish(prod: list[Registered]) -> None:
    (policy,) = of_type(prod, "sns/topicPolicy:TopicPolicy")
    statements = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
    assert set(statements) == {"CloudWatchAlarmsOfThisAccount", "BudgetsOfThisAccount"}  # prod has a budget
    statement = statements["CloudWatchAlarmsOfThisAccount"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert statement["Action"] == "sns:Publish"
    assert statement["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "123456789012"},
        "ArnLike": {"aws:SourceArn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:*"},
    }
    budgets = statements["BudgetsOfThisAccount"]
    assert (budgets["Principal"], budgets["Action"]) == ({"Service": "budgets.amazonaws.com"}, "sns:Publish")
    assert budgets["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "123456789012"},
        "ArnLike": {"aws:SourceArn": "arn:aws:budgets::123456789012:*"},
    }
    (key,) = of_type(prod, "kms/key:Key")
    key_statements = {s["Sid"]: s for s in json.loads(key.inputs["policy"])["Statement"]}
    assert key_statements["BudgetsOfThisAccount"]["Principal"] == {"Service": "budgets.amazonaws.com"}
    assert set(key_statements["BudgetsOfThisAccount"]["Action"]) == {"kms:GenerateDataKey", "kms:Decrypt"}


def test_the_example_stacks_subscribe_someone(prod: list[Registered]) -> None:
    subscriptions = of_type(prod, "sns/topicSubscription:TopicSubscription")
    assert subscriptions
    assert {s.inputs["protocol"] for s in subscriptions} <= {"email", "https"}


# ---- other settings ----------------------------------------------------------------------------


def stack_path(tmp_path: Path, alarms: dict[str, Any] | None) -> Path:
    data = yaml.safe_load((PROJECT_DIR / "Pulumi.prod.yaml").read_text(encoding="utf-8"))
    data["config"]["runner-estate:runner_configs"] = str(EXAMPLE_CONFIGS)
    if alarms is None:
        data["config"].pop("runner-estate:alarms", None)
    else:
        data["config"]["runner-estate:alarms"] = alarms
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_an_existing_topic_replaces_ours(tmp_path: Path) -> None:
    arn = "arn:aws:sns:us-east-1:210987654321:paging"
    records = run_program(PROJECT_DIR, "prod", stack_path=stack_path(tmp_path, {"topic_arn": arn})).records
    assert not of_type(records, "sns/topic:Topic")
    assert not of_type(records, "kms/key:Key")
    assert not of_type(records, "sns/topicSubscription:TopicSubscription")
    alarms = of_type(records, ":MetricAlarm")
    assert alarms
    assert all(a.inputs["alarmActions"] == [arn] and a.inputs["okActions"] == [arn] for a in alarms)


def test_subscriptions_come_from_the_stack_and_a_key_may_be_given(tmp_path: Path) -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    settings = {"emails": ["oncall@example.org", "ci@example.org"], "https_endpoint": "https://events.example.org/sns", "kms_key": key}
    preview = run_program(PROJECT_DIR, "prod", stack_path=stack_path(tmp_path, settings))
    records = preview.records
    subscriptions = sorted(
        (s.inputs["protocol"], s.inputs["endpoint"]) for s in of_type(records, "sns/topicSubscription:TopicSubscription")
    )
    assert subscriptions == [("email", "ci@example.org"), ("email", "oncall@example.org"), ("https", "https://events.example.org/sns")]
    (topic,) = of_type(records, "sns/topic:Topic")
    assert topic.inputs["kmsMasterKeyId"] == key
    assert not of_type(records, "kms/key:Key")
    assert not [w for w in preview.warnings if "alarms notify nobody" in w]


def test_a_stack_without_subscriptions_still_gets_the_topic_and_a_warning(tmp_path: Path) -> None:
    preview = run_program(PROJECT_DIR, "prod", stack_path=stack_path(tmp_path, None))
    (topic,) = of_type(preview.records, "sns/topic:Topic")
    assert all(a.inputs["alarmActions"] == [alarm_topic(preview.records)] for a in of_type(preview.records, ":MetricAlarm"))
    assert topic.inputs["name"] == "runner-estate-prod-alarms"
    assert [w for w in preview.warnings if "runner-estate:alarms" in w and "notify nobody" in w]


GOOD: dict[str, Any] = {
    "environment": "prod",
    "region": "us-east-1",
    "github": {"org": "example-org", "app_id": 42},
    "secrets": {"github_app_private_key": "/x/key", "webhook_secret": "/x/hook"},
}


@pytest.mark.parametrize(
    ("alarms", "key", "message"),
    [
        ({"emails": ["not-an-address"]}, "runner-estate:alarms.emails", "not an email address"),
        ({"emails": ["a@example.org", "A@example.org"]}, "runner-estate:alarms.emails", "given twice"),
        ({"https_endpoint": "http://events.example.org/sns"}, "runner-estate:alarms.https_endpoint", "https://"),
        ({"topic_arn": "arn:aws:sqs:us-east-1:123456789012:q"}, "runner-estate:alarms.topic_arn", "not an SNS topic ARN"),
        (
            {"topic_arn": "arn:aws:sns:us-east-1:123456789012:t", "emails": ["a@example.org"]},
            "runner-estate:alarms",
            "give topic_arn alone",
        ),
        ({"topic_arn": "arn:aws:sns:eu-west-1:123456789012:t"}, "runner-estate:alarms.topic_arn", "eu-west-1"),
        ({"kms_key": "alias/aws/sns"}, "runner-estate:alarms.kms_key", "CloudWatch may not use the AWS managed key"),
        ({"kms_key": "arn:aws:kms:us-east-1:123456789012:alias/aws/sns"}, "runner-estate:alarms.kms_key", "AWS managed key"),
        ({"kms_key": "my key"}, "runner-estate:alarms.kms_key", "not a KMS key"),
        ({"pager": "yes"}, "runner-estate:alarms.pager", "unknown key"),
    ],
)
def test_bad_alarm_settings_are_refused_with_file_and_key(alarms: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_stack_config({**GOOD, "alarms": alarms}, "Pulumi.prod.yaml")
    assert (info.value.file, info.value.key) == ("Pulumi.prod.yaml", key)
    assert message in info.value.message


def test_no_subscription_and_no_budget_are_warned_about() -> None:
    assert [str(w) for w in stack_warnings(parse_stack_config(GOOD, "Pulumi.prod.yaml"), "Pulumi.prod.yaml")] == [
        "Pulumi.prod.yaml: runner-estate:alarms: alarms notify nobody:"
        " give emails, an https_endpoint or an existing topic_arn (the topic is created either way)",
        "Pulumi.prod.yaml: runner-estate:budget: no budget: set monthly_usd to get an AWS Budget and the spend-rate alarm"
        " (docs/observability.md)",
    ]
    subscribed = parse_stack_config({**GOOD, "alarms": {"emails": ["a@example.org"]}, "budget": {"monthly_usd": 100}}, "Pulumi.prod.yaml")
    assert stack_warnings(subscribed, "Pulumi.prod.yaml") == []


# ---- the estate's own metrics (issue 22.2) --------------------------------------------------


def alarm(records: list[Registered], name: str) -> Registered:
    (found,) = [a for a in of_type(records, ":MetricAlarm") if a.inputs["name"] == name]
    return found


def test_each_pool_alarms_on_waiting_jobs_failed_launches_and_its_cap_or_its_blocks(prod: list[Registered]) -> None:
    for pool in POOLS:
        blocks = pool.capacity_type == "capacity-block"
        labels = BLOCK_POOL_ALARMS if blocks else POOL_ALARMS
        for label in labels:
            found = alarm(prod, f"runner-estate-prod-{pool.name}-{label}")
            assert found.inputs["namespace"] == "runner-estate"
            assert found.inputs["dimensions"] == {"environment": "prod", "pool": pool.name}
            assert found.inputs["metricName"] in {m.name for m in POOL_METRICS}
            assert found.inputs["tags"]["runner-estate:pool"] == pool.name
        waiting = alarm(prod, f"runner-estate-prod-{pool.name}-jobs-waiting")
        assert (waiting.inputs["metricName"], waiting.inputs["threshold"]) == ("oldest_wait", 60.0 * pool.spec.estate.wait_alarm_minutes)
    assert alarm(prod, "runner-estate-prod-gpu-h100-cb-block-ending-busy").inputs["metricName"] == "block_overran"
    assert alarm(prod, "runner-estate-prod-gpu-h100-cb-faulty-gpu").inputs["metricName"] == "slots_faulty"
    assert alarm(prod, "runner-estate-prod-cpu-x64-spot-at-cap").inputs["statistic"] == "Minimum"  # held back the whole window


def test_a_pool_sets_its_own_waiting_threshold(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    write_pool(configs, "cpu", MINIMAL_POOL + "estate:\n  wait_alarm_minutes: 45\n")
    data = yaml.safe_load((PROJECT_DIR / "Pulumi.prod.yaml").read_text(encoding="utf-8"))
    data["config"]["runner-estate:runner_configs"] = str(configs)
    data["config"].pop("runner-estate:runner_groups", None)
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    records = run_program(PROJECT_DIR, "prod", stack_path=path).records
    assert alarm(records, "runner-estate-prod-cpu-jobs-waiting").inputs["threshold"] == 2700.0


@pytest.mark.parametrize("minutes", [0, 1441])
def test_a_waiting_threshold_beyond_githubs_day_is_refused(tmp_path: Path, minutes: int) -> None:
    with pytest.raises(ConfigError) as info:
        load_estate([write_pool(tmp_path, "cpu", MINIMAL_POOL + f"estate:\n  wait_alarm_minutes: {minutes}\n")])
    assert info.value.key == "estate.wait_alarm_minutes"


def test_the_spend_rate_alarm_follows_the_budget(prod: list[Registered], tmp_path: Path) -> None:
    spend = alarm(prod, "runner-estate-prod-spend-rate")
    assert spend.inputs["threshold"] == pytest.approx(2 * 25000 / 730, abs=1e-3)  # twice the budget's pace
    queries = {q["id"]: q for q in spend.inputs["metricQueries"]}
    assert queries["spend"]["expression"] == "FILL(hosts, 0) + FILL(blocks, 0)"
    assert {queries[i]["metric"]["dimensions"]["function"] for i in ("hosts", "blocks")} == {"reconcile", "cb_manager"}
    given = run_program(
        PROJECT_DIR, "prod", stack_path=stack_with(tmp_path, budget={"monthly_usd": 9000, "alarm_usd_per_hour": 40})
    ).records
    assert alarm(given, "runner-estate-prod-spend-rate").inputs["threshold"] == 40.0


def test_the_budget_counts_the_environments_tagged_costs_and_notifies_the_topic(prod: list[Registered], tmp_path: Path) -> None:
    (budget,) = of_type(prod, "budgets/budget:Budget")
    topic = alarm_topic(prod)
    assert (budget.inputs["name"], budget.inputs["limitAmount"], budget.inputs["timeUnit"]) == ("runner-estate-prod", "25000.00", "MONTHLY")
    assert budget.inputs["costFilters"] == [{"name": "TagKeyValue", "values": ["user:runner-estate:environment$prod"]}]
    kinds = sorted((n["notificationType"], n["threshold"]) for n in budget.inputs["notifications"])
    assert kinds == [("ACTUAL", 80.0), ("ACTUAL", 100.0), ("FORECASTED", 100.0)]
    assert all(n["subscriberSnsTopicArns"] == [topic] for n in budget.inputs["notifications"])
    whole = stack_with(tmp_path, budget={"monthly_usd": 100, "scope": "account", "emails": ["finance@example.org"]})
    (other,) = of_type(run_program(PROJECT_DIR, "prod", stack_path=whole).records, "budgets/budget:Budget")
    assert "costFilters" not in other.inputs
    assert all(n["subscriberEmailAddresses"] == ["finance@example.org"] for n in other.inputs["notifications"])


def test_without_a_budget_there_is_no_budget_nor_spend_alarm(tmp_path: Path) -> None:
    preview = run_program(PROJECT_DIR, "prod", stack_path=stack_with(tmp_path, budget=None))
    assert not of_type(preview.records, "budgets/budget:Budget")
    assert not [a for a in of_type(preview.records, ":MetricAlarm") if a.inputs["name"].endswith("-spend-rate")]
    (policy,) = of_type(preview.records, "sns/topicPolicy:TopicPolicy")
    assert [s["Sid"] for s in json.loads(policy.inputs["policy"])["Statement"]] == ["CloudWatchAlarmsOfThisAccount"]
    assert [w for w in preview.warnings if "runner-estate:budget" in w]


@pytest.mark.parametrize(
    ("budget", "key", "message"),
    [
        ({"monthly_usd": 0}, "runner-estate:budget.monthly_usd", "greater than 0"),
        ({}, "runner-estate:budget.monthly_usd", "required"),
        ({"monthly_usd": 10, "emails": ["x"]}, "runner-estate:budget.emails", "not an email address"),
        ({"monthly_usd": 10, "scope": "org"}, "runner-estate:budget.scope", "environment"),
        ({"monthly_usd": 10, "alarm_usd_per_hour": -1}, "runner-estate:budget.alarm_usd_per_hour", "greater than 0"),
        ({"monthly_usd": 10, "limit": 5}, "runner-estate:budget.limit", "unknown key"),
    ],
)
def test_bad_budget_settings_are_refused_with_file_and_key(budget: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_stack_config({**GOOD, "budget": budget}, "Pulumi.prod.yaml")
    assert (info.value.file, info.value.key) == ("Pulumi.prod.yaml", key)
    assert message in info.value.message


def stack_with(tmp_path: Path, **changes: Any) -> Path:
    data = yaml.safe_load((PROJECT_DIR / "Pulumi.prod.yaml").read_text(encoding="utf-8"))
    data["config"]["runner-estate:runner_configs"] = str(EXAMPLE_CONFIGS)
    for key, value in changes.items():
        if value is None:
            data["config"].pop(f"runner-estate:{key}", None)
        else:
            data["config"][f"runner-estate:{key}"] = value
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_the_runbook_has_a_section_for_each_alert() -> None:
    """Each alert on the estate's metrics has its own section, named by its alarm, saying what to do."""
    headings = re.findall(r"^### .*$", RUNBOOK, re.M)
    for label in sorted({*POOL_ALARMS, *BLOCK_POOL_ALARMS, *BUDGET_ALARMS}):
        placeholder = "<pool>-" if label not in BUDGET_ALARMS else ""
        assert any(f"`runner-estate-<env>-{placeholder}{label}`" in h for h in headings), label
    assert any("budget" in h.lower() for h in headings)
