"""The audit as ONE self-contained HTML page: inline SVG plots and tables, no scripts, no
external fonts or styles, nothing fetched from a network.

Plots: end-to-end latency at the aggregator (completed_at_ms − created_at_ms, drawn up to
the p99.9, p50/p95/p99 marked), recorded rewards per participant per window (in reward
points, with the window's budget), ε spent over time per participant with the budget line,
and the Spearman correlation between label-free scores and merit (Shapley values of
ensemble accuracy on fi.feedback labels) per window, all from one `AuditReport`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

import numpy as np

from fi_stream.audit.findings import KINDS
from fi_stream.audit.report import AuditReport, PrivacySpend, WindowAudit

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939")
W, H = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 62, 130, 18, 46

Point = tuple[float, float]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values (1, 2 or 5 × 10^k apart) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    out = []
    t = first
    while t <= hi + step * 1e-9:
        out.append(round(t, 12))
        t += step
    return out


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.4g}"


class _Frame:
    """Maps data to pixels and draws axes, ticks, labels and a legend."""

    def __init__(self, x: tuple[float, float], y: tuple[float, float], x_label: str,
                 y_label: str) -> None:
        self.x0, self.x1 = x if x[1] > x[0] else (x[0] - 0.5, x[0] + 0.5)
        self.y0, self.y1 = y if y[1] > y[0] else (y[0] - 0.5, y[0] + 0.5)
        self.x_label, self.y_label = x_label, y_label
        self.parts: list[str] = []

    def px(self, x: float) -> float:
        return LEFT + (x - self.x0) / (self.x1 - self.x0) * (W - LEFT - RIGHT)

    def py(self, y: float) -> float:
        return H - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (H - TOP - BOTTOM)

    def axes(self) -> None:
        p = self.parts
        p.append(f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" '
                 f'height="{H - TOP - BOTTOM}" fill="#fafafa" stroke="#999"/>')
        for t in _ticks(self.x0, self.x1):
            x = self.px(t)
            p.append(f'<line x1="{x:.1f}" y1="{H - BOTTOM}" x2="{x:.1f}" y2="{H - BOTTOM + 4}" '
                     f'stroke="#666"/><text x="{x:.1f}" y="{H - BOTTOM + 16}" '
                     f'text-anchor="middle">{_fmt(t)}</text>')
        for t in _ticks(self.y0, self.y1):
            y = self.py(t)
            p.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" '
                     f'stroke="#e4e4e4"/><text x="{LEFT - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{_fmt(t)}</text>')
        p.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle">'
                 f'{escape(self.x_label)}</text>')
        p.append(f'<text transform="translate(14,{(TOP + H - BOTTOM) / 2}) rotate(-90)" '
                 f'text-anchor="middle">{escape(self.y_label)}</text>')

    def legend(self, names: Sequence[str]) -> None:
        for i, name in enumerate(names[:16]):
            y = TOP + 8 + i * 16
            self.parts.append(f'<rect x="{W - RIGHT + 10}" y="{y - 8}" width="10" height="10" '
                f'fill="{PALETTE[i % len(PALETTE)]}"/><text x="{W - RIGHT + 25}" y="{y + 1}">'
                f'{escape(name)}</text>')

    def svg(self, label: str) -> str:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
                f'height="{H}" role="img" aria-label="{escape(label)}" '
                f'font-family="sans-serif" font-size="11">{"".join(self.parts)}</svg>')


def _empty(label: str, why: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} 60" width="{W}" '
            f'height="60" role="img" aria-label="{escape(label)}" font-family="sans-serif" '
            f'font-size="12"><rect x="1" y="1" width="{W - 2}" height="58" fill="#fafafa" '
            f'stroke="#ccc"/><text x="{W / 2}" y="35" text-anchor="middle" fill="#666">'
            f'{escape(why)}</text></svg>')


#: The histogram's range ends at this quantile: one warm-up outlier (seconds, where the
#: rest take milliseconds) no longer squeezes every other bar into the first bin.
CLIP_QUANTILE = 99.9


def histogram_svg(values: Sequence[float], *, label: str, x_label: str, bins: int = 40,
                  unit: str = "ms") -> str:
    """Bars up to the p99.9 (what lies beyond is counted in a note, not drawn), with the
    p50, p95 and p99 marked and named in the legend."""
    if not values:
        return _empty(label, "no data")
    a = np.asarray(values, dtype=np.float64)
    lo, hi = float(a.min()), float(np.percentile(a, CLIP_QUANTILE))
    beyond = int((a > hi).sum())
    if hi - lo < 1:  # one value: a narrow bar in a readable range, not one filling the frame
        lo, hi = lo - 5, hi + 5
        bins = 10
    counts, edges = np.histogram(a[a <= hi], bins=bins, range=(lo, hi))
    f = _Frame((float(edges[0]), float(edges[-1])), (0.0, float(counts.max()) * 1.05),
               x_label, "results")
    f.axes()
    if beyond:
        f.parts.append(f'<text x="{W - RIGHT - 4}" y="{TOP + 12}" text-anchor="end" '
                       f'fill="#666">{beyond} above p99.9 (max {_fmt(float(a.max()))} {unit})'
                       f' not drawn</text>')
    for c, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True):
        if c:
            x, w = f.px(float(lo)), max(1.0, f.px(float(hi)) - f.px(float(lo)) - 1)
            f.parts.append(f'<rect x="{x:.1f}" y="{f.py(float(c)):.1f}" width="{w:.1f}" '
                           f'height="{f.py(0) - f.py(float(c)):.1f}" fill="{PALETTE[0]}"/>')
    names = []
    for i, (q, name) in enumerate(zip(np.percentile(a, [50, 95, 99]), ("p50", "p95", "p99"),
                                      strict=True)):
        x = f.px(float(q))
        color = PALETTE[i + 1]
        f.parts.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOTTOM}" '
                       f'stroke="{color}" stroke-dasharray="4 3"/>')
        names.append(f"{name} {_fmt(float(q))} {unit}")
    f.parts.append("")
    for i, name in enumerate(names):
        y = TOP + 8 + i * 16
        f.parts.append(f'<line x1="{W - RIGHT + 10}" y1="{y - 3}" x2="{W - RIGHT + 20}" '
                       f'y2="{y - 3}" stroke="{PALETTE[i + 1]}" stroke-width="2"/>'
                       f'<text x="{W - RIGHT + 25}" y="{y + 1}">{escape(name)}</text>')
    return f.svg(label)


#: A limit line is drawn to scale when the data reach this share of it; below, the plot
#: keeps the data's scale and says where the limit is (ε_max = 10⁶ would flatten ε to 0).
LIMIT_IN_SCALE = 0.05


def lines_svg(series: Mapping[str, Sequence[Point]], *, label: str, x_label: str,
              y_label: str, y_range: tuple[float, float] | None = None, step: bool = False,
              zero_line: bool = False, limit: tuple[float, str] | None = None) -> str:
    """One line per series. `limit`: (value, name) of a horizontal line (a budget)."""
    pts = [(x, y) for s in series.values() for x, y in s if math.isfinite(y)]
    if not pts:
        return _empty(label, "no data")
    xs = [p[0] for p in pts]
    top = max(p[1] for p in pts)
    lo, hi, on_scale = _y_scale(min(p[1] for p in pts), top, y_range, limit)
    f = _Frame((min(xs), max(xs)), (lo, hi), x_label, y_label)
    f.axes()
    if limit is not None:
        _limit_line(f, limit, on_scale, top)
    if zero_line and lo < 0 < hi:
        f.parts.append(f'<line x1="{LEFT}" y1="{f.py(0):.1f}" x2="{W - RIGHT}" '
                       f'y2="{f.py(0):.1f}" stroke="#888"/>')
    names = sorted(series)
    for i, name in enumerate(names):
        _line(f, [(x, y) for x, y in series[name] if math.isfinite(y)],
              PALETTE[i % len(PALETTE)], step)
    f.legend(names)
    return f.svg(label)


def _y_scale(bottom: float, top: float, y_range: tuple[float, float] | None,
             limit: tuple[float, str] | None) -> tuple[float, float, bool]:
    """(lo, hi) of the y axis, and whether the limit is drawn to scale."""
    lo, hi = y_range if y_range else (min(0.0, bottom), top * 1.05 if top > 0 else 1.0)
    on_scale = limit is not None and top >= LIMIT_IN_SCALE * limit[0]
    if limit is not None and on_scale and not y_range:
        hi = max(hi, limit[0] * 1.08)
    return lo, hi, on_scale


def _limit_line(f: _Frame, limit: tuple[float, str], on_scale: bool, top: float) -> None:
    """The limit drawn to scale, or a note of how far below it the data stay."""
    value, name = limit
    if on_scale:
        f.parts.append(f'<line x1="{LEFT}" y1="{f.py(value):.1f}" x2="{W - RIGHT}" '
                       f'y2="{f.py(value):.1f}" stroke="#c62828" stroke-width="1.5" '
                       f'stroke-dasharray="6 3"/><text x="{LEFT + 6}" '
                       f'y="{f.py(value) - 4:.1f}" fill="#c62828">{escape(name)}</text>')
    else:
        share = 100 * top / value if value > 0 else float("inf")
        f.parts.append(f'<text x="{LEFT + 6}" y="{TOP + 12}" fill="#c62828">'
                       f'{escape(name)}: above this scale (largest value '
                       f'{_fmt(share)} % of it)</text>')


def _line(f: _Frame, s: Sequence[Point], color: str, step: bool) -> None:
    """One series: a polyline (a staircase with `step`), and its points when few."""
    if not s:
        return
    coords: list[str] = []
    prev_y: float | None = None
    for x, y in s:
        if step and prev_y is not None:
            coords.append(f"{f.px(x):.1f},{f.py(prev_y):.1f}")
        coords.append(f"{f.px(x):.1f},{f.py(y):.1f}")
        prev_y = y
    if len(s) > 1:
        f.parts.append(f'<polyline points="{" ".join(coords)}" fill="none" '
                       f'stroke="{color}" stroke-width="1.6"/>')
    if len(s) <= 60 or not step:
        f.parts.extend(f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="2.6" '
                       f'fill="{color}"/>' for x, y in s)


# -- the page -------------------------------------------------------------------------------------

def _window_order(windows: Sequence[WindowAudit]) -> list[WindowAudit]:
    return sorted((w for w in windows if w.closed),
                  key=lambda w: (w.first_completed_at_ms, w.partition, w.seq))


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


#: What each audit count means, in words (the JSON keeps the short names).
COUNT_NAMES = {
    "records": "records read",
    "queries": "queries",
    "queries_answered": "queries with a result",
    "queries_pending": "queries still open (deadline not yet past)",
    "queries_without_result_in_range": "queries whose result lies outside the range read",
    "duplicate_queries": "queries sent twice (same id)",
    "rejected_undecodable_queries": "undecodable queries answered with `rejected`",
    "results": "results",
    "results_out_of_range": "results of queries outside the range read",
    "responses": "response batches",
    "responses_out_of_range": "response batches outside the range read",
    "signatures_verified": "batch signatures verified",
    "unsigned_batches_not_counted": "batches without a valid signature (no privacy counted)",
    "answers_excluded": "answer rows left out as implausible",
    "incentives": "incentive events",
    "merit_incentives": "merit (Shapley) incentive events",
    "windows": "incentive windows",
    "windows_closed": "incentive windows closed",
    "windows_verified": "incentive windows recomputed exactly",
    "windows_unverifiable": "incentive windows that cannot be recomputed from the range read",
    "dlq": "dead letters",
}


def count_name(key: str) -> str:
    """`key` in words; `answers_excluded_<reason>` names its reason."""
    if key in COUNT_NAMES:
        return COUNT_NAMES[key]
    if key.startswith("answers_excluded_"):
        return f"answer rows left out: {key.removeprefix('answers_excluded_').replace('_', ' ')}"
    return key.replace("_", " ")


_CSS = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f2f2f2}
.ok{color:#1a7f37;font-weight:bold}.bad{color:#c62828;font-weight:bold}
.grid{display:flex;flex-wrap:wrap;gap:12px}.note{color:#666;font-size:12px}
"""


