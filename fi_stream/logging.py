"""structlog set-up: JSON lines when not on a terminal, context (query_id, participant_id) bound
through contextvars so every log line of a hop names what it is about.

Libraries that log through the standard library (aiokafka above all) are routed through the
same renderer, so a JSON log stays JSON; and a library that repeats itself on every retry
("Unable connect to ...", every 100 ms while a broker is down) is logged once per cause
per minute, with the number of repeats it swallowed.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

import structlog


class OncePerCause(logging.Filter):
    """Let a record through the first time its (logger, level, message template) is seen in
    `window_s`; count the repeats in between and attach them to the next one let through."""

    def __init__(self, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._last: dict[tuple[str, int, str], float] = {}
        self._repeats: dict[tuple[str, int, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._window_s:
            self._repeats[key] = self._repeats.get(key, 0) + 1
            return False
        self._last[key] = now
        record.repeats = self._repeats.pop(key, 0)
        return True


class StructlogHandler(logging.Handler):
    """Hands standard-library records to structlog (same processors, same renderer)."""

    def emit(self, record: logging.LogRecord) -> None:
        extra: dict[str, object] = {"logger": record.name}
        repeats = getattr(record, "repeats", 0)
        if repeats:
            extra["repeats_suppressed"] = repeats
        if record.exc_info and record.levelno >= logging.ERROR:
            extra["exc_info"] = record.exc_info
        try:
            structlog.get_logger(record.name).log(record.levelno, record.getMessage(), **extra)
        except Exception:
            self.handleError(record)


def configure_logging(level: str = "INFO", json: bool | None = None,
                      stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger once per process (idempotent).

    `stream`: where log lines go (default stderr). The demo sends them to its run's folder
    so that what the terminal shows is its story alone."""
    out = sys.stderr if stream is None else stream
    as_json = (not out.isatty()) if json is None else json
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # aiokafka logs through the stdlib; keep its chatter at WARNING unless debugging.
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, StructlogHandler)]:
        root.removeHandler(old)
    handler = StructlogHandler()
    if numeric > logging.DEBUG:
        handler.addFilter(OncePerCause())
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
