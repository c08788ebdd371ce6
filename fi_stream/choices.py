"""Names a setting may take, importable without numpy or pydantic: the CLI lists them in
`--help`, the settings check against them when they load."""

from __future__ import annotations

#: The levels a user may ask for (settings and --log-level).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Strategic participants of `participant run --behaviour` (fi_stream.behaviours, which
#: imports torch; a test keeps the two lists equal).
BEHAVIOURS = ("honest", "random", "constant", "uniform", "lazy", "copycat", "colluding")


def strategy_names() -> list[str]:
    """Aggregation strategies a setting or a query may name (the registry's keys)."""
    from fi_stream.aggregation import STRATEGIES  # numpy: imported only when asked

    return sorted(STRATEGIES)


def incentive_method_names() -> list[str]:
    """Label-free incentive methods the aggregator can run."""
    from fi_stream.incentives import INCENTIVE_METHODS

    return sorted(INCENTIVE_METHODS)


def check_name(what: str, value: str, known: list[str]) -> str:
    """`value` if it is one of `known`, else a ValueError that lists them."""
    if value not in known:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(known)}")
    return value
