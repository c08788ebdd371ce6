"""A participant's persisted privacy spend: a restart never resets the budget.

Spend is written (atomically) BEFORE the answers it pays for are published: a crash in
between wastes a little budget but can never let a participant answer beyond it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fi_stream.errors import ConfigError
from fi_stream.privacy import PrivacyBudget, answers_that_fit, epsilon_spent

LEDGER_FILE = "privacy_ledger.json"


@dataclass
class PrivacyLedger:
    path: Path
    budget: PrivacyBudget
    noise_multiplier: float
    answers: int = 0

    @classmethod
    def open(cls, path: Path, budget: PrivacyBudget, noise_multiplier: float) -> PrivacyLedger:
        ledger = cls(path, budget, noise_multiplier)
        if path.exists():
            state = json.loads(path.read_text())
            if state["noise_multiplier"] != noise_multiplier or state["delta"] != budget.delta:
                raise ConfigError(
                    f"{path} was accumulated with σ={state['noise_multiplier']}, "
                    f"δ={state['delta']}; this run asks σ={noise_multiplier}, δ={budget.delta}. "
                    "Keep them, or archive the ledger to start a new accounting period on purpose."
                )
            ledger.answers = int(state["answers"])
        return ledger

    @property
    def epsilon(self) -> float:
        return epsilon_spent(self.answers, self.noise_multiplier, self.budget.delta)

    def reserve(self, wanted: int) -> int:
        """Grant up to `wanted` answers within the budget and persist the new total."""
        granted = answers_that_fit(self.answers, wanted, self.budget, self.noise_multiplier)
        if granted:
            self.answers += granted
            self._save()
        return granted

    def _save(self) -> None:
        state = {
            "answers": self.answers,
            "noise_multiplier": self.noise_multiplier,
            "delta": self.budget.delta,
            "epsilon_max": self.budget.epsilon_max,
            "epsilon": self.epsilon,
        }
        # fsync before the rename: the spend must survive a machine crash, not only a
        # process crash, or a participant could answer past its budget after a reboot.
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write(json.dumps(state, indent=2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
