"""Merit: recorded `shapley` incentives equal `merit_incentives` over the labels below
their feedback horizon (a check), and, per window with labels, the Shapley values of
ensemble accuracy beside the label-free scores with their Spearman correlation (a
measurement for the report)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy.typing as npt

from fi_stream.audit.context import AuditContext, Checked
from fi_stream.audit.findings import Kind, WindowKey, ref
from fi_stream.audit.log import Logged
from fi_stream.audit.report import WindowAudit
from fi_stream.incentives import MAX_EXACT_SHAPLEY, ensemble_accuracy_value, shapley_exact, spearman
from fi_stream.merit import LabeledQuery, merit_incentives, window_labels
from schemas import Incentive

_COMPARED = ("score", "reward", "labeled", "stderr", "skill_fairness", "rank_correlation")


def check_merit_window(ctx: AuditContext, key: WindowKey, results: list[Checked],
                       recorded: list[Logged[Incentive]],
                       label_free: list[Logged[Incentive]]) -> None:
    """Recompute `shapley` events from the labels below their feedback horizon."""
    ctx.counts["merit_incentives"] += len(recorded)
    first = recorded[0].event
    if ctx.log.partial and len(results) < first.window.results:
        ctx.counts["windows_unverifiable"] += 1  # part of the window is outside the slice
        return
    horizon = first.feedback_horizon or 0
    queries = _labeled_queries(ctx, key, results, horizon)
    if queries is None:
        ctx.counts["windows_unverifiable"] += 1
        return
    rewards = {i.event.participant_id: i.event.reward for i in label_free}
    want = {i.participant_id: i for i in merit_incentives(
        first.window, queries, rewards, budget=first.budget, feedback_horizon=horizon)}
    got: set[str] = set()
    for logged in recorded:
        pid = logged.event.participant_id
        if pid in got:
            ctx.findings.add("duplicate_incentive", "a second merit incentive for one "
                             "participant and window", participant_id=pid, window=key,
                             refs=(ref("incentives", logged.partition, logged.offset),))
            continue
        got.add(pid)
        _compare(ctx, key, logged, want.get(pid))
    for pid in sorted(want.keys() - got):
        ctx.findings.add("missing_incentive", "no merit incentive for a participant of a "
                         "labeled window", participant_id=pid, window=key)


def _labeled_queries(ctx: AuditContext, key: WindowKey, results: list[Checked],
                     horizon: int) -> list[LabeledQuery] | None:
    """The window's first result per labeled query (None: one has no usable rows)."""
    labels = window_labels(((f.partition, f.offset, f.event.query_id, f.event.label)
                            for f in ctx.log.feedback), key.partition, horizon)
    seen: set[str] = set()
    queries = []
    for c in sorted(results, key=lambda c: (c.logged.partition, c.logged.offset)):
        r = c.result
        if r.query_id in seen or not r.included or r.query_id not in labels:
            continue
        seen.add(r.query_id)
        if c.rows is None:
            return None
        queries.append(LabeledQuery(participant_ids=c.ids, outputs=c.rows,
                                    label=labels[r.query_id]))
    return queries


def _compare(ctx: AuditContext, key: WindowKey, logged: Logged[Incentive],
             expected: Incentive | None) -> None:
    inc = logged.event
    refs = (ref("incentives", logged.partition, logged.offset),)
    if expected is None:
        ctx.findings.add("incentive_score_mismatch", "a merit incentive for a participant "
                         "in no labeled result of the window",
                         participant_id=inc.participant_id, window=key, refs=refs)
        return
    for name in _COMPARED:
        if getattr(inc, name) != getattr(expected, name):
            kind: Kind = ("incentive_reward_mismatch" if name == "reward"
                          else "incentive_score_mismatch")
            ctx.findings.add(kind, f"merit {name} {getattr(inc, name)!r}, recomputed "
                             f"{getattr(expected, name)!r}", participant_id=inc.participant_id,
                             window=key, refs=refs)


def measure_merit(ctx: AuditContext, windows: list[WindowAudit],
                  checked: list[Checked]) -> None:
    """Fill each window's `labelled`, `merit` and `spearman` (no findings)."""
    if not ctx.labels:
        return
    by_window = _labelled_by_window(ctx, checked)
    for audit in windows:
        labelled = by_window.get(WindowKey(audit.partition, audit.seq), [])
        audit.labelled = len(labelled)
        participants = sorted({pid for c in labelled for pid in c.ids})
        if not labelled or not 2 <= len(participants) <= MAX_EXACT_SHAPLEY:
            continue
        outputs: list[tuple[Sequence[str], npt.ArrayLike]] = [
            (c.ids, c.rows) for c in labelled if c.rows is not None]
        value = ensemble_accuracy_value(
            outputs, [ctx.labels[c.result.query_id] for c in labelled])
        audit.merit = shapley_exact(participants, value)
        if audit.scores:
            rho = spearman(audit.scores, audit.merit)
            audit.spearman = None if math.isnan(rho) else rho


def _labelled_by_window(ctx: AuditContext, checked: list[Checked]
                        ) -> dict[WindowKey, list[Checked]]:
    """The first result of each labelled query with usable rows, per window (a duplicate
    result says nothing more about merit)."""
    by_window: dict[WindowKey, list[Checked]] = defaultdict(list)
    first: set[str] = set()
    for c in checked:
        qid = c.result.query_id
        if qid in first:
            continue
        first.add(qid)
        if c.rows is not None and qid in ctx.labels:
            w = c.result.window
            by_window[WindowKey(w.partition, w.seq)].append(c)
    return by_window
