"""Per-client quotas on the real broker: a greedy client exhausts its own share of a
participant's budget and is declined `quota_exhausted`; another client still gets
answers, also after an unsigned impersonator used its name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fi_stream.admission import client_entry, publish
from fi_stream.models import load_digits_split
from fi_stream.privacy import Mechanism, epsilon_spent
from fi_stream.settings import Settings
from fi_stream.signing import public_key_bytes
from producers.query_client import QueryClient

from .harness import federation, operator_settings

pytestmark = pytest.mark.kafka

X = load_digits_split().x_test
CAP = 20  # the participant's whole budget, in answers
SHARE = 0.25  # each client's share: 5 answers


async def test_a_greedy_client_cannot_drain_the_others_budget(
        settings_factory: Callable[..., Settings], model_dirs: dict[str, Path],
        tmp_path: Path) -> None:
    from fi_stream.kafka import ensure_topics

    sigma, delta = 1.0, 1e-5
    base = settings_factory(
        privacy={"noise_multiplier": sigma, "delta": delta,
                 "epsilon_max": epsilon_spent(CAP, Mechanism(noise_multiplier=sigma), delta)},
        security={"client_quota_share": SHARE})
    await ensure_topics(base)
    settings, operator = operator_settings(base)
    greedy, modest = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    for cid, key in (("greedy", greedy), ("modest", modest)):
        await publish(settings, client_entry(cid, public_key_bytes(key)), operator)

    # A fresh model directory: the session's ledgers and quota files stay untouched.
    import shutil
    p1 = tmp_path / "p1"
    shutil.copytree(model_dirs["p1"], p1, ignore=shutil.ignore_patterns("privacy_*",
                                                                        "client_quota*"))
    async with federation(settings, {"p1": p1}, operator=operator) as fed:
        async with QueryClient(settings, client_id="greedy", key=greedy) as g:
            got = [await g.infer(X[i], deadline_ms=20_000) for i in range(8)]
        assert [r.status for r in got] == ["complete"] * 5 + ["insufficient"] * 3
        assert {d.reason for r in got[5:] for d in r.declined} == {"quota_exhausted"}

        # Claiming a name without its key is charged to the shared anonymous share.
        async with QueryClient(settings, client_id="modest") as impostor:
            fake = await asyncio.gather(*(impostor.infer(X[i], deadline_ms=20_000)
                                          for i in range(6)))
        assert sorted(r.status for r in fake) == ["complete"] * 5 + ["insufficient"]

        async with QueryClient(settings, client_id="modest", key=modest) as m:
            mine = [await m.infer(X[i], deadline_ms=20_000) for i in range(3)]
        assert [r.status for r in mine] == ["complete"] * 3
        quota = fed.participants["p1"].quota
        assert quota.spent == {"greedy": 5, "anonymous": 5, "modest": 3}
    # The counts survive a restart (they are persisted with the ledger).
    from fi_stream.quota import QUOTA_FILE, QuotaBook
    assert QuotaBook.open(p1 / QUOTA_FILE, CAP, SHARE).spent["greedy"] >= 5
