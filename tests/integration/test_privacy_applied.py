"""Privacy enforced where it is applied (issue 18): what a real ParticipantService
publishes on the real broker is its clipped output plus N(0, (σ·C)²) noise per coordinate.

The clean outputs are computed here from the same model and inputs (softmax, then clip to
C): published − clean is then exactly the noise the participant added, whose std must be
σ·C. A participant that published raw probabilities, forgot to clip, or scaled the noise
wrongly fails one of these checks.
"""

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from fi_stream.clock import now_ms
from fi_stream.kafka import ensure_topics, make_producer
from fi_stream.ledger import LEDGER_FILE
from fi_stream.models import load_digits_split, load_model
from fi_stream.privacy import clip_rows
from fi_stream.settings import Settings
from fi_stream.signing import PRIVATE_KEY_FILE
from schemas.blocks import QueryBlockHeader, block_headers, encode_query_block, query_block

from .harness import federation, read_topic, response_batches

pytestmark = pytest.mark.kafka

N = 300  # answers: 3,000 noise coordinates, std known to ±1.3 % (one standard error)
CLIP = 0.5  # below 1, so that clipping a probability vector really changes it


def _fresh_model_dir(src: Path, dst: Path) -> Path:
    """A copy of a trained participant without its ledger and key (σ differs per test)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(LEDGER_FILE, PRIVATE_KEY_FILE))
    return dst


async def _publish_and_collect(settings: Settings, model_dir: Path, x: np.ndarray
                               ) -> dict[str, np.ndarray]:
    """query id → the row the participant published for it; the rows go as one block."""
    async with federation(settings, {"p1": model_dir}, with_aggregator=False):
        producer = make_producer(settings)
        await producer.start()
        try:
            block = query_block("q", "digits", x, created_at_ms=now_ms(),
                                deadline_ms=now_ms() + 60_000)
            await producer.send_and_wait(settings.topic_names.queries,
                                         encode_query_block(block), key=b"q",
                                         headers=block_headers(QueryBlockHeader))
        finally:
            await producer.stop()
        published: dict[str, np.ndarray] = {}
        async with asyncio.timeout(90):
            while len(published) < len(x):  # batches may still be on their way
                for batch in response_batches(await read_topic(
                        settings, settings.topic_names.responses, min_records=1, timeout=90)):
                    assert not batch.declined, batch.declined
                    published.update(zip(batch.answered, batch.outputs.to_numpy(),
                                         strict=True))
                await asyncio.sleep(0.2)
    return published


def _clean(model_dir: Path, x: np.ndarray) -> np.ndarray:
    module, _ = load_model(model_dir)
    with torch.inference_mode():
        probs = torch.softmax(module.eval()(torch.from_numpy(x)).float(), dim=-1)
    out: np.ndarray = clip_rows(probs, CLIP).numpy()
    return out


@pytest.mark.parametrize("sigma", [0.0, 0.3])
async def test_published_rows_are_clipped_outputs_plus_noise_of_std_sigma_c(
        sigma: float, settings_factory: Callable[..., Settings],
        model_dirs: dict[str, Path], tmp_path: Path) -> None:
    settings = settings_factory(privacy={"clip_norm": CLIP, "noise_multiplier": sigma,
                                         "epsilon_max": math.inf})  # σ = 0 spends ε = ∞
    await ensure_topics(settings)
    model_dir = _fresh_model_dir(model_dirs["p1"], tmp_path / "p1")
    x = np.ascontiguousarray(load_digits_split().x_test[:N])
    published = await _publish_and_collect(settings, model_dir, x)
    rows = np.stack([published[f"q.{i}"] for i in range(N)]).astype(np.float64)
    clean = _clean(model_dir, x).astype(np.float64)
    assert bool((np.linalg.norm(clean, axis=1) <= CLIP * (1 + 1e-5)).all())
    noise = rows - clean
    if sigma == 0:
        # No noise: every published row IS the clipped output (a raw softmax is not).
        assert np.allclose(rows, clean, atol=1e-5)
        assert bool((np.linalg.norm(rows, axis=1) <= CLIP * (1 + 1e-5)).all())
        return
    std = sigma * CLIP
    n = noise.size
    # s/σ has standard error 1/√(2n) ≈ 1.3 % for n = 3,000: 6 standard errors ≈ 7.7 %.
    assert abs(float(noise.std()) / std - 1) < 6 / math.sqrt(2 * n)
    assert abs(float(noise.mean())) < 6 * std / math.sqrt(n)
    # Every row is within C plus what its 10-coordinate noise can plausibly add:
    # ‖noise‖/std ~ χ(10), P(χ(10) > 3.16 + 6) < 1e-8.
    assert bool((np.linalg.norm(rows, axis=1) <= CLIP + std * (math.sqrt(10) + 6)).all())
    # With σ > 0 no published row is its clean output, nor the raw probabilities.
    assert not bool(np.isclose(rows, clean, atol=1e-6).all(axis=1).any())
