"""The doctor's shell: read-only calls to AWS (boto3) and GitHub (the one GitHub client), turned
into the plain facts of `estate.doctor.facts`. Nothing here writes, creates or buys; every
error becomes an `Unread` with the service's own words, never an exception."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import jwt
from botocore.exceptions import BotoCoreError, ClientError

from estate.config.loader import Estate
from estate.config.names import prefix
from estate.config.stack_config import StackConfig, app_key_parameter
from estate.derive.runner_groups import RunnerGroupPlan
from estate.doctor.checks import DELIVERY_WINDOW, block_pools, image_query, our_hook, quota_plan
from estate.doctor.facts import (
    AwsFacts,
    Deliveries,
    Delivery,
    GithubFacts,
    Hook,
    Identity,
    Image,
    Installation,
    Offering,
    Quota,
    Repository,
    Reservation,
    RunnerGroup,
    Unread,
)
from lambda_src.aws.ec2_fleet import SPOT_ROLE_NAME
from lambda_src.github.client import GithubClient, GithubError

T = TypeVar("T")
DELIVERY_PAGES = 10  # at most 1,000 deliveries read back


@dataclass(frozen=True)
class AwsClients:
    """The boto3 clients the doctor reads with, all in the stack's region. `blocks` is the EC2
    client for capacity reservations and offerings: the same client in production; tests give
    it separately because moto models neither."""

    sts: Any
    iam: Any
    ec2: Any
    ssm: Any
    quotas: Any
    lambda_: Any
    blocks: Any

    @classmethod
    def for_region(cls, region: str) -> AwsClients:
        import boto3
        from botocore.config import Config

        session = boto3.Session(region_name=region)
        config = Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 3, "mode": "standard"})
        ec2 = session.client("ec2", region_name=region, config=config)

        def client(name: str) -> Any:
            return session.client(name, region_name=region, config=config)

        return cls(client("sts"), client("iam"), ec2, client("ssm"), client("service-quotas"), client("lambda"), ec2)


def _aws(call: Callable[[], T]) -> T | Unread:
    try:
        return call()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        return Unread(f"{code}: {error.get('Message', '')}".strip(": "), code)
    except BotoCoreError as exc:
        return Unread(str(exc), type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - a preflight reports the read it could not make and goes on
        return Unread(f"{type(exc).__name__}: {exc}", type(exc).__name__)


def gather_aws(clients: AwsClients, stack: StackConfig, estate: Estate) -> AwsFacts:
    identity = _aws(lambda: clients.sts.get_caller_identity())
    if isinstance(identity, Unread):
        return AwsFacts(identity, webhook_url=Unread(f"no AWS credentials ({identity.reason})", identity.code))
    region = _aws(lambda: clients.ec2.describe_regions(AllRegions=True, RegionNames=[stack.region]))
    opt_in = region if isinstance(region, Unread) else next((str(r.get("OptInStatus", "")) for r in region["Regions"]), "")
    return AwsFacts(
        identity=Identity(str(identity["Account"]), str(identity["Arn"])),
        region_opt_in=opt_in,
        spot_role=_spot_role(clients),
        quotas={need.code: read_quota(clients, need.code) for need in quota_plan(estate).needs},
        images={pool.name: _images(clients, *image_query(pool)) for pool in estate.pools},
        image_parameters={
            pool.name: _parameter(clients, pool.runner.ami_id_ssm_parameter_name)
            for pool in estate.pools
            if pool.runner.ami_id_ssm_parameter_name
        },
        reservations={rid: _reservation(clients, rid) for pool in block_pools(estate) for rid in _reservation_ids(pool.spec.estate)},
        offerings={
            pool.name: _offerings(clients, pool.instance_types[0].name, pool.spec.estate)
            for pool in block_pools(estate)
            if _buys(pool.spec.estate)
        },
        webhook_url=_webhook_url(clients, f"{prefix(stack.environment)}-webhook"),
    )


def _spot_role(clients: AwsClients) -> bool | Unread:
    found = _aws(lambda: clients.iam.get_role(RoleName=SPOT_ROLE_NAME))
    if isinstance(found, Unread):
        return False if found.code == "NoSuchEntity" else found
    return True


def read_quota(clients: AwsClients, code: str) -> Quota | Unread:
    found = _aws(lambda: clients.quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code))
    default = False
    if isinstance(found, Unread) and found.code == "NoSuchResourceException":
        # No value applied to this account: the AWS default is what holds.
        found, default = _aws(lambda: clients.quotas.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=code)), True
    if isinstance(found, Unread):
        return found
    quota = found["Quota"]
    return Quota(str(quota["QuotaCode"]), str(quota.get("QuotaName", "")), float(quota["Value"]), default)


def _images(clients: AwsClients, owners: list[str], filters: dict[str, list[str]]) -> list[Image] | Unread:
    found = _aws(lambda: clients.ec2.describe_images(Owners=owners, Filters=[{"Name": k, "Values": v} for k, v in filters.items()]))
    if isinstance(found, Unread):
        return found
    return [Image(str(i["ImageId"]), str(i.get("Name", "")), str(i.get("CreationDate", ""))) for i in found.get("Images", [])]


def _parameter(clients: AwsClients, name: str | None) -> str | Unread:
    found = _aws(lambda: clients.ssm.get_parameter(Name=name))
    return found if isinstance(found, Unread) else str(found["Parameter"]["Value"])


def _reservation_ids(settings: Any) -> list[str]:
    return list(settings.capacity_block.reservation_ids) if settings.capacity_block else []


def _buys(settings: Any) -> bool:
    block = settings.capacity_block
    return block is not None and (block.purchase or block.renew)


def _reservation(clients: AwsClients, rid: str) -> Reservation | Unread:
    # One call per id: EC2 refuses the whole call when any id is unknown.
    found = _aws(lambda: clients.blocks.describe_capacity_reservations(CapacityReservationIds=[rid]))
    if isinstance(found, Unread):
        return found
    listed = found.get("CapacityReservations", [])
    if not listed:
        return Unread(f"{rid} not listed", "InvalidCapacityReservationId.NotFound")
    r = listed[0]
    return Reservation(
        id=str(r["CapacityReservationId"]),
        instance_type=str(r.get("InstanceType", "")),
        reservation_type=str(r.get("ReservationType", "default")),
        state=str(r.get("State", "")),
        total=int(r.get("TotalInstanceCount", 0)),
        zone=str(r.get("AvailabilityZone", "")),
        start=r.get("StartDate"),
        end=r.get("EndDate"),
    )


def _offerings(clients: AwsClients, instance_type: str, settings: Any) -> list[Offering] | Unread:
    block = settings.capacity_block
    request: dict[str, Any] = {
        "InstanceType": instance_type,
        "InstanceCount": block.instance_count,
        "CapacityDurationHours": block.duration_hours,
    }
    found: list[Offering] = []
    for _ in range(5):
        page = _page(clients.blocks.describe_capacity_block_offerings, dict(request))
        if isinstance(page, Unread):
            return page
        found += [
            Offering(
                str(o["InstanceType"]),
                int(o["InstanceCount"]),
                int(o["CapacityBlockDurationHours"]),
                float(o["UpfrontFee"]),
                o["StartDate"],
                str(o.get("AvailabilityZone", "")),
            )
            for o in page.get("CapacityBlockOfferings", [])
        ]
        if not page.get("NextToken"):
            break
        request["NextToken"] = page["NextToken"]
    return found


def _page(operation: Callable[..., dict[str, Any]], request: dict[str, Any]) -> dict[str, Any] | Unread:
    return _aws(lambda: operation(**request))


def _webhook_url(clients: AwsClients, function: str) -> str | Unread | None:
    found = _aws(lambda: clients.lambda_.get_function_url_config(FunctionName=function))
    if isinstance(found, Unread):
        return None if found.code == "ResourceNotFoundException" else found
    return str(found["FunctionUrl"])


def read_app_key(clients: AwsClients, aws: AwsFacts, stack: StackConfig, key_file: Path | None) -> str | Unread:
    """The App's private key: the file given, else the copy a deploy stored in SSM."""
    if key_file is not None:
        try:
            return key_file.read_text(encoding="utf-8")
        except OSError as exc:
            return Unread(f"cannot read the App key {key_file}: {exc.strerror or exc}", "no-key")
    name = stack.secrets.github_app_private_key
    if not aws.reachable:
        return Unread(f"no App key: give --app-key-file (its deployed copy, SSM {name}, needs AWS credentials)", "no-key")
    found = _secure_string(clients, name)
    if isinstance(found, Unread):
        why = "does not exist before the first deploy" if found.code == "ParameterNotFound" else f"could not be read ({found.reason})"
        return Unread(f"no App key: give --app-key-file (SSM {name} {why})", "no-key")
    return found


