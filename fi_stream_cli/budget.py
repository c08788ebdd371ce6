"""`fi-stream participant budget`: what a participant's privacy ledger file says, read
without taking the ledger (so it works while the participant runs), in words.

The file counts as spent everything reserved: the answers given plus, while the
participant runs (or after a crash), the block reserved ahead. A clean stop writes back
the answers given, so then the count is exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: fi_stream.ledger.LEDGER_FILE (that module imports torch: `status` must start fast).
LEDGER_FILE = "privacy_ledger.json"


@dataclass(frozen=True, slots=True)
class LedgerReading:
    #: Answers counted as spent (what a restart counts).
    counted: int
    #: Of which reserved ahead and not answered as of the last write (None: a file written
    #: before fi-stream recorded it).
    reserved_ahead: int | None
    #: ε of `counted` at the ledger's δ, as the file says.
    epsilon: float | None
    #: The running participant holding the ledger, if any.
    holder: int | None

    @property
    def answered(self) -> int | None:
        return None if self.reserved_ahead is None else self.counted - self.reserved_ahead


def counted_answers(state: dict[str, Any]) -> int:
    """Answers a ledger file counts as spent (format 1: one count; later: per mechanism)."""
    if isinstance(state.get("spend"), list):
        return sum(int(entry.get("answers", 0)) for entry in state["spend"])
    return int(state.get("answers", 0))


def read_ledger(model_dir: Path, *, holder: bool = True) -> LedgerReading | None:
    """None when the participant never answered here (no ledger file). `holder`: also
    find out whether a running participant holds it (imports the ledger module)."""
    path = model_dir / LEDGER_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    pid = None
    if holder:
        from fi_stream.ledger import lock_holder

        pid = lock_holder(path)
    ahead = state.get("reserved_ahead")
    return LedgerReading(counted=counted_answers(state),
                         reserved_ahead=int(ahead) if ahead is not None else None,
                         epsilon=state.get("epsilon"), holder=pid)


def describe(pid: str, reading: LedgerReading | None, *, epsilon_max: float, delta: float,
             answers_left: int, fit_under: str | None = None) -> str:
    """The budget in one paragraph: answered, reserved, ε of the budget, what is left
    (`fit_under`: the mechanism the next answers would use)."""
    budget = f"budget ε_max = {epsilon_max:g} at δ = {delta:g}"
    if reading is None:
        return (f"{pid}: no answers yet; ε = 0 of {budget}; {answers_left:,} answers fit"
                + (f" under {fit_under}" if fit_under else ""))
    eps = "?" if reading.epsilon is None else f"{reading.epsilon:.4g}"
    share = ("" if reading.epsilon is None or not epsilon_max
             else f" ({100 * reading.epsilon / epsilon_max:.3g} %)")
    spent = f"ε = {eps} of {budget}{share}"
    left = f"{answers_left:,} more answers fit" + (f" under {fit_under}" if fit_under else "")
    if reading.answered is None:
        return (f"{pid}: {reading.counted:,} answers counted as spent (answered or reserved; "
                f"this ledger predates the split); {spent}; {left}")
    if reading.holder is not None:
        return (f"{pid}: running (pid {reading.holder}): answered ≥ {reading.answered:,} "
                f"(as of the ledger's last write) with {reading.reserved_ahead:,} more "
                f"reserved ahead; {reading.counted:,} counted as spent until it stops "
                f"cleanly; {spent}; {left}. The live count: fi_participant_queries_total"
                "{outcome=\"answered\"} on its --metrics-port")
    if reading.reserved_ahead:
        return (f"{pid}: {reading.answered:,} answered and {reading.reserved_ahead:,} "
                f"reserved ahead by a run that did not stop cleanly (a crash): all "
                f"{reading.counted:,} count as spent; {spent}; {left}")
    return f"{pid}: {reading.answered:,} answers given, none reserved; {spent}; {left}"
