"""The audit report as one self-contained HTML page, with charts drawn as inline SVG.

The page has no external assets (no scripts, fonts, stylesheets or images), so it can be
mailed or archived as a single file. Every value from a record is HTML-escaped.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sidecar.audit.report import (
    MAX_CHART_BARS,
    Report,
    ValueFormatter,
    count_table,
    entity_table,
    format_cost,
    format_int,
    format_moment,
    format_share,
    format_width,
    skipped_lines,
    timeline_table,
    usage_table,
)

_COLORS = {"allowed": "#4c78a8", "blocked": "#e45756", "cost": "#54a24b", "entities": "#f58518"}
_DEFAULT_COLOR = "#888888"
_EMPTY_ELEMENTS = frozenset({"rect", "line"})

_CSS = "".join(
    (
        "body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;",
        "color:#1f2328;padding:0 1rem}",
        "h1{font-size:1.5rem}",
        "h2{font-size:1.15rem;margin-top:2rem;padding-bottom:.3rem;",
        "border-bottom:1px solid #d0d7de}",
        ".cards{display:flex;flex-wrap:wrap;gap:1rem}",
        ".card{border:1px solid #d0d7de;border-radius:6px;padding:.6rem 1rem;min-width:10rem}",
        ".card b{display:block;font-size:1.3rem}",
        "table{border-collapse:collapse;margin:.5rem 0}",
        "th,td{padding:.2rem .7rem;border-bottom:1px solid #eaeef2;text-align:right}",
        "th:first-child,td:first-child{text-align:left}th{background:#f6f8fa}",
        "svg text{font:11px system-ui,sans-serif;fill:#1f2328}.note{color:#59636e}",
    )
)


def render_html(report: Report, title: str = "pii-sidecar audit report") -> str:
    """Format `report` as one HTML page with inline CSS and SVG and no external assets."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_escape(title)}</h1>",
        _html_cards(report),
        *_html_timeline(report),
        *_html_entities(report),
        *_html_usage(report),
        *_html_counts(report),
        _html_skipped(report),
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def _escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def _html_cards(report: Report) -> str:
    totals = report.totals
    cards = [
        ("Requests", format_int(report.requests)),
        (
            "Blocked",
            f"{format_int(report.blocked)} ({format_share(report.blocked, report.requests)})",
        ),
        ("Entities found", format_int(sum(row.occurrences for row in report.entities))),
        ("Input tokens", format_int(totals.input_tokens)),
        ("Output tokens", format_int(totals.output_tokens)),
        ("Estimated cost", format_cost(totals.cost_usd)),
    ]
    items = "".join(
        f'<div class="card">{_escape(name)}<b>{_escape(value)}</b></div>' for name, value in cards
    )
    period = f"{format_moment(report.first)} to {format_moment(report.last)}"
    return f'<p class="note">{_escape(period)}</p><div class="cards">{items}</div>'


def _html_timeline(report: Report) -> list[str]:
    if not report.timeline:
        return []
    width = format_width(report.bucket_width)
    requests = [
        (bucket.start, {"allowed": bucket.requests - bucket.blocked, "blocked": bucket.blocked})
        for bucket in report.timeline
    ]
    costs = [(bucket.start, {"cost": bucket.cost_usd}) for bucket in report.timeline]
    entities = [(bucket.start, {"entities": float(bucket.entities)}) for bucket in report.timeline]
    headers, rows = timeline_table(report)
    return [
        f"<h2>Requests per {_escape(width)}</h2>",
        column_chart(
            requests,
            "Requests over time, allowed and blocked",
            format_value=lambda v: format_int(int(v)),
        ),
        f"<h2>Entities found per {_escape(width)}</h2>",
        column_chart(
            entities, "Entities found over time", format_value=lambda v: format_int(int(v))
        ),
        f"<h2>Estimated cost per {_escape(width)}</h2>",
        column_chart(costs, "Estimated cost over time in USD", format_value=format_cost),
        "<details><summary>Table</summary>",
        _html_table(headers, rows),
        "</details>",
    ]