def render_html(report: AuditReport, *, title: str = "fi-stream audit",
                max_rows: int = 200) -> str:
    """The whole page for one audit report."""
    verdict = ('<p class="ok">Everything holds.</p>' if report.ok else
               f'<p class="bad">{len(report.discrepancies)} discrepancies.</p>')
    scope = ("A slice of the log: checks that need records outside it were skipped."
             if report.partial else "The whole log.")
    counts = _table(["what", "how many"], [(count_name(k), v) for k, v in report.counts.items()])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{escape(title)}</h1>{verdict}{_speed(report.throughput)}
<p class="note">{scope}</p>
<h2>Plots</h2><div class="grid">{_plots(report)}</div>
<h2>Discrepancies</h2>{_discrepancies(report, max_rows)}
<h2>Privacy spend (recomputed from the response batches)</h2>{_spend(report.spend)}
<h2>Dead letters</h2>{_dead_letters(report.dlq_sources)}
<h2>Counts</h2>{counts}
</body></html>
"""


def _speed(t: Mapping[str, float]) -> str:
    return (f'<p class="note">{t["events"]:.0f} records checked in {t["seconds"]:.2f} s: '
            f'{t["events_per_s"]:,.0f}/s, {t.get("queries_per_s", 0):,.0f} queries/s.</p>'
            if t else "")


def _discrepancies(report: AuditReport, max_rows: int) -> str:
    """Found per kind, then the first `max_rows` discrepancies."""
    kinds = report.by_kind()
    out = (_table(["kind", "found"], list(kinds.items())) if kinds else "") + (
        f'<p class="note">Kinds checked: {escape(", ".join(KINDS))}.</p>')
    shown = report.discrepancies[:max_rows]
    if not shown:
        return out
    out += _table(["kind", "query", "participant", "window", "where", "what"], [
        (d.kind, d.query_id or "", d.participant_id or "",
         f"{d.window[0]}/{d.window[1]}" if d.window else "", " ".join(d.refs), d.message)
        for d in shown])
    if len(report.discrepancies) > max_rows:
        out += f'<p class="note">… {len(report.discrepancies) - max_rows} more in the JSON.</p>'
    return out


def _spend(spend: Sequence[PrivacySpend]) -> str:
    return _table(["participant", "answers", "batches", "σ", "δ", "ε spent", "ε max",
                   "max answers", "exceeded"], [_spend_row(s) for s in spend])


def _spend_row(s: PrivacySpend) -> tuple[object, ...]:
    return (s.participant_id, s.answers, s.batches,
            ", ".join(f"{x:g}" for x in s.noise_multipliers),
            "" if s.delta is None else f"{s.delta:g}",
            "n/a" if s.epsilon is None else f"{s.epsilon:.4g}",
            "" if s.epsilon_max is None else f"{s.epsilon_max:g}",
            "" if s.max_answers is None else s.max_answers, "yes" if s.exceeded else "no")


def _dead_letters(sources: Mapping[str, int]) -> str:
    return _table(["error", "source topic", "records"], [
        (*k.split(" ", 1), v) for k, v in sources.items()]) if sources \
        else '<p class="note">The DLQ is empty.</p>'


def _plots(report: AuditReport) -> str:
    windows = _window_order(report.windows)
    return "".join(f"<div><h3>{escape(h)}</h3>{svg}</div>" for h, svg in (
        ("End-to-end latency at the aggregator: query created → result emitted",
         histogram_svg(report.latencies_ms, label="latency histogram",
                       x_label="completed_at_ms − created_at_ms (ms), up to the p99.9")),
        ("Rewards per participant per window", _rewards_plot(windows)),
        _epsilon_plot(report.spend),
        _rho_plot(windows),
    ))


def _rewards_plot(windows: Sequence[WindowAudit]) -> str:
    participants = sorted({p for w in windows for p in w.rewards})
    rewards = {p: [(float(i), w.rewards[p]) for i, w in enumerate(windows) if p in w.rewards]
               for p in participants}
    budgets = sorted({w.budget for w in windows if w.budget is not None})
    unit = (f"reward points (each window splits {_fmt(budgets[0])})"
            if len(budgets) == 1 else "reward points (of each window's budget)")
    return lines_svg(rewards, label="rewards", x_label="window (by time)", y_label=unit)


def _epsilon_plot(spend: Sequence[PrivacySpend]) -> tuple[str, str]:
    """(heading, plot) of ε over time per participant, with the budget line."""
    origin = min((t for s in spend for t, _ in s.series), default=0)
    epsilon = {s.participant_id: [((t - origin) / 1000, e) for t, e in s.series]
               for s in spend if s.series}
    eps_max = sorted({s.epsilon_max for s in spend if s.epsilon_max is not None})
    deltas = sorted({s.delta for s in spend if s.delta is not None})
    at_delta = f" at δ = {_fmt(deltas[0])}" if len(deltas) == 1 else " at each one's δ"
    limit = None
    if eps_max:
        smallest = "budget" if len(eps_max) == 1 else "smallest budget"
        limit = (eps_max[0], f"{smallest} ε_max = {_fmt(eps_max[0])}")
    return (f"Privacy spent over time (ε{at_delta}) and the budget",
            lines_svg(epsilon, label="epsilon", x_label="seconds since the first answer",
                      y_label=f"ε spent{at_delta}", step=True, limit=limit))


def _rho_plot(windows: Sequence[WindowAudit]) -> tuple[str, str]:
    """(heading, plot) of Spearman ρ between label-free scores and merit per window."""
    rho = [(float(i), w.spearman) for i, w in enumerate(windows) if w.spearman is not None]
    mean_rho = f"mean ρ = {np.mean([r for _, r in rho]):.3f} over {len(rho)} windows" if rho \
        else "no window has labels for ≥ 2 participants yet"
    return (f"Label-free vs merit, Spearman ρ per window ({mean_rho})",
            lines_svg({"ρ": rho}, label="spearman", x_label="window (by time)",
                      y_label="Spearman ρ", y_range=(-1.05, 1.05), zero_line=True))
