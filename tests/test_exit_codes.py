"""The README's exit-code table, run (issue 19.2): for every documented code, the failures the
table names end the CLI with that code, and usage errors are told apart from bad configuration."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from estate import cli
from estate.preview import Preview, Registered
from policy import rules
from tests.conftest import MINIMAL_POOL, PROJECT_DIR, write_pool

README = (PROJECT_DIR / "README.md").read_text(encoding="utf-8")


def documented_codes() -> dict[int, str]:
    section = README[README.index("### Exit codes") : README.index("### Commands")]
    return {int(m[1]): m[2] for m in re.finditer(r"^\| (\d+) \| ([^|]+) \|", section, re.M)}


def project_with(tmp_path: Path, change: Callable[[dict[str, object]], None]) -> Path:
    """A copy of the example project whose prod stack `change` edits."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(PROJECT_DIR / name, project / name)
    shutil.copytree(PROJECT_DIR / "runner_configs", project / "runner_configs")
    data = yaml.safe_load((PROJECT_DIR / "Pulumi.prod.yaml").read_text(encoding="utf-8"))
    change(data["config"])
    (project / "Pulumi.prod.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    return project


# ---- one runnable case per documented failure ---------------------------------------------


def ok(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    return cli.main(["validate", "runner_configs"])


def no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    xml = tmp_path / "none.xml"
    xml.write_text("<nvidia_smi_log><driver_version>570.0</driver_version></nvidia_smi_log>", encoding="utf-8")
    return cli.main(["gpus", "--nvidia-smi-xml", str(xml)])


def bad_pool_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    path = write_pool(tmp_path, "cpu", MINIMAL_POOL.replace("runners_maximum_count: 4", "runners_maximum_count: -3"))
    return cli.main(["validate", str(path)])


def undeclared_group_through_preview(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Issue 19.2: this exited 1 through `preview` while `validate` said 2."""

    def drop_group(config: dict[str, object]) -> None:
        groups = config["runner-estate:runner_groups"]
        assert isinstance(groups, dict)
        del groups["gpu-h100"]

    return cli.main(["--project", str(project_with(tmp_path, drop_group)), "preview"])


def missing_secret_the_program_finds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Found by the program itself (a RunError in the engine): still bad configuration, 2."""

    def drop_token(config: dict[str, object]) -> None:
        del config["runner-estate:buildkite_agent_token"]

    return cli.main(["--project", str(project_with(tmp_path, drop_token)), "preview"])


def unrouted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    return cli.main(["route", "self-hosted,linux,x64,gpu,mi300x"])


def mandatory_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    template = Registered(rules.LAUNCH_TEMPLATE, "pool-lt", "pool", {"metadataOptions": {"httpTokens": "optional"}})
    monkeypatch.setattr("estate.preview.run_program", lambda *a, **k: Preview([template], []))
    return cli.main(["preview"])


def guarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    urn = "urn:pulumi:prod::runner-estate::"
    steps = [
        {"op": "same", "urn": f"{urn}pulumi:pulumi:Stack::runner-estate-prod"},
        {"op": "replace", "urn": f"{urn}runner-estate:index:ScalerFunctions$aws:dynamodb/table:Table::scaler-ledger"},
    ]
    path = tmp_path / "preview.json"
    path.write_text(json.dumps({"steps": steps, "changeSummary": {}}), encoding="utf-8")
    return cli.main(["guard", str(path)])


def unusable_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    key = tmp_path / "app.pem"
    key.write_text("not a key", encoding="utf-8")
    key.chmod(0o644)
    args = ["agent", "--org", "o", "--app-id", "1", "--app-key-file", str(key), "--run-as", "nobody"]
    return cli.main([*args, "--runner-command", "true", "--api-url", "http://127.0.0.1:9"])


def usage_empty_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    return cli.main(["route", ""])


def usage_days_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    return cli.main(["simulate", "--days", "0"])


def usage_unknown_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    return cli.main(["validate", "--nosuch", "runner_configs"])


CASES: list[tuple[int, Callable[[Path, pytest.MonkeyPatch], int]]] = [
    (0, ok),
    (1, no_gpu),
    (2, bad_pool_file),
    (2, undeclared_group_through_preview),
    (2, missing_secret_the_program_finds),
    (3, unrouted),
    (4, mandatory_policy),
    (5, guarded),
    (6, unusable_credentials),
    (64, usage_empty_labels),
    (64, usage_days_zero),
    (64, usage_unknown_option),
]


def test_every_documented_code_has_a_case_and_the_cli_names_the_same_codes() -> None:
    documented = documented_codes()
    assert set(documented) == {code for code, _ in CASES}
    constants = {cli.EXIT_CONFIG, cli.EXIT_UNROUTED, cli.EXIT_POLICY, cli.EXIT_GUARDED, cli.EXIT_CREDENTIALS, cli.EXIT_USAGE}
    assert constants | {0, 1} == set(documented)
    assert "usage" in documented[cli.EXIT_USAGE]
    assert cli.EXIT_USAGE != cli.EXIT_CONFIG


@pytest.mark.parametrize(("code", "case"), CASES, ids=[case.__name__ for _, case in CASES])
def test_each_documented_failure_ends_with_its_code(
    code: int, case: Callable[[Path, pytest.MonkeyPatch], int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert case(tmp_path, monkeypatch) == code
    err = capsys.readouterr().err
    if code not in (0, 4, 5):  # policy and guard list what they found, then one error line
        assert err.count("\n") == 1, err
        assert err.startswith("error: ")
