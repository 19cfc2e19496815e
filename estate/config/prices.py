"""Instance prices for `estate simulate`: USD per instance-hour, us-east-1, Linux.

Source: AWS's public EC2 On-Demand price list for us-east-1 (Linux, shared tenancy) and the EC2
Capacity Blocks price list, as published in 2025, rounded to the cent; spot is modelled as a
fixed fraction of on-demand (SPOT_FRACTION), a typical long-run discount for these families,
not a quote. These are planning figures: prices change and differ by region, so pass
`--prices FILE` (JSON `{"type": {"on-demand": x, "spot": y, "capacity-block": z}}`) to use
your own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from lambda_src.core.instance_catalog import parse_instance_type

PRICES_AS_OF = "2025 (us-east-1 list prices, approximate)"
SPOT_FRACTION = 0.4

ON_DEMAND_USD_PER_HOUR: Mapping[str, float] = {
    # NVIDIA GPU families
    "g4dn.xlarge": 0.53, "g4dn.2xlarge": 0.75, "g4dn.4xlarge": 1.20, "g4dn.8xlarge": 2.18, "g4dn.12xlarge": 3.91,
    "g5.xlarge": 1.01, "g5.2xlarge": 1.21, "g5.4xlarge": 1.62, "g5.8xlarge": 2.45, "g5.12xlarge": 5.67,
    "g6.xlarge": 0.80, "g6.2xlarge": 0.98, "g6.4xlarge": 1.32, "g6.8xlarge": 2.01, "g6.12xlarge": 4.60,
    "p4d.24xlarge": 21.96, "p5.48xlarge": 55.04, "p6-b200.48xlarge": 113.93,
    # CPU families used by the example and FlashInfer pools
    "r5.16xlarge": 4.03, "r6i.16xlarge": 4.03, "r6id.16xlarge": 4.84, "r6a.16xlarge": 3.63, "r7i.16xlarge": 4.23,
    "r7a.16xlarge": 4.87, "r6g.16xlarge": 3.23, "r7g.16xlarge": 3.43, "r8g.16xlarge": 3.77,
    "m6i.24xlarge": 4.61, "m6a.24xlarge": 4.15, "m7i.24xlarge": 4.84, "m7g.16xlarge": 2.61, "m7g.24xlarge": 3.92,
    "m7i.large": 0.10, "m7i.xlarge": 0.20, "m7i.2xlarge": 0.40, "m7i.4xlarge": 0.81, "m7g.large": 0.08,
    "c7i.4xlarge": 0.71, "c7g.4xlarge": 0.58,
}  # fmt: skip

# Capacity Blocks are priced per instance-hour for the whole block, used or not.
CAPACITY_BLOCK_USD_PER_HOUR: Mapping[str, float] = {"p5.48xlarge": 31.46, "p5e.48xlarge": 34.61, "p6-b200.48xlarge": 44.16}


MARKETS = ("on-demand", "spot", "capacity-block")  # the keys of a price override


class PriceError(ValueError):
    pass


class PriceTable:
    def __init__(self, overrides: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self.overrides = dict(overrides or {})

    @classmethod
    def from_file(cls, path: Path) -> PriceTable:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PriceError(f"{path}: cannot read a price table: {exc}") from exc
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise PriceError(f'{path}: want {{"<instance type>": {{"on-demand": x, "spot": y, "capacity-block": z}}}}')
        for itype, markets in data.items():
            if parse_instance_type(itype) is None:
                raise PriceError(f"{path}: {itype!r} is not an EC2 instance type (family.size, e.g. p5.48xlarge)")
            for market, price in markets.items():
                if market not in MARKETS:
                    raise PriceError(f"{path}: {itype}.{market}: unknown market; the markets are {', '.join(MARKETS)}")
                if isinstance(price, bool) or not isinstance(price, int | float) or price < 0:
                    raise PriceError(f"{path}: {itype}.{market}: {price!r} is not a price (USD per instance-hour, 0 or more)")
        return cls(data)

    def hourly(self, instance_type: str, market: str) -> float:
        """USD per instance-hour of `instance_type` bought as `market`."""
        override = self.overrides.get(instance_type, {})
        if market in override:
            return float(override[market])
        if market == "capacity-block" and instance_type in CAPACITY_BLOCK_USD_PER_HOUR:
            return CAPACITY_BLOCK_USD_PER_HOUR[instance_type]
        on_demand = override.get("on-demand", ON_DEMAND_USD_PER_HOUR.get(instance_type))
        if on_demand is None:
            raise PriceError(f"no price for {instance_type} ({market}); add it with --prices")
        return float(on_demand) * (SPOT_FRACTION if market == "spot" else 1.0)
