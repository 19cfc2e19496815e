"""CapacityBlockFleet and the capacity-block functions under Pulumi mocks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from estate.config.loader import load_estate
from estate.preview import Registered, run_program
from tests.conftest import EXAMPLE_CONFIGS, PROJECT_DIR

BLOCK_POOLS = [p.name for p in load_estate([EXAMPLE_CONFIGS]).pools if p.capacity_type == "capacity-block"]
DETAIL_TYPES = {
    "Capacity Block Delivered",
    "Capacity Block Reservation Delivered",
    "Capacity Block Expiration Warning",
    "Capacity Block Reservation Expiration Warning",
}


@pytest.fixture(scope="module")
def prod() -> list[Registered]:
    return run_program(PROJECT_DIR, "prod").records


def children(records: list[Registered], parent: str, suffix: str) -> list[Registered]:
    return [r for r in records if r.parent == parent and r.type.endswith(suffix)]


def statements(record: Registered) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(record.inputs["policy"])["Statement"]
    return found


def test_each_capacity_block_pool_is_one_fleet_wrapping_its_nodes_launch_template(prod: list[Registered]) -> None:
    fleets = [r.name for r in prod if r.type == "runner-estate:index:CapacityBlockFleet"]
    assert sorted(fleets) == sorted(BLOCK_POOLS) == ["gpu-b200-cb", "gpu-h100-cb"]
    for pool in BLOCK_POOLS:
        (template,) = [r for r in prod if r.type.endswith(":LaunchTemplate") and r.parent == pool]
        assert template.inputs["instanceMarketOptions"] == {"marketType": "capacity-block"}
        assert template.inputs["metadataOptions"]["httpTokens"] == "required"
        (disk,) = template.inputs["blockDeviceMappings"]
        assert disk["ebs"]["encrypted"] == "true"
        assert disk["ebs"]["volumeType"] == "gp3"
        assert disk["ebs"]["volumeSize"] >= 1000


def test_node_user_data_starts_the_slot_manager_and_holds_no_secret(prod: list[Registered]) -> None:
    import base64

    (template,) = [r for r in prod if r.type.endswith(":LaunchTemplate") and r.parent == "gpu-h100-cb"]
    script = base64.b64decode(template.inputs["userData"]).decode()
    assert "python3 -m lambda_src.host.slot_manager" in script
    assert "--layout 1x4+4x1" in script
    assert "--reports-queue-url https://sqs.us-east-1.amazonaws.com/123456789012/runner-estate-prod-gpu-h100-cb-slot-reports" in script
    for marker in ("PRIVATE KEY", "ghs_", "jitconfig "):
        assert marker not in script


def test_capacity_block_and_instance_events_reach_the_manager_through_a_queue_with_a_dlq(prod: list[Registered]) -> None:
    for pool in BLOCK_POOLS:
        rules = {r.name: json.loads(r.inputs["eventPattern"]) for r in children(prod, pool, ":EventRule")}
        assert set(rules[f"{pool}-blocks-rule"]["detail-type"]) == DETAIL_TYPES  # both spellings AWS documents
        assert rules[f"{pool}-instances-rule"]["detail-type"] == ["EC2 Instance State-change Notification"]
        queues = {q.name: q for q in children(prod, pool, ":Queue")}
        redrive = json.loads(queues[f"{pool}-events"].inputs["redrivePolicy"])
        assert isinstance(redrive["maxReceiveCount"], int)
        assert all(q.inputs["sqsManagedSseEnabled"] for q in queues.values())
        (policy,) = [p for p in children(prod, pool, ":QueuePolicy") if p.name == f"{pool}-events-policy"]
        allow, deny = statements(policy)
        assert allow["Principal"] == {"Service": "events.amazonaws.com"}
        assert len(allow["Condition"]["ArnEquals"]["aws:SourceArn"]) == 2
        # Nobody else, even a principal of this account whose own policy would allow it.
        assert (deny["Effect"], deny["Principal"], deny["Condition"]) == ("Deny", "*", {"ArnNotEquals": allow["Condition"]["ArnEquals"]})


def test_a_node_may_only_report_on_its_own_pools_slot_reports_queue_never_on_the_events_queue(prod: list[Registered]) -> None:
    for pool in BLOCK_POOLS:
        (reports,) = [r for r in prod if r.name == f"{pool}-slot-reports" and r.type.endswith(":RolePolicy")]
        (only,) = statements(reports)
        assert only["Action"] == ["sqs:SendMessage"]
        assert only["Resource"].endswith(f":{pool}-slot-reports")
        (queue_policy,) = [p for p in children(prod, pool, ":QueuePolicy") if p.name == f"{pool}-slot-reports-policy"]
        (deny,) = statements(queue_policy)
        assert deny["Effect"] == "Deny"
        assert deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"].endswith(f"{pool}-role")  # the pool's node role (as mocked)


def test_capacity_block_jobs_go_to_cb_scale_up_and_the_manager_runs_every_minute(prod: list[Registered]) -> None:
    mappings = {m.name: m for m in prod if m.type.endswith(":EventSourceMapping")}
    for pool in BLOCK_POOLS:
        assert mappings[f"scaler-{pool}-scale-up"].inputs["functionName"].endswith(":scaler-cb_scale_up")
        assert mappings[f"scaler-{pool}-cb-events"].inputs["functionName"].endswith(":scaler-cb_manager")
        assert mappings[f"scaler-{pool}-slot-reports"].inputs["functionName"].endswith(":scaler-cb_manager")
    assert mappings["scaler-gpu-t4-spot-scale-up"].inputs["functionName"].endswith(":scaler-scale_up")
    (schedule,) = [r for r in prod if r.name == "scaler-cb-manager-schedule"]
    assert schedule.inputs["scheduleExpression"] == "rate(1 minute)"
    handlers = {f.inputs["name"]: f.inputs["handler"] for f in prod if f.type.endswith(":Function")}
    assert handlers["runner-estate-prod-cb-manager"] == "lambda_src.functions.handlers.cb_manager_handler"


def test_the_ordinary_scaler_may_neither_read_capacity_block_queues_nor_pass_node_roles(prod: list[Registered]) -> None:
    (policy,) = [r for r in prod if r.name == "scaler-scale_up-policy"]
    by_sid = {s["Sid"]: s for s in statements(policy)}
    assert not [q for q in by_sid["PoolQueues"]["Resource"] if "-cb-" in q]
    assert not [r for r in by_sid["PassRunnerRoles"]["Resource"] if "-cb" in r]
    assert len(by_sid["PoolQueues"]["Resource"]) == 8


def test_each_controller_may_terminate_only_the_pools_it_owns(prod: list[Registered]) -> None:
    """The scaler never ends a capacity-block node and the block manager never an ordinary host:
    an IAM condition on the instance's pool tag, not only a filter in code."""
    pools = load_estate([EXAMPLE_CONFIGS]).pools
    blocks = sorted(p.name for p in pools if p.capacity_type == "capacity-block")
    ordinary = sorted(p.name for p in pools if p.capacity_type != "capacity-block")
    for function, owned in [("scale_up", ordinary), ("reconcile", ordinary), ("scale_down", ordinary), ("cb_manager", blocks),
                            ("cb_scale_up", blocks)]:  # fmt: skip
        (policy,) = [r for r in prod if r.name == f"scaler-{function}-policy"]
        (terminate,) = [s for s in statements(policy) if "ec2:TerminateInstances" in s["Action"]]
        assert terminate["Condition"]["StringEquals"]["aws:ResourceTag/runner-estate:pool"] == owned, function


