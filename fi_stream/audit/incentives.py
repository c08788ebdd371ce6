"""Label-free incentives: every window's recorded incentives equal a replay of
`IncentiveWindow` over the window's results (scores, rewards, counts, window fields), one
per participant, for everyone who took part; `shapley` (merit) events go to `merit`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from fi_stream.audit.context import AuditContext, Checked
from fi_stream.audit.findings import Kind, WindowKey, ref
from fi_stream.audit.log import Logged
from fi_stream.audit.merit import check_merit_window
from fi_stream.audit.report import WindowAudit
from fi_stream.incentives import INCENTIVE_METHODS
from fi_stream.merit import METHOD as MERIT_METHOD
from fi_stream.results import IncentiveWindow
from schemas import Incentive

Recorded = list[Logged[Incentive]]
#: Per budget, per participant: the incentive a replay gives.
Replayed = dict[float, dict[str, Incentive]]


def check_windows(ctx: AuditContext, checked: list[Checked]) -> list[WindowAudit]:
    by_window: dict[WindowKey, list[Checked]] = defaultdict(list)
    for c in checked:
        w = c.result.window
        by_window[WindowKey(w.partition, w.seq)].append(c)
    label_free: dict[WindowKey, Recorded] = defaultdict(list)
    merit: dict[WindowKey, Recorded] = defaultdict(list)
    for logged in ctx.log.incentives:
        iw = logged.event.window
        target = merit if logged.event.method == MERIT_METHOD else label_free
        target[WindowKey(iw.partition, iw.seq)].append(logged)
    last_seq: dict[int, int] = {}
    for p, seq in by_window.keys() | label_free.keys():
        last_seq[p] = max(last_seq.get(p, seq), seq)
    audits = []
    for key in sorted(by_window.keys() | label_free.keys()):
        results = sorted(by_window.get(key, []),
                         key=lambda c: (c.logged.partition, c.logged.offset))
        audits.append(_window(ctx, key, results, label_free.get(key, []),
                              key.seq < last_seq[key.partition]))
    for key, recorded in sorted(merit.items()):
        check_merit_window(ctx, key, by_window.get(key, []), recorded, label_free.get(key, []))
    ctx.counts["windows"] = len(audits)
    ctx.counts["windows_closed"] = sum(1 for w in audits if w.closed)
    ctx.counts["windows_verified"] = sum(1 for w in audits if w.verified)
    ctx.counts["incentives"] = len(ctx.log.incentives)
    return audits


def _participants(results: Iterable[Checked]) -> set[str]:
    """Everyone a window's results name as included, late, missing or declining."""
    out: set[str] = set()
    for c in results:
        r = c.result
        out.update(c.ids, r.late, r.missing, (d.participant_id for d in r.declined))
    return out


def _window(ctx: AuditContext, key: WindowKey, results: list[Checked], recorded: Recorded,
            superseded: bool) -> WindowAudit:
    audit = WindowAudit(partition=key.partition, seq=key.seq, results=len(results),
                        closed=bool(recorded), verified=False)
    if results:
        audit.first_completed_at_ms = results[0].result.completed_at_ms
        audit.last_completed_at_ms = results[-1].result.completed_at_ms
    for logged in recorded:
        audit.rewards.setdefault(logged.event.participant_id, logged.event.reward)
        audit.budget = logged.event.budget
    participants = _participants(results)
    if not recorded:
        # Open windows are normal at the end of the log; a later window of the same
        # partition means this one was closed, and its incentives must be in the log.
        if superseded and participants and not ctx.log.partial:
            ctx.findings.add("missing_incentive", "a later window exists but this one has no "
                             "incentives", window=key)
        return audit
    if not _verifiable(ctx, key, results, recorded):
        return audit
    methods = sorted({i.event.method for i in recorded})
    method = audit.method = methods[0]
    if not _known_method(ctx, key, methods):
        return audit
    budgets = sorted({i.event.budget for i in recorded})
    if len(budgets) > 1:
        ctx.findings.add("incentive_budget_mismatch", f"one window, several budgets {budgets}",
                         window=key)
    audit.verified = True
    audit.scores = _verify(ctx, key, results, recorded, budgets, method)
    _seen_incentives(ctx, key, recorded, participants)
    return audit


def _verifiable(ctx: AuditContext, key: WindowKey, results: list[Checked],
                recorded: Recorded) -> bool:
    """Are all of the window's results in the slice, with usable rows?"""
    if results and all(c.usable and len(set(c.ids)) == len(c.ids) for c in results) and not (
            ctx.log.partial and len(results) < recorded[0].event.window.results):
        return True
    if not results and not ctx.log.partial:
        ctx.findings.add("incentive_window_mismatch", "incentives for a window without "
                         "results", window=key,
                         refs=tuple(ref("incentives", i.partition, i.offset) for i in recorded))
    ctx.counts["windows_unverifiable"] += 1
    return False


