"""`python -m estate prices --refresh`: this account's view of AWS prices, into the local price file.

- on-demand: the AWS Price List API (`pricing` GetProducts, served from us-east-1), EC2 Linux,
  shared tenancy, no pre-installed software, in the region itself (not its Local Zones);
- spot: EC2 DescribeSpotPriceHistory over the last `days`, Linux/UNIX, averaged over time per
  zone, then over the zones;
- capacity blocks: EC2 DescribeCapacityBlockOfferings for a one-day block of one instance of
  each GPU type sold that way: the lowest upfront fee per instance-hour on offer now.
estate/config/prices.py reads the file before what we ship. Needs AWS credentials with
pricing:GetProducts, ec2:DescribeSpotPriceHistory and ec2:DescribeCapacityBlockOfferings.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from estate.config.prices import LOCAL_FORMAT, read_local
from lambda_src.core.instance_catalog import catalog

PRICE_LIST_REGION = "us-east-1"  # the Price List API answers from us-east-1 (also eu-central-1, ap-south-1)
CAPACITY_BLOCK_HOURS = 24


class RefreshError(RuntimeError):
    pass


def _filters(region: str) -> list[dict[str, str]]:
    wanted = {
        "regionCode": region,
        "locationType": "AWS Region",
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "licenseModel": "No License required",
    }
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in wanted.items()]


def on_demand_prices(pricing: Any, region: str) -> dict[str, float]:
    """Instance type -> on-demand USD per hour, from the Price List."""
    found: dict[str, float] = {}
    for page in pricing.get_paginator("get_products").paginate(ServiceCode="AmazonEC2", Filters=_filters(region)):
        for item in page["PriceList"]:
            product = json.loads(item) if isinstance(item, str) else item
            itype = product.get("product", {}).get("attributes", {}).get("instanceType")
            if not itype:
                continue
            for term in product.get("terms", {}).get("OnDemand", {}).values():
                for dimension in term.get("priceDimensions", {}).values():
                    usd = float(dimension.get("pricePerUnit", {}).get("USD", 0) or 0)
                    if usd > 0 and dimension.get("unit", "Hrs") == "Hrs":
                        found[itype] = min(usd, found.get(itype, usd))
    return found


def time_weighted_spot(history: Iterable[Mapping[str, Any]], start: dt.datetime, end: dt.datetime) -> dict[str, float]:
    """Instance type -> mean spot price: each record holds from its timestamp to the zone's next
    one (a record from before `start` holds from `start`); zones weigh equally."""
    by_zone: dict[tuple[str, str], list[tuple[dt.datetime, float]]] = defaultdict(list)
    for record in history:
        stamp = record["Timestamp"]
        if isinstance(stamp, str):
            stamp = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        by_zone[(record["InstanceType"], record["AvailabilityZone"])].append((max(stamp, start), float(record["SpotPrice"])))
    per_type: dict[str, list[float]] = defaultdict(list)
    for (itype, _), points in by_zone.items():
        points.sort()
        # Of several records at or before `start`, the last is the one in effect at `start`.
        while len(points) > 1 and points[1][0] <= start:
            points.pop(0)
        spans = [(min(nxt[0], end) - at, price) for (at, price), nxt in zip(points, [*points[1:], (end, 0.0)], strict=True)]
        total = sum(span.total_seconds() for span, _ in spans)
        if total > 0:
            per_type[itype].append(sum(span.total_seconds() * price for span, price in spans) / total)
        else:
            per_type[itype].append(points[-1][1])
    return {itype: round(sum(means) / len(means), 6) for itype, means in per_type.items()}


def spot_prices(ec2: Any, start: dt.datetime, end: dt.datetime) -> dict[str, float]:
    history: list[Mapping[str, Any]] = []
    pages = ec2.get_paginator("describe_spot_price_history").paginate(ProductDescriptions=["Linux/UNIX"], StartTime=start, EndTime=end)
    for page in pages:
        history += page["SpotPriceHistory"]
    return time_weighted_spot(history, start, end)


def capacity_block_prices(ec2: Any) -> dict[str, float]:
    """GPU type -> the lowest upfront fee per instance-hour among one-day blocks on offer."""
    found: dict[str, float] = {}
    gpu_nodes = sorted(t.name for t in catalog().types.values() if t.gpu_count >= 8 and t.name.startswith("p"))
    for itype in gpu_nodes:
        try:
            offers = ec2.describe_capacity_block_offerings(InstanceType=itype, InstanceCount=1, CapacityDurationHours=CAPACITY_BLOCK_HOURS)[
                "CapacityBlockOfferings"
            ]
        except ClientError:
            continue  # not sold as capacity blocks in this region
        rates = [
            float(o["UpfrontFee"]) / (int(o["CapacityBlockDurationHours"]) * int(o.get("InstanceCount", 1)))
            for o in offers
            if o.get("CurrencyCode", "USD") == "USD" and o.get("UpfrontFee")
        ]
        if rates:
            found[itype] = round(min(rates), 4)
    return found


def refresh(session: Any, region: str, path: Path, *, days: float = 30.0, now: dt.datetime | None = None) -> dict[str, Any]:
    """Fetch the region's prices with `session` (a boto3.Session) and merge them into `path`."""
    if session.get_credentials() is None:
        raise RefreshError(
            "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            " (pricing:GetProducts, ec2:DescribeSpotPriceHistory, ec2:DescribeCapacityBlockOfferings)"
        )
    end = now or dt.datetime.now(dt.UTC)
    start = end - dt.timedelta(days=days)
    try:
        section: dict[str, Any] = {
            "fetched": end.isoformat(timespec="seconds"),
            "on-demand": on_demand_prices(session.client("pricing", region_name=PRICE_LIST_REGION), region),
        }
        ec2 = session.client("ec2", region_name=region)
        section["spot"] = spot_prices(ec2, start, end)
        section["spot_basis"] = f"time-weighted mean of DescribeSpotPriceHistory (Linux/UNIX) over {days:g} days, zones weighed equally"
        section["capacity-block"] = capacity_block_prices(ec2)
    except (ClientError, BotoCoreError) as exc:
        raise RefreshError(f"fetching {region} prices failed: {exc}") from exc
    if not section["on-demand"]:
        raise RefreshError(f"the Price List returned no EC2 Linux on-demand price for {region}: is the region name right?")
    data: dict[str, Any] = read_local(path) if path.is_file() else {"format": LOCAL_FORMAT, "regions": {}}
    data["regions"][region] = section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return section
