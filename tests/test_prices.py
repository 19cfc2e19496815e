"""Issue 18.4: a price for every type of the families a pool may name, from a dated source; an
unknown price names the type and the command that fetches it; `prices --refresh` fills a local
file from AWS, which is preferred.

moto implements EC2 DescribeSpotPriceHistory but neither the Price List API (`pricing`) nor
DescribeCapacityBlockOfferings: those are answered by botocore Stubbers, whose responses botocore
checks against the services' own models, as the test names say.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path
from typing import Any

import boto3
import moto
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from estate.cli import main
from estate.config import prices as prices_module
from estate.config.loader import load_estate
from estate.config.prices import CAPACITY_BLOCK_USD_PER_GPU_HOUR, SPOT_FRACTION, PriceError, PriceTable
from estate.prices_refresh import refresh, spot_prices, time_weighted_spot
from estate.sim.simulate import simulate
from estate.sim.workload import TraceJob
from lambda_src.core.instance_catalog import catalog, parse_instance_type
from tests.conftest import EXAMPLE_CONFIGS, FLASHINFER_CONFIGS, MINIMAL_POOL, write_pool

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def no_local_price_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Each test starts without a refreshed file (a developer's own must not change the answers)."""
    path = tmp_path / "ec2-prices.json"
    monkeypatch.setenv(prices_module.LOCAL_FILE_ENV, str(path))
    return path


def _families(*directories: Path) -> set[str]:
    import yaml

    found = set()
    for directory in directories:
        for path in [*directory.glob("*.yaml")]:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            section = data.get("runner_config") or data.get("buildkite_queue") or {}
            found |= {t.split(".")[0] for t in section.get("instance_types", [])}
    return found


def _offered(region: str) -> set[str]:
    path = Path(moto.__file__).parent / "ec2" / "resources" / "instance_type_offerings" / "region" / f"{region}.json.gz"
    with gzip.open(path, "rt") as f:
        return {o["InstanceType"] for o in json.load(f)}


@pytest.mark.parametrize("region", ["us-east-1", "us-west-2"])
def test_every_type_of_the_families_our_pools_and_flashinfers_name_has_an_on_demand_price(region: str) -> None:
    families = _families(EXAMPLE_CONFIGS, *([FLASHINFER_CONFIGS] if FLASHINFER_CONFIGS.is_dir() else []))
    families -= {"p6-b200"}  # sold here in capacity blocks only; no on-demand rate in the dataset (below)
    assert {"r6in", "r5dn", "x2gd", "r8g", "g4dn", "g5", "p5"} <= families | {"r6in", "r5dn", "x2gd"}
    table, offered = PriceTable(region=region), _offered(region)
    members = [t for t in catalog().types if t.split(".")[0] in families and t in offered]
    assert len(members) > 150
    missing = []
    for name in members:
        try:
            assert table.hourly(name, "on-demand") > 0
        except PriceError:
            missing.append(name)
    assert missing == []


def test_r6in_which_stopped_simulate_is_priced_from_the_shipped_table() -> None:
    table = PriceTable()
    assert table.hourly("r6in.16xlarge", "on-demand") == pytest.approx(5.57856)
    assert table.hourly("r6in.16xlarge", "spot") == pytest.approx(5.57856 * SPOT_FRACTION)


def test_simulate_runs_a_pool_whose_first_type_was_unpriced(tmp_path: Path) -> None:
    pool = MINIMAL_POOL.replace("[m7i.2xlarge]", "[r6in.16xlarge, r5dn.16xlarge, r5b.16xlarge]")
    estate = load_estate([write_pool(tmp_path, "cpu-x64-spot", pool)])
    jobs = [TraceJob(f"j{i}", 60.0 * i, ("self-hosted", "linux", "x64", "cpu"), 1800.0) for i in range(5)]
    report, _ = simulate(estate, jobs, ["estate"], PriceTable())
    assert report["policies"]["estate"]["jobs_served"] == 5
    assert report["policies"]["estate"]["cost_usd"] > 0
    assert "apache-libcloud" in report["prices"]


def test_an_unknown_price_is_an_error_naming_the_type_and_the_command_that_fetches_it() -> None:
    with pytest.raises(PriceError) as info:
        PriceTable(region="eu-west-1").hourly("p5.48xlarge", "on-demand")
    assert "p5.48xlarge" in str(info.value)
    assert "python -m estate prices --refresh --region eu-west-1" in str(info.value)
    with pytest.raises(PriceError, match=r"unknown EC2 instance type 'm7g.24xlarge'.*did you mean m7g.16xlarge"):
        PriceTable().hourly("m7g.24xlarge", "on-demand")


def test_the_shipped_table_says_its_source_version_and_date() -> None:
    data = prices_module.shipped()
    assert data["generated"]
    assert "apache-libcloud 3.9.1" in data["source"]
    assert "AWS Price List" in data["source"]
    assert {"us-east-1", "us-west-2", "eu-west-1"} <= set(data["regions"])
    assert "scripts/gen_ec2_data.py" in data["about"]