def read_extra_app_keys(clients: AwsClients, aws: AwsFacts, stack: StackConfig) -> dict[int, str | Unread]:
    """Each github.extra_apps App's key, by App id, from the SecureString a deploy stored it in
    (`app_key_parameter`); one that cannot be read is an Unread naming its parameter."""
    keys: dict[int, str | Unread] = {}
    for app in stack.github.extra_apps:
        name = app_key_parameter(stack, app.app_id)
        if not aws.reachable:
            keys[app.app_id] = Unread(f"its key, SSM {name}, needs AWS credentials to be read", "no-key")
            continue
        found = _secure_string(clients, name)
        if isinstance(found, Unread):
            why = "does not exist (`pulumi up` stores it)" if found.code == "ParameterNotFound" else f"could not be read ({found.reason})"
            found = Unread(f"its key, SSM {name}, {why}", "no-key")
        keys[app.app_id] = found
    return keys


def _secure_string(clients: AwsClients, name: str) -> str | Unread:
    found = _aws(lambda: clients.ssm.get_parameter(Name=name, WithDecryption=True))
    return found if isinstance(found, Unread) else str(found["Parameter"]["Value"])


def _github(call: Callable[[], T]) -> T | Unread:
    try:
        return call()
    except GithubError as exc:
        return Unread(str(exc), str(exc.status))
    except jwt.PyJWTError as exc:  # a key that is not an RSA private key
        return Unread(f"the App key cannot sign a JWT: {exc}", "bad-key")
    except Exception as exc:  # noqa: BLE001 - an answer of another shape than GitHub's: reported, and the rest goes on
        return Unread(f"{type(exc).__name__}: {exc}", type(exc).__name__)


