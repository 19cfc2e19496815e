"""Offline preview: run the real Pulumi program in-process under mocks and record what it
registers. No cloud account, no Pulumi CLI, no network."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import runpy
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from estate.config.diagnostics import ConfigError
from estate.config.loader import load_estate
from estate.config.prices import PriceTable
from estate.config.stack_config import (
    NAMESPACE,
    OPTIONAL_SECRET_SETTINGS,
    SECRET_SETTINGS,
    StackConfig,
    app_key_setting,
    is_app_key_setting,
    is_text_setting,
    parse_stack_config,
)
from estate.derive.stack_plan import plan_stack
from estate.project import PACKAGE_PROJECT, stack_configs
from policy.rules import StackResource

PROJECT = "runner-estate"
SECRET_PLACEHOLDER = "[secret]"  # noqa: S105 - a placeholder, not a secret


class _Collect(logging.Handler):
    """Keeps what the program logs (its config warnings) instead of printing it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.messages.append(record.getMessage())


@dataclass(frozen=True)
class Preview:
    records: list[Registered]
    warnings: list[str]  # everything the program logged as a warning, in order
    config_warnings: tuple[str, ...] = ()  # of those, the config's: what `estate validate --stack` lists

    @property
    def notices(self) -> list[str]:
        """What the program says beyond the config's warnings (e.g. what a capacity-block purchase
        costs), without the provider SDK's deprecation notices about arguments the program sets:
        those are for this program's maintainers, not about the stack."""
        config = set(self.config_warnings)
        return [w for w in self.warnings if w not in config and not _SDK_DEPRECATION.match(w)]


# pulumi_aws logs `<argument> is deprecated: <advice>` when a program sets a deprecated argument.
_SDK_DEPRECATION = re.compile(r"^[a-z_]+ is deprecated: ")


@dataclass(frozen=True)
class Registered:
    type: str
    name: str
    parent: str | None
    inputs: dict[str, Any]
    protect: bool = False  # a resource option, not an input: kept for tests, not in --json
    # For the policy pack's stack rules (and tests), not in --json: the URN, the id the mocks
    # gave, and per input the URNs of the resources it was computed from.
    urn: str = ""
    id: str | None = None
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)  # URNs of its `depends_on` (and input) resources

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "parent": self.parent, "inputs": _plain(self.inputs)}

    def stack_resource(self) -> StackResource:
        """This resource as the policy pack's stack rules see it."""
        return StackResource(self.type, self.name, self.urn, self.inputs, self.property_dependencies, self.id)


