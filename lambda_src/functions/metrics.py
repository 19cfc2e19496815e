"""Counters as CloudWatch embedded-metric-format (EMF) log lines: printed to stdout, turned
into metrics by CloudWatch Logs, with no API call on the hot path and no extra permission.

What is emitted, with its unit and dimensions, is listed once in lambda_src/core/metric_catalog.py."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from lambda_src.core.metric_catalog import NAMESPACE, POOL_DIMENSIONS, UNITS

__all__ = ["NAMESPACE", "emf_line", "pool_line"]


def _line(dimensions: Mapping[str, str], values: Mapping[str, float | Sequence[float]], now: float) -> str:
    return json.dumps(
        {
            "_aws": {
                "Timestamp": int(now * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": NAMESPACE,
                        "Dimensions": [list(dimensions)],
                        "Metrics": [{"Name": name, "Unit": UNITS.get(name, "Count")} for name in sorted(values)],
                    }
                ],
            },
            **dimensions,
            **{name: list(v) if isinstance(v, Sequence) else v for name, v in values.items()},
        },
        sort_keys=True,
    )


def emf_line(environment: str, function: str, counts: Mapping[str, float], now: float) -> str:
    """One EMF object: each count a metric, dimensioned by environment and function."""
    return _line({"environment": environment, "function": function}, counts, now)


def pool_line(environment: str, pool: str, values: Mapping[str, float | Sequence[float]], now: float) -> str:
    """One EMF object of a pool's metrics (metric_catalog.POOL_METRICS): dimensioned by
    environment and pool only. A list is several values of one metric (EMF's value array),
    from which CloudWatch computes percentiles."""
    dimensions = dict(zip(POOL_DIMENSIONS, (environment, pool), strict=True))
    return _line(dimensions, values, now)