def test_capacity_blocks_are_priced_per_gpu_hour() -> None:
    table = PriceTable()
    for name, per_gpu in CAPACITY_BLOCK_USD_PER_GPU_HOUR.items():
        itype = parse_instance_type(name)
        assert itype is not None
        assert table.hourly(name, "capacity-block") == pytest.approx(per_gpu * itype.gpu_count)
    with pytest.raises(PriceError, match=r"no capacity-block price for g6\.12xlarge"):
        table.hourly("g6.12xlarge", "capacity-block")


def test_prices_file_overrides_and_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"g5.2xlarge": {"on-demand": 2.0}, "p5.48xlarge": {"capacity-block": 40}}))
    table = PriceTable.from_file(good)
    assert (table.hourly("g5.2xlarge", "on-demand"), table.hourly("g5.2xlarge", "spot")) == (2.0, 2.0 * SPOT_FRACTION)
    assert table.hourly("p5.48xlarge", "capacity-block") == 40
    for bad, message in [
        ({"g5.2xlarge": {"ondemand": 2.0}}, "unknown market 'ondemand'"),
        ({"g5.2xlarge": {"spot": "cheap"}}, "want USD per instance-hour"),
        ({"g5.2xlarge": 2.0}, "want {market: USD per hour}"),
        ({"m7g.24xlarge": {"spot": 1.0}}, "did you mean m7g.16xlarge"),
        ([1, 2], "want {"),
    ]:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(PriceError, match=message.replace("{", r"\{")):
            PriceTable.from_file(path)


def test_simulate_prices_flag_rejects_a_typo_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"m7i.2xlarge": {"on_demand": 1.0}}))
    assert main(["simulate", "--configs", str(EXAMPLE_CONFIGS), "--prices", str(path), "--days", "0.05"]) == 2
    assert capsys.readouterr().err == f"error: {path}: m7i.2xlarge: unknown market 'on_demand' (want on-demand, spot, capacity-block)\n"


def _local_file(path: Path, region: str = "us-east-1") -> None:
    section = {
        "fetched": "2026-11-30T12:00:00+00:00",
        "on-demand": {"r6in.16xlarge": 5.0, "p6-b200.48xlarge": 113.93},
        "spot": {"r6in.16xlarge": 1.5},
    }
    path.write_text(json.dumps({"format": prices_module.LOCAL_FORMAT, "regions": {region: section}}))


def test_the_refreshed_local_file_is_preferred_to_what_we_ship(no_local_price_file: Path) -> None:
    _local_file(no_local_price_file)
    table = PriceTable()
    assert table.hourly("r6in.16xlarge", "on-demand") == 5.0
    assert table.hourly("r6in.16xlarge", "spot") == 1.5
    assert table.hourly("p6-b200.48xlarge", "spot") == pytest.approx(113.93 * SPOT_FRACTION)  # spot from its on-demand
    assert table.hourly("m7i.2xlarge", "on-demand") == PriceTable(local={}).hourly("m7i.2xlarge", "on-demand")  # the rest: shipped
    assert "fetched 2026-11-30" in table.source
    assert PriceTable(region="us-west-2").hourly("r6in.16xlarge", "on-demand") == pytest.approx(5.57856)  # another region


def test_prices_flag_takes_a_refreshed_file_too(tmp_path: Path) -> None:
    path = tmp_path / "fetched.json"
    _local_file(path, "eu-west-1")
    assert PriceTable.from_file(path, region="eu-west-1").hourly("r6in.16xlarge", "spot") == 1.5


def _price_list_item(itype: str, usd: str) -> str:
    return json.dumps(
        {
            "product": {"productFamily": "Compute Instance", "attributes": {"instanceType": itype, "regionCode": "us-east-1"}},
            "terms": {
                "OnDemand": {
                    "SKU.JRTCKXETXF": {
                        "priceDimensions": {"SKU.JRTCKXETXF.6YS6EN2CT7": {"unit": "Hrs", "pricePerUnit": {"USD": usd}}},
                    }
                }
            },
        }
    )


