"""The HTML report reads right: latency clipped at the p99.9 with p50/p95/p99 named, the ε
plot's budget line, counts in words (issue 15)."""

from __future__ import annotations

import re

import numpy as np

from fi_stream.audit.page import COUNT_NAMES, count_name, histogram_svg, lines_svg


def x_ticks(svg: str) -> list[float]:
    return [float(t) for t in re.findall(r'text-anchor="middle">([-0-9.e+]+)</text>', svg)]


def test_one_warm_up_outlier_does_not_stretch_the_latency_axis() -> None:
    rng = np.random.default_rng(0)
    latencies = [*rng.normal(160, 20, 5000).clip(50), 45_000.0]  # one 45 s warm-up query
    svg = histogram_svg(latencies, label="latency", x_label="ms")
    assert max(x_ticks(svg)) < 400  # before: ticks to 45,000 and one bar holding everything
    assert re.search(r">\d above p99\.9 \(max 4\.5e\+04 ms\) not drawn<", svg)
    for name in ("p50 ", "p95 ", "p99 "):
        assert name in svg
    assert re.search(r"p50 1[56]\d(\.\d+)? ms", svg)


def test_the_epsilon_plot_draws_the_budget_or_says_where_it_is() -> None:
    near = lines_svg({"p1": [(0, 1.0), (1, 6.0)]}, label="e", x_label="s", y_label="ε",
                     limit=(8.0, "budget ε_max = 8"))
    assert "budget ε_max = 8</text>" in near and 'stroke-dasharray="6 3"' in near
    far = lines_svg({"p1": [(0, 1.0), (1, 6.0)]}, label="e", x_label="s", y_label="ε",
                    limit=(1e6, "budget ε_max = 1e6"))
    assert "budget ε_max = 1e6: above this scale (largest value 6.0e-04 % of it)" in far


def test_counts_have_human_names() -> None:
    assert count_name("queries_answered") == "queries with a result"
    assert count_name("answers_excluded_non_finite") == "answer rows left out: non finite"
    assert count_name("some_new_count") == "some new count"
    assert all(" " in v or v.isalpha() for v in COUNT_NAMES.values())