def _plain(value: Any) -> Any:
    """Inputs as JSON: assets and archives become what they hold (paths relative to the project)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, pulumi.AssetArchive):
        return {"archive": {k: _plain(v) for k, v in sorted(value.assets.items())}}
    if isinstance(value, pulumi.FileAsset | pulumi.FileArchive):
        return {"file": _relative(str(value.path))}
    if isinstance(value, pulumi.StringAsset):
        return {"text": value.text}
    return value


def _relative(path: str) -> str:
    project = str(PACKAGE_PROJECT)
    return path[len(project) + 1 :] if path.startswith(project + "/") else path


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers like a small, well-behaved AWS account."""

    def __init__(self, region: str) -> None:
        self.region = region

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if not args.custom and not args.typ.startswith("pulumi:providers:"):
            return None, {}
        service = args.typ.split(":")[1].split("/")[0]
        outputs = {
            **args.inputs,
            "arn": f"arn:aws:{service}:{self.region}:123456789012:{args.name}",
            "name": args.inputs.get("name", args.name),
            "latestVersion": 1,
        }
        # Outputs other resources read, shaped as AWS returns them.
        if args.typ == "aws:sqs/queue:Queue":
            outputs["url"] = f"https://sqs.{self.region}.amazonaws.com/123456789012/{outputs['name']}"
        if args.typ == "aws:lambda/functionUrl:FunctionUrl":
            outputs["functionUrl"] = f"https://{args.name}.lambda-url.{self.region}.on.aws/"
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        token = args.token
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":  # noqa: S105 - an invoke token
            names = [f"{self.region}{z}" for z in "abcdef"]
            return {"names": names, "zoneIds": [f"use1-az{i}" for i in range(1, 7)], "id": self.region}, []
        if token == "aws:index/getCallerIdentity:getCallerIdentity":  # noqa: S105 - an invoke token
            return {
                "accountId": "123456789012",
                "arn": "arn:aws:iam::123456789012:user/preview",
                "userId": "preview",
                "id": "123456789012",
            }, []
        if token == "github:index/getRepository:getRepository":  # noqa: S105 - an invoke token
            name = str(args.args["fullName"])
            repo_id = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
            return {
                "fullName": name,
                "name": name.split("/")[-1],
                "repoId": repo_id,
                "id": name.split("/")[-1],
                "visibility": "private",
            }, []
        if token == "aws:ec2/getAmi:getAmi":  # noqa: S105 - an invoke token
            arch = next((f["values"][0] for f in args.args.get("filters", []) if f["name"] == "architecture"), "x86_64")
            digest = hashlib.sha256(json.dumps(args.args, sort_keys=True).encode()).hexdigest()
            # Amazon's own images boot from /dev/xvda, Ubuntu's and the Deep Learning AMIs' from /dev/sda1.
            root = "/dev/xvda" if "amazon" in args.args.get("owners", []) else "/dev/sda1"
            return {"id": f"ami-{digest[:17]}", "architecture": arch, "rootDeviceName": root}, []
        if token == "aws:ssm/getParameter:getParameter":  # noqa: S105 - an invoke token
            # A public image parameter (an image's parent): an image id, as AWS's parameters hold.
            name = str(args.args["name"])
            ami = f"ami-{hashlib.sha256(name.encode()).hexdigest()[:17]}"
            return {
                "name": name,
                "type": "String",
                "value": ami,
                "insecureValue": ami,
                "id": name,
                "arn": f"arn:aws:ssm:{self.region}::parameter{name}",
            }, []
        if token == "aws:ec2/getCapacityBlockOffering:getCapacityBlockOffering":  # noqa: S105 - an invoke token
            return self._offering(args.args), []
        return {}, []

    def _offering(self, query: dict[str, Any]) -> dict[str, Any]:
        """The offering an account would be shown, priced from our table (estate/config/prices.py), so
        the offline preview says what a `purchase: true` would cost."""
        itype, count, hours = str(query["instanceType"]), int(query["instanceCount"]), int(query["capacityDurationHours"])
        fee = PriceTable().hourly(itype, "capacity-block") * count * hours
        digest = hashlib.sha256(json.dumps(query, sort_keys=True).encode()).hexdigest()
        return {
            "capacityBlockOfferingId": f"cbo-{digest[:17]}",
            "instanceType": itype,
            "instanceCount": count,
            "capacityDurationHours": hours,
            "availabilityZone": f"{self.region}a",
            "currencyCode": "USD",
            "upfrontFee": f"{fee:.2f}",
            "tenancy": "default",
            "id": f"cbo-{digest[:17]}",
        }


def _unwrap_secrets(value: Any) -> Any:
    """Inputs without the engine's secret markers. Offline, the only secrets are config
    values, which the preview has already replaced with a placeholder."""
    if rpc.is_rpc_secret(value):
        return _unwrap_secrets(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: _unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap_secrets(v) for v in value]
    return value


def _parent_name(parent_urn: str) -> str | None:
    """The parent's name from its URN; the stack itself counts as no parent."""
    if not parent_urn:
        return None
    parts = parent_urn.split("::")
    return None if parts[2].split("$")[-1] == "pulumi:pulumi:Stack" else parts[-1]


class RecordingMonitor(MockMonitor):
    """Records each registration with its parent and inputs as the engine hands them over.

    The SDK calls the monitor from worker threads, so recording happens here, under a lock,
    rather than in the mocks (whose arguments do not carry the parent)."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.records: list[Registered] = []
        self._lock = threading.Lock()

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            inputs = _unwrap_secrets(rpc.deserialize_properties(request.object))
            dependencies = {key: list(deps.urns) for key, deps in request.propertyDependencies.items()}
            record = Registered(
                request.type,
                request.name,
                _parent_name(request.parent),
                inputs,
                bool(request.protect),
                urn=response.urn,
                id=response.id or None,
                property_dependencies=dependencies,
                dependencies=list(request.dependencies),
            )
            with self._lock:
                self.records.append(record)
        return response


def stack_file(project_dir: Path, stack: str) -> Path:
    return project_dir / f"Pulumi.{stack}.yaml"


def read_stack_file(path: Path) -> tuple[dict[str, str], list[str]]:
    """The stack's config as the engine hands it to a program: `ns:key` -> string (JSON for
    structured values); secure values become a placeholder and are listed as secret."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(str(path), None, None, f"cannot read stack file: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), None, None, f"not valid YAML: {exc}") from exc
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in (data.get("config") or {}).items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            config[key] = SECRET_PLACEHOLDER
            secret_keys.append(key)
        else:
            config[key] = value if isinstance(value, str) else json.dumps(value)
    return config, secret_keys


