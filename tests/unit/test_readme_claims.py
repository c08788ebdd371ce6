"""README claims that no test held (issue 18): the key file mode, JSON logs with bound
ids, the Prometheus metrics, answers after their result
counted late, and the hand-off of long work (> 5 ms a batch) to a worker thread."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry, generate_latest

import consumers.participant as participant_mod
from consumers.participant import INLINE_WORK_S, ParticipantService
from consumers.participant_metrics import ParticipantMetrics
from fi_stream.engine import Prepared
from fi_stream.logging import configure_logging
from fi_stream.metrics import serve_metrics
from fi_stream.results import IncentiveWindow
from fi_stream.settings import load_settings
from fi_stream.signing import generate_key, load_or_create_key, public_key_bytes

# -- keys: mode 0600, created once ------------------------------------------------------------


def test_key_file_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "models" / "p1" / "signing_key.pem"
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_key_bytes(load_or_create_key(path)) == public_key_bytes(key)
    with pytest.raises(FileExistsError):
        generate_key(path)  # never overwrites a key others already trust


# -- logs: JSON lines with the bound ids ------------------------------------------------------


def test_logs_are_json_lines_with_bound_ids(capsys: pytest.CaptureFixture[str]) -> None:
    before = structlog.get_config()  # restored after: capsys closes the stream it hands out
    configure_logging("INFO", json=True)
    try:
        structlog.contextvars.bind_contextvars(participant_id="p1")
        structlog.get_logger("t").info("answered", query_id="q-7")
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.configure(**before)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "answered" and line["query_id"] == "q-7"
    assert line["participant_id"] == "p1" and line["level"] == "info" and "timestamp" in line


# -- metrics: served in Prometheus text format -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_participant_metrics_are_served(tmp_path: Path) -> None:
    service = ParticipantService(load_settings(None), participant_id="p1", model_dir=tmp_path)
    names = generate_latest(service.metrics_registry).decode()
    for metric in ("fi_participant_queries", "fi_participant_batch_size",
                   "fi_participant_device_seconds", "fi_participant_encode_seconds"):
        assert metric in names, names
    port = _free_port()
    serve_metrics(service.metrics_registry, port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert "fi_participant_batch_size" in r.read().decode()
    serve_metrics(CollectorRegistry(), None)  # no port: nothing served, no error


# -- late answers after their result -----------------------------------------------------------


def test_answers_after_their_result_are_counted_late() -> None:
    window = IncentiveWindow(partition=0, seq=0, opened_at_ms=0, method="loo_agreement")
    window.add_late("p2")
    window.add_late("p2")
    [inc] = window.close(budget=10.0)
    assert inc.participant_id == "p2" and inc.counts.late == 2 and inc.reward == 0.0


# -- the hand-off to the worker thread --------------------------------------------------------


class _Producer:
    async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _service(work_s: float, device: str = "cpu", persist: bool = False) -> ParticipantService:
    s = ParticipantService.__new__(ParticipantService)
    s.topics = load_settings(None).topic_names
    s.participant_id = "p1"
    s._producer = _Producer()  # type: ignore[assignment]
    s.engine = SimpleNamespace(device=SimpleNamespace(type=device))  # type: ignore[assignment]
    s.ledger = SimpleNamespace(must_persist=lambda wanted: persist)  # type: ignore[assignment]
    s._work_s = work_s
    s._budget = None  # no ledger topic
    s.batches = s.answered = 0
    s._metrics = ParticipantMetrics(CollectorRegistry())
    return s


@pytest.mark.parametrize(("work_s", "device", "persist", "threaded"), [
    (INLINE_WORK_S / 2, "cpu", False, False),  # short CPU work: on the loop
    (INLINE_WORK_S * 1.01, "cpu", False, True),  # longer than 5 ms: to the thread
    (INLINE_WORK_S / 2, "cuda", False, True),  # a GPU: always the thread
    (INLINE_WORK_S / 2, "cpu", True, True),  # an fsync of the ledger: the thread
])
async def test_long_work_goes_to_the_worker_thread(
        monkeypatch: pytest.MonkeyPatch, work_s: float, device: str, persist: bool,
        threaded: bool) -> None:
    assert INLINE_WORK_S == 0.005  # the README's "longer than 5 ms a batch"
    calls: list[str] = []

    async def to_thread(fn: Any, *args: Any) -> Any:
        calls.append("thread")
        return fn(*args)

    monkeypatch.setattr(participant_mod.asyncio, "to_thread", to_thread)
    s = _service(work_s, device, persist)
    s._compute = lambda prepared, limit: (calls.append("compute"), (0, 0, []))[1]  # type: ignore[method-assign]
    batch = SimpleNamespace(prepared=Prepared(), records=[], acks=[])
    await s._publish(batch)  # type: ignore[arg-type]
    assert calls == (["thread", "compute"] if threaded else ["compute"])
