"""Read runner pool files into validated pools, or fail with one line naming file, pool and key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from estate.config.buildkite_model import BuildkiteQueue, BuildkiteQueueFile
from estate.config.diagnostics import ConfigError, ConfigWarning, first_problem
from estate.config.pool import POOL_NAME_RE, Pool
from estate.config.pool_model import PoolFile
from estate.config.upstream_types import standard_json_schema
from lambda_src.core.routing import Admission, RoutingTable


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _read_yaml(path: Path) -> Any:
    file, name = str(path), path.stem
    if not POOL_NAME_RE.match(name):
        raise ConfigError(file, name, None, "pool name (the file's stem) must be 1-40 of a-z, 0-9 and '-', starting with a letter or digit")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, None, None, f"cannot read: {exc.strerror or exc}") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(file, name, None, f"{where}not valid YAML: {problem}") from exc
    return data


def load_pool(path: Path, data: Any = None, *, drop_unknown_types: bool = False) -> tuple[Pool, list[ConfigWarning]]:
    """One pool from its file; the pool's name is the file's stem. `drop_unknown_types` is for
    `simulate` (see Pool.drop_unknown_types); everywhere else an unknown type is refused."""
    file, name = str(path), path.stem
    data = _read_yaml(path) if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(file, name, None, "expected a mapping with matcherConfig and runner_config")
    try:
        spec = PoolFile.model_validate(data)
    except ValidationError as exc:
        key, message = first_problem(exc, PoolFile)
        # A model-level check reports its model's path, which may be empty.
        raise ConfigError(file, name, key or None, message) from exc
    pool = Pool(name=name, file=file, spec=spec, drop_unknown_types=drop_unknown_types)
    return pool, pool.check()


def file_schema() -> dict[str, Any]:
    """The JSON Schema of a file in runner_configs/: a pool (matcherConfig + runner_config) or a
    Buildkite queue (`buildkite_queue`), for editors and CI linters."""
    schema = TypeAdapter(PoolFile | BuildkiteQueueFile).json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "runner-estate runner_configs file: a pool or a Buildkite queue",
        **standard_json_schema(schema),
    }


def expand_paths(args: Sequence[str | Path]) -> list[Path]:
    """Files as given; a directory stands for its *.yaml and *.yml files, in name order."""
    paths: list[Path] = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            paths += sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
        else:
            paths.append(p)
    return paths


def load_queue(path: Path, data: Any) -> BuildkiteQueue:
    """A Buildkite queue file (top-level key `buildkite_queue`)."""
    try:
        spec = BuildkiteQueueFile.model_validate(data)
    except ValidationError as exc:
        key, message = first_problem(exc, BuildkiteQueueFile)
        raise ConfigError(str(path), path.stem, key or None, message) from exc
    queue = BuildkiteQueue(path.stem, str(path), spec.buildkite_queue)
    queue.check()
    return queue


@dataclass(frozen=True)
class Estate:
    pools: tuple[Pool, ...]
    warnings: tuple[ConfigWarning, ...]
    queues: tuple[BuildkiteQueue, ...] = ()

    def routing_table(self, admission: Mapping[str, Admission] | None = None) -> RoutingTable:
        """The compiled table; `admission` (pool -> its runner group's policy, see
        `estate.derive.runner_groups.pool_admission`) where the stack is known."""
        given = admission or {}
        return RoutingTable(tuple(p.route(given.get(p.name)) for p in self.pools))

    def pool(self, name: str) -> Pool:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)


def load_estate(args: Sequence[str | Path], *, drop_unknown_types: bool = False) -> Estate:
    paths = expand_paths(args)
    if not paths:
        raise ConfigError(", ".join(map(str, args)) or "(no path)", None, None, "no runner config files (*.yaml) found")
    pools: list[Pool] = []
    queues: list[BuildkiteQueue] = []
    warnings: list[ConfigWarning] = []
    seen: dict[str, str] = {}
    for path in paths:
        if not POOL_NAME_RE.match(path.stem):
            raise ConfigError(
                str(path), path.stem, None, "name (the file's stem) must be 1-40 of a-z, 0-9 and '-', starting with a letter or digit"
            )
        if path.stem in seen:
            raise ConfigError(str(path), path.stem, None, f"two pools or queues have this name: {seen[path.stem]} and {path}")
        seen[path.stem] = str(path)
        data = _read_yaml(path)
        if isinstance(data, dict) and "buildkite_queue" in data:
            queues.append(load_queue(path, data))
            continue
        pool, found = load_pool(path, data, drop_unknown_types=drop_unknown_types)
        pools.append(pool)
        warnings += found
    return Estate(tuple(pools), tuple(warnings), tuple(queues))
