"""The doctor's verdicts: pure functions of the stack, the pools and the facts read.

Each check is one `Finding` (`ok`, `warn` or `fail`) naming what it saw and, where something
is wrong, the fix. A fact that could not be read is a `warn` (nothing is known to be wrong,
but nothing was proven either); a check the doctor never got to is left out and the failure
that stopped it says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from estate.config.loader import Estate
from estate.config.names import prefix
from estate.config.pool import Pool
from estate.config.stack_config import NAMESPACE, StackConfig, app_key_parameter, app_key_setting
from estate.derive.runner_groups import RunnerGroupPlan
from estate.derive.spot_role import SpotRolePlan
from estate.doctor.facts import AwsFacts, GithubFacts, Hook, Identity, Installation, Quota, Reservation, Unread
from estate.doctor.quotas import QuotaClass, instance_vcpus, quota_class
from lambda_src.aws.ec2_fleet import SPOT_ROLE_NAME, spot_role_finding
from lambda_src.core.github_apps import REQUIRED_PERMISSIONS, WANTED_PERMISSIONS, installation_findings, wanted_level

Status = Literal["ok", "warn", "fail"]

_LEVELS = {"read": 1, "write": 2, "admin": 3}
_ENDED = frozenset({"expired", "cancelled", "failed", "payment-failed", "unsupported", "unavailable", "cancelling"})
DELIVERY_WINDOW = timedelta(days=1)
_AMI_ARCHITECTURE = {"x64": "x86_64", "arm64": "arm64"}  # as the launch template asks EC2 (components/runner_fleet.py)


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str
    fix: str | None = None

    def line(self) -> str:
        fix = f"; fix: {self.fix}" if self.fix else ""
        return f"{self.status} {self.check}: {self.detail}{fix}"

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix}


def render(findings: Sequence[Finding], as_json: bool) -> str:
    if as_json:
        return json.dumps([f.to_json() for f in findings], indent=1)
    return "\n".join(f.line() for f in findings)


def worst(statuses: Iterable[Status]) -> Status:
    found = set(statuses)
    return "fail" if "fail" in found else "warn" if "warn" in found else "ok"


def _unread(check: str, what: str, problem: Unread, permission: str) -> Finding:
    return Finding(check, "warn", f"could not read {what}: {problem.reason}", f"allow {permission} to the credentials doctor runs with")


# ---- AWS ----------------------------------------------------------------------------------------
AWS_LATER = "the AWS checks after it (Spot role, quotas, AMIs, capacity blocks, the deployed webhook URL) were not run"


def check_credentials(aws: AwsFacts, stack: StackConfig) -> Finding:
    if isinstance(aws.identity, Unread):
        return Finding(
            "aws-credentials",
            "fail",
            f"no usable AWS credentials for {stack.region}: {aws.identity.reason}; {AWS_LATER}",
            "give credentials for the target account (AWS_PROFILE, `aws sso login`, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
        )
    who = aws.identity
    if who.arn.endswith(":root"):
        return Finding(
            "aws-credentials",
            "warn",
            f"account {who.account} as its root user",
            "deploy with an IAM role (an admin role for the first `pulumi up`), not the root user",
        )
    return Finding("aws-credentials", "ok", f"account {who.account} as {who.arn}")


def check_region(aws: AwsFacts, stack: StackConfig) -> Finding:
    status = aws.region_opt_in
    account = aws.identity.account if isinstance(aws.identity, Identity) else "?"
    if isinstance(status, Unread):
        return _unread("region", f"whether {stack.region} is enabled", status, "ec2:DescribeRegions")
    if status == "not-opted-in" or status == "":
        return Finding(
            "region",
            "fail",
            f"{stack.region} (aws:region) is not enabled for account {account}" + ("" if status else " (EC2 does not list it)"),
            "enable the region (Account settings → AWS Regions) or set aws:region to an enabled one",
        )
    return Finding("region", "ok", f"{stack.region} ({status})")


def check_spot_role(aws: AwsFacts, plan: SpotRolePlan) -> Finding:
    if isinstance(aws.spot_role, Unread):
        return _unread("spot-role", f"whether {SPOT_ROLE_NAME} exists", aws.spot_role, "iam:GetRole")
    names = [SPOT_ROLE_NAME] if aws.spot_role else []
    verdict, detail = spot_role_finding(names, plan.spot_pools, plan.create)
    status: Status = "fail" if verdict == "fail" else "warn" if verdict == "warn" else "ok"
    fix = None
    if status == "fail":
        detail, _, fix = detail.partition(": ")
        fix = fix or None
    return Finding("spot-role", status, detail, fix)


@dataclass(frozen=True)
class PoolNeed:
    pool: str
    vcpus: int  # the most vCPUs the pool may hold in this class at once
    instances: int
    instance_type: str  # the dearest type of the class in the pool
    type_vcpus: int
    estimated: bool  # vCPUs from the size name, not the instance catalog
    failover: bool  # only when a spot launch fails over to on-demand

    def describe(self) -> str:
        how = " on failover" if self.failover else ""
        return f"{self.pool} {self.instances} x {self.instance_type} ({self.type_vcpus} vCPUs) = {self.vcpus}{how}"


@dataclass(frozen=True)
class QuotaNeed:
    market: str  # "on-demand" or "spot"
    quota: QuotaClass
    pools: tuple[PoolNeed, ...]

    @property
    def code(self) -> str:
        code = self.quota.code(self.market)
        assert code is not None
        return code

    @property
    def check(self) -> str:
        return f"quota/{self.market}/{self.quota.key}"

    @property
    def total(self) -> int:
        return sum(p.vcpus for p in self.pools)


@dataclass(frozen=True)
class QuotaPlan:
    needs: tuple[QuotaNeed, ...]
    unchecked: tuple[tuple[str, str, str], ...]  # (pool, instance type, why no quota was checked)


def _markets(pool: Pool) -> list[tuple[str, bool]]:
    """The markets a pool launches in, each with whether only failover uses it."""
    if pool.capacity_type == "spot":
        return [("spot", False)] + ([("on-demand", True)] if pool.runner.enable_on_demand_failover_for_errors else [])
    return [("on-demand", False)]


def quota_plan(estate: Estate) -> QuotaPlan:
    """Which vCPU quotas the pools draw on, and how much each pool may hold at its maximum
    (its most instances x the dearest type of the class). Capacity-block pools are left out:
    their capacity is the block they bought, checked against its reservation."""
    needs: dict[tuple[str, str], list[PoolNeed]] = {}
    classes: dict[str, QuotaClass] = {}
    unchecked: list[tuple[str, str, str]] = []
    for pool in estate.pools:
        if pool.capacity_type == "capacity-block" or pool.max_runners == 0:
            continue
        dearest: dict[str, tuple[int, str, bool]] = {}
        for name in pool.runner.instance_types:
            cls, vcpus = quota_class(name), instance_vcpus(name)
            if cls is None:
                unchecked.append((pool.name, name, "no EC2 vCPU quota class (mac types run on Dedicated Hosts)"))
                continue
            if vcpus is None:
                unchecked.append((pool.name, name, "its vCPUs are unknown here (not in the instance catalog, no size to go by)"))
                continue
            classes[cls.key] = cls
            if vcpus[0] > dearest.get(cls.key, (0, "", False))[0]:
                dearest[cls.key] = (vcpus[0], name, not vcpus[1])
        for market, failover in _markets(pool):
            for key, (vcpus_each, name, estimated) in sorted(dearest.items()):
                if classes[key].code(market) is None:
                    unchecked.append((pool.name, name, f"EC2 has no {market} quota for class {classes[key].families}"))
                    continue
                need = PoolNeed(pool.name, pool.max_runners * vcpus_each, pool.max_runners, name, vcpus_each, estimated, failover)
                needs.setdefault((market, key), []).append(need)
    plan = [QuotaNeed(market, classes[key], tuple(pools)) for (market, key), pools in sorted(needs.items())]
    return QuotaPlan(tuple(plan), tuple(unchecked))


def check_quotas(aws: AwsFacts, plan: QuotaPlan, stack: StackConfig) -> list[Finding]:
    found = []
    for need in plan.needs:
        quota = aws.quotas.get(need.code)
        if quota is None or isinstance(quota, Unread):
            problem = quota if isinstance(quota, Unread) else Unread("not read")
            found.append(
                _unread(
                    need.check,
                    f"{need.code} ({need.quota.quota_name(need.market)})",
                    problem,
                    "servicequotas:GetServiceQuota and GetAWSDefaultServiceQuota",
                )
            )
            continue
        found.append(_quota_finding(need, quota, stack.region))
    for pool, name, why in plan.unchecked:
        found.append(
            Finding(f"quota/{pool}", "warn", f"{name}: {why}; its vCPU quota is not checked", "check it by hand in Service Quotas")
        )
    return found


def _quota_finding(need: QuotaNeed, quota: Quota, region: str) -> Finding:
    expected = need.quota.quota_name(need.market)
    pools = "; ".join(p.describe() for p in need.pools)
    estimated = " (vCPUs from the size name)" if any(p.estimated for p in need.pools) else ""
    value = int(quota.value)
    request = (
        f"request {need.code} of at least {need.total} vCPUs: aws service-quotas request-service-quota-increase --service-code ec2"
        f" --quota-code {need.code} --desired-value {need.total} --region {region}"
    )
    if quota.name.lower() != expected.lower():
        return Finding(
            need.check,
            "warn",
            f"{need.code} is {quota.name!r} in Service Quotas, not {expected!r}: the doctor's quota table may be out of date; "
            f"the pools need {need.total} vCPUs ({pools})",
            f"find the quota for {need.quota.families} {need.market} instances in Service Quotas and check it by hand",
        )
    primary = [p for p in need.pools if not p.failover]
    too_big = [p for p in primary if p.vcpus > value]
    where = f"{need.code} {expected!r} is {value} vCPUs in {region}{' (the AWS default)' if quota.default else ''}"
    if too_big:
        names = ", ".join(p.pool for p in too_big)
        return Finding(need.check, "fail", f"{where}: pool {names} alone may need more ({pools}){estimated}", request)
    if need.total > value:
        return Finding(need.check, "warn", f"{where}: the pools together may need {need.total} ({pools}){estimated}", request)
    shared = "; shared with everything else the account runs there"
    return Finding(need.check, "ok", f"{where}, the pools need at most {need.total} ({pools}){estimated}{shared}")


def image_query(pool: Pool) -> tuple[list[str], dict[str, list[str]]]:
    """The owners and filters the pool's launch template resolves its AMI with (the most recent
    match wins), the architecture filter included as components/runner_fleet.py adds it."""
    ami = pool.runner.ami_selection
    filters = dict(ami.filter)
    filters.setdefault("architecture", [_AMI_ARCHITECTURE[pool.runner.runner_architecture]])
    return list(ami.owners), dict(sorted(filters.items()))


def check_images(aws: AwsFacts, estate: Estate, stack: StackConfig) -> list[Finding]:
    found = []
    for pool in estate.pools:
        check = f"ami/{pool.name}"
        images = aws.images.get(pool.name)
        if images is None:
            continue
        if isinstance(images, Unread):
            found.append(_unread(check, "the pool's AMI", images, "ec2:DescribeImages"))
            continue
        owners, filters = image_query(pool)
        query = f"owners {', '.join(owners)}, " + ", ".join(f"{k}={'|'.join(v)}" for k, v in filters.items())
        if not images:
            found.append(
                Finding(
                    check,
                    "fail",
                    f"no image in {stack.region} matches {query}: the launch template cannot be created",
                    f"correct runner_config.ami in {pool.file}, or copy the image to {stack.region}",
                )
            )
            continue
        best = max(images, key=lambda i: i.created)
        detail = f"{best.id} ({best.name}, {best.created[:10]}), the newest of {len(images)} matching {query}"
        parameter = pool.runner.ami_id_ssm_parameter_name
        if parameter is None:
            found.append(Finding(check, "ok", detail))
            continue
        held = aws.image_parameters.get(pool.name)
        says = f"holds {held}" if isinstance(held, str) else f"could not be read ({held.reason})" if isinstance(held, Unread) else "unread"
        found.append(
            Finding(
                check,
                "warn",
                f"{detail}; runner_config.ami_id_ssm_parameter_name {parameter} {says} but is not acted on yet: hosts boot {best.id}",
                f"express the image as runner_config.ami owners and filter in {pool.file}",
            )
        )
    return found


def block_pools(estate: Estate) -> list[Pool]:
    return [p for p in estate.pools if p.spec.estate.capacity_block is not None]


def check_capacity_blocks(aws: AwsFacts, estate: Estate, stack: StackConfig) -> list[Finding]:
    found = []
    for pool in block_pools(estate):
        block = pool.spec.estate.capacity_block
        assert block is not None
        if block.reservation_ids:
            found.append(_reservations_finding(aws, pool, block.purchase, stack.region))
        if block.purchase or block.renew:
            found.append(_offerings_finding(aws, pool, stack.region))
    return found


def _reservations_finding(aws: AwsFacts, pool: Pool, buys: bool, region: str) -> Finding:
    check, itype = f"capacity-block/{pool.name}", pool.instance_types[0].name
    block = pool.spec.estate.capacity_block
    assert block is not None
    verdicts: list[tuple[Status, str]] = []
    for rid in block.reservation_ids:
        seen = aws.reservations.get(rid)
        if seen is None or isinstance(seen, Unread):
            if isinstance(seen, Unread) and "NotFound" in seen.code:
                verdicts.append(("fail", f"{rid} does not exist in this account in {region}"))
            else:
                verdicts.append(("warn", f"{rid} could not be read ({seen.reason if seen else 'not read'})"))
            continue
        verdicts.append(_reservation_verdict(seen, itype))
    every_read = all(isinstance(aws.reservations.get(rid), Reservation) for rid in block.reservation_ids)
    if every_read and not buys and all(v[0] == "warn" for v in verdicts):  # every block read, and every one over
        verdicts.append(("warn", "no block is active or coming: the pool serves no job until a new reservation id is added"))
    status = worst(s for s, _ in verdicts)
    fix = None
    if status != "ok":
        fix = f"list in estate.capacity_block.reservation_ids of {pool.file} the capacity blocks of {itype} you hold in {region}"
    return Finding(check, status, "; ".join(text for _, text in verdicts), fix)


def _reservation_verdict(seen: Reservation, itype: str) -> tuple[Status, str]:
    if seen.reservation_type != "capacity-block":
        return "fail", f"{seen.id} is an On-Demand Capacity Reservation, not a capacity block (nodes launch as MarketType capacity-block)"
    if seen.instance_type != itype:
        return "fail", f"{seen.id} holds {seen.instance_type}, but the pool runs {itype}"
    when = f"{seen.start:%Y-%m-%d %H:%M} to {seen.end:%Y-%m-%d %H:%M} UTC" if seen.start and seen.end else "dates unknown"
    if seen.state in _ENDED:
        return "warn", f"{seen.id} is {seen.state} ({when})"
    return "ok", f"{seen.id} {seen.state}: {seen.total} x {seen.instance_type} in {seen.zone}, {when}"


def _offerings_finding(aws: AwsFacts, pool: Pool, region: str) -> Finding:
    check, itype = f"capacity-block-offerings/{pool.name}", pool.instance_types[0].name
    block = pool.spec.estate.capacity_block
    assert block is not None
    assert block.duration_hours is not None
    assert block.max_price_usd is not None
    # A purchase happens at `pulumi up`, which stops without an offering; a renewal only later.
    missing: Status = "fail" if block.purchase else "warn"
    why = "`pulumi up` cannot buy the block" if block.purchase else "renewal would find nothing to buy today"
    offerings = aws.offerings.get(pool.name)
    if offerings is None or isinstance(offerings, Unread):
        problem = offerings if isinstance(offerings, Unread) else Unread("not read")
        return _unread(check, "capacity block offerings", problem, "ec2:DescribeCapacityBlockOfferings")
    wanted = f"{block.instance_count} x {itype} for {block.duration_hours} h in {region}"
    if not offerings:
        return Finding(
            check, missing, f"no offering of {wanted}: {why}", "try another duration, count or region, or buy in the console later"
        )
    cheapest = min(offerings, key=lambda o: (o.fee_usd, o.start))
    when = f"{cheapest.start:%Y-%m-%d %H:%M} UTC"
    seen = f"{len(offerings)} offerings of {wanted}, the cheapest ${cheapest.fee_usd:,.2f} from {when} in {cheapest.zone}"
    if cheapest.fee_usd > block.max_price_usd:
        fix = f"raise estate.capacity_block.max_price_usd (${block.max_price_usd:,.2f}) in {pool.file}, or wait for a cheaper offering"
        return Finding(check, missing, f"{seen}, above max_price_usd ${block.max_price_usd:,.2f}: {why}", fix)
    return Finding(check, "ok", f"{seen}, within max_price_usd ${block.max_price_usd:,.2f}")


# ---- GitHub -------------------------------------------------------------------------------------
GITHUB_LATER = "the GitHub checks after it (permissions, the other Apps, token, webhook, runner groups) were not run"


def check_app(gh: GithubFacts, stack: StackConfig) -> Finding:
    github = stack.github
    found = gh.installation
    if isinstance(found, Unread):
        if found.code == "no-key":
            return Finding(
                "github-app", "fail", f"{found.reason}; {GITHUB_LATER}", "give --app-key-file PATH to the App's private key (.pem)"
            )
        if found.code == "404":
            detail = f"App {github.app_id} is not installed on {github.org}"
            fix = "install the App on the organisation (docs/deploy.md, step 1)"
        elif found.code == "401":
            detail = f"GitHub refused the App's JWT: the key is not App {github.app_id}'s, or this machine's clock is off ({found.reason})"
            fix = "check runner-estate:github.app_id and the key (App settings → Private keys)"
        else:
            detail, fix = (
                f"could not read the App's installation on {github.org}: {found.reason}",
                "check network access to " + github.api_url,
            )
        return Finding("github-app", "fail", f"{detail}; {GITHUB_LATER}", fix)
    where = f"App {github.app_id} installed on {github.org} (installation {found.id}, {found.repository_selection} repositories)"
    key = f"{NAMESPACE}:github.installation_id"
    if found.suspended:
        return Finding("github-app", "fail", f"{where} is suspended", "unsuspend it (Organization settings → GitHub Apps → Configure)")
    if github.installation_id is None:
        return Finding("github-app", "fail", f"{where}, but {key} is not set", f"set {key}: {found.id} in Pulumi.<stack>.yaml")
    if github.installation_id != found.id:
        return Finding("github-app", "fail", f"{where}, but {key} is {github.installation_id}", f"set {key}: {found.id}")
    return Finding("github-app", "ok", where)


def check_permissions(installation: Installation) -> Finding:
    held = installation.permissions
    short = []
    for name, (level, why) in REQUIRED_PERMISSIONS.items():
        if _LEVELS.get(held.get(name, ""), 0) < _LEVELS[level]:
            short.append(f"{name}: {level} ({why}; it has {held.get(name, 'none')})")
    if short:
        return Finding(
            "github-permissions",
            "fail",
            "the App lacks " + "; ".join(short),
            "App settings → Permissions (docs/deploy.md, step 1), then accept the new permissions on the installation",
        )
    lacking = [
        f"{name}: {held.get(name, 'none')}, not {level}: {lost}"
        for name, (level, lost) in WANTED_PERMISSIONS.items()
        if _LEVELS.get(held.get(name, ""), 0) < _LEVELS[level]
    ]
    if lacking:
        return Finding(
            "github-permissions",
            "warn",
            "; ".join(lacking),
            "App settings → Permissions (docs/deploy.md, step 1), then accept the new permissions on the installation",
        )
    over = sorted(f"{k}: {v}" for k, v in held.items() if wanted_level(k) is None or _LEVELS.get(v, 0) > _LEVELS[str(wanted_level(k))])
    if over:
        return Finding(
            "github-permissions",
            "warn",
            f"the App holds more than the estate uses: {', '.join(over)}",
            "remove them in App settings → Permissions: the App's key can do whatever they allow",
        )
    names = dict.fromkeys([*REQUIRED_PERMISSIONS, *WANTED_PERMISSIONS])
    held_text = ", ".join(f"{k}: {held[k]}" for k in names)
    return Finding("github-permissions", "ok", f"{held_text}, nothing else")


SEVERAL_APPS = "docs/deploy.md, *Several GitHub Apps*"


def check_apps(gh: GithubFacts, stack: StackConfig) -> Finding | None:
    """github.extra_apps: every App installed on the org as ours is (the control plane's calls go
    round them all, so one granted less fails the calls that land on it). None without extra Apps."""
    apps = gh.apps
    if apps is None:
        return None
    github = stack.github
    same = f"install App {{}} on {github.org} with App {github.app_id}'s permissions and repositories ({SEVERAL_APPS})"
    ours = f"App {github.app_id}'s settings → Permissions (docs/deploy.md, step 1), then accept them on every App's installation"
    read = {
        app_id: None if seen is None else {"permissions": seen.permissions, "repository_selection": seen.repository_selection}
        for app_id, seen in apps.items()
        if not isinstance(seen, Unread)
    }
    verdicts: list[tuple[Status, str, str | None]] = []
    for level, detail in installation_findings(read):
        named = [app_id for app_id in read if detail.startswith(f"App {app_id} ")]
        fix = None
        if named and level != "ok":
            fix = same.format(named[0]) if named[0] != github.app_id else ours
        verdicts.append((_status(level), detail, fix))
    configured = {extra.app_id: extra.installation_id for extra in github.extra_apps}
    for app_id, seen in apps.items():
        if isinstance(seen, Unread):
            store = f"`pulumi config set --secret {NAMESPACE}:{app_key_setting(app_id)} < its .pem`, then `pulumi up` ({SEVERAL_APPS})"
            fix = {
                "no-key": store,
                "401": f"GitHub refused the key in SSM {app_key_parameter(stack, app_id)} for App {app_id}: {store}",
                "bad-key": f"SSM {app_key_parameter(stack, app_id)} holds no RSA private key: {store}",
            }.get(seen.code)
            verdicts.append(("warn", f"could not read App {app_id}'s installation: {seen.reason}", fix))
        elif seen is not None and app_id in configured:
            if seen.suspended:
                verdicts.append(
                    (
                        "fail",
                        f"App {app_id}'s installation {seen.id} is suspended",
                        f"unsuspend App {app_id}'s installation (Organization settings → GitHub Apps)",
                    )
                )
            wanted = configured[app_id]
            if wanted is not None and wanted != seen.id:
                verdicts.append(
                    (
                        "fail",
                        f"App {app_id} is installation {seen.id}, but github.extra_apps gives installation_id {wanted}",
                        f"set installation_id: {seen.id} for App {app_id} in {NAMESPACE}:github.extra_apps",
                    )
                )
    status = worst(s for s, _, _ in verdicts)
    shown = [text for s, text, _ in verdicts if s != "ok"] or [text for _, text, _ in verdicts]
    fixes = [fix for s, _, fix in verdicts if s == status and fix]
    return Finding("github-apps", status, "; ".join(shown), "; ".join(dict.fromkeys(fixes)) or None)


def _status(level: str) -> Status:
    return "fail" if level == "fail" else "warn" if level == "warn" else "ok"


def check_token(gh: GithubFacts) -> Finding | None:
    minted = gh.token_expires
    if minted is None:
        return None
    if isinstance(minted, Unread):
        return Finding(
            "github-token",
            "fail",
            f"minting an installation token failed: {minted.reason}; the webhook and runner-group checks were not run",
            "check the installation id and that the installation is not suspended",
        )
    return Finding("github-token", "ok", f"minted an installation token, valid until {minted:%Y-%m-%d %H:%M} UTC")


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def our_hook(hooks: list[Hook], webhook_url: str | Unread | None) -> Hook | None:
    """The org hook pointing at the stack's deployed webhook function, if any."""
    if not isinstance(webhook_url, str):
        return None
    return next((h for h in hooks if _same_url(h.url, webhook_url)), None)


