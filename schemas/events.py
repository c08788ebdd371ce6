"""The events of DESIGN §3: frozen pydantic models, one per topic value.

Every event names its schema (`SCHEMA`, e.g. ``fi.query``) and carries `schema_version`;
a consumer that meets an unknown major version sends the record to the DLQ instead of
guessing. Nothing here knows about Kafka.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.tensor import Base64Bytes, Tensor

SCHEMA_VERSION = 1

Id = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")

DeclineReason = Literal["budget_exhausted", "expired", "bad_input", "unsupported_task",
                        "quota_exhausted"]
#: `rejected`: the query itself is invalid (its `reason` says why); nobody was asked.
ResultStatus = Literal["complete", "partial", "insufficient", "rejected"]
#: Why the aggregator left a signed answer row out of a result (see fi_stream.validation).
ExclusionReason = Literal["non_finite", "wrong_width", "implausible_norm", "privacy_mismatch"]
#: Largest label fi.feedback accepts at all; each task bounds it further (num_classes).
MAX_LABEL = 2**31 - 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Event(_Frozen):
    """Base of every topic value."""

    SCHEMA: ClassVar[str] = ""
    schema_version: int = SCHEMA_VERSION


class Query(Event):
    """One inference request; `deadline_ms` is absolute epoch milliseconds."""

    SCHEMA: ClassVar[str] = "fi.query"
    query_id: str = Id
    task: str = Id
    input: Tensor
    created_at_ms: int = Field(ge=0)
    deadline_ms: int = Field(ge=0)
    quorum: int = Field(default=1, ge=1)
    strategy: str | None = None
    client_id: str = "anonymous"


class TaskSpec(_Frozen):
    """What a task's queries must look like, published in each serving participant's
    registry entry: a client can build valid queries, and the aggregator and participants
    reject the same ones (fi_stream.validation)."""

    task: str = Id
    input_shape: tuple[int, ...] = Field(min_length=1)
    input_dtype: Literal["<f4"] = "<f4"
    #: Inclusive bounds of every input value; None: any finite value.
    input_min: float | None = None
    input_max: float | None = None
    #: Width of every answer row (and the largest label + 1).
    num_classes: int = Field(ge=1)


class Privacy(_Frozen):
    """The mechanism a participant applies, enough for anyone to recompute its ε.

    The released vector has L2 <= clip_norm (C) before noise; the noise is N(0, (σ·C)²) per
    coordinate, σ = noise_multiplier. ``gaussian``: clipped softmax probabilities.
    ``teachers``: the normalized vote histogram of `teachers` (K) models trained on
    disjoint parts of the participant's data (C = 1). Sensitivities: fi_stream.privacy.
    """

    clip_norm: float = Field(gt=0)
    noise_multiplier: float = Field(ge=0)
    mechanism: Literal["gaussian", "teachers"] = "gaussian"
    teachers: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _teachers_iff_ensemble(self) -> Privacy:
        if (self.mechanism == "teachers") != (self.teachers is not None):
            raise ValueError("teachers (K) is set exactly when mechanism is 'teachers'")
        if self.mechanism == "teachers" and self.clip_norm != 1.0:
            raise ValueError("the teachers mechanism releases a vote histogram: clip_norm is 1")
        return self


class Budget(_Frozen):
    """A participant's privacy budget, published so that anyone can audit its spend."""

    epsilon_max: float = Field(gt=0)
    delta: float = Field(gt=0, lt=1)


class Decline(_Frozen):
    query_id: str = Id
    reason: DeclineReason
    #: What exactly is wrong (e.g. which input check failed); omitted from the signed
    #: bytes when None, so batches signed before it existed still verify.
    detail: str | None = Field(default=None, max_length=500)


class ResponseBatch(Event):
    """A participant's answers to queries of ONE partition, signed once.

    Row i of `outputs` is the noised output for `answered[i]`; one matrix per batch keeps
    decoding O(1) Python operations per batch for the vectors.
    """

    SCHEMA: ClassVar[str] = "fi.response_batch"
    participant_id: str = Id
    batch_id: str = Id
    task: str = Id
    model_version: str
    privacy: Privacy
    produced_at_ms: int = Field(ge=0)
    query_partition: int = Field(ge=0)
    answered: list[str]
    outputs: Tensor
    declined: list[Decline] = Field(default_factory=list)
    signature: Base64Bytes = b""

    @model_validator(mode="after")
    def _rows_match(self) -> ResponseBatch:
        shape = self.outputs.shape
        if len(shape) != 2 or shape[0] != len(self.answered):
            raise ValueError(
                f"outputs must be ({len(self.answered)}, classes), one row per answered id;"
                f" got shape {shape}"
            )
        return self


class IncludedAnswer(_Frozen):
    """Where an answer used in a result lives in the log: fi.responses partition/offset/row."""

    participant_id: str = Id
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    index: int = Field(ge=0)


class CopiedAnswer(IncludedAnswer):
    """An answer left out as a copy: closer to `copy_of`'s earlier answer to the same query
    than independent noise allows (fi_stream.copycat)."""

    copy_of: str = Id


