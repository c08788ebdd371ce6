"""Results against their queries and the answers they list: one result per query, header
fields equal the query's, status follows from the counts, and every listed (or excluded)
answer exists, is that participant's answer to that query, came by the deadline and is
plausible for its registered privacy. The arithmetic is in `aggregates`."""

from __future__ import annotations

from collections import defaultdict

from fi_stream.aggregation import STRATEGIES
from fi_stream.audit.aggregates import recompute
from fi_stream.audit.context import AuditContext, Checked
from fi_stream.audit.findings import ref
from fi_stream.audit.log import Logged
from fi_stream.results import status_of
from schemas import ExcludedAnswer, IncludedAnswer, Query, Result

_HEADER = ("task", "created_at_ms", "deadline_ms", "quorum")


def check_results(ctx: AuditContext) -> list[Checked]:
    """Every result checked (in log order) and recomputed, then every query's result."""
    by_query: dict[str, list[Logged[Result]]] = defaultdict(list)
    checked: list[Checked] = []
    for logged in ctx.log.results:
        by_query[logged.event.query_id].append(logged)
        checked.append(check_result(ctx, logged))
    recompute(ctx, checked)
    _unanswered(ctx, by_query)
    _duplicates_and_orphans(ctx, by_query)
    ctx.counts["queries"] = len(ctx.queries)
    ctx.counts["queries_answered"] = sum(1 for q in ctx.queries if q in by_query)
    ctx.counts["results"] = len(ctx.log.results)
    return checked


def _unanswered(ctx: AuditContext, by_query: dict[str, list[Logged[Result]]]) -> None:
    """A query without a result is missing once its deadline and the grace have passed."""
    horizon = ctx.log.horizon_ms
    for qid, q in ctx.queries.items():
        if qid in by_query:
            continue
        if horizon is not None and q.event.deadline_ms + ctx.grace_ms > horizon:
            ctx.counts["queries_pending"] += 1
        elif ctx.log.partial:  # its result may lie outside the slice
            ctx.counts["queries_without_result_in_range"] += 1
        else:
            where = ref("queries", q.partition, q.offset)
            ctx.findings.add("missing_result", f"no result for the query at {where} "
                             f"(deadline {q.event.deadline_ms})", query_id=qid, refs=(where,))


def _duplicates_and_orphans(ctx: AuditContext,
                            by_query: dict[str, list[Logged[Result]]]) -> None:
    for qid, found in by_query.items():
        refs = tuple(ref("results", r.partition, r.offset) for r in found)
        if len(found) > 1:
            ctx.findings.add("duplicate_result", f"{len(found)} results for one query",
                             query_id=qid, refs=refs)
        if qid in ctx.queries:
            continue
        if all(r.event.status == "rejected" for r in found):
            # The query's record does not decode (the auditor cannot index it by id): its
            # rejected result is the answer it is owed.
            ctx.counts["rejected_undecodable_queries"] += 1
        elif ctx.log.partial:
            ctx.counts["results_out_of_range"] += len(found)
        else:
            ctx.findings.add("result_without_query", "no such query in the log", query_id=qid,
                             refs=refs)


def check_result(ctx: AuditContext, logged: Logged[Result]) -> Checked:
    """Every check that needs no arithmetic; finds the rows the result lists."""
    r = logged.event
    c = Checked(logged, [a.participant_id for a in r.included])
    q = ctx.queries.get(r.query_id)
    if q is not None:
        _against_query(ctx, c, q)
    _header(ctx, c)
    deadline = q.event.deadline_ms if q is not None else r.deadline_ms
    for a in r.included:
        _included(ctx, c, a, deadline)
    for e in r.excluded:
        _excluded(ctx, c, e)
    return c


def _against_query(ctx: AuditContext, c: Checked, q: Logged[Query]) -> None:
    r, qe = c.result, q.event
    wrong = [f"{name} {getattr(r, name)!r} != query's {getattr(qe, name)!r}"
             for name in _HEADER if getattr(r, name) != getattr(qe, name)]
    if wrong:
        ctx.findings.on_result(c.logged, "result_query_mismatch", "; ".join(wrong),
                               ref("queries", q.partition, q.offset))


