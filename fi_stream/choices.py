"""Names a setting may take, importable without numpy or pydantic: the CLI lists them in
`--help`. Strategies and incentive methods are checked against their registries
(`fi_stream.strategies`, `fi_stream.incentives`) when settings load."""

from __future__ import annotations

#: The levels a user may ask for (settings and --log-level).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Strategic participants of `participant run --behaviour` (fi_stream.behaviours, which
#: imports torch; a test keeps the two lists equal).
BEHAVIOURS = ("honest", "random", "constant", "uniform", "lazy", "copycat", "colluding")


def strategy_names() -> list[str]:
    """Aggregation strategies a setting or a query may name (the registry's names)."""
    from fi_stream.strategies import known_strategies  # numpy: imported only when asked

    return known_strategies()

