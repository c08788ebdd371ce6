"""Privacy spend: every participant's ε recomputed from its validly signed response batches
(a forged batch spends nothing of anyone's), priced by fi_stream.privacy, within the budget
it registered (`budget_exceeded`)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from fi_stream.audit.context import AuditContext
from fi_stream.audit.report import PrivacySpend
from fi_stream.privacy import (
    Mechanism,
    PrivacyBudget,
    epsilon,
    epsilon_series,
    max_answers,
)
from schemas import Budget, ResponseBatch


@dataclass(slots=True)
class _Answers:
    """A participant's answers counted as its ledger counts them."""

    per_mechanism: Counter[Mechanism] = field(default_factory=Counter)
    #: (produced_at_ms, answers per mechanism so far) after each batch.
    cumulative: list[tuple[int, Counter[Mechanism]]] = field(default_factory=list)
    reused: int = 0


def check_privacy(ctx: AuditContext, samples: int) -> list[PrivacySpend]:
    per: dict[str, list[ResponseBatch]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    for logged in ctx.log.responses:
        b = ctx.batches.get((logged.partition, logged.offset))
        if b is None:
            continue  # not a valid block: it published nothing
        if (b.participant_id, b.batch_id) in seen:
            continue  # a redelivered batch publishes nothing new
        if not ctx.genuine((logged.partition, logged.offset)):
            # Not signed by the participant: it spent nothing of its budget (the aggregator
            # dead-lettered it; `bad_signature` flags it if a result uses it).
            ctx.counts["unsigned_batches_not_counted"] += 1
            continue
        seen.add((b.participant_id, b.batch_id))
        per[b.participant_id].append(b)
    return [_spend(ctx, pid, sorted(per[pid], key=lambda b: b.produced_at_ms), samples)
            for pid in sorted(per)]


def _count(ctx: AuditContext, batches: list[ResponseBatch]) -> _Answers:
    """Answers per mechanism. An answer that repeats, bit for bit, an earlier answer of the
    same participant to the same input under the same mechanism is a replay from its reuse
    cache: post-processing, free. Fresh noise on a repeated input is NOT free (averaging
    such answers strips the noise), and it is counted like any other answer."""
    out = _Answers()
    released: dict[tuple[bytes, Mechanism], set[bytes]] = defaultdict(set)
    for b in batches:
        mechanism = Mechanism.from_privacy(b.privacy)
        for qid, row in zip(b.answered, b.outputs.to_numpy(), strict=True):
            query = ctx.queries.get(qid)
            if query is not None:
                earlier = released[(query.event.input.data, mechanism)]
                if row.tobytes() in earlier:
                    out.reused += 1
                    continue
                earlier.add(row.tobytes())
            out.per_mechanism[mechanism] += 1
        out.cumulative.append((b.produced_at_ms, Counter(out.per_mechanism)))
    return out


def _spend(ctx: AuditContext, pid: str, batches: list[ResponseBatch],
           samples: int) -> PrivacySpend:
    """The participant's answers priced by the one ε function, against its budget."""
    mechanisms = sorted({Mechanism.from_privacy(b.privacy) for b in batches}, key=repr)
    counted = _count(ctx, batches)
    spend = PrivacySpend(participant_id=pid, answers=sum(counted.per_mechanism.values()),
                         batches=len(batches),
                         noise_multipliers=sorted({m.noise_multiplier for m in mechanisms}),
                         mechanisms=[m.describe() for m in mechanisms], reused=counted.reused)
    entry = ctx.registry.entries.get(pid)
    if entry is None or entry.budget is None:
        return spend
    _price(ctx, spend, entry.budget, counted, mechanisms)
    spend.series = epsilon_series(counted.cumulative, entry.budget.delta, samples)
    return spend


def _price(ctx: AuditContext, spend: PrivacySpend, budget: Budget, counted: _Answers,
           mechanisms: list[Mechanism]) -> None:
    spend.delta, spend.epsilon_max = budget.delta, budget.epsilon_max
    spend.epsilon = epsilon(counted.per_mechanism, budget.delta)
    if len(mechanisms) == 1:
        spend.max_answers = max_answers(PrivacyBudget(budget.epsilon_max, budget.delta),
                                        mechanisms[0])
    spend.exceeded = spend.epsilon > budget.epsilon_max
    if spend.exceeded:
        cap = "" if spend.max_answers is None else f"; {spend.max_answers} answers fit"
        ctx.findings.add("budget_exceeded", f"{spend.answers} answers give ε = "
                         f"{spend.epsilon:.4g} at δ = {budget.delta:g}; the registered budget "
                         f"is ε_max = {budget.epsilon_max:g} under "
                         f"{', '.join(spend.mechanisms)}{cap}", participant_id=spend.participant_id)