def _header(ctx: AuditContext, c: Checked) -> None:
    """Included ids, late ones, status and strategy."""
    r, ids, flag = c.result, c.ids, ctx.findings.on_result
    if ids != sorted(set(ids)):
        flag(c.logged, "included_order", f"included ids {ids} are not unique and sorted")
    for pid in sorted(set(ids) & set(r.late)):
        flag(c.logged, "late_response_used", "listed as late and also included", pid=pid)
    expected = status_of(len(ids), r.quorum, len(r.missing) + len(r.late) + len(r.excluded))
    if r.status == "rejected":
        if ids or r.excluded or not r.reason:
            flag(c.logged, "status_mismatch", "a rejected result must include no answer and "
                 "give its reason")
    elif r.status != expected:
        flag(c.logged, "status_mismatch", f"status {r.status!r}, counts give {expected!r}")
    if r.strategy not in STRATEGIES:
        flag(c.logged, "unknown_strategy", f"strategy {r.strategy!r} is not one of "
             f"{sorted(STRATEGIES)}")


def _included(ctx: AuditContext, c: Checked, a: IncludedAnswer, deadline: int) -> None:
    """One listed answer: it exists, is whose and what it says, in time and plausible."""
    key = (a.partition, a.offset)
    there = ref("responses", a.partition, a.offset, a.index)
    found = ctx.rows.get(*key)
    flag, pid = ctx.findings.on_result, a.participant_id
    if found is None:
        c.usable = False
        if ctx.log.before_slice(a.partition, a.offset):
            ctx.counts["responses_out_of_range"] += 1
        else:
            flag(c.logged, "unknown_response", "no response batch at this position", there,
                 pid=pid)
        return
    if a.index >= len(found.answered):
        c.usable = False
        flag(c.logged, "unknown_response", f"batch has {len(found.answered)} answers, no row "
             f"{a.index}", there, pid=pid)
        return
    if found.participant_id != pid:
        flag(c.logged, "response_participant_mismatch",
             f"the batch is {found.participant_id}'s", there, pid=pid)
    if found.answered[a.index] != c.result.query_id:
        flag(c.logged, "response_query_mismatch",
             f"row {a.index} answers {found.answered[a.index]}", there, pid=pid)
    produced_at = found.batch.produced_at_ms
    if produced_at > deadline:
        flag(c.logged, "response_after_deadline", f"produced at {produced_at}, "
             f"{produced_at - deadline} ms after the deadline {deadline}", there, pid=pid)
    ctx.list_row(key, c, a.index)
    why = ctx.screened(key)[a.index]
    if why is not None:
        flag(c.logged, "implausible_answer_used", f"row is {why} for the participant's "
             "registered privacy", there, pid=pid)
    if c.width and found.width != c.width:
        c.usable = False
        flag(c.logged, "aggregate_mismatch", "the listed rows have different widths")
    c.width = found.width
    c.flat.append(found.start + a.index)


def _excluded(ctx: AuditContext, c: Checked, e: ExcludedAnswer) -> None:
    """An answer left out as implausible must exist and really be implausible."""
    ctx.counts["answers_excluded"] += 1
    ctx.counts[f"answers_excluded_{e.reason}"] += 1
    found = ctx.rows.get(e.partition, e.offset)
    there = ref("responses", e.partition, e.offset, e.index)
    flag, pid = ctx.findings.on_result, e.participant_id
    if found is None or e.index >= len(found.answered):
        if not ctx.log.before_slice(e.partition, e.offset):
            flag(c.logged, "unknown_response", "no excluded answer at this position", there,
                 pid=pid)
    elif not found.answers(e.index, pid, c.result.query_id):
        flag(c.logged, "response_query_mismatch", "the excluded row is not this participant's "
             "answer to this query", there, pid=pid)
    elif ctx.screened((e.partition, e.offset))[e.index] is None:
        flag(c.logged, "wrong_exclusion", f"excluded as {e.reason}, but the row is plausible "
             "for the participant's registered privacy", there, pid=pid)
