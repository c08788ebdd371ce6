"""What the aggregator makes of one response batch before it joins it: dropped (unknown
participant, bad signature), or joined with each row usable or excluded and why.

Pure: the batch and its participant's registry entry in, a verdict out; the service
dead-letters, counts and joins accordingly.
"""

from __future__ import annotations

from dataclasses import dataclass

from fi_stream.signing import verify_batch
from fi_stream.validation import own_spec, privacy_problem, screen_rows
from schemas import ExclusionReason, Participant, ResponseBatch


@dataclass(frozen=True, slots=True)
class Verdict:
    #: Per answered row: None (usable) or why it is excluded; None: drop the whole batch.
    exclusions: list[ExclusionReason | None] | None
    #: (reason, detail) of the dead letter the batch earns, if any.
    dead_letter: tuple[str, str] | None = None


def check_batch(batch: ResponseBatch, entry: Participant | None,
                registry_topic: str) -> Verdict:
    """Signed by its registered participant, with the privacy it registered, rows
    plausible for its noise: what is not is dead-lettered, and rows are excluded."""
    if entry is None:
        return Verdict(None, ("unknown_participant",
                              f"{batch.participant_id} is not in {registry_topic}"))
    if not verify_batch(batch, entry.public_key):
        return Verdict(None, ("bad_signature",
                              f"signature of batch {batch.batch_id} does not verify with "
                              f"the registered key of {batch.participant_id}"))
    problem = privacy_problem(batch.privacy, entry.privacy)
    if problem is not None:
        exclusions: list[ExclusionReason | None] = ["privacy_mismatch"] * len(batch.answered)
        return Verdict(exclusions, ("privacy_mismatch", problem) if exclusions else None)
    spec = own_spec(entry, batch.task)
    exclusions = screen_rows(batch.outputs.to_numpy(), entry.privacy,
                             spec.num_classes if spec is not None else None)
    bad = [(i, why) for i, why in enumerate(exclusions) if why is not None]
    if not bad:
        return Verdict(exclusions)
    return Verdict(exclusions, ("implausible_answer", "; ".join(
        f"row {i} ({batch.answered[i]}): {why}" for i, why in bad[:20])))
