"""The aggregator's per-partition history: the open incentive window and the state of
every stateful strategy (`fi_stream.strategies.StatefulStrategy`).

A query may name its own strategy, so the history of every stateful strategy is kept on
every partition, whatever the configured default. All of it travels in the commit
metadata of the partition's queries offset (`resume_state`) and a new owner resumes
from there (`resume`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fi_stream.incentives import IncentiveWindow
from fi_stream.results import Batched
from fi_stream.settings import AggregatorSettings
from fi_stream.strategies import StrategyState, stateful_strategies
from schemas import Incentive, Result


class Histories:
    """Per owned partition: the open window (opened on first use) and the strategies'
    states (fresh until a window closes or a resume restores them)."""

    def __init__(self, cfg: AggregatorSettings) -> None:
        self.cfg = cfg
        self.windows: dict[int, IncentiveWindow] = {}
        self._states: dict[int, dict[str, StrategyState]] = {}

    def window(self, partition: int, now: int) -> IncentiveWindow:
        window = self.windows.get(partition)
        if window is None:
            window = self.windows[partition] = IncentiveWindow(
                partition, 0, now, self.cfg.incentive_method)
        return window

    def _strategy_states(self, partition: int) -> dict[str, StrategyState]:
        states = self._states.get(partition)
        if states is None:
            states = self._states[partition] = {
                name: s.from_state(None) for name, s in stateful_strategies().items()}
        return states

    def weights(self, partition: int, strategy: str) -> Mapping[str, float] | None:
        """The history weights of `strategy` (None: it keeps none, or none yet)."""
        state = self._strategy_states(partition).get(strategy)
        return None if state is None else state.weights()

    def add(self, partition: int, now: int, result: Result, ids: list[str], outputs: Any,
            batched: Batched | None = None) -> None:
        """One result into the partition's window and every strategy's history."""
        self.window(partition, now).add(result, ids, outputs, batched)
        if outputs is not None:
            for state in self._strategy_states(partition).values():
                state.observe(ids, outputs)

    def close_due(self, now: int) -> list[Incentive]:
        """Close every window full or old enough: its incentives, in order; the
        strategies' histories move on to the next window."""
        cfg = self.cfg
        out: list[Incentive] = []
        for partition, window in list(self.windows.items()):
            if window.results >= cfg.window_results or (
                    window.results and now - window.opened_at_ms >= cfg.window_seconds * 1000):
                incentives = window.close(budget=cfg.reward_budget)
                rewards = {i.participant_id: i.reward for i in incentives}
                for state in self._strategy_states(partition).values():
                    state.close_window(rewards)
                self.windows[partition] = IncentiveWindow(partition, window.seq + 1, now,
                                                          cfg.incentive_method)
                out += incentives
        return out

    def drop(self, partition: int) -> None:
        """A revoked partition: its next owner resumes it from the commit metadata."""
        self.windows.pop(partition, None)
        self._states.pop(partition, None)

    def resume_state(self, partition: int) -> dict[str, Any]:
        """The window and each stateful strategy's state (under its `state_key`)."""
        window = self.windows.get(partition)
        states = self._states.get(partition, {})
        out: dict[str, Any] = {"window": window.to_state() if window is not None else None}
        for name, s in stateful_strategies().items():
            state = states.get(name)
            out[s.state_key] = state.to_state() if state is not None else None
        return out

    def resume(self, partition: int, state: Mapping[str, Any]) -> None:
        """A new owner's partition, from its commit metadata (`resume_state`)."""
        saved = state.get("window")
        if saved is not None:
            self.windows[partition] = IncentiveWindow.from_state(saved)
        self._states[partition] = {name: s.from_state(state.get(s.state_key))
                                   for name, s in stateful_strategies().items()}
