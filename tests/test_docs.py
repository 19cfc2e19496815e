"""The config reference names every key the models accept, so docs and code do not drift."""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel

from estate.config import buildkite_model, pool_model, stack_config
from tests.conftest import PROJECT_DIR

REFERENCE = (PROJECT_DIR / "docs" / "config-reference.md").read_text(encoding="utf-8")
DOCUMENTED = set(re.findall(r"`([A-Za-z0-9_.]+)", REFERENCE))

MODELS: list[type[BaseModel]] = [
    pool_model.PoolFile,
    pool_model.MatcherConfig,
    pool_model.RunnerConfig,
    pool_model.MetadataOptions,
    pool_model.AmiSelection,
    pool_model.BlockDevice,
    pool_model.IdleWindow,
    pool_model.LogFile,
    pool_model.PoolSizeWindow,
    pool_model.EstateSettings,
    pool_model.CapacityBlockSettings,
    pool_model.HardLimits,
    pool_model.RedriveSettings,
    stack_config.StackConfig,
    stack_config.GitHubSettings,
    stack_config.SecretNames,
    stack_config.NetworkSettings,
    stack_config.RunnerGroupSettings,
    stack_config.AlarmSettings,
    stack_config.BudgetSettings,
    buildkite_model.BuildkiteQueueSettings,
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_key_is_documented(model: type[BaseModel]) -> None:
    names = {n.rsplit(".", 1)[-1] for n in DOCUMENTED} | {n.split(":")[-1] for n in re.findall(r"`runner-estate:(\w+)`", REFERENCE)}
    missing = sorted(set(model.model_fields) - names - {"region"})
    assert missing == [], f"docs/config-reference.md does not mention {missing}"


def test_every_source_path_the_docs_name_exists() -> None:
    """Docs that point at moved or deleted files mislead a newcomer: every `dir/file.py` they name is real."""
    texts = [PROJECT_DIR / "README.md", *sorted((PROJECT_DIR / "docs").glob("*.md"))]
    missing = []
    for doc in texts:
        for path in re.findall(r"\b((?:estate|lambda_src|components|policy|bench|scripts|tests)/[\w/.-]+\.(?:py|sh))", doc.read_text()):
            if not (PROJECT_DIR / path).exists():
                missing.append(f"{doc.name}: {path}")
    assert missing == []


def test_every_test_the_security_doc_cites_exists() -> None:
    """docs/security.md names the test that plays the attacker for each control: it must be real."""
    text = (PROJECT_DIR / "docs" / "security.md").read_text(encoding="utf-8")
    cited = re.findall(r"(tests/[\w/]+\.py)(?:::([\w.]+))?", text)
    assert cited
    for path, name in cited:
        source = (PROJECT_DIR / path).read_text(encoding="utf-8")
        if name and not name.startswith("..."):
            assert re.search(rf"^def {re.escape(name)}\(", source, re.M), f"{path}::{name}"
