"""The import rules of docs/architecture.md, checked over the real import graph: a wrong arrow fails CI.

Every `import` counts, including those inside functions (a lazy import still ships and still
couples). Each rule names which first-party packages a layer may import and whether it may
use third-party packages at all.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR

FIRST_PARTY = ("lambda_src", "estate", "components", "policy")


@dataclass(frozen=True)
class Rule:
    layer: str  # a package prefix, e.g. "lambda_src.core"
    may_import: tuple[str, ...]  # first-party prefixes it may import (its own package always)
    third_party: tuple[str, ...] | None  # allowed third-party top-level names; None: any

    def allows(self, imported: str) -> bool:
        top = imported.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__":
            return True
        if top in FIRST_PARTY:
            return any(_within(imported, prefix) for prefix in (self.layer, *self.may_import))
        return self.third_party is None or top in self.third_party


RULES = (
    Rule("lambda_src.core", (), ()),
    Rule("lambda_src.host", ("lambda_src.core", "lambda_src.aws.sigv4_client"), ()),
    Rule("lambda_src.aws", ("lambda_src.core",), ("boto3", "botocore")),
    Rule("lambda_src.github", ("lambda_src.core",), ("jwt",)),
    Rule("lambda_src.functions", ("lambda_src.core", "lambda_src.aws", "lambda_src.github"), ("boto3", "botocore")),
    Rule("lambda_src", ("lambda_src",), ()),  # the package's own __init__
    Rule("estate.config", ("lambda_src.core", "policy.rules"), None),  # the pack's pure rules, where config must agree with them
    Rule("estate.derive", ("estate.config", "lambda_src.core"), None),
    Rule("estate.sim", ("estate.config", "estate.derive", "lambda_src.core"), None),
    Rule("estate.local", ("estate.config", "estate.derive", "lambda_src"), None),
    Rule("estate.agent", ("estate.config", "lambda_src.core", "lambda_src.github", "lambda_src.host"), None),
    # `doctor`: pure checks over facts (no boto3, and only the EC2 adapter's pure Spot-role verdict)...
    Rule(
        "estate.doctor.checks",
        ("estate.config", "estate.derive", "estate.doctor.facts", "estate.doctor.quotas", "lambda_src.core", "lambda_src.aws.ec2_fleet"),
        (),
    ),
    Rule("estate.doctor.quotas", ("lambda_src.core",), ()),
    Rule("estate.doctor.facts", (), ()),
    # ...and the shell that reads them (boto3, the GitHub client) and loads the stack as `preview` does.
    Rule("estate.doctor", ("estate.config", "estate.derive", "estate.preview", "lambda_src"), None),
    # `status` and `report`: pure views over what was read, under a shell that reads a stack as `preview` does.
    Rule("estate.ops.status_view", ("lambda_src.core",), ()),
    Rule("estate.ops.report_view", ("lambda_src.core",), ()),
    Rule("estate.ops", ("estate.config", "estate.derive", "estate.preview", "lambda_src"), None),
    Rule("estate", ("estate", "lambda_src", "policy"), None),  # the CLI, preview and guard on top
    Rule("components", ("components", "estate", "lambda_src"), None),
    Rule("policy", (), None),  # Pulumi runs the pack as its own program: it stands alone
)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def rule_for(module: str) -> Rule:
    return max((r for r in RULES if _within(module, r.layer)), key=lambda r: len(r.layer))


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            # `from pkg import mod` imports pkg.mod when mod is a module: check the deeper name
            yield from ((node.lineno, f"{target}.{alias.name}") for alias in node.names)


def violations(root: Path, packages: tuple[str, ...] = ("lambda_src", "estate", "components", "policy")) -> list[str]:
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            module = module_name(path, root)
            rule = rule_for(module)
            for line, imported in imports_of(path, module):
                # `from x import name` yields x.name; a name that is not a module is judged by x
                if not rule.allows(imported) and not rule.allows(imported.rpartition(".")[0] or imported):
                    found.append(f"{path.relative_to(root)}:{line}: {module} imports {imported} ({rule.layer} may not)")
    return found


def test_every_import_follows_the_layer_rules() -> None:
    assert violations(PROJECT_DIR) == []


def test_every_module_falls_under_a_named_layer() -> None:
    """A new top-level module in lambda_src would escape the core/adapter/function/host split."""
    loose = [p.name for p in (PROJECT_DIR / "lambda_src").glob("*.py") if p.name != "__init__.py"]
    assert loose == []
    for package in ("estate", "lambda_src"):
        for init in (PROJECT_DIR / package).rglob("__init__.py"):
            doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
            assert "import" in (doc or ""), f"{init.relative_to(PROJECT_DIR)} must say what lives there and what it may import"


@pytest.mark.parametrize(
    ("module_path", "source", "expected"),
    [
        ("lambda_src/core/bad.py", "from lambda_src.aws.ledger import Ledger\n", "imports lambda_src.aws.ledger"),
        ("lambda_src/core/bad.py", "def f():\n    import boto3\n", "imports boto3"),
        ("lambda_src/host/bad.py", "from lambda_src.aws import ledger\n", "imports lambda_src.aws.ledger"),
        ("lambda_src/host/bad.py", "import yaml\n", "imports yaml"),
        ("lambda_src/aws/bad.py", "from lambda_src.functions.handlers import x\n", "imports lambda_src.functions.handlers"),
        ("estate/config/bad.py", "from estate.sim.simulator import Simulation\n", "imports estate.sim.simulator"),
        ("estate/sim/bad.py", "from components.network import Network\n", "imports components.network"),
        ("lambda_src/functions/bad.py", "from estate.config.pool import Pool\n", "imports estate.config.pool"),
        ("lambda_src/core/bad.py", "from ..aws import ledger\n", "imports lambda_src.aws.ledger"),
        ("policy/bad.py", "from estate.config.pool import Pool\n", "imports estate.config.pool"),
    ],
)
def test_a_wrong_arrow_is_caught(tmp_path: Path, module_path: str, source: str, expected: str) -> None:
    """The checker itself: each planted import breaks a rule and is reported."""
    target = tmp_path / module_path
    target.parent.mkdir(parents=True)
    target.write_text(source)
    for package in ("lambda_src", "estate", "components", "policy"):
        (tmp_path / package).mkdir(exist_ok=True)
    (found,) = violations(tmp_path)
    assert expected in found


def test_allowed_arrows_pass(tmp_path: Path) -> None:
    files = {
        "lambda_src/host/ok.py": "import json\nfrom lambda_src.aws.sigv4_client import AwsJsonClient\nfrom lambda_src.core import gpus\n",
        "lambda_src/functions/ok.py": "import boto3\nfrom lambda_src.aws.ledger import Ledger\nfrom lambda_src.github.client import C\n",
        "estate/derive/ok.py": "import yaml\nfrom estate.config.pool import Pool\nfrom lambda_src.core.planner import X\n",
    }
    for name, source in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source)
    for package in ("components", "policy"):
        (tmp_path / package).mkdir()
    assert violations(tmp_path) == []
