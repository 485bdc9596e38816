"""``report.html``: the cleaning report for a person, from the same dict as ``report.json``.

One self-contained page, no script and no external file: the totals, the plots as inline SVG
(document lengths before and after, removals by stage and by source, the source mix) and a few
examples of each removal reason. The SVG is drawn here (a few grouped horizontal bar charts)
rather than by matplotlib, whose SVG output carries ids and dates: the page must be
byte-identical from one run to the next.
"""

from __future__ import annotations

import html
from typing import Any

_COLORS = ("#4878a8", "#e0803a", "#5aa05a", "#c04848")
_BAR_H, _LABEL_W, _PLOT_W = 14, 220, 420


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:g}"


def hbar_chart(title: str, rows: list[tuple[str, list[float]]], series: list[str],
               fmt: str = "{:,.0f}") -> str:
    """Grouped horizontal bars: one group per row label, one bar per series, as inline SVG."""
    top = max((v for _, values in rows for v in values), default=0) or 1
    group_h = _BAR_H * len(series) + 6
    height = group_h * len(rows) + 20 * (len(series) > 1) + 4
    parts = [f'<h3>{html.escape(title)}</h3>',
             f'<svg width="{_LABEL_W + _PLOT_W + 90}" height="{height}" xmlns="http://www.w3.org/2000/svg" '
             'font-family="sans-serif" font-size="11">']
    if len(series) > 1:  # legend
        for i, name in enumerate(series):
            x = _LABEL_W + 110 * i
            parts.append(f'<rect x="{x}" y="2" width="10" height="10" fill="{_COLORS[i % 4]}"/>'
                         f'<text x="{x + 14}" y="11">{html.escape(name)}</text>')
    y0 = 20 * (len(series) > 1)
    for r, (label, values) in enumerate(rows):
        y = y0 + r * group_h
        parts.append(f'<text x="{_LABEL_W - 6}" y="{y + group_h / 2 + 1:.0f}" text-anchor="end">'
                     f'{html.escape(label[:40])}</text>')
        for i, value in enumerate(values):
            w = _PLOT_W * value / top
            by = y + i * _BAR_H
            parts.append(f'<rect x="{_LABEL_W}" y="{by}" width="{w:.1f}" height="{_BAR_H - 2}" '
                         f'fill="{_COLORS[i % 4]}"><title>{html.escape(series[i])}: {fmt.format(value)}</title></rect>'
                         f'<text x="{_LABEL_W + w + 4:.1f}" y="{by + _BAR_H - 4}">{fmt.format(value)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _length_rows(stats: dict[str, Any]) -> list[tuple[str, list[float]]]:
    """Histogram bins (powers of two of characters) of the input and output, side by side."""
    bins: dict[tuple[int, int], list[float]] = {}
    for i, side in enumerate(("input", "output")):
        for b in stats[side].get("length_chars", {}).get("histogram", []):
            bins.setdefault((b["from"], b["to"]), [0.0, 0.0])[i] = b["documents"]
    return [(f"{_human(lo)}-{_human(hi)} chars", values) for (lo, hi), values in sorted(bins.items())]


def _source_rows(report: dict[str, Any], top: int = 20) -> tuple[list, list]:
    stats = report["stats"]
    names = list(stats["input"].get("sources", {}))[:top]
    mix = [(n, [stats[s].get("sources", {}).get(n, {}).get("share", {}).get("documents", 0.0) * 100
                for s in ("input", "output")]) for n in names]
    removed = [(n, [float(sum(report["removed_by_source"].get(n, {}).values()))]) for n in names]
    return mix, removed


def _table(head: list[str], rows: list[list[Any]]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _examples(report: dict[str, Any]) -> str:
    parts = ["<h2>Examples of removed documents</h2>"]
    for reason, examples in report.get("examples", {}).items():
        parts.append(f"<h3>{html.escape(reason)} ({report['removed'].get(reason, 0):,})</h3>")
        for ex in examples:
            parts.append(f"<p><code>{html.escape(ex['origin'])}</code> {html.escape(str(ex['rule']))}: "
                         f"{html.escape(str(ex['detail']))}</p><pre>{html.escape(ex['excerpt'])}</pre>")
    return "\n".join(parts)


def render_html(report: dict[str, Any]) -> str:
    """The page for ``report`` (the dict written to report.json)."""
    removed = report["removed"]
    totals = _table(["input documents", "kept", "removed", "skipped lines (bad input)"],
                    [[f"{report['input_docs']:,}", f"{report['output_docs']:,}", f"{report['removed_docs']:,}",
                      ", ".join(f"{k}: {v}" for k, v in report.get("skipped", {}).items()) or "none"]])
    mix, by_source = _source_rows(report)
    plots = [
        hbar_chart("Document length (characters), before and after", _length_rows(report["stats"]),
                   ["before", "after"]),
        hbar_chart("Removed documents by stage", [(r, [float(n)]) for r, n in removed.items()], ["removed"]),
        hbar_chart("Removed documents by source", by_source, ["removed"]),
        hbar_chart("Source mix (% of documents), before and after", mix, ["before", "after"], "{:.1f}%"),
    ]
    rules = _table(["stage.rule", "documents"], [[k, f"{v:,}"] for k, v in report.get("removed_by_rule", {}).items()])
    pii = _table(["kind", "replacements"], [[k, f"{v:,}"] for k, v in report.get("pii", {}).items()] or [["none", 0]])
    edits = _table(["edit", "count"], [[k, f"{v:,}"] for k, v in report.get("edits", {}).items()] or [["none", 0]])
    dedup = report.get("dedup", {})
    dedup_line = (f"<p>Near duplicates: MinHash {dedup.get('num_perm')} permutations, {dedup.get('bands')} bands of "
                  f"{dedup.get('rows')} rows over word {dedup.get('ngram')}-grams: implied Jaccard threshold "
                  f"{dedup.get('implied_threshold', 0):.2f}.</p>") if dedup.get("near") else ""
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;"
             "text-align:left}pre{background:#f4f4f4;padding:.5em;white-space:pre-wrap;font-size:12px}")
    inputs = ", ".join(report.get("inputs", []))
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>Cleaning report</title>',
        f"<style>{style}</style></head><body>", "<h1>Cleaning report</h1>",
        f"<p>Inputs: <code>{html.escape(inputs)}</code>; preset <code>{html.escape(str(report.get('preset')))}"
        "</code></p>", totals, dedup_line, *plots,
        "<h2>Removals by rule</h2>", rules, "<h2>PII replaced</h2>", pii, "<h2>Edits of kept documents</h2>", edits,
        _examples(report), "</body></html>", ""])
