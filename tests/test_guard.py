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


# ---- only a `pulumi preview --json` document is judged (issue 17.13) ------------------------


def real_shape_preview() -> dict[str, Any]:
    """What `pulumi preview --json` prints (the engine's preview digest): steps with op, urn,
    provider, oldState/newState, diffReasons, replaceReasons, detailedDiff; then duration and
    changeSummary, and config/diagnostics when there are any."""
    table = f"{STACK}runner-estate:index:ScalerFunctions$aws:dynamodb/table:Table::scaler-ledger"
    return {
        "config": {"aws:region": "us-east-1"},
        "steps": [
            {"op": "same", "urn": f"{STACK}pulumi:pulumi:Stack::runner-estate-prod", "newState": {"type": "pulumi:pulumi:Stack"}},
            {
                "op": "replace",
                "urn": table,
                "provider": "urn:pulumi:prod::runner-estate::pulumi:providers:aws::default_6_0_0::0b2a",
                "oldState": {"urn": table, "type": "aws:dynamodb/table:Table", "id": "scaler-ledger-1"},
                "newState": {"urn": table, "type": "aws:dynamodb/table:Table"},
                "diffReasons": ["hashKey"],
                "replaceReasons": ["hashKey"],
                "detailedDiff": {"hashKey": {"kind": "update-replace", "inputDiff": True}},
            },
        ],
        "duration": 1234567890,
        "changeSummary": {"replace": 1, "same": 1},
        "diagnostics": [{"message": "warning: something\n", "severity": "warning"}],
    }


def test_the_real_shape_is_judged() -> None:
    assert guard_findings(real_shape_preview()) == ["replace scaler-ledger: the ledger (which jobs were served, which hosts are ours)"]


def test_older_clis_old_and_new_step_keys_are_accepted() -> None:
    doc = real_shape_preview()
    for step_ in doc["steps"]:
        step_["old"], step_["new"] = step_.pop("oldState", None), step_.pop("newState", None)
    assert len(guard_findings(doc)) == 1


@pytest.mark.parametrize(
    ("document", "why"),
    [
        ({}, "no steps"),
        ({"steps": []}, "no steps"),
        ([], "not a JSON object"),
        ([{"type": "aws:dynamodb/table:Table", "name": "scaler-ledger", "parent": None, "inputs": {}}], "not a JSON object"),
        ({"steps": "replace"}, "steps is not a list"),
        ({"steps": [1]}, "steps[0] is not an object"),
        ({"steps": [{"urn": f"{STACK}pulumi:pulumi:Stack::x"}]}, "steps[0].op"),
        ({"steps": [{"op": "destroy", "urn": f"{STACK}pulumi:pulumi:Stack::x"}]}, "steps[0].op 'destroy'"),
        ({"steps": [{"op": "same", "urn": "scaler-ledger"}]}, "steps[0].urn"),
        ({"steps": [{"op": "same", "urn": f"{STACK}pulumi:pulumi:Stack::x", "newState": "x"}]}, "steps[0].newState"),
        ({"steps": [{"op": "same", "urn": f"{STACK}pulumi:pulumi:Stack::x"}], "changeSummary": {"same": "1"}}, "changeSummary"),
        ({"steps": [{"op": "same", "urn": f"{STACK}pulumi:pulumi:Stack::x"}], "resources": []}, "resources"),
    ],
)
def test_anything_that_is_not_a_preview_document_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: Any, why: str
) -> None:
    path = tmp_path / "preview.json"
    path.write_text(json.dumps(document))
    assert cli.main(["guard", str(path)]) == cli.EXIT_CONFIG  # was: exit 0, "ok"
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert why in err
    assert "not a `pulumi preview --json` document" in err


def test_the_offline_preview_array_is_not_mistaken_for_a_pulumi_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["preview", "--json"]) in {0, cli.EXIT_POLICY}
    path = tmp_path / "offline.json"
    path.write_text(capsys.readouterr().out)
    assert cli.main(["guard", str(path)]) == cli.EXIT_CONFIG
    assert "not a JSON object" in capsys.readouterr().err