def validate_stack_config(config: dict[str, str], path: Path, secret_keys: list[str]) -> StackConfig:
    """Check the whole stack config up front, unknown `runner-estate:` keys included; the
    secret settings must be present and encrypted (`pulumi config set --secret`)."""
    raw: dict[str, Any] = {}
    for name in SECRET_SETTINGS:
        key = f"{NAMESPACE}:{name}"
        if key not in config:
            raise ConfigError(path.name, None, key, f"required secret is missing: pulumi config set --secret {key}")
        if key not in secret_keys:
            raise ConfigError(path.name, None, key, f"must be a secret, not plain text: pulumi config set --secret {key}")
    for name in OPTIONAL_SECRET_SETTINGS:
        key = f"{NAMESPACE}:{name}"
        if key in config and key not in secret_keys:
            raise ConfigError(path.name, None, key, f"must be a secret, not plain text: pulumi config set --secret {key}")
    for key, value in config.items():
        namespace, _, field = key.partition(":")
        if namespace == NAMESPACE and (field in (*SECRET_SETTINGS, *OPTIONAL_SECRET_SETTINGS) or is_app_key_setting(field)):
            continue
        if namespace == NAMESPACE:
            raw[field] = value if is_text_setting(field) else _json_or_text(value)
        elif key == "aws:region":
            raw["region"] = value
    stack = parse_stack_config(raw, path.name)
    # Each extra App's key is a secret of its own (github.extra_apps), and only theirs are accepted.
    wanted = {f"{NAMESPACE}:{app_key_setting(a.app_id)}" for a in stack.github.extra_apps}
    for key in sorted(wanted):
        if key not in config:
            raise ConfigError(path.name, None, key, f"required secret is missing: pulumi config set --secret {key} < app.private-key.pem")
        if key not in secret_keys:
            raise ConfigError(path.name, None, key, f"must be a secret, not plain text: pulumi config set --secret {key}")
    for key in config:
        namespace, _, field = key.partition(":")
        if namespace == NAMESPACE and is_app_key_setting(field) and key not in wanted:
            raise ConfigError(path.name, None, key, "no App of github.extra_apps has this id: add it there or remove the key")
    return stack


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def run_program(project_dir: Path, stack: str, stack_path: Path | None = None) -> Preview:
    """Run `__main__.py` for `stack` under mocks: every registration in order, and the warnings.

    `stack_path` reads the stack's settings from another file (tests use this). Bad
    configuration raises ConfigError, whether the checks here or the program find it."""
    path = stack_path or stack_file(project_dir, stack)
    config, secret_keys = read_stack_file(path)
    settings = validate_stack_config(config, path, secret_keys)
    # The same checks the program makes first: their warnings are the config's.
    checked = plan_stack(settings, load_estate([stack_configs(project_dir, settings.runner_configs)]), project_dir, stack)
    mocks = RecordingMocks(settings.region)
    collected = _Collect()
    logger = logging.getLogger(f"estate.preview.{stack}")
    logger.propagate = False
    logger.handlers = [collected]
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor, logger=logger)
    pulumi.runtime.set_all_config(config, secret_keys)
    if str(project_dir) not in sys.path:
        sys.path.insert(0, str(project_dir))
    program = str(project_dir / "__main__.py")

    def run() -> None:
        runpy.run_path(program, run_name="__pulumi_program__")

    try:
        _sync_await(run_pulumi_func(run))
    except Exception as exc:
        # The program stops bad config with a RunError (one line in the engine); behind it is
        # the ConfigError, which the CLI reports as bad configuration.
        cause = _config_error(exc)
        if cause is not None:
            raise cause from None
        raise
    # Worker threads register in no fixed order; sort so the output is stable.
    records = sorted(monitor.records, key=lambda r: (r.parent or "", r.type, r.name))
    return Preview(records, collected.messages, tuple(str(w) for w in checked.warnings))


def _config_error(exc: BaseException) -> ConfigError | None:
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        if isinstance(found, ConfigError):
            return found
        seen.add(id(found))
        found = found.__cause__ or found.__context__
    return None


def render_tree(records: list[Registered], stack: str) -> str:
    """Components with counts of their resources by type, then the totals."""
    components = [r for r in records if r.type.startswith("runner-estate:")]
    by_parent: dict[str | None, Counter[str]] = {}
    for r in records:
        if not r.type.startswith("runner-estate:"):
            by_parent.setdefault(r.parent, Counter())[r.type] += 1
    lines = [f"stack {stack}: {len(records)} resources, {len(components)} components"]
    for comp in components:
        counts = by_parent.get(comp.name, Counter())
        lines.append(f"{comp.name}  ({comp.type}, {sum(counts.values())} resources)")
        lines += [f"    {t:<52} {n:>3}" for t, n in sorted(counts.items())]
    top = by_parent.get(None)
    if top:
        lines.append("(stack)")
        lines += [f"    {t:<52} {n:>3}" for t, n in sorted(top.items())]
    totals = Counter(r.type for r in records if not r.type.startswith("runner-estate:"))
    lines.append("totals by type")
    lines += [f"    {t:<52} {n:>3}" for t, n in sorted(totals.items())]
    return "\n".join(lines)
