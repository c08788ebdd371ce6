"""The operator's registry writes: admit, rotate and remove participants and query clients.

Each is one operator-signed record on fi.registry (fi_stream.operator). A rotation is a
new admission of the same id with a new key; a removal is the newest trusted entry again,
``active = false``, signed: never a bare tombstone, which no one would trust.
"""

from __future__ import annotations

from aiokafka.errors import TopicAuthorizationFailedError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fi_stream.clock import now_ms
from fi_stream.errors import ConfigError, KafkaSetupError
from fi_stream.kafka.client import make_producer
from fi_stream.operator import Entry, registry_key, sign_entry
from fi_stream.privacy import PrivacyBudget, choose_mechanism
from fi_stream.registry import RegistryView
from fi_stream.settings import Settings
from schemas import Budget, Client, Participant, Privacy, encode, headers


def participant_entry(participant_id: str, public_key: bytes, *, tasks: list[str],
                      budget: Budget, privacy: Privacy, model_version: str = "any",
                      at_ms: int | None = None) -> Participant:
    return Participant(participant_id=participant_id, public_key=public_key, tasks=tasks,
                       model_version=model_version, privacy=privacy, budget=budget,
                       registered_at_ms=now_ms() if at_ms is None else at_ms)


def settings_privacy(settings: Settings, teachers: int | None = None) -> Privacy:
    """The privacy a participant run with `settings` (and a model of `teachers`
    teachers, None: one model) registers: the operator admits it with exactly this, since
    a participant refuses to run with anything else."""
    p = settings.privacy
    return choose_mechanism(teachers=teachers, clip_norm=p.clip_norm,
                            noise_multiplier=p.noise_multiplier,
                            budget=PrivacyBudget(p.epsilon_max, p.delta),
                            budget_answers=p.budget_answers).to_privacy()


def client_entry(client_id: str, public_key: bytes, *, at_ms: int | None = None) -> Client:
    return Client(client_id=client_id, public_key=public_key,
                  registered_at_ms=now_ms() if at_ms is None else at_ms)


async def publish(settings: Settings, entry: Entry, key: Ed25519PrivateKey | None) -> Entry:
    """Sign `entry` with the operator's key (None: publish it unsigned, for an open
    registry) and write it to fi.registry; returns what was written."""
    signed = sign_entry(entry, key) if key is not None else entry
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_names.registry, encode(signed),
                                     key=registry_key(signed).encode(),
                                     headers=headers(type(signed)))
    except TopicAuthorizationFailedError:
        raise KafkaSetupError(
            f"{settings.kafka.sasl_username or 'this user'} may not write "
            f"{settings.topic_names.registry}: run as the operator's SASL user") from None
    finally:
        await producer.stop()
    return signed


async def remove(settings: Settings, entry_key: str, key: Ed25519PrivateKey) -> Entry:
    """Publish the signed removal of the trusted entry under `entry_key` (a participant id,
    or ``client/<id>``)."""
    view = RegistryView(settings)
    await view.start()
    try:
        current = view.latest(entry_key)
    finally:
        await view.stop()
    if current is None or not current.active:
        raise ConfigError(f"{entry_key} has no active trusted entry in "
                          f"{settings.topic_names.registry}: nothing to remove")
    removal = current.model_copy(update={"active": False, "registered_at_ms":
                                         max(now_ms(), current.registered_at_ms + 1),
                                         "operator_signature": b""})
    return await publish(settings, removal, key)