class ParticipantDecline(_Frozen):
    participant_id: str = Id
    reason: DeclineReason


class ExcludedAnswer(_Frozen):
    """A signed answer row the aggregator left out of the result, and why; where it lives
    in the log, so the auditor re-checks the verdict (fi_stream.validation)."""

    participant_id: str = Id
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    index: int = Field(ge=0)
    reason: ExclusionReason


class WindowRef(_Frozen):
    """The incentive window a result belongs to: per aggregator partition, a sequence."""

    partition: int = Field(ge=0)
    seq: int = Field(ge=0)


class Result(Event):
    """The aggregate answer to one query; exactly one per query in read_committed order."""

    SCHEMA: ClassVar[str] = "fi.result"
    query_id: str = Id
    task: str = Id
    status: ResultStatus
    aggregate: Tensor | None = None
    prediction: int | None = None
    confidence: float | None = None
    included: list[IncludedAnswer] = Field(default_factory=list)
    declined: list[ParticipantDecline] = Field(default_factory=list)
    late: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)
    #: Answers left out as implausible (not finite, wrong width, norm beyond the bound of
    #: the participant's registered privacy); they count as not answered.
    excluded: list[ExcludedAnswer] = Field(default_factory=list)
    #: Why a `rejected` or unserved `insufficient` result is what it is.
    reason: str | None = None
    #: Answers excluded as copies of an included one (in log order).
    copied: list[CopiedAnswer] = Field(default_factory=list)
    strategy: str
    #: Per-included-answer weights of a weighted strategy (same order as `included`).
    weights: list[float] | None = None
    quorum: int = Field(ge=1)
    created_at_ms: int = Field(ge=0)
    deadline_ms: int = Field(ge=0)
    completed_at_ms: int = Field(ge=0)
    window: WindowRef


class IncentiveCounts(_Frozen):
    included: int = Field(default=0, ge=0)
    late: int = Field(default=0, ge=0)
    missing: int = Field(default=0, ge=0)
    declined: int = Field(default=0, ge=0)
    excluded: int = Field(default=0, ge=0)
    #: Answers excluded as copies of another participant's (never scored).
    copied: int = Field(default=0, ge=0)


class Window(_Frozen):
    """An incentive window: the results of one aggregator partition with one `seq`."""

    partition: int = Field(ge=0)
    seq: int = Field(ge=0)
    results: int = Field(ge=0)
    first_completed_at_ms: int = Field(ge=0)
    last_completed_at_ms: int = Field(ge=0)


class Incentive(Event):
    """A participant's score and reward for one window; recomputable from the window's results."""

    SCHEMA: ClassVar[str] = "fi.incentive"
    participant_id: str = Id
    window: Window
    method: str
    score: float
    reward: float = Field(ge=0)
    budget: float = Field(ge=0)
    counts: IncentiveCounts
    #: Merit-based events only (method "shapley"): the labels used are those of fi.feedback
    #: partition `window.partition` below `feedback_horizon` for the window's queries.
    labeled: int | None = None
    feedback_horizon: int | None = None
    #: Monte-Carlo standard error of `score` (None when exact).
    stderr: float | None = None
    #: The window's skill fairness F = 1 − ½‖merit shares − label-free reward shares‖₁ and
    #: the Spearman correlation of label-free rewards with merit: the open question, live.
    skill_fairness: float | None = None
    rank_correlation: float | None = None


class Feedback(Event):
    """A true label for a query, arriving later (enables merit-based rewards)."""

    SCHEMA: ClassVar[str] = "fi.feedback"
    query_id: str = Id
    label: int = Field(ge=0, le=MAX_LABEL)
    created_at_ms: int = Field(ge=0)


class Participant(Event):
    """A participant's registry entry (compacted topic, key participant_id)."""

    SCHEMA: ClassVar[str] = "fi.participant"
    participant_id: str = Id
    public_key: Base64Bytes
    tasks: list[str]
    model_version: str
    privacy: Privacy
    budget: Budget | None = None
    #: The input spec of each task in `tasks` this participant serves (None: unpublished).
    task_specs: list[TaskSpec] | None = None
    registered_at_ms: int = Field(ge=0)
    #: False: removed (an operator-signed removal, not a bare tombstone).
    active: bool = True
    #: The federation operator's Ed25519 signature over every other field
    #: (fi_stream.operator); empty on an open registry without an operator.
    operator_signature: Base64Bytes = b""


class Client(Event):
    """A query client admitted by the operator (fi.registry, key ``client/<client_id>``).

    The client signs each query record with the matching private key (a record header),
    so a participant can charge the query to this client's quota."""

    SCHEMA: ClassVar[str] = "fi.client"
    client_id: str = Id
    public_key: Base64Bytes
    registered_at_ms: int = Field(ge=0)
    active: bool = True
    operator_signature: Base64Bytes = b""


ALL_EVENTS: tuple[type[Event], ...] = (
    Query, ResponseBatch, Result, Incentive, Feedback, Participant, Client,
)
