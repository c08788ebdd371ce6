"""`reward_weighted`: each participant weighted by the rewards it earned in the closed
windows of this aggregator partition (its history, kept here, resumed from the commit
metadata under "rewards")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from fi_stream.strategies.base import F64
from fi_stream.strategies.registry import register
from fi_stream.strategies.weighted import Weighted


class RunningRewards:
    """Rewards summed over the partition's closed windows, in the order they closed."""

    def __init__(self, running: dict[str, float] | None) -> None:
        self.running = running

    def weights(self) -> Mapping[str, float] | None:
        return self.running

    def observe(self, ids: Sequence[str], outputs: F64) -> None:
        pass  # only the rewards matter

    def close_window(self, rewards: Mapping[str, float]) -> None:
        running = self.running = self.running if self.running is not None else {}
        for pid, reward in rewards.items():
            running[pid] = running.get(pid, 0.0) + reward

    def to_state(self) -> Any:
        return self.running


@register("reward_weighted")
class RewardWeighted(Weighted):
    state_key: ClassVar[str] = "rewards"

    def from_state(self, saved: Any) -> RunningRewards:
        return RunningRewards(dict(saved) if saved else None)