def check_webhook(gh: GithubFacts, aws: AwsFacts, stack: StackConfig) -> Finding | None:
    hooks, deployed = gh.hooks, aws.webhook_url
    if hooks is None:
        return None
    if isinstance(hooks, Unread):
        return _unread("webhook", f"the org's webhooks ({hooks.code})", hooks, "the App organization_hooks: read")
    function = f"{prefix(stack.environment)}-webhook"
    others = [h for h in hooks if "workflow_job" in h.events and not (isinstance(deployed, str) and _same_url(h.url, deployed))]
    elsewhere = "; ".join(f"hook {h.id} also sends workflow_job to {h.url}" for h in others)
    if isinstance(deployed, Unread):
        url_fix = "allow lambda:GetFunctionUrlConfig" if aws.reachable else "see aws-credentials"
        return Finding("webhook", "warn", f"could not read the URL of function {function}: {deployed.reason}", url_fix)
    if deployed is None:
        detail = "no org webhook yet: the first `pulumi up` creates it" + (f"; {elsewhere}" if elsewhere else "")
        fix = "two scalers would act on every job: remove the other hook, or keep it deliberately" if others else None
        return Finding("webhook", "warn", detail, fix)
    hook = our_hook(hooks, deployed)
    if hook is None:
        return Finding(
            "webhook",
            "fail",
            f"function {function} answers at {deployed}, but no org webhook points at it" + (f"; {elsewhere}" if elsewhere else ""),
            "`pulumi up` again: the stack manages the hook (was it deleted by hand?)",
        )
    problems = []
    if not hook.active:
        problems.append("it is inactive")
    if "workflow_job" not in hook.events:
        problems.append(f"it sends {', '.join(hook.events) or 'no event'}, not workflow_job")
    if hook.content_type != "json":
        problems.append(f"its content type is {hook.content_type}, not json")
    if problems:
        return Finding("webhook", "fail", f"hook {hook.id} points at {deployed}, but {'; '.join(problems)}", "`pulumi up` puts it back")
    tail = f"; {elsewhere}" if elsewhere else ""
    return Finding("webhook", "warn" if others else "ok", f"hook {hook.id} sends workflow_job to {deployed}, active{tail}")


