"""Generate the EC2 data files we commit: the instance catalog and the on-demand price table.

    .venv/bin/python scripts/gen_ec2_data.py [--libcloud WHEEL_OR_PRICING_JSON] [--date YYYY-MM-DD]

Sources, all reached through the package registry (PyPI) with its ordinary client:
- names: botocore's EC2 service model, shape `InstanceType` (every name the EC2 API accepts);
- specs: moto's `moto/ec2/resources/instance_types.json.gz`, the output of EC2
  DescribeInstanceTypes that moto regenerates with each release (vCPUs, memory, CPU
  architecture, GPUs and their model), Apache-2.0;
- on-demand prices: apache-libcloud's `libcloud/data/pricing.json`, section `ec2_linux`, which
  libcloud scrapes from the AWS Price List (Linux, shared tenancy, on-demand), Apache-2.0.
  Without --libcloud the script runs `pip download apache-libcloud==LIBCLOUD_VERSION`.

Writes lambda_src/core/ec2_instance_types.json and estate/config/ec2_prices.json, each saying
its sources, their versions and the date. Nothing in them is typed by hand; re-run this after
bumping botocore, moto or LIBCLOUD_VERSION. Prices a user fetches from AWS itself
(`python -m estate prices --refresh`) take precedence at run time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import importlib.metadata
import json
import statistics
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import botocore.session

REPO = Path(__file__).resolve().parents[1]
CATALOG_OUT = REPO / "lambda_src" / "core" / "ec2_instance_types.json"
PRICES_OUT = REPO / "estate" / "config" / "ec2_prices.json"
LIBCLOUD_VERSION = "3.9.1"
# Regions whose prices we ship: the stacks' regions (prod us-east-1, staging us-west-2) and the
# others the dataset covers well (800+ types each). Other regions: `estate prices --refresh`.
REGIONS = ("us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1")
# DescribeInstanceTypes' NVIDIA GPU names -> the model labels of lambda_src/core/instance_catalog.GPU_MODELS.
NVIDIA_LABELS = {
    "V100": "v100",
    "T4": "t4",
    "T4g": "t4g",
    "A100": "a100",
    "A10G": "a10g",
    "L4": "l4",
    "L40S": "l40s",
    "H100": "h100",
    "H200": "h200",
    "B200": "b200",
    "B300": "b300",
    "RTX PRO 4500": "rtx-pro-4500",
    "RTX PRO Server 6000": "rtx-pro-6000",
}
ARCHITECTURES = {"x86_64": "x64", "i386": "x64", "arm64": "arm64", "x86_64_mac": "x64-mac", "arm64_mac": "arm64-mac"}
# Sizes of one family are priced in proportion to their memory (AWS's normalisation factors:
# large = 2 x medium, 2xlarge = 2 x xlarge, ...), GPU families to their GPUs. Where most of a
# family's listed sizes in a region agree on that rate (within RATE_TOLERANCE), every size is
# priced at it: this fills the sizes the dataset lacks and replaces the stray rates its scrape
# picked up from other locations (e.g. c6i.4xlarge at 0.748 beside c6i's 0.68 = 16 x 0.0425).
RATE_TOLERANCE = 0.02
# us-east-1, us-east-2 and us-west-2 share one rate for most types (the generator counts how
# many and says so in the file): a size the dataset prices in one of them is priced the same in
# the others where it is offered.
SHARED_RATE_REGIONS = ("us-east-1", "us-east-2", "us-west-2")


def _ec2_names() -> tuple[list[str], str]:
    model = botocore.session.get_session().get_service_model("ec2")
    names = sorted(model.shape_for("InstanceType").enum)
    return names, f"botocore {importlib.metadata.version('botocore')} (EC2 API {model.api_version}), shape InstanceType"


def _moto_resource(relative: str) -> Any:
    import moto

    path = Path(moto.__file__).parent / relative
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def _spec_row(name: str, spec: dict[str, Any]) -> list[Any]:
    arches = spec["ProcessorInfo"]["SupportedArchitectures"]
    arch = ARCHITECTURES["x86_64" if "x86_64" in arches else arches[0]]
    gpus, label = 0, None
    for gpu in spec.get("GpuInfo", {}).get("Gpus", []):
        if gpu["Manufacturer"] != "NVIDIA":
            continue  # AMD Radeon (g4ad) and the like: no CUDA, not a GPU for our labels
        if gpu["Name"] not in NVIDIA_LABELS:
            sys.exit(f"{name}: NVIDIA GPU {gpu['Name']!r} has no model label: add it to NVIDIA_LABELS and GPU_MODELS")
        # A fractional GPU (g6f: 1/8 of an L4) is one device to CUDA: LogicalGpuCount says 1.
        gpus += int(gpu.get("LogicalGpuCount") or gpu["Count"])
        label = NVIDIA_LABELS[gpu["Name"]]
    return [int(spec["VCpuInfo"]["DefaultVCpus"]), int(spec["MemoryInfo"]["SizeInMiB"]), arch, gpus, label]


def _libcloud_pricing(given: Path | None) -> tuple[dict[str, Any], str]:
    if given is None:
        tmp = Path(tempfile.mkdtemp(prefix="libcloud-"))
        subprocess.run(  # noqa: S603 - fixed arguments, the ordinary package client
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--dest", str(tmp), f"apache-libcloud=={LIBCLOUD_VERSION}"],
            check=True,
        )
        given = next(tmp.glob("apache_libcloud-*.whl"))
    if given.suffix == ".whl":
        with zipfile.ZipFile(given) as wheel:
            data = json.loads(wheel.read("libcloud/data/pricing.json"))
        version = given.name.split("-")[1]
    else:
        data = json.loads(given.read_text(encoding="utf-8"))
        version = "(pricing.json given directly)"
    scraped = dt.datetime.fromtimestamp(int(data["updated"]), tz=dt.UTC).date().isoformat()
    source = (
        f"apache-libcloud {version} libcloud/data/pricing.json, compute.ec2_linux: the AWS Price List's"
        f" on-demand Linux shared-tenancy rates as libcloud scraped them on {scraped}; Apache-2.0"
    )
    return data["compute"]["ec2_linux"], source


def _family(name: str) -> str:
    return name.split(".", 1)[0]


def _family_rates(
    specs: dict[str, list[Any]], listed: dict[str, dict[str, float]], offered: dict[str, set[str]]
) -> tuple[dict[str, dict[str, float]], dict[str, set[str]]]:
    """Prices per type and region, and per region the types whose price is derived (filled in
    or corrected to their family's rate) rather than listed as is."""
    by_family: dict[str, list[str]] = defaultdict(list)
    for name in specs:
        by_family[_family(name)].append(name)
    prices: dict[str, dict[str, float]] = defaultdict(dict)
    derived: dict[str, set[str]] = defaultdict(set)
    for members in by_family.values():
        unit = 3 if any(specs[m][3] for m in members) else 1  # NVIDIA GPUs, else memory
        for region in REGIONS:
            here = {m: listed[m][region] for m in members if region in listed.get(m, {})}
            for m, price in here.items():
                prices[m][region] = price
            rates = [p / specs[m][unit] for m, p in here.items() if specs[m][unit]]
            if not rates:
                continue
            rate = statistics.median(rates)
            if sum(abs(r - rate) <= RATE_TOLERANCE * rate for r in rates) * 2 <= len(rates):
                continue  # no majority rate: the listed prices stand, the missing sizes stay unpriced
            for m in members:
                if specs[m][unit] and (m in here or m in offered[region]):
                    fitted = round(rate * specs[m][unit], 5)
                    if m not in here or abs(here[m] - fitted) > RATE_TOLERANCE * fitted:
                        prices[m][region] = fitted
                        derived[region].add(m)
    return prices, derived


def _stray_evidence(specs: dict[str, list[Any]], listed: dict[str, dict[str, float]], prices: dict[str, dict[str, float]]) -> str:
    """How the listed rates that miss their family's rate lie: above it, or below."""
    above = below = 0
    for name, row in listed.items():
        for region, price in row.items():
            fitted = prices[name].get(region, price)
            if price > fitted * (1 + RATE_TOLERANCE):
                above += 1
            elif price < fitted * (1 - RATE_TOLERANCE):
                below += 1
    return f"of the listed rates off their family's rate, {above} lie above it and {below} below"


def _share_rates(prices: dict[str, dict[str, float]], derived: dict[str, set[str]], offered: dict[str, set[str]]) -> str:
    """One rate across SHARED_RATE_REGIONS: the lowest where they differ (the stray rates run
    high, see _stray_evidence), copied to those where EC2 offers the type and the dataset has no
    rate. Returns the evidence, for the file."""
    same = differ = 0
    for name, row in prices.items():
        known = [row[r] for r in SHARED_RATE_REGIONS if r in row]
        if not known:
            continue
        if len(known) >= 2:
            same, differ = (same + 1, differ) if max(known) - min(known) <= RATE_TOLERANCE * min(known) else (same, differ + 1)
        for region in SHARED_RATE_REGIONS:
            if (region in row or name in offered[region]) and row.get(region) != min(known):
                row[region] = min(known)
                derived[region].add(name)
    return (
        f"{', '.join(SHARED_RATE_REGIONS)} carry the same rate for {same} of the {same + differ} types the dataset prices"
        " in two or more of them; where they differ the lowest is taken for all, and a type priced in one is priced the same"
        " in the others where EC2 offers it"
    )


def _dump(path: Path, header: dict[str, Any], rows_key: str, rows: dict[str, Any], tail: dict[str, Any]) -> None:
    """JSON with one line per instance type, so a regeneration reads as a diff of types."""
    lines = ["{"]
    lines += [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in header.items()]
    lines.append(f"  {json.dumps(rows_key)}: {{")
    body = [f"    {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in sorted(rows.items())]
    lines.append(",\n".join(body))
    lines.append("  }" + ("," if tail else ""))
    tail_lines = [f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in tail.items()]
    if tail_lines:
        lines.append(",\n".join(tail_lines))
    lines.append("}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--libcloud", type=Path, help=f"apache-libcloud {LIBCLOUD_VERSION} wheel, or its pricing.json")
    parser.add_argument("--date", default=dt.date.today().isoformat(), help="date to stamp (default today)")
    args = parser.parse_args(argv)

    names, names_source = _ec2_names()
    described = _moto_resource("ec2/resources/instance_types.json.gz")
    moto_version = importlib.metadata.version("moto")
    specs = {n: _spec_row(n, described[n]) for n in names if n in described}
    without_specs = [n for n in names if n not in described]
    _dump(
        CATALOG_OUT,
        {
            "about": "Every EC2 instance type name the EC2 API accepts, and the specs of those EC2 describes."
            " Generated by scripts/gen_ec2_data.py: do not edit by hand.",
            "generated": args.date,
            "names_source": names_source,
            "specs_source": f"moto {moto_version} moto/ec2/resources/instance_types.json.gz"
            " (EC2 DescribeInstanceTypes output, as moto ships it); Apache-2.0",
            "columns": ["vcpus", "memory_mib", "architecture", "nvidia_gpus", "gpu_model"],
        },
        "types",
        specs,
        {"without_specs": without_specs},
    )

    pricing, price_source = _libcloud_pricing(args.libcloud)
    offered = {r: {o["InstanceType"] for o in _moto_resource(f"ec2/resources/instance_type_offerings/region/{r}.json.gz")} for r in REGIONS}
    listed: dict[str, dict[str, float]] = {}
    for name in specs:
        row = {r: float(p) for r, p in pricing.get(name, {}).items() if r in REGIONS and float(p) > 0}  # 0 means "no price"
        if row:
            listed[name] = row
    prices, derived = _family_rates(specs, listed, offered)
    stray = _stray_evidence(specs, listed, prices)
    shared = _share_rates(prices, derived, offered)
    table = {name: [row.get(r) for r in REGIONS] for name, row in prices.items() if row}
    _dump(
        PRICES_OUT,
        {
            "about": "On-demand USD per instance-hour, Linux, shared tenancy, one column per region (null: no price)."
            " Generated by scripts/gen_ec2_data.py: do not edit by hand; `python -m estate prices --refresh` fetches current prices.",
            "generated": args.date,
            "source": price_source,
            "derivation": "Listed rates except where `derived` names the type: there the size is priced at its family's"
            " rate per GiB of memory (per GPU for GPU families) that most of the family's listed sizes in that region agree on,"
            f" ({stray}), or from the other regions of the shared-rate set: {shared}.",
            "regions": list(REGIONS),
        },
        "on_demand_usd_per_hour",
        table,
        {"derived": {r: sorted(derived[r]) for r in REGIONS}},
    )
    unpriced = sorted({_family(n) for n in specs if n not in table})
    print(f"{CATALOG_OUT.relative_to(REPO)}: {len(specs)} types with specs, {len(without_specs)} named without")
    counts = ", ".join(
        f"{r} {sum(1 for v in table.values() if v[i] is not None)} ({len(derived[r])} derived)" for i, r in enumerate(REGIONS)
    )
    print(f"{PRICES_OUT.relative_to(REPO)}: {len(table)} types priced: {counts}; families without a price: {len(unpriced)}")
    print("  " + " ".join(unpriced))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
