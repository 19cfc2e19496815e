"""What the doctor reads from AWS and GitHub, as plain data: the gatherer fills it, the checks
judge it. A fact that could not be read is an `Unread` with the service's own reason; a
fact the doctor never got to (an earlier step failed) is None."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Unread:
    """A read that failed, with why (the service's error code and message, or ours)."""

    reason: str
    code: str = ""  # the service's error code or HTTP status, when it gave one


@dataclass(frozen=True)
class Identity:
    account: str
    arn: str


@dataclass(frozen=True)
class Quota:
    code: str
    name: str  # as Service Quotas names it
    value: float
    default: bool = False  # the AWS default (the account has no applied value of its own)


@dataclass(frozen=True)
class Image:
    id: str
    name: str
    created: str  # CreationDate as EC2 gives it (ISO 8601)


@dataclass(frozen=True)
class Reservation:
    id: str
    instance_type: str
    reservation_type: str  # "capacity-block" or "default" (an On-Demand Capacity Reservation)
    state: str
    total: int
    zone: str
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class Offering:
    instance_type: str
    count: int
    hours: int
    fee_usd: float
    start: datetime
    zone: str


@dataclass(frozen=True)
class AwsFacts:
    identity: Identity | Unread
    region_opt_in: str | Unread | None = None  # the region's OptInStatus; "" when EC2 does not list it
    spot_role: bool | Unread | None = None  # whether AWSServiceRoleForEC2Spot exists
    quotas: dict[str, Quota | Unread] = field(default_factory=dict)  # by quota code
    images: dict[str, list[Image] | Unread] = field(default_factory=dict)  # by pool: images its selection matches
    image_parameters: dict[str, str | Unread] = field(default_factory=dict)  # by pool naming an SSM parameter: its value
    reservations: dict[str, Reservation | Unread] = field(default_factory=dict)  # by capacity reservation id
    offerings: dict[str, list[Offering] | Unread] = field(default_factory=dict)  # by pool that buys blocks
    webhook_url: str | Unread | None = None  # the deployed webhook function's URL; None: not deployed (or not read)

    @property
    def reachable(self) -> bool:
        return isinstance(self.identity, Identity)


@dataclass(frozen=True)
class Installation:
    id: int
    app_id: int
    permissions: dict[str, str]
    repository_selection: str  # "all" or "selected"
    suspended: bool


@dataclass(frozen=True)
class Hook:
    id: int
    url: str
    events: tuple[str, ...]
    active: bool
    content_type: str


@dataclass(frozen=True)
class Delivery:
    id: int
    at: datetime
    status_code: int
    status: str
    event: str


@dataclass(frozen=True)
class Deliveries:
    recent: tuple[Delivery, ...]  # newest first, back to a day before now (or as far as was read)
    complete: bool  # False when the reading stopped at its page limit with deliveries left in the day


@dataclass(frozen=True)
class RunnerGroup:
    id: int
    name: str
    visibility: str  # "all", "selected" or "private"
    repositories: tuple[str, ...] | None  # names of its selected repositories (visibility "selected")
    allows_public_repositories: bool


@dataclass(frozen=True)
class Repository:
    full_name: str
    private: bool


@dataclass(frozen=True)
class GithubFacts:
    installation: Installation | Unread
    token_expires: datetime | Unread | None = None
    hooks: list[Hook] | Unread | None = None
    deliveries: Deliveries | Unread | None = None  # of our hook, when there is one
    groups: dict[str, RunnerGroup] | Unread | None = None
    repositories: dict[str, Repository | Unread | None] = field(default_factory=dict)  # by name; None: GitHub answered 404
    # Every App's installation on the org by App id, ours first, each read with that App's own JWT;
    # None for an App GitHub says is not installed, Unread where its key or its installation could
    # not be read. Only a stack with github.extra_apps has it (and only once ours was read).
    apps: dict[int, Installation | Unread | None] | None = None