def check_deliveries(gh: GithubFacts, now: datetime, stack: StackConfig) -> Finding | None:
    found = gh.deliveries
    if found is None:
        return None
    if isinstance(found, Unread):
        return _unread("webhook-deliveries", "the hook's deliveries", found, "the App organization_hooks: read")
    day = [d for d in found.recent if d.at >= now - DELIVERY_WINDOW]
    failed = [d for d in day if not 200 <= d.status_code < 300]
    some = "" if found.complete else "at least "
    if not failed:
        return Finding("webhook-deliveries", "ok", f"{some}{len(day)} deliveries in the last 24 h, none failed")
    latest = failed[0]
    codes = {d.status_code for d in failed}
    causes = []
    if 401 in codes:
        causes.append("401: the hook's secret differs from webhook_secret_value (docs/runbook.md)")
    if codes - {401}:
        causes.append(f"others: the function's log /aws/lambda/{prefix(stack.environment)}-webhook")
    return Finding(
        "webhook-deliveries",
        "warn",
        f"{some}{len(failed)} of {len(day)} deliveries in the last 24 h failed (latest {latest.at:%Y-%m-%d %H:%M} UTC: {latest.status})",
        "; ".join(causes) + "; GitHub does not retry: redeliver with POST /orgs/{org}/hooks/{hook_id}/deliveries/{delivery_id}/attempts"
        " (the reconciler also finds queued jobs it missed)",
    )


