"""What the aggregator makes of one response block before it joins it: dropped (unknown
participant, bad signature), or joined with each answered row usable or excluded and why.

Pure: the block, its view and its participant's registry entry in, a verdict out; the
service dead-letters, counts and joins accordingly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fi_stream.block_signing import verify_response_block
from fi_stream.validation import own_spec, privacy_problem, screen_rows
from schemas import DecodeError, ExclusionReason, Participant, ResponseBatch
from schemas.blocks import ResponseBlock, decode_response_block
from schemas.blocks.convert import response_batch_of


@dataclass(frozen=True, slots=True)
class Verdict:
    #: Per answered row: None (usable) or why it is excluded; None: drop the whole record.
    exclusions: list[ExclusionReason | None] | None
    #: (reason, detail) of the dead letter the record earns, if any.
    dead_letter: tuple[str, str] | None = None


def check_record(raw: bytes | None, participants: Mapping[str, Participant],
                 registry_topic: str) -> tuple[ResponseBatch | None, Verdict]:
    """A fi.responses record: its per-query view (None when it is not a response block)
    and the verdict on it (`check_block`)."""
    try:
        block = decode_response_block(raw)
        batch = response_batch_of(block)
    except DecodeError as exc:
        return None, Verdict(None, (exc.reason, exc.detail))
    return batch, check_block(block, batch, participants.get(block.participant_id),
                              registry_topic)


def check_block(block: ResponseBlock, batch: ResponseBatch, entry: Participant | None,
                registry_topic: str) -> Verdict:
    """Signed by its registered participant (over the record's bytes), with the privacy
    it registered, rows plausible for its noise: what is not is dead-lettered, and rows
    are excluded. `batch` is the block's view (convert.response_batch_of): its answered
    rows, in record order, are the rows screened."""
    if entry is None:
        return Verdict(None, ("unknown_participant",
                              f"{block.participant_id} is not in {registry_topic}"))
    if not verify_response_block(block, entry.public_key):
        return Verdict(None, ("bad_signature",
                              f"signature of batch {block.batch_id} does not verify with "
                              f"the registered key of {block.participant_id}"))
    problem = privacy_problem(block.privacy, entry.privacy)
    if problem is not None:
        exclusions: list[ExclusionReason | None] = ["privacy_mismatch"] * len(batch.answered)
        return Verdict(exclusions, ("privacy_mismatch", problem) if exclusions else None)
    spec = own_spec(entry, block.task)
    exclusions = screen_rows(batch.outputs.to_numpy(), entry.privacy,
                             spec.num_classes if spec is not None else None)
    bad = [(i, why) for i, why in enumerate(exclusions) if why is not None]
    if not bad:
        return Verdict(exclusions)
    return Verdict(exclusions, ("implausible_answer", "; ".join(
        f"row {i} ({batch.answered[i]}): {why}" for i, why in bad[:20])))
