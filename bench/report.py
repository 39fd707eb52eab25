"""The benchmark's outputs: the figures table, the targets, the JSON file and the latency plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

Row = tuple[str, str, str, str, str]


def _ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f} ms" if abs(value) < 100 else f"{value:.0f} ms"


def _pair(figures: dict[str, Any], key: str) -> tuple[str, str, str]:
    return _ms(figures["direct"][key]), _ms(figures["sidecar"][key]), _ms(figures[f"added_{key}"])


def _one(scenario: str, measure: str, value: str) -> Row:
    """Return a row with a figure of the sidecar alone."""
    return (scenario, measure, "", value, "")


def figure_rows(results: dict[str, Any]) -> list[Row]:
    """Return (scenario, measure, direct, sidecar, added) rows for every figure present."""
    scenarios = results["scenarios"]
    rows: list[Row] = []
    if "pass_through" in scenarios:
        rows += _pass_through_rows(scenarios["pass_through"])
    if "one_kilobyte" in scenarios:
        rows += _one_kilobyte_rows(scenarios["one_kilobyte"])
    for key, label in (
        ("conversation", "3 conversation"),
        ("conversation_no_cache", "3 conversation, cache off"),
    ):
        for turn, figures in scenarios.get(key, {}).get("turns", {}).items():
            rows.append(
                (
                    label,
                    f"turn {turn} ({figures['texts']} texts) p50",
                    "",
                    "",
                    _ms(figures["added_p50_ms"]),
                )
            )
    if "prompt_sizes" in scenarios:
        rows += _size_rows(scenarios["prompt_sizes"])
    if "streaming" in scenarios:
        rows += _streaming_rows(scenarios["streaming"])
    for figures in scenarios.get("workers", []):
        measure = (
            f"{figures['workers']} worker(s), 16 clients (cores used: {figures['cores_used']})"
        )
        rows.append(_one("6 workers", measure, f"{figures['rps']} req/s"))
    for entry in results.get("memory", []):
        resident = " / ".join(f"{value:.0f} MB" for value in entry["resident_mb"])
        rows.append(_one("7 memory", f"after {entry['scenario']} ({entry['sidecar']})", resident))
    return rows


def _pass_through_rows(s: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for key, label in (
        ("clients_1", "1 client"),
        ("clients_50", "50 clients"),
        ("clients_50_paced", "50 clients, 200 req/s"),
    ):
        rows.append(("1 pass-through", f"{label} p50", *_pair(s[key], "p50_ms")))
        rows.append(("1 pass-through", f"{label} p99", *_pair(s[key], "p99_ms")))
        rows.append(
            (
                "1 pass-through",
                f"{label} throughput",
                f"{s[key]['direct_rps']} req/s",
                f"{s[key]['sidecar_rps']} req/s",
                "",
            )
        )
    return rows


def _one_kilobyte_rows(s: dict[str, Any]) -> list[Row]:
    name = "2 1 KB, NER on"
    return [
        (name, "new prompt p50", *_pair(s["cold"], "p50_ms")),
        (name, "resent prompt p50", *_pair(s["warm"], "p50_ms")),
        _one(name, "Presidio default analyze p50", _ms(s["presidio_default_analyze"]["p50_ms"])),
        _one(name, "sidecar detector in process p50", _ms(s["detector_in_process"]["p50_ms"])),
        _one(name, "spaCy NER alone in process p50", _ms(s["ner_alone_in_process"]["p50_ms"])),
    ]


def _size_rows(s: dict[str, Any]) -> list[Row]:
    rows: list[Row] = [
        ("4 prompt size", f"{label} p50", *_pair(f, "p50_ms")) for label, f in s["sizes"].items()
    ]
    for label, figures in s["presidio_default_analyze"].items():
        rows.append(
            _one("4 prompt size", f"{label} Presidio default analyze", _ms(figures["p50_ms"]))
        )
    return rows


def _streaming_rows(s: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for key, label in (
        ("pass_through", "pass-through"),
        ("pass_through_burst", "pass-through, reply in one burst"),
        ("pii_cached", "PII, resent prompt"),
        ("pii_new", "PII, new prompt"),
    ):
        if key in s:
            rows.append(
                ("5 streaming", f"{label} first token p50", *_pair(s[key]["first_token"], "p50_ms"))
            )
            rows.append(
                ("5 streaming", f"{label} first token p99", *_pair(s[key]["first_token"], "p99_ms"))
            )
            rows.append(
                (
                    "5 streaming",
                    f"{label} whole stream p50",
                    *_pair(s[key]["whole_stream"], "p50_ms"),
                )
            )
    restore = s["restore_in_process"]
    per_chunk = f"{restore['per_chunk_p50_us']} / {restore['per_chunk_p99_us']} µs"
    rows.append(_one("5 streaming", "restore per chunk in process, p50 / p99", per_chunk))
    rows.append(_one("5 streaming", "max text held back", f"{restore['max_held_chars']} chars"))
    return rows


def target_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Return (target, measured, limit, met) rows for the targets whose figures are present."""
    s = results["scenarios"]
    rows: list[tuple[str, str, str, str]] = []

    def add(name: str, measured: str, limit: str, met: bool) -> None:
        rows.append((name, measured, limit, "met" if met else "NOT met"))

    if "pass_through" in s:
        for key, label in (("clients_50", "closed loop"), ("clients_50_paced", "200 req/s")):
            f = s["pass_through"][key]
            add(
                f"pass-through, 50 clients ({label}) added p50",
                _ms(f["added_p50_ms"]),
                "≤ 1 ms",
                f["added_p50_ms"] <= 1,
            )
            add(
                f"pass-through, 50 clients ({label}) added p99",
                _ms(f["added_p99_ms"]),
                "≤ 5 ms",
                f["added_p99_ms"] <= 5,
            )
    if "one_kilobyte" in s:
        f = s["one_kilobyte"]
        add(
            "1 KB new prompt, added p50 / Presidio p50",
            f"{f['cold_added_vs_presidio']:.2f} x",
            "≤ 0.25 x",
            f["cold_added_vs_presidio"] <= 0.25,
        )
        add(
            "1 KB resent prompt, added p50 / Presidio p50",
            f"{f['warm_added_vs_presidio']:.2f} x",
            "≤ 0.25 x",
            f["warm_added_vs_presidio"] <= 0.25,
        )
    if "conversation" in s and s["conversation"]["turn_20_vs_1"] is not None:
        ratio = s["conversation"]["turn_20_vs_1"]
        add("turn 20 / turn 1 added latency", f"{ratio:.2f} x", "≤ 1.5 x", ratio <= 1.5)
    if "prompt_sizes" in s:
        sizes = s["prompt_sizes"]["sizes"]
        if "1 MB" in sizes:
            statuses = sizes["1 MB"]["statuses"]["sidecar"]
            ok = set(statuses) == {"200"} and sizes["1 MB"]["errors"] == 0
            add(
                "1 MB prompt handled",
                f"HTTP {', '.join(sorted(statuses)) or 'none'}",
                "HTTP 200",
                ok,
            )
        ratio = s["prompt_sizes"]["time_256kb_vs_32kb"]
        if ratio is not None:
            add("256 KB / 32 KB added time", f"{ratio:.2f} x", "≤ 9 x", ratio <= 9)
    if "streaming" in s:
        for key, label in (
            ("pass_through", "pass-through"),
            ("pii_cached", "PII, resent prompt"),
            ("pii_new", "PII, new prompt"),
        ):
            if key in s["streaming"]:
                added = s["streaming"][key]["first_token"]["added_p50_ms"]
                add(f"streaming {label}: added first token p50", _ms(added), "≤ 1 ms", added <= 1)
        restore = s["streaming"]["restore_in_process"]
        add(
            "streaming: text held back",
            f"{restore['max_held_chars']} chars",
            f"≤ longest placeholder ({restore['longest_placeholder_chars']} chars)",
            restore["max_held_chars"] <= restore["longest_placeholder_chars"],
        )
    if "workers" in s and len(s["workers"]) == 2:
        one, two = s["workers"]
        ratio = two["rps"] / one["rps"] if one["rps"] else math.nan
        add("2 workers / 1 worker throughput, NER on", f"{ratio:.2f} x", "≥ 1.7 x", ratio >= 1.7)
    if results.get("memory"):
        peak = max(v for entry in results["memory"] for v in entry["resident_mb"])
        add("resident memory per worker (max seen)", f"{peak:.0f} MB", "≤ 400 MB", peak <= 400)
    return rows