def check_runner_groups(gh: GithubFacts, plans: list[RunnerGroupPlan], deployed: bool | None, stack: StackConfig) -> list[Finding]:
    """`deployed`: whether the stack's webhook function exists (None: unknown, AWS unread)."""
    groups = gh.groups
    if groups is None:
        return []
    found = []
    for plan in plans:
        check = f"runner-group/{plan.name}"
        verdicts = [_repository_verdict(gh, plan, name, stack) for name in plan.repositories]
        if isinstance(groups, Unread):
            verdicts.append(("warn", f"could not list the org's runner groups: {groups.reason}", None))
        else:
            verdicts.append(_group_verdict(groups.get(plan.name), plan, deployed))
        status = worst(s for s, _, _ in verdicts)
        shown = [text for s, text, _ in verdicts if s != "ok"] or [text for _, text, _ in verdicts]
        fixes = [fix for s, _, fix in verdicts if s == status and fix]
        found.append(Finding(check, status, "; ".join(shown), "; ".join(dict.fromkeys(fixes)) or None))
    return found


def _repository_verdict(gh: GithubFacts, plan: RunnerGroupPlan, name: str, stack: StackConfig) -> tuple[Status, str, str | None]:
    full = f"{stack.github.org}/{name}"
    seen = gh.repositories.get(name)
    if isinstance(seen, Unread):
        return "warn", f"could not read {full}: {seen.reason}", None
    if seen is None:
        return (
            "fail",
            f"{full} does not exist, or the App's installation does not include it (`pulumi up` fails looking it up)",
            f"correct {NAMESPACE}:runner_groups.{plan.name}.repositories, or add the repository to the App's installation",
        )
    if not seen.private and not plan.allows_public_repositories:
        return (
            "warn",
            f"{full} is public: GitHub gives its jobs no runner of this group (its pools do not allow_public_repositories)",
            "make it private, or opt its pools in with estate.allow_public_repositories (docs/security.md)",
        )
    return "ok", f"{full} exists", None


