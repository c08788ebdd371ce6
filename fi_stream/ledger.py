"""A participant's persisted privacy spend: a restart never resets the budget.

The file records what is needed to RECOMPUTE the spend, not only an ε: answers per
mechanism and its parameters (format 2). ε is derived from them by the one function,
`fi_stream.privacy.epsilon`, so a change in the accounting (as when the sensitivity of
`gaussian` was corrected from C to √2·C) re-prices every ledger when it is opened. A
ledger written by the old code (format 1: one σ and an answer count, assumed `gaussian`)
is recomputed under today's rule when opened and rewritten in format 2, never silently
kept or reset.

Spend is written (atomically, fsynced) BEFORE the answers it pays for are published. To
keep an fsync off every micro-batch, the ledger reserves answers ahead in blocks (like a
sequence allocator): the file always holds an upper bound of what was published, and a
restart counts the whole reservation as spent. A crash therefore wastes at most one block,
and a block is never more than 1 % of the budget, so a small budget is written per batch.
Answers replayed from the reuse cache cost nothing and are counted apart (`reused`).
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import structlog

from fi_stream.errors import ConfigError, LedgerLockedError
from fi_stream.privacy import (
    Mechanism,
    PrivacyBudget,
    answers_that_fit,
    epsilon,
    max_answers,
)

log = structlog.get_logger(__name__)

LEDGER_FILE = "privacy_ledger.json"
FORMAT = 2


@dataclass
class PrivacyLedger:
    path: Path
    budget: PrivacyBudget
    #: The mechanism this run answers with; earlier runs' mechanisms stay in `spend`.
    mechanism: Mechanism
    #: Answers reserved ahead per write (at most 1 % of the budget's answers).
    reserve_ahead: int = 1024
    #: Answers granted per mechanism (this run's entry grows; `reserved` ≥ it is on file).
    spend: dict[Mechanism, int] = field(default_factory=dict)
    reserved: int = 0
    #: Answers replayed from the reuse cache: published again, no new spend.
    reused: int = 0
    #: What an old-format file said before it was recomputed (kept in the file as history).
    recomputed_from: dict[str, Any] | None = None
    _lock: IO[str] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: Path, budget: PrivacyBudget, mechanism: Mechanism,
             reserve_ahead: int = 1024) -> PrivacyLedger:
        ledger = cls(path, budget, mechanism, reserve_ahead)
        if path.exists():
            state = json.loads(path.read_text())
            if state.get("format") == FORMAT:
                ledger._load(state)
            elif "format" not in state and "noise_multiplier" in state:
                ledger._recompute_v1(state)
            else:
                raise ConfigError(
                    f"{path} has ledger format {state.get('format')!r}, this fi-stream reads "
                    f"{FORMAT} (and 1); upgrade fi-stream, never delete a ledger to go on")
        # Whatever was reserved may have been published: count all of it as spent.
        ledger.reserved = ledger.spend.setdefault(mechanism, 0)
        return ledger

    def _load(self, state: dict[str, Any]) -> None:
        for entry in state["spend"]:
            m = Mechanism(name=entry["mechanism"], clip_norm=entry["clip_norm"],
                          noise_multiplier=entry["noise_multiplier"],
                          teachers=entry.get("teachers"))
            self.spend[m] = self.spend.get(m, 0) + int(entry["answers"])
        self.reused = int(state.get("reused", 0))
        self.recomputed_from = state.get("recomputed_from")

    def _recompute_v1(self, state: dict[str, Any]) -> None:
        """Format 1 held one σ of the `gaussian` mechanism and an ε computed with L2
        sensitivity C (understated 1.5-2×). Its answers are re-priced at √2·C, and the file
        is rewritten at once so that the old ε is never read again."""
        old = Mechanism(name="gaussian", clip_norm=1.0,
                        noise_multiplier=float(state["noise_multiplier"]))
        self.spend[old] = int(state["answers"])
        self.recomputed_from = {"format": 1, "epsilon": state.get("epsilon"),
                                "delta": state.get("delta"), "answers": int(state["answers"]),
                                "noise_multiplier": old.noise_multiplier}
        now = epsilon(self.spend, self.budget.delta)
        log.warning("privacy_ledger_recomputed", path=str(self.path),
                    old_epsilon=state.get("epsilon"), epsilon=now, answers=self.spend[old],
                    reason="format 1 assumed sensitivity C; gaussian is √2·C")
        # This run may answer with another mechanism than the old file's (a new σ, or
        # teachers): give it its entry before the save reads `answers`.
        self.reserved = self.spend.setdefault(self.mechanism, 0)
        self._save()

    @property
    def answers(self) -> int:
        """Answers of this run's mechanism counted as spent (what a restart would count)."""
        return self.spend[self.mechanism]

    @property
    def epsilon(self) -> float:
        return epsilon(self.spend, self.budget.delta)

    @property
    def answers_left(self) -> int:
        """Answers of this run's mechanism the budget still allows."""
        return max(0, max_answers(self.budget, self.mechanism, self.spend) - self.answers)

    def must_persist(self, wanted: int) -> bool:
        """Could granting `wanted` answers write the file (an fsync)?"""
        return self.answers + wanted > self.reserved

    def reserve(self, wanted: int) -> int:
        """Grant up to `wanted` answers within the budget; when they go past the reservation,
        persist a new one (granted + a block ahead) before returning."""
        granted = answers_that_fit(self.spend, self.mechanism, wanted, self.budget)
        self.spend[self.mechanism] += granted
        if self.answers > self.reserved:
            cap = max_answers(self.budget, self.mechanism, self.spend)
            ahead = min(self.reserve_ahead, cap // 100)
            self.reserved = self.answers + answers_that_fit(
                self.spend, self.mechanism, ahead, self.budget)
            self._save()
        return granted

    def count_reused(self, n: int) -> None:
        """Answers replayed from the reuse cache (no spend); written with the next save."""
        self.reused += n

    def lock(self) -> None:
        """Hold `<ledger>.lock` (flock) until `close()`: two processes answering with one
        ledger would each reserve from the same count and overspend the budget together.
        The kernel drops the lock when the process dies, so a crash leaves nothing stale."""
        handle = self.path.with_suffix(".lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise LedgerLockedError(
                f"{self.path} is in use by pid {holder}: one process per participant id;"
                " stop the other one first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle

    def close(self) -> None:
        """A clean stop: write back what was actually answered (the reservation ahead was
        not spent) and the reuse count, then let go of the lock. A crash skips this and
        loses the block (and the reuse count since the last write)."""
        if self.reserved > self.answers or self.reused:
            self.reserved = self.answers
            self._save()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def to_json(self) -> dict[str, Any]:
        """The file's content: the spend per mechanism, with `reserved` as this run's count."""
        on_file = dict(self.spend)
        on_file[self.mechanism] = max(self.reserved, self.answers)
        state: dict[str, Any] = {
            "format": FORMAT,
            "spend": [{"mechanism": m.name, "noise_multiplier": m.noise_multiplier,
                       "clip_norm": m.clip_norm, "teachers": m.teachers, "answers": n}
                      for m, n in sorted(on_file.items(), key=lambda mn: repr(mn[0])) if n],
            "reused": self.reused,
            # Of this run's count, reserved ahead and not (yet) answered: 0 after a
            # clean stop (`fi-stream participant budget` tells answered from reserved).
            "reserved_ahead": max(0, self.reserved - self.answers),
            "delta": self.budget.delta,
            "epsilon_max": self.budget.epsilon_max,
            # Derived, for people reading the file; `open` never reads it back.
            "epsilon": epsilon(on_file, self.budget.delta),
        }
        if self.recomputed_from is not None:
            state["recomputed_from"] = self.recomputed_from
        return state

    def _save(self) -> None:
        # fsync before the rename: the spend must survive a machine crash, not only a
        # process crash, or a participant could answer past its budget after a reboot.
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write(json.dumps(self.to_json(), indent=2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def lock_holder(path: Path) -> int | None:
    """The pid of the process that holds `path`'s ledger lock (a running participant), or
    None. Takes the lock for an instant when it is free: call it only to look."""
    lock = path.with_suffix(".lock")
    if not lock.exists():
        return None
    with lock.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None
