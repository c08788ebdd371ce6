"""The one place where a failure becomes what the user reads: one line on stderr and an
exit code (2: fix the command or the settings; 1: fix the environment or retry; 130:
interrupted). A traceback is shown only with `--log-level DEBUG` (or FI_LOG_LEVEL=DEBUG).

Errors fi-stream raises on purpose are `FiStreamError`s whose message names the fix;
the few foreign errors that reach the top (a Kafka connection lost mid-run, a file that
cannot be read) are described here, in words, instead of by their traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from typing import Any

import typer

from fi_stream.errors import FiStreamError

try:  # typer ≥ 0.20 vendors click as typer._click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on the real click
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[assignment]

DEBUG_HINT = "run with --log-level DEBUG for the traceback"


def explain(exc: BaseException) -> tuple[str, int]:
    """The one line (without the `error: ` prefix) and exit code for `exc`."""
    if isinstance(exc, FiStreamError):
        return str(exc), exc.exit_code
    if isinstance(exc, UsageError):
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        return exc.format_message().replace("Value error, ", "") + where, 2
    if isinstance(exc, KeyboardInterrupt | typer.Abort):
        return "interrupted", 130
    if type(exc).__module__.startswith("aiokafka"):
        return (f"Kafka: {type(exc).__name__}: {exc or 'no detail'}; is the broker still up "
                "(`fi-stream kafka status`)? " + DEBUG_HINT), 1
    if isinstance(exc, PermissionError | FileNotFoundError | IsADirectoryError):
        return f"{exc.strerror}: {exc.filename}", 1
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"address already in use ({exc}); pick a free port", 2
    return f"unexpected {type(exc).__name__}: {exc}; {DEBUG_HINT}", 1


def debugging(argv: Sequence[str]) -> bool:
    """Is a traceback wanted (--log-level DEBUG on the command line or in the environment)?"""
    for i, arg in enumerate(argv):
        if arg.lower() == "--log-level=debug":
            return True
        if arg == "--log-level" and i + 1 < len(argv) and argv[i + 1].lower() == "debug":
            return True
    return os.environ.get("FI_LOG_LEVEL", "").lower() == "debug"


def one_line(message: str) -> str:
    """`message` on one line (a foreign error's text may span several)."""
    return " ".join(message.split())


class CliApp(typer.Typer):
    """typer's app, run so that every failure ends in one line and an exit code."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        argv = list(kwargs.get("args") or sys.argv[1:])
        kwargs.setdefault("standalone_mode", False)
        kwargs.setdefault("prog_name", "fi-stream")
        try:
            code = super().__call__(*args, **kwargs)
        except NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help() if exc.ctx else exc.format_message(), err=True)
            code = 2
        except (Exception, KeyboardInterrupt) as exc:
            if debugging(argv) and not isinstance(exc, UsageError):
                raise
            message, code = explain(exc)
            typer.secho(f"error: {one_line(message)}", fg="red", err=True)
        sys.exit(code if isinstance(code, int) else 0)
