"""A participant's persisted privacy spend: a restart never resets the budget.

Spend is written (atomically, fsynced) BEFORE the answers it pays for are published. To
keep an fsync off every micro-batch, the ledger reserves answers ahead in blocks (like a
sequence allocator): the file always holds an upper bound of what was published, and a
restart counts the whole reservation as spent. A crash therefore wastes at most one block,
and a block is never more than 1 % of the budget, so a small budget is written per batch.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fi_stream.errors import ConfigError, LedgerLockedError
from fi_stream.privacy import PrivacyBudget, answers_that_fit, epsilon_spent, max_answers

LEDGER_FILE = "privacy_ledger.json"


@dataclass
class PrivacyLedger:
    path: Path
    budget: PrivacyBudget
    noise_multiplier: float
    #: Answers reserved ahead per write (at most 1 % of the budget's answers).
    reserve_ahead: int = 1024
    #: Answers granted so far; `reserved` ≥ `answers` is what the file holds.
    answers: int = 0
    reserved: int = 0
    _lock: IO[str] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: Path, budget: PrivacyBudget, noise_multiplier: float,
             reserve_ahead: int = 1024) -> PrivacyLedger:
        ledger = cls(path, budget, noise_multiplier, reserve_ahead)
        if path.exists():
            state = json.loads(path.read_text())
            if state["noise_multiplier"] != noise_multiplier or state["delta"] != budget.delta:
                raise ConfigError(
                    f"{path} was accumulated with σ={state['noise_multiplier']}, "
                    f"δ={state['delta']}; this run asks σ={noise_multiplier}, δ={budget.delta}. "
                    "Keep them, or archive the ledger to start a new accounting period on purpose."
                )
            # Whatever was reserved may have been published: count all of it as spent.
            ledger.answers = ledger.reserved = int(state["answers"])
        return ledger

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
        not spent), then let go of the lock. A crash skips this and loses the block."""
        if self.reserved > self.answers:
            self.reserved = self.answers
            self._save()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def epsilon(self) -> float:
        return epsilon_spent(self.answers, self.noise_multiplier, self.budget.delta)

    def must_persist(self, wanted: int) -> bool:
        """Could granting `wanted` answers write the file (an fsync)?"""
        return self.answers + wanted > self.reserved

    def reserve(self, wanted: int) -> int:
        """Grant up to `wanted` answers within the budget; when they go past the reservation,
        persist a new one (granted + a block ahead) before returning."""
        granted = answers_that_fit(self.answers, wanted, self.budget, self.noise_multiplier)
        self.answers += granted
        if self.answers > self.reserved:
            cap = max_answers(self.budget.epsilon_max, self.budget.delta, self.noise_multiplier)
            ahead = min(self.reserve_ahead, cap // 100)
            self.reserved = self.answers + answers_that_fit(
                self.answers, ahead, self.budget, self.noise_multiplier)
            self._save()
        return granted

    def _save(self) -> None:
        state = {
            # What counts as spent after a restart: everything reserved.
            "answers": self.reserved,
            "noise_multiplier": self.noise_multiplier,
            "delta": self.budget.delta,
            "epsilon_max": self.budget.epsilon_max,
            "epsilon": epsilon_spent(self.reserved, self.noise_multiplier, self.budget.delta),
        }
        # fsync before the rename: the spend must survive a machine crash, not only a
        # process crash, or a participant could answer past its budget after a reboot.
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write(json.dumps(state, indent=2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