def _group_verdict(group: Any, plan: RunnerGroupPlan, deployed: bool | None) -> tuple[Status, str, str | None]:
    if group is None:
        if deployed:
            return "fail", "the group is missing on GitHub, though the stack is deployed", "`pulumi up` recreates it"
        if deployed is None:
            return "warn", "not on GitHub (whether the stack is deployed is unknown: AWS was not read)", "`pulumi up` creates it"
        return "warn", "not created yet: the first `pulumi up` creates it", None
    if deployed is False:
        return (
            "warn",
            f"a group named {plan.name} already exists (id {group.id}) before this stack made it: GitHub refuses a second of that name",
            f"adopt it with `pulumi import` (type github:index/actionsRunnerGroup:ActionsRunnerGroup, id {group.id}) or delete it",
        )
    declared = sorted(r.lower() for r in plan.repositories)
    has = sorted(r.lower() for r in group.repositories or ())
    if group.visibility != "selected" or has != declared:
        return (
            "warn",
            f"GitHub's group (visibility {group.visibility}, repositories {', '.join(has) or 'none'}) differs from the stack's"
            f" ({', '.join(declared)})",
            "`pulumi up` puts the stack's back (or change runner_groups to match)",
        )
    return "ok", f"group {group.id} admits {', '.join(declared)}", None


# ---- all of them --------------------------------------------------------------------------------
def run_checks(
    stack: StackConfig,
    estate: Estate,
    groups: list[RunnerGroupPlan],
    spot: SpotRolePlan,
    aws: AwsFacts,
    gh: GithubFacts,
    now: datetime,
) -> list[Finding]:
    found = [check_credentials(aws, stack)]
    if isinstance(aws.identity, Identity):
        found += [check_region(aws, stack), check_spot_role(aws, spot)]
        found += check_quotas(aws, quota_plan(estate), stack)
        found += check_images(aws, estate, stack)
        found += check_capacity_blocks(aws, estate, stack)
    found.append(check_app(gh, stack))
    if isinstance(gh.installation, Installation):
        found.append(check_permissions(gh.installation))
    found += [
        f
        for f in (check_apps(gh, stack), check_token(gh), check_webhook(gh, aws, stack), check_deliveries(gh, now, stack))
        if f is not None
    ]
    deployed = None if isinstance(aws.webhook_url, Unread) else aws.webhook_url is not None
    found += check_runner_groups(gh, groups, deployed, stack)
    return found