def _html_entities(report: Report) -> list[str]:
    if not report.entities:
        return []
    by_type: Counter[str] = Counter()
    for row in report.entities:
        by_type[row.entity_type] += row.occurrences
    headers, rows = entity_table(report.entities)
    return [
        "<h2>Entities by type</h2>",
        bar_chart(
            by_type.most_common(),
            "Entities found by type",
            "entities",
            lambda v: format_int(int(v)),
        ),
        _html_table(headers, rows),
    ]


def _html_usage(report: Report) -> list[str]:
    parts: list[str] = []
    for label, rows in (("model", report.by_model), ("client", report.by_client)):
        if not rows:
            continue
        headers, body = usage_table(rows, label)
        costs = [(row.name, row.cost_usd) for row in rows]
        parts += [
            f"<h2>Tokens and estimated cost by {label}</h2>",
            bar_chart(costs, f"Estimated cost by {label} in USD", "cost", format_cost),
            _html_table(headers, body),
        ]
    if report.totals.unpriced:
        unpriced = format_int(report.totals.unpriced)
        parts.append(
            f'<p class="note">{unpriced} requests used models that are not in the pricing '
            "table, so their cost is not included.</p>"
        )
    return parts


def _html_counts(report: Report) -> list[str]:
    parts: list[str] = []
    for title, counts, label in (
        ("Blocked requests by reason", report.block_reasons, "reason"),
        ("Requests by status", report.statuses, "status"),
        ("Requests by mode", report.modes, "mode"),
    ):
        if counts:
            headers, rows = count_table(counts, label)
            parts += [f"<h2>{title}</h2>", _html_table(headers, rows)]
    return parts


def _html_skipped(report: Report) -> str:
    lines = skipped_lines(report.skipped)
    if not lines:
        return ""
    items = "".join(f"<li>{_escape(line)}</li>" for line in lines)
    return f'<h2>Skipped</h2><ul class="note">{items}</ul>'


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_escape(cell)}</th>" for cell in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def column_chart(
    columns: Sequence[tuple[datetime, Mapping[str, float]]],
    label: str,
    format_value: ValueFormatter,
    width: int = 1000,
    height: int = 220,
) -> str:
    """Draw stacked columns, one per interval, as an inline SVG element.

    Each column stacks its series in mapping order, coloured by series name. Every column
    has a tooltip with its start and values. The x axis labels at most 8 starts.
    """
    left, right, top, bottom = 60, 10, 10, 30
    plot_width, plot_height = width - left - right, height - top - bottom
    baseline = top + plot_height
    peak = max((sum(values.values()) for _, values in columns), default=0.0)
    scale = plot_height / peak if peak > 0 else 0.0
    step = plot_width / max(len(columns), 1)

    shapes = [_value_axis(left, top, plot_width, baseline, peak, format_value)]
    label_every = max(1, math.ceil(len(columns) / 8))
    for index, (start, values) in enumerate(columns):
        x = left + index * step
        shapes.append(_stacked_column(x, step, baseline, scale, start, values, format_value))
        if index % label_every == 0:
            caption = start.strftime("%m-%d %H:%M")
            shapes.append(
                _tag("text", caption, x=x + step / 2, y=height - 10, text_anchor="middle")
            )

    series = columns[0][1].keys() if columns else ()
    shapes.append(_legend(series, left, height))
    return _svg(width, height + 30, label, shapes)


def _stacked_column(
    x: float,
    step: float,
    baseline: float,
    scale: float,
    start: datetime,
    values: Mapping[str, float],
    format_value: ValueFormatter,
) -> str:
    tooltip_lines = [format_moment(start)]
    tooltip_lines += [f"{name}: {format_value(value)}" for name, value in values.items()]
    parts = [
        _tag("title", "\n".join(tooltip_lines)),
        _tag("rect", x=x, y=0, width=step, height=baseline, fill="transparent"),
    ]

    y = baseline
    for name, value in values.items():
        bar_height = value * scale
        y -= bar_height
        color = _COLORS.get(name, _DEFAULT_COLOR)
        parts.append(
            _tag("rect", x=x + step * 0.1, y=y, width=step * 0.8, height=bar_height, fill=color)
        )
    return _tag("g", raw="".join(parts))