def gather_github(
    stack: StackConfig,
    key: str | Unread,
    api_url: str,
    webhook_url: str | Unread | None,
    plans: list[RunnerGroupPlan],
    now: datetime,
    clock: Callable[[], float] = time.time,
    *,
    extra_keys: Mapping[int, str | Unread] | None = None,
) -> GithubFacts:
    """`extra_keys`: each github.extra_apps App's key by App id (read_extra_app_keys)."""
    if isinstance(key, Unread):
        return GithubFacts(key)
    org = stack.github.org
    client = GithubClient(
        api_url, org, stack.github.app_id, lambda: key, stack.github.installation_id, clock=clock, attempts=2, max_wait_s=5
    )
    found = _github(client.installation)
    if isinstance(found, Unread):
        return GithubFacts(found)
    installation = _installation(found, stack.github.app_id)
    apps: dict[int, Installation | Unread | None] | None = None
    if stack.github.extra_apps:
        apps = {stack.github.app_id: installation}
        for extra in stack.github.extra_apps:
            apps[extra.app_id] = _app_installation(api_url, org, extra.app_id, (extra_keys or {}).get(extra.app_id), clock)
    if client.installation_id is None:
        client.installation_id = installation.id
    minted = _github(client.token_with_expiry)
    if isinstance(minted, Unread):
        return GithubFacts(installation, minted, apps=apps)
    expires = datetime.fromtimestamp(minted[1], UTC)
    hooks = _github(lambda: [_hook(h) for page in client.listing(f"/orgs/{org}/hooks?per_page=100") for h in page])
    ours = our_hook(hooks, webhook_url) if isinstance(hooks, list) else None
    deliveries = _github(lambda: _deliveries(client, org, ours.id, now)) if ours is not None else None
    repositories = {name: _repository(client, org, name) for plan in plans for name in plan.repositories}
    groups = _github(lambda: _groups(client, org, plans))
    return GithubFacts(installation, expires, hooks, deliveries, groups, repositories, apps)


