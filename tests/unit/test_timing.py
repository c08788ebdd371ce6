"""The grace periods are one setting's consequences (fi_stream.timing), in a fixed order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fi_stream.timing import (
    AUDIT_GRACE_MS,
    MAX_LAG_GRACE_MS,
    RESULT_GRACE_MS,
    TimingSettings,
)


@given(st.integers(min_value=1, max_value=10**9))
def test_aggregator_then_audit_then_client_for_any_grace(grace_ms: int) -> None:
    """The audit never calls missing what the aggregator may still emit, and the client
    never gives up on what the audit still counts as on time."""
    t = TimingSettings(grace_ms=grace_ms)
    assert t.lag_grace_ms < t.audit_grace_ms < t.result_grace_ms
    assert t.audit_grace_ms - t.lag_grace_ms >= grace_ms  # room for the emit and commit


def test_the_defaults_are_the_five_ten_and_fifteen_seconds_the_services_used() -> None:
    assert (MAX_LAG_GRACE_MS, AUDIT_GRACE_MS, RESULT_GRACE_MS) == (5_000, 10_000, 15_000)
    from fi_stream.audit import DEFAULT_GRACE_MS as audit_grace
    from fi_stream.settings import Settings

    timing = Settings().timing
    assert (timing.lag_grace_ms, audit_grace, timing.result_grace_ms) == (
        MAX_LAG_GRACE_MS, AUDIT_GRACE_MS, RESULT_GRACE_MS)


def test_a_negative_grace_is_refused() -> None:
    with pytest.raises(ValidationError):
        TimingSettings(grace_ms=-1)