def _value_axis(
    left: int,
    top: int,
    plot_width: int,
    baseline: int,
    peak: float,
    format_value: ValueFormatter,
) -> str:
    right = left + plot_width
    parts = [
        _tag("line", x1=left, y1=baseline, x2=right, y2=baseline, stroke="#8c959f"),
        _tag("text", format_value(0), x=left - 6, y=baseline, text_anchor="end"),
    ]
    if peak > 0:
        parts.append(_tag("text", format_value(peak), x=left - 6, y=top + 8, text_anchor="end"))
        parts.append(
            _tag(
                "line", x1=left, y1=top, x2=right, y2=top, stroke="#eaeef2", stroke_dasharray="4 3"
            )
        )
    return "".join(parts)


def _legend(names: Iterable[str], left: int, top: int) -> str:
    parts = []
    x = left
    for name in names:
        color = _COLORS.get(name, _DEFAULT_COLOR)
        parts.append(_tag("rect", x=x, y=top + 12, width=10, height=10, fill=color))
        parts.append(_tag("text", name, x=x + 14, y=top + 21))
        x += 14 + 7 * len(name) + 20
    return "".join(parts)


def bar_chart(
    items: Sequence[tuple[str, float]],
    label: str,
    color: str,
    format_value: ValueFormatter,
    width: int = 1000,
) -> str:
    """Draw horizontal bars, largest first, as an inline SVG element.

    At most 15 bars are drawn, and the rest are summed into a last bar named "other (N)".
    Names longer than 32 characters are shortened, and every bar has a tooltip with the
    full name and value.
    """
    ordered = _top_items(items)
    label_width, value_width, row_height = 220, 110, 22
    plot_width = width - label_width - value_width
    peak = max((value for _, value in ordered), default=0.0)
    fill = _COLORS.get(color, _DEFAULT_COLOR)

    rows = []
    for index, (name, value) in enumerate(ordered):
        y = index * row_height
        bar = plot_width * value / peak if peak > 0 else 0.0
        shown_name = name if len(name) <= 32 else name[:31] + "…"
        shown_value = format_value(value)
        parts = [
            _tag("title", f"{name}: {shown_value}"),
            _tag("text", shown_name, x=label_width - 8, y=y + 15, text_anchor="end"),
            _tag("rect", x=label_width, y=y + 3, width=bar, height=row_height - 6, fill=fill),
            _tag("text", shown_value, x=label_width + bar + 6, y=y + 15),
        ]
        rows.append(_tag("g", raw="".join(parts)))
    return _svg(width, max(row_height * len(ordered), row_height), label, rows)


def _top_items(items: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    ordered = sorted(items, key=lambda item: -item[1])
    if len(ordered) <= MAX_CHART_BARS:
        return ordered
    kept = ordered[: MAX_CHART_BARS - 1]
    rest = ordered[MAX_CHART_BARS - 1 :]
    return [*kept, (f"other ({len(rest)})", sum(value for _, value in rest))]


def _svg(width: int, height: int, label: str, shapes: Sequence[str]) -> str:
    content = _tag("title", label) + "".join(shapes)
    return _tag(
        "svg",
        raw=content,
        xmlns="http://www.w3.org/2000/svg",
        role="img",
        aria_label=label,
        width=width,
        height=height,
        viewBox=f"0 0 {width} {height}",
    )


def _tag(name: str, text: str = "", /, raw: str = "", **attributes: object) -> str:
    """Return an SVG element: `text` is escaped, `raw` is markup inserted as is.

    Attribute names use underscores for dashes, so text_anchor becomes text-anchor.
    Floats are written with one decimal, and every value is escaped.
    """
    rendered = "".join(
        f' {key.replace("_", "-")}="{_attribute(value)}"' for key, value in attributes.items()
    )
    content = _escape(text) + raw
    if not content and name in _EMPTY_ELEMENTS:
        return f"<{name}{rendered}/>"
    return f"<{name}{rendered}>{content}</{name}>"


def _attribute(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return _escape(value)
