from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest


@pytest.fixture
async def children() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Processes a test spawns; whatever is still running when it ends (a failed assertion,
    a timeout) is killed, so no service outlives its test."""
    procs: list[asyncio.subprocess.Process] = []
    yield procs
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