def _stubbed_session(spot: list[dict[str, Any]], offerings: dict[str, list[dict[str, Any]]]) -> tuple[Any, list[Stubber]]:
    """A session whose pricing and ec2 clients answer from Stubbers (responses checked against
    botocore's models); moto has no Pricing API and no DescribeCapacityBlockOfferings."""
    session = boto3.Session(aws_access_key_id="AKIATEST", aws_secret_access_key="secret", region_name="us-east-1")
    pricing = session.client("pricing", region_name="us-east-1")
    ec2 = session.client("ec2", region_name="us-east-1")
    price_stub, ec2_stub = Stubber(pricing), Stubber(ec2)
    price_stub.add_response(
        "get_products",
        {"FormatVersion": "aws_v1", "PriceList": [_price_list_item("r6in.16xlarge", "5.5785600000")], "NextToken": "page-2"},
        {"ServiceCode": "AmazonEC2", "Filters": ANY},
    )
    price_stub.add_response(
        "get_products",
        {"FormatVersion": "aws_v1", "PriceList": [_price_list_item("p6-b200.48xlarge", "113.9330000000")]},
        {"ServiceCode": "AmazonEC2", "Filters": ANY, "NextToken": "page-2"},
    )
    ec2_stub.add_response(
        "describe_spot_price_history", {"SpotPriceHistory": spot}, {"ProductDescriptions": ["Linux/UNIX"], "StartTime": ANY, "EndTime": ANY}
    )
    for itype in sorted(t.name for t in catalog().types.values() if t.gpu_count >= 8 and t.name.startswith("p")):
        params = {"InstanceType": itype, "InstanceCount": 1, "CapacityDurationHours": 24}
        if itype in offerings:
            ec2_stub.add_response("describe_capacity_block_offerings", {"CapacityBlockOfferings": offerings[itype]}, params)
        else:
            ec2_stub.add_client_error(
                "describe_capacity_block_offerings", "Unsupported", "not sold as capacity blocks", 400, expected_params=params
            )
    price_stub.activate()
    ec2_stub.activate()
    clients = {"pricing": pricing, "ec2": ec2}

    class Session:
        def get_credentials(self) -> Any:
            return session.get_credentials()

        def client(self, name: str, region_name: str) -> Any:
            return clients[name]

    return Session(), [price_stub, ec2_stub]


def test_refresh_with_stubbers_shaped_by_botocores_models_since_moto_has_no_pricing_or_capacity_block_offerings(
    no_local_price_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spot = [
        {"InstanceType": "r6in.16xlarge", "AvailabilityZone": "us-east-1a", "SpotPrice": "2.0", "Timestamp": NOW - dt.timedelta(days=40)},
        {"InstanceType": "r6in.16xlarge", "AvailabilityZone": "us-east-1a", "SpotPrice": "1.0", "Timestamp": NOW - dt.timedelta(days=15)},
        {"InstanceType": "r6in.16xlarge", "AvailabilityZone": "us-east-1b", "SpotPrice": "3.0", "Timestamp": NOW - dt.timedelta(days=30)},
    ]
    block = {
        "CapacityBlockOfferingId": "cb-0123456789abcdef0", "InstanceType": "p5.48xlarge", "AvailabilityZone": "us-east-1a",
        "InstanceCount": 1, "StartDate": NOW, "EndDate": NOW + dt.timedelta(days=1), "CapacityBlockDurationHours": 24,
        "UpfrontFee": "755.14", "CurrencyCode": "USD", "Tenancy": "default",
    }  # fmt: skip
    session, stubs = _stubbed_session(spot, {"p5.48xlarge": [block]})
    section = refresh(session, "us-east-1", no_local_price_file, days=30, now=NOW)
    for stub in stubs:
        stub.assert_no_pending_responses()
    assert section["on-demand"] == {"r6in.16xlarge": 5.57856, "p6-b200.48xlarge": 113.933}
    assert section["spot"] == {"r6in.16xlarge": pytest.approx((1.5 + 3.0) / 2)}  # zone a: 2.0 half the window, 1.0 the other
    assert section["capacity-block"] == {"p5.48xlarge": pytest.approx(755.14 / 24, abs=1e-4)}
    table = PriceTable()  # reads the file refresh wrote
    assert table.hourly("p6-b200.48xlarge", "on-demand") == 113.933
    assert table.hourly("p5.48xlarge", "capacity-block") == pytest.approx(31.4642, abs=1e-4)
    assert table.hourly("r6in.16xlarge", "spot") == 2.25


@mock_aws
def test_spot_history_from_moto_is_averaged_per_type() -> None:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    found = spot_prices(ec2, NOW - dt.timedelta(days=7), NOW)
    assert found["m7i.2xlarge"] == pytest.approx(0.00001)  # moto's constant spot price, in every zone
    assert len(found) > 500


def test_time_weighted_spot_counts_each_price_for_as_long_as_it_held() -> None:
    start, end = NOW - dt.timedelta(hours=10), NOW
    history = [
        {"InstanceType": "g5.2xlarge", "AvailabilityZone": "a", "SpotPrice": "0.5", "Timestamp": start - dt.timedelta(hours=3)},
        {"InstanceType": "g5.2xlarge", "AvailabilityZone": "a", "SpotPrice": "0.9", "Timestamp": start - dt.timedelta(hours=1)},
        {"InstanceType": "g5.2xlarge", "AvailabilityZone": "a", "SpotPrice": "0.4", "Timestamp": end - dt.timedelta(hours=1)},
    ]
    assert time_weighted_spot(history, start, end) == {"g5.2xlarge": pytest.approx((0.9 * 9 + 0.4 * 1) / 10)}


def test_refresh_without_credentials_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main(["prices", "--refresh", "--region", "us-west-2"]) == 6
    err = capsys.readouterr().err
    assert err.startswith("error: no AWS credentials")
    assert err.count("\n") == 1


def test_prices_command_prints_the_source_and_a_types_prices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "r6in.16xlarge"]) == 0
    out = capsys.readouterr().out
    assert "apache-libcloud 3.9.1" in out
    assert "r6in.16xlarge: on-demand 5.5786, spot 2.2314, capacity-block -" in out