def _known_method(ctx: AuditContext, key: WindowKey, methods: list[str]) -> bool:
    """One method per window, and one the replay knows."""
    if len(methods) > 1:
        ctx.findings.add("incentive_method_mismatch", f"one window, several methods {methods}",
                         window=key)
    if methods[0] not in INCENTIVE_METHODS:
        ctx.findings.add("unknown_incentive_method", f"method {methods[0]!r} is not one of "
                         f"{sorted(INCENTIVE_METHODS)}", window=key)
        return False
    return True


def _verify(ctx: AuditContext, key: WindowKey, results: list[Checked], recorded: Recorded,
            budgets: list[float], method: str) -> dict[str, float]:
    """Compare the recorded incentives with a replay; returns the replayed scores."""
    extra = [i.event.participant_id for i in recorded]
    if all(method in c.pre or c.rows is None for c in results):
        fast, scores = replay_batched(key, results, extra, budgets, method)
        if all(not incentive_differs(i.event, fast[i.event.budget][i.event.participant_id])
               for i in recorded):
            return scores
    # The arbiter: IncentiveWindow itself, the same order, the same float64 sums.
    replay = IncentiveWindow(key.partition, key.seq, 0, method)
    for c in results:
        replay.add(c.result, c.ids, c.rows)
    _count_extra(replay, extra)
    closed = {b: {i.participant_id: i for i in replay.close(budget=b)} for b in budgets}
    for logged in recorded:
        inc = logged.event
        for kind, message in incentive_differs(inc, closed[inc.budget][inc.participant_id]):
            ctx.findings.add(kind, message, participant_id=inc.participant_id, window=key,
                             refs=(ref("incentives", logged.partition, logged.offset),))
    return replay.current_scores()


def _count_extra(window: IncentiveWindow, extra: Iterable[str]) -> None:
    # Answers that came after their result are counted late and appear in no result; such
    # a participant still got an incentive (score 0) and takes part in the split.
    for pid in extra:
        window.counts.setdefault(pid, {})


def replay_batched(key: WindowKey, results: Sequence[Checked], extra: Iterable[str],
                   budgets: Iterable[float], method: str) -> tuple[Replayed, dict[str, float]]:
    """`IncentiveWindow` over the window's results, fed what the method's `add_batch`
    computed for each (`Checked.pre`): the same window, the same sums in the same order.
    Used only to accept recorded incentives that equal it; everything else goes to the
    per-query replay."""
    window = IncentiveWindow(key.partition, key.seq, 0, method)
    for c in results:
        window.add(c.result, c.ids, c.rows, batched=c)
    _count_extra(window, extra)
    return ({b: {i.participant_id: i for i in window.close(budget=b)} for b in budgets},
            window.current_scores())


def _seen_incentives(ctx: AuditContext, key: WindowKey, recorded: Recorded,
                     participants: set[str]) -> None:
    seen: dict[str, Logged[Incentive]] = {}
    for logged in recorded:
        pid = logged.event.participant_id
        if pid in seen:
            ctx.findings.add("duplicate_incentive", "a second incentive for one participant "
                             "and window", participant_id=pid, window=key,
                             refs=(ref("incentives", seen[pid].partition, seen[pid].offset),
                                   ref("incentives", logged.partition, logged.offset)))
        else:
            seen[pid] = logged
    for pid in sorted(participants - seen.keys()):
        ctx.findings.add("missing_incentive", "took part in the window but got no incentive",
                         participant_id=pid, window=key)


def incentive_differs(inc: Incentive, want: Incentive) -> list[tuple[Kind, str]]:
    """What a recorded incentive gets wrong against its recomputation (empty: nothing)."""
    out: list[tuple[Kind, str]] = []
    if inc.score != want.score:
        out.append(("incentive_score_mismatch",
                    f"score {inc.score!r}, recomputed {want.score!r}"))
    if inc.reward != want.reward:
        out.append(("incentive_reward_mismatch",
                    f"reward {inc.reward!r}, recomputed {want.reward!r}"))
    got, exp = inc.counts, want.counts
    wrong = [f"{name} {getattr(got, name)} != {getattr(exp, name)}"
             for name in ("included", "missing", "declined", "excluded")
             if getattr(got, name) != getattr(exp, name)]
    if got.late < exp.late:  # answers after the result was out add to it, by timing
        wrong.append(f"late {got.late} < {exp.late} listed late in the window's results")
    if wrong:
        out.append(("incentive_counts_mismatch", "; ".join(wrong)))
    w, x = inc.window, want.window
    wrong = [f"{name} {getattr(w, name)} != {getattr(x, name)}"
             for name in ("results", "first_completed_at_ms", "last_completed_at_ms")
             if getattr(w, name) != getattr(x, name)]
    if wrong:
        out.append(("incentive_window_mismatch", "; ".join(wrong)))
    return out
