"""Defect 6: a service started while the broker is unreachable used to exit 1 with a
traceback. It now waits with bounded backoff, logs the cause once, and still stops
gracefully on SIGTERM. (No broker is needed: nothing listens on the port.)"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from fi_stream.service_env import service_env
from fi_stream.settings import load_settings

pytestmark = pytest.mark.slow

NOBODY = "127.0.0.1:39250"  # in this suite's range; nothing listens there


@pytest.mark.parametrize("command", [["aggregator", "run", "--instance-id", "u"], ["merit"]],
                         ids=["aggregator", "merit"])
async def test_a_service_without_a_broker_waits_for_it_instead_of_exiting(
        tmp_path: Path, children: list[Any], command: list[str]) -> None:
    settings = load_settings(None, kafka={"bootstrap": NOBODY, "topic_prefix": "u."})
    env = dict(service_env(settings), FI_RETRY__INITIAL_BACKOFF_S="0.2",
               FI_RETRY__MAX_BACKOFF_S="1")
    log = tmp_path / "service.log"
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fi_stream_cli", *command, env=env, stdout=out,
            stderr=out, stdin=asyncio.subprocess.DEVNULL)
    children.append(proc)
    async with asyncio.timeout(90):  # imports take a while on a busy machine
        while '"kafka_unavailable"' not in log.read_text():
            assert proc.returncode is None, log.read_text()[-3000:]
            await asyncio.sleep(0.2)
    await asyncio.sleep(5)  # several more attempts (0.2 s doubling to 1 s)
    assert proc.returncode is None, log.read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert text.count('"kafka_unavailable"') == 1, text[-3000:]  # once per cause
    assert "Traceback" not in text
    assert text.count("Unable connect to") <= 2, text[-3000:]  # the client's own line, once
