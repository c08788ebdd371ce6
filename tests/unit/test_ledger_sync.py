"""The ledger topic's arbitration without Kafka: however claims interleave, the grants
never exceed the budget, and every reader computes the same ones."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fi_stream.ledger import PrivacyLedger
from fi_stream.ledger_sync import Claim, floor_ledger, grants
from fi_stream.privacy import PrivacyBudget

claims = st.lists(st.builds(Claim, st.sampled_from(["a", "b", "c"]),
                            st.integers(0, 50), st.integers(0, 200)), max_size=40)


@given(claims)
def test_grants_never_exceed_the_claimants_cap(cs: list[Claim]) -> None:
    granted = grants(cs)
    total = 0
    for c, g in zip(cs, granted, strict=True):
        assert 0 <= g <= c.answers
        total += g
        assert g == 0 or total <= c.cap
    assert grants(cs) == granted  # a pure fold: every reader agrees


@given(claims, st.integers(0, 100))
def test_grants_resume_from_a_prefix(cs: list[Claim], cut: int) -> None:
    cut = min(cut, len(cs))
    head = grants(cs[:cut])
    assert head + grants(cs[cut:], sum(head)) == grants(cs)


def test_two_processes_claiming_past_the_cap_get_exactly_the_cap() -> None:
    cs = [Claim("a", 4, 10), Claim("b", 4, 10), Claim("a", 4, 10), Claim("b", 4, 10)]
    assert grants(cs) == [4, 4, 2, 0]


def test_a_lost_ledger_file_is_raised_to_the_topics_spend(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ledger = PrivacyLedger.open(tmp_path / "l.json", PrivacyBudget(epsilon_max=1e3, delta=1e-5),
                                1.0)
    assert ledger.answers == 0
    floor_ledger(ledger, 17)
    assert ledger.answers == 17 and ledger.reserved >= 17
    floor_ledger(ledger, 5)  # an older topic view never lowers it
    assert ledger.answers == 17


def test_a_release_hands_back_at_most_what_its_process_was_granted() -> None:
    cs = [Claim("a", 6, 10), Claim("b", 6, 10), Claim("a", 9, 10, release=True),
          Claim("b", 3, 10), Claim("c", 1, 10, release=True)]
    assert grants(cs) == [6, 4, -6, 3, 0]  # a had 6; c held nothing