def test_the_block_manager_may_launch_and_terminate_only_as_ours_and_buys_nothing_by_default(prod: list[Registered]) -> None:
    (policy,) = [r for r in prod if r.name == "scaler-cb_manager-policy"]
    by_sid = {s["Sid"]: s for s in statements(policy)}
    assert by_sid["TerminateOurs"]["Condition"]["StringEquals"]["aws:ResourceTag/runner-estate:environment"] == "prod"
    launching = [s for sid, s in by_sid.items() if sid.startswith("LaunchIntoBlocks")]
    assert {a for s in launching for a in s["Action"]} == {"ec2:RunInstances"}
    instances = by_sid["LaunchIntoBlocksOurInstances"]["Condition"]["StringEquals"]
    assert instances["aws:RequestTag/runner-estate:pool"] == ["gpu-b200-cb", "gpu-h100-cb"]
    assert "BuyNextBlock" not in by_sid
    assert all(not a.endswith("*") for s in by_sid.values() for a in s["Action"])
    assert not [r for r in prod if r.type.endswith(":CapacityBlockReservation")]  # nothing bought without `purchase: true`


# ---- purchase: true -----------------------------------------------------------------------


def purchasing_stack(tmp_path: Path, max_price: float) -> Path:
    configs = tmp_path / "configs"
    configs.mkdir()
    text = (EXAMPLE_CONFIGS / "gpu-h100-cb.yaml").read_text(encoding="utf-8")
    text = text.replace(
        "    reservation_ids: [cr-0a1b2c3d4e5f60718]\n",
        f"    purchase: true\n    max_price_usd: {max_price}\n    duration_hours: 24\n    renew: true\n",
    )
    (configs / "gpu-h100-cb.yaml").write_text(text, encoding="utf-8")
    data = yaml.safe_load((PROJECT_DIR / "Pulumi.prod.yaml").read_text(encoding="utf-8"))
    data["config"]["runner-estate:runner_configs"] = str(configs)
    data["config"]["runner-estate:runner_groups"] = {"gpu-h100": data["config"]["runner-estate:runner_groups"]["gpu-h100"]}
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_purchase_buys_one_protected_block_and_the_preview_reports_its_cost(tmp_path: Path) -> None:
    preview = run_program(PROJECT_DIR, "prod", stack_path=purchasing_stack(tmp_path, max_price=800.0))
    (block,) = [r for r in preview.records if r.type.endswith(":CapacityBlockReservation")]
    assert block.parent == "gpu-h100-cb"
    assert block.inputs["capacityBlockOfferingId"].startswith("cbo-")
    assert block.inputs["tags"]["runner-estate:pool"] == "gpu-h100-cb"
    assert any("buys a capacity block of 1 x p5.48xlarge for 24 h at $755.14" in m for m in preview.warnings)
    (policy,) = [r for r in preview.records if r.name == "scaler-cb_manager-policy"]
    assert "BuyNextBlock" in {s["Sid"] for s in statements(policy)}  # renew: true


def test_an_offering_above_the_price_limit_is_refused_before_anything_is_bought(tmp_path: Path) -> None:
    # In a process of its own: a program that fails inside an apply leaves the engine's failed
    # futures in the process, and a later in-process preview would fail with (or print) them.
    stack = purchasing_stack(tmp_path, max_price=500.0)
    code = (
        "from pathlib import Path; from estate.preview import run_program; "
        f"run_program(Path({str(PROJECT_DIR)!r}), 'prod', stack_path=Path({str(stack)!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0
    assert "cheapest offering costs $755.14, above max_price_usd $500.00" in done.stderr
