"""The deploy guard over `pulumi preview --json`: what must outlive a deploy is never replaced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from estate import cli
from estate.guard import guard_findings

STACK = "urn:pulumi:prod::runner-estate::"
CB_FLEET = "runner-estate:index:CapacityBlockFleet"


def step(op: str, kind: str, name: str, parent: str = "runner-estate:index:ScalerFunctions") -> dict[str, Any]:
    return {"op": op, "urn": f"{STACK}{parent}${kind}::{name}"}


def preview(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"steps": [{"op": "same", "urn": f"{STACK}pulumi:pulumi:Stack::runner-estate-prod"}, *steps], "changeSummary": {}}


@pytest.mark.parametrize("op", ["replace", "create-replacement", "delete-replaced", "delete"])
def test_replacing_or_deleting_the_webhook_endpoint_ledger_or_a_reservation_is_refused(op: str) -> None:
    found = guard_findings(
        preview(
            step(op, "aws:lambda/functionUrl:FunctionUrl", "scaler-webhook-url"),
            step(op, "aws:dynamodb/table:Table", "scaler-ledger"),
            step(
                op,
                "aws:ec2/capacityBlockReservation:CapacityBlockReservation",
                "h100-block",
                parent="runner-estate:index:CapacityBlockFleet",
            ),
        )
    )
    assert len(found) == 3
    assert any("scaler-webhook-url" in f and "webhook endpoint" in f for f in found)


def test_updates_and_other_replacements_pass() -> None:
    assert (
        guard_findings(
            preview(
                step("update", "aws:lambda/functionUrl:FunctionUrl", "scaler-webhook-url"),
                step("update", "aws:dynamodb/table:Table", "scaler-ledger"),
                step("replace", "aws:ec2/launchTemplate:LaunchTemplate", "gpu-t4-spot-lt", parent="runner-estate:index:RunnerFleet"),
                step("create", "aws:dynamodb/table:Table", "new-ledger"),
            )
        )
        == []
    )


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad, good, broken = tmp_path / "bad.json", tmp_path / "good.json", tmp_path / "broken.json"
    bad.write_text(json.dumps(preview(step("replace", "aws:dynamodb/table:Table", "scaler-ledger"))))
    good.write_text(json.dumps(preview()))
    broken.write_text("Previewing update (prod)")
    assert cli.main(["guard", str(bad)]) == cli.EXIT_GUARDED
    assert "guarded: replace scaler-ledger: the ledger" in capsys.readouterr().err
    assert cli.main(["guard", str(good)]) == 0
    assert cli.main(["guard", str(broken)]) == cli.EXIT_CONFIG
    assert "not the JSON of `pulumi preview --json`" in capsys.readouterr().err
