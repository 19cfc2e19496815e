"""Counters as CloudWatch embedded-metric-format (EMF) log lines: printed to stdout, turned
into metrics by CloudWatch Logs, with no API call on the hot path and no extra permission."""

from __future__ import annotations

import json
from collections.abc import Mapping

NAMESPACE = "runner-estate"


def emf_line(environment: str, function: str, counts: Mapping[str, float], now: float) -> str:
    """One EMF object: each count a metric, dimensioned by environment and function."""
    return json.dumps(
        {
            "_aws": {
                "Timestamp": int(now * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": NAMESPACE,
                        "Dimensions": [["environment", "function"]],
                        "Metrics": [{"Name": name, "Unit": "Count"} for name in sorted(counts)],
                    }
                ],
            },
            "environment": environment,
            "function": function,
            **{name: value for name, value in counts.items()},
        },
        sort_keys=True,
    )