def text_table(results: dict[str, Any]) -> str:
    figures: list[tuple[str, ...]] = [("scenario", "measure", "direct", "sidecar", "added")]
    targets: list[tuple[str, ...]] = [("target", "measured", "limit", "status")]
    lines = ["Figures (request latency; added = through the sidecar minus direct)", ""]
    lines += _aligned([*figures, *figure_rows(results)])
    lines += ["", "Targets", ""]
    lines += _aligned([*targets, *target_rows(results)])
    return "\n".join(lines)


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def markdown(results: dict[str, Any]) -> str:
    lines = ["| scenario | measure | direct | sidecar | added |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in figure_rows(results)]
    lines += ["", "| target | measured | limit | status |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in target_rows(results)]
    return "\n".join(lines) + "\n"


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def plot(results: dict[str, Any], path: Path) -> bool:
    """Draw added latency against prompt size; return False when scenario 4 did not run."""
    sizes = results["scenarios"].get("prompt_sizes")
    if not sizes:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    points = [(f["chars"], f["added_p50_ms"], label) for label, f in sizes["sizes"].items()]
    axes.plot(
        [p[0] for p in points], [p[1] for p in points], "o-", label="added by the sidecar (p50)"
    )
    for chars, added, label in points:
        axes.annotate(
            f"{label}: {added:.0f} ms",
            (chars, added),
            textcoords="offset points",
            xytext=(6, -12),
            fontsize=8,
        )
    presidio = [
        (sizes["sizes"][label]["chars"], f["p50_ms"])
        for label, f in sizes["presidio_default_analyze"].items()
        if label in sizes["sizes"]
    ]
    if presidio:
        axes.plot(
            [p[0] for p in presidio],
            [p[1] for p in presidio],
            "s--",
            label="Presidio default analyze, in process",
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("prompt size (characters)")
    axes.set_ylabel("milliseconds")
    axes.set_title("Latency the sidecar adds, NER on, each prompt new to the cache")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True