def _installation(found: dict[str, Any], app_id: int) -> Installation:
    return Installation(
        id=int(found["id"]),
        app_id=int(found.get("app_id", app_id)),
        permissions={str(k): str(v) for k, v in (found.get("permissions") or {}).items()},
        repository_selection=str(found.get("repository_selection", "")),
        suspended=found.get("suspended_at") is not None,
    )


def _app_installation(
    api_url: str, org: str, app_id: int, key: str | Unread | None, clock: Callable[[], float]
) -> Installation | Unread | None:
    """A further App's installation, read with its own JWT (GithubClient.app_installations);
    None: GitHub says it is not installed on the org."""
    if key is None:
        return Unread("its key was not read", "no-key")
    if isinstance(key, Unread):
        return key
    client = GithubClient(api_url, org, app_id, lambda: key, clock=clock, attempts=2, max_wait_s=5)
    found = _github(lambda: client.app_installations()[app_id])
    return found if found is None or isinstance(found, Unread) else _installation(found, app_id)


def _hook(raw: dict[str, Any]) -> Hook:
    config = raw.get("config") or {}
    return Hook(
        int(raw["id"]),
        str(config.get("url", "")),
        tuple(raw.get("events", [])),
        bool(raw.get("active")),
        str(config.get("content_type", "")),
    )


def _deliveries(client: GithubClient, org: str, hook_id: int, now: datetime) -> Deliveries:
    """The hook's deliveries back to a day before `now`, newest first, as far as the page limit goes."""
    found: list[Delivery] = []
    pages = client.listing(f"/orgs/{org}/hooks/{hook_id}/deliveries?per_page=100", max_pages=DELIVERY_PAGES)
    for read, page in enumerate(pages, 1):
        found += [
            Delivery(
                int(d["id"]),
                _when(str(d["delivered_at"])),
                int(d.get("status_code") or 0),
                str(d.get("status", "")),
                str(d.get("event", "")),
            )
            for d in page
        ]
        if not page or found[-1].at < now - DELIVERY_WINDOW:
            break
        if read == DELIVERY_PAGES and len(page) == 100:
            return Deliveries(tuple(found), False)  # the limit cut the day short
    return Deliveries(tuple(found), True)


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _groups(client: GithubClient, org: str, plans: list[RunnerGroupPlan]) -> dict[str, RunnerGroup]:
    wanted = {plan.name for plan in plans}
    found: dict[str, RunnerGroup] = {}
    for page in client.listing(f"/orgs/{org}/actions/runner-groups?per_page=100"):
        for group in page.get("runner_groups", []):
            name = str(group["name"])
            if name not in wanted:
                continue
            visibility = str(group.get("visibility", ""))
            repositories = None
            if visibility == "selected":
                path = f"/orgs/{org}/actions/runner-groups/{group['id']}/repositories?per_page=100"
                repositories = tuple(str(r["name"]) for p in client.listing(path) for r in p.get("repositories", []))
            found[name] = RunnerGroup(int(group["id"]), name, visibility, repositories, bool(group.get("allows_public_repositories")))
    return found


def _repository(client: GithubClient, org: str, name: str) -> Repository | Unread | None:
    found = _github(lambda: client.call("GET", f"/repos/{org}/{name}"))
    if isinstance(found, Unread):
        return None if found.code == "404" else found
    return Repository(str(found.get("full_name", f"{org}/{name}")), bool(found.get("private", True)))
