"""One settings model for every service: flags > environment (FI_...) > TOML file > defaults.

`FI_KAFKA_BOOTSTRAP` points everything at an existing cluster; without it the CLI starts
(or reuses) the local broker under `.fi/kafka/`. Nested groups use `__` in the
environment, e.g. `FI_PRIVACY__NOISE_MULTIPLIER=0.8`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from fi_stream.errors import ConfigError
from fi_stream.timing import TimingSettings


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TopicNames(_Group):
    queries: str = "fi.queries"
    responses: str = "fi.responses"
    results: str = "fi.results"
    incentives: str = "fi.incentives"
    feedback: str = "fi.feedback"
    registry: str = "fi.registry"
    dlq: str = "fi.dlq"

    def prefixed(self, prefix: str) -> TopicNames:
        """The same topics under `prefix` (tests give each run its own)."""
        return TopicNames(**{k: f"{prefix}{v}" for k, v in self.model_dump().items()})


class KafkaSettings(_Group):
    bootstrap: str | None = Field(
        default=None, description="host:port list; unset means the local broker"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    partitions: int = Field(default=4, ge=1)
    #: Replicas per topic, and the in-sync replicas a write (acks=all) needs. Unset: fit the
    #: cluster `topics create` finds (see `fi_stream.kafka.topics.replication_for`).
    replication_factor: int | None = Field(default=None, ge=1)
    min_insync_replicas: int | None = Field(default=None, ge=1)
    topic_prefix: str = ""
    #: How long a command waits for the first answer of the bootstrap broker before it
    #: gives up with one line (no broker, a firewall, or a port that is not Kafka).
    connect_timeout_s: float = Field(default=10.0, gt=0)
    local_port: int = 19092
    local_controller_port: int = 19093
    local_home: Path = Path(".fi/kafka")


class PrivacySettings(_Group):
    """The default budget is modest and stated: ε = 100 at δ = 1e-5 for 1,000 answers per
    participant (see the README's threat model for what that protects). The mechanism
    follows the model: a teacher ensemble (`participant train --teachers K`) answers with
    ``teachers``, a single model with ``gaussian``."""

    clip_norm: float = Field(default=1.0, gt=0)
    #: σ, the noise std relative to the bound C of the released vector. None: the σ whose
    #: `budget_answers` answers spend exactly `epsilon_max` (solved from the accountant).
    noise_multiplier: float | None = Field(default=None, ge=0)
    epsilon_max: float = Field(default=100.0, gt=0)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    #: How many answers `epsilon_max` should buy when σ is solved for (noise_multiplier None).
    budget_answers: int = Field(default=1000, ge=1)
    #: Answers the privacy ledger reserves ahead per fsynced write (capped at 1 % of the
    #: budget's answers): a crash wastes at most that much budget; 0 writes every batch.
    reserve_ahead: int = Field(default=1024, ge=0)


class ParticipantSettings(_Group):
    #: "naive" is the unbatched baseline of `fi-stream bench e2e` (per query one forward
    #: pass, one awaited produce, one commit), kept to measure the batched pipeline against.
    pipeline: Literal["batched", "naive"] = "batched"
    max_batch: int = Field(default=256, ge=1)
    #: A micro-batch waits at most this long for `max_batch` queries (the broker holds the
    #: fetch, see fi_stream.batching): each batch has a fixed cost (a fetch, signing, one
    #: record per partition: ~3 ms of a participant's CPU), so waiting a little saves more
    #: latency under load than it costs (on 2 shared cores at 1,400 queries/s, 20 ms spent
    #: a third more CPU than 30 ms for a worse p99). 0: no wait, answer what a fetch brings.
    max_wait_ms: int = Field(default=30, ge=0)
    #: auto (CUDA when present), cpu, cuda, cuda:N or mps.
    device: str = Field(default="auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    #: fp32, or bf16 autocast for the forward pass (softmax, clip and noise stay fp32).
    precision: Literal["fp32", "bf16"] = "fp32"
    #: torch.compile the model once at start (worth it on a GPU for larger models).
    compile: bool = False
    #: CPU threads for torch in a participant process (0: torch's default). One is best for
    #: small models when several participants share a machine: idle OpenMP threads spin.
    torch_threads: int = Field(default=1, ge=0)
    #: Inputs whose released answer is kept for reuse (a repeat is answered with it, free
    #: of budget, never with fresh noise); least recently used out. 0 disables reuse.
    reuse_cache: int = Field(default=65_536, ge=0)
    #: Keep the privacy budget in Kafka too (fi_stream.ledger_sync): the spend survives a
    #: lost ledger file, and several processes of one participant share one budget.
    ledger_topic: bool = True
    #: With an operator, how long a participant waits at start to be admitted.
    admission_timeout_s: float = Field(default=120.0, gt=0)


class AggregatorSettings(_Group):
    strategy: str = "soft_vote"
    window_results: int = Field(default=200, ge=1)
    window_seconds: float = Field(default=10.0, gt=0)
    reward_budget: float = Field(default=100.0, ge=0)
    #: A label-free method of the fi_stream.incentives registry. The default pays
    #: random, constant, uniform and colluding answers about nothing (README: incentives).
    incentive_method: str = "correlated_agreement"
    pending_response_ttl_ms: int = Field(default=60_000, ge=0)
    #: The broker holds the aggregator's fetches this long (or until a full fetch's worth):
    #: each loop is one fetch and one transaction, and a transaction is five requests and
    #: a marker per partition, so collecting a few ms of responses per loop halves the
    #: broker's work at a cost of at most this much latency. 0: return each fetch at once.
    fetch_wait_ms: int = Field(default=10, ge=0)

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        # Imported when a value is checked: the registry loads numpy, settings alone do not.
        from fi_stream.strategies import check_strategy

        return check_strategy(value)

    @field_validator("incentive_method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        from fi_stream.incentives import check_method

        return check_method(value)


class RetrySettings(_Group):
    """How a service rides out a Kafka outage (see `fi_stream.supervision`): it is started
    afresh after a backoff that doubles from `initial_backoff_s` up to `max_backoff_s`;
    after `give_up_s` of continuous outage (0: never) it exits 1 for its supervisor."""

    initial_backoff_s: float = Field(default=0.5, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    give_up_s: float = Field(default=900.0, ge=0)
    #: A run this long ends an outage: the next failure starts from the initial backoff.
    healthy_s: float = Field(default=60.0, gt=0)


class SecuritySettings(_Group):
    """Who is trusted (README "Security model")."""

    #: The federation operator's Ed25519 public key (base64). Set, only operator-signed
    #: registry entries count; unset, the registry is open (development only).
    operator_pubkey: str | None = None
    #: Or a file holding it (a base64 line, or the operator's PEM key itself).
    operator_pubkey_file: Path | None = None
    #: A query client's own Ed25519 key (PEM): it signs every query it sends.
    client_key_file: Path | None = None
    #: Each admitted client may spend at most this share of a participant's answers; queries
    #: that are not signed by an admitted client share one more such share ("anonymous").
    client_quota_share: float = Field(default=1.0, gt=0, le=1)


class Settings(BaseSettings):
    """Every knob of fi-stream in one place; services receive it, never read the env themselves."""

    model_config = SettingsConfigDict(
        env_prefix="FI_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicNames = TopicNames()
    privacy: PrivacySettings = PrivacySettings()
    participant: ParticipantSettings = ParticipantSettings()
    aggregator: AggregatorSettings = AggregatorSettings()
    retry: RetrySettings = RetrySettings()
    timing: TimingSettings = TimingSettings()
    security: SecuritySettings = SecuritySettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool | None = None
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    #: Where --metrics-port listens: loopback unless told otherwise (e.g. 0.0.0.0 in a
    #: container whose port Prometheus scrapes from outside).
    metrics_host: str = "127.0.0.1"
    default_deadline_ms: int = Field(default=2000, ge=1)
    #: Queries whose deadline is further than this after their `created_at_ms` are
    #: rejected (a `rejected` Result; participants decline them). An open query holds its
    #: partition's committed offset back until its deadline, so this bounds how much a
    #: restart re-reads. Every service of a federation must use the same value.
    max_deadline_ms: int = Field(default=300_000, ge=1)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings

    @property
    def operator_pubkey(self) -> bytes | None:
        """The operator's raw public key, or None for an open registry."""
        from fi_stream.operator import load_operator_pubkey

        s = self.security
        return load_operator_pubkey(s.operator_pubkey, s.operator_pubkey_file)

    @property
    def topic_names(self) -> TopicNames:
        return self.topics.prefixed(self.kafka.topic_prefix) if self.kafka.topic_prefix \
            else self.topics


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional TOML file, the environment and explicit overrides.

    Overrides are nested dicts (`{"privacy": {"clip_norm": 2.0}}`) and win over everything;
    the environment wins over the file.
    """
    file_values: dict[str, Any] = {}
    if config is not None:
        try:
            file_values = tomllib.loads(config.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {config} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config} is not valid TOML: {exc}") from None
    try:
        env_set = Settings().model_dump(exclude_unset=True)
    except ValidationError as exc:
        raise ConfigError(f"invalid environment: {describe_errors(exc, origin=_env_name)}"
                          ) from None
    alias = os.environ.get("FI_KAFKA_BOOTSTRAP")  # the documented short form
    if alias and not env_set.get("kafka", {}).get("bootstrap"):
        env_set.setdefault("kafka", {})["bootstrap"] = alias
    merged = _deep_merge(_deep_merge(file_values, env_set), overrides)
    try:
        return Settings(**merged)
    except ValidationError as exc:
        def origin(loc: tuple[str | int, ...]) -> str:
            if _has(overrides, loc):
                return "--" + str(loc[-1]).replace("_", "-")
            if _has(env_set, loc):
                return _env_name(loc)
            if config is not None and _has(file_values, loc):
                return f"{config}: {_dotted(loc)}"
            return _dotted(loc)

        raise ConfigError(f"invalid settings: {describe_errors(exc, origin=origin)}") from None


def _has(values: dict[str, Any], loc: tuple[str | int, ...]) -> bool:
    node: Any = values
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _dotted(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _env_name(loc: tuple[str | int, ...]) -> str:
    return "FI_" + "__".join(str(p).upper() for p in loc)


def describe_errors(exc: ValidationError, *, origin: Callable[[tuple[str | int, ...]], str]
                    ) -> str:
    """pydantic's errors as one line: `where: what (got VALUE)`, joined by `; `."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            what = "unknown setting (see docs/config.example.toml)"
        else:
            what = str(err["msg"]).removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if err["type"] == "extra_forbidden" or isinstance(got, dict) \
            else f" (got {got!r})"
        parts.append(f"{origin(loc)}: {what}{shown}")
    return "; ".join(parts)
