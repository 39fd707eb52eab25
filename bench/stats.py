"""Percentiles and the comparison of a proxied run with the direct run it is measured against."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MS = 1000.0


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of `values` (`fraction` from 0 to 1); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """Return p50 and p99 of `values` (seconds) in milliseconds, and the count."""
    return {
        "p50_ms": round(percentile(values, 0.5) * MS, 3),
        "p99_ms": round(percentile(values, 0.99) * MS, 3),
        "count": len(values),
    }


def throughput(outcome: dict[str, Any]) -> float:
    """Return completed requests per second of a load generator outcome."""
    elapsed = outcome["elapsed"]
    return round(len(outcome["latencies"]) / elapsed, 1) if elapsed > 0 else math.nan


def compare(
    direct: dict[str, Any], proxied: dict[str, Any], key: str = "latencies"
) -> dict[str, Any]:
    """Return p50/p99 of both runs and what the sidecar added (proxied minus direct), in ms."""
    base, via = summary_ms(direct[key]), summary_ms(proxied[key])
    return {
        "direct": base,
        "sidecar": via,
        "added_p50_ms": round(via["p50_ms"] - base["p50_ms"], 3),
        "added_p99_ms": round(via["p99_ms"] - base["p99_ms"], 3),
        "direct_rps": throughput(direct),
        "sidecar_rps": throughput(proxied),
        "errors": len(direct["errors"]) + len(proxied["errors"]),
        "statuses": {"direct": direct["statuses"], "sidecar": proxied["statuses"]},
    }


def merge_statuses(*outcomes: dict[str, Any]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for outcome in outcomes:
        for status, count in outcome["statuses"].items():
            merged[status] = merged.get(status, 0) + count
    return merged


def merge(*outcomes: dict[str, Any]) -> dict[str, Any]:
    """Combine outcomes of rounds of one measurement into one outcome."""
    return {
        "latencies": [v for o in outcomes for v in o["latencies"]],
        "first_tokens": [v for o in outcomes for v in o["first_tokens"]],
        "events": [v for o in outcomes for v in o["events"]],
        "statuses": merge_statuses(*outcomes),
        "contents": [v for o in outcomes for v in o["contents"]],
        "errors": [v for o in outcomes for v in o["errors"]],
        "elapsed": sum(o["elapsed"] for o in outcomes),
    }
