"""Strategic participants on the real broker: a copycat that re-sends p1's answers from
fi.responses is caught on every query and paid nothing, a random participant earns less
than every honest one under the default scheme, the live incentives equal what
`fi-stream experiment incentives` computes from the same rows, and the audit is clean."""

from __future__ import annotations

import asyncio
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from consumers.aggregator import AggregatorService
from consumers.auditor import Auditor
from consumers.copycat import CopycatParticipant
from consumers.participant import make_participant
from fi_stream.copycat import flag_copies
from fi_stream.incentives import DEFAULT_METHOD, split_rewards, window_scores
from fi_stream.kafka import ensure_topics
from fi_stream.models import load_digits_split
from fi_stream.settings import Settings
from fi_stream.signing import PRIVATE_KEY_FILE
from producers.query_client import QueryClient
from schemas import Incentive, Result, decode

from .harness import read_topic, response_batches

pytestmark = pytest.mark.kafka

SPLIT = load_digits_split()
QUERIES = 40


def _own_dir(src: Path, dest: Path) -> Path:
    """The same model under another participant's own key."""
    shutil.copytree(src, dest)
    (dest / PRIVATE_KEY_FILE).unlink(missing_ok=True)
    return dest


async def test_copycat_is_caught_and_strategic_answers_earn_least(
        settings_factory: Callable[..., Settings], model_dirs: dict[str, Path],
        tmp_path: Path) -> None:
    settings = settings_factory(aggregator={"window_results": 1000, "window_seconds": 1.0})
    assert settings.aggregator.incentive_method == DEFAULT_METHOD
    await ensure_topics(settings)
    services: list[Any] = [make_participant(settings, participant_id=p, model_dir=d)
                           for p, d in model_dirs.items()]
    services.append(make_participant(settings, participant_id="rnd",
                                     model_dir=_own_dir(model_dirs["p2"], tmp_path / "rnd"),
                                     behaviour="random"))
    copycat = make_participant(settings, participant_id="cc",
                               model_dir=_own_dir(model_dirs["p1"], tmp_path / "cc"),
                               behaviour="copycat", copy_from="p1")
    assert isinstance(copycat, CopycatParticipant)
    services.append(copycat)
    ids = {*model_dirs, "rnd", "cc"}
    aggregator = AggregatorService(settings, instance_id="strategic")
    started: list[Any] = []
    try:
        for s in services:
            await s.start()
            started.append(s)
        await aggregator.start()
        started.append(aggregator)
        await aggregator.registry.wait_for(ids, timeout=30)
        await asyncio.sleep(1.0)  # the copycat's reader is at the end of fi.responses
        async with QueryClient(settings, quorum=2) as client:
            results = [r async for _, _, r in client.stream(SPLIT.x_test[:QUERIES],
                                                            deadline_ms=20_000)]
        incentives = await _all_incentives(settings, QUERIES)
    finally:
        for s in reversed(started):
            await s.stop()

    # Every copied answer is caught, named as p1's, and never used; no honest one is.
    assert all(r.status == "complete" for r in results)
    assert all("cc" not in {a.participant_id for a in r.included} for r in results)
    assert all([(c.participant_id, c.copy_of) for c in r.copied] == [("cc", "p1")]
               for r in results)
    assert copycat.copied == QUERIES
    paid: dict[str, float] = defaultdict(float)
    copied: dict[str, int] = defaultdict(int)
    for inc in incentives:
        paid[inc.participant_id] += inc.reward
        copied[inc.participant_id] += inc.counts.copied
        assert inc.method == DEFAULT_METHOD
    assert copied == {"cc": QUERIES} | {p: 0 for p in ids - {"cc"}}
    assert paid["cc"] == 0.0
    assert paid["rnd"] < min(paid[p] for p in model_dirs)

    # The same rows through the experiment's functions: the same flags, the same shares.
    records = await read_topic(settings, settings.topic_names.responses)
    responses = list(zip([r.offset for r in records], response_batches(records), strict=True))
    answers: dict[str, dict[str, tuple[tuple[int, int], np.ndarray]]] = defaultdict(dict)
    for offset, batch in responses:
        rows = batch.outputs.to_numpy()
        for i, qid in enumerate(batch.answered):
            answers[qid][batch.participant_id] = ((offset, i), rows[i].astype(np.float64))
    by_window: dict[tuple[int, int], list[Result]] = defaultdict(list)
    for r in results:
        got = answers[r.query_id]
        pids = sorted(got)
        flags = flag_copies(np.stack([got[p][1] for p in pids]), [0.3] * len(pids),
                            [got[p][0] for p in pids])
        assert [(pids[f.index], pids[f.of]) for f in flags] == [("cc", "p1")]
        by_window[(r.window.partition, r.window.seq)].append(r)
    for key, members in by_window.items():
        members.sort(key=lambda r: r.completed_at_ms)
        per_query = [([a.participant_id for a in r.included],
                      np.stack([answers[r.query_id][a.participant_id][1] for a in r.included]))
                     for r in members]
        live = {i.participant_id: i.reward / i.budget for i in incentives
                if (i.window.partition, i.window.seq) == key}
        scores = window_scores(per_query, DEFAULT_METHOD)
        offline = split_rewards({p: scores.get(p, 0.0) for p in sorted(live)}, 1.0)
        assert offline == pytest.approx(live, abs=1e-12)

    report = await Auditor(settings, merit=False).run()
    assert report.ok, [d.line() for d in report.discrepancies]
    assert report.counts["copies_recorded"] == QUERIES


async def _all_incentives(settings: Settings, results: int) -> list[Incentive]:
    """Wait until closed windows cover every result."""
    for _ in range(100):
        incentives = [decode(r.value, Incentive) for r in
                      await read_topic(settings, settings.topic_names.incentives)]
        covered = {(i.window.partition, i.window.seq): i.window.results for i in incentives}
        if sum(covered.values()) >= results:
            return incentives
        await asyncio.sleep(0.3)
    raise AssertionError("incentive windows did not cover every result in 30 s")
