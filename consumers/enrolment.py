"""How a participant joins: self-registration on an open registry, or, with an operator,
waiting until the operator has admitted this id with this key — and then running with what
was admitted."""

from __future__ import annotations

import asyncio
import base64
import time

import structlog
from aiokafka import AIOKafkaProducer

from fi_stream.errors import ConfigError
from fi_stream.registry import RegistryView
from fi_stream.settings import Settings
from schemas import Participant, encode, headers

log = structlog.get_logger(__name__)


async def enrol(settings: Settings, producer: AIOKafkaProducer, mine: Participant, *,
                teachers: int | None = None) -> tuple[Participant | None, RegistryView | None]:
    """On an open registry, self-register (development): (None, None). With an operator,
    publish nothing: wait until the operator has admitted this id with this key, and return
    the admitted entry with the registry view, left open — it also holds the admitted
    clients' keys (fi_stream.quota); the caller stops it."""
    if settings.operator_pubkey is None:
        await producer.send_and_wait(
            settings.topic_names.registry, encode(mine), key=mine.participant_id.encode(),
            headers=headers(Participant),
        )
        return None, None
    view = RegistryView(settings)
    await view.start()
    try:
        admitted = await await_admission(
            view, mine, timeout_s=settings.participant.admission_timeout_s, teachers=teachers)
    except BaseException:
        await view.stop()
        raise
    return admitted, view


async def await_admission(view: RegistryView, mine: Participant, *, timeout_s: float,
                          teachers: int | None = None) -> Participant:
    """Block until the trusted registry (`view`, started) holds this id with this key (the
    operator ran `fi-stream admin admit`); log once what the operator must run. Returns the
    admitted entry, checked with `check_admitted`."""
    pid, key = mine.participant_id, base64.b64encode(mine.public_key).decode()
    deadline = time.monotonic() + timeout_s
    hinted = False
    while True:
        admitted = view.participants.get(pid)
        if admitted is not None and admitted.public_key == mine.public_key:
            break
        if not hinted:
            log.warning("participant_not_admitted", admit=(
                f"fi-stream admin admit --id {pid} --pubkey {key} --tasks {mine.tasks[0]}"
                + (f" --teachers {teachers}" if teachers else "")))
            hinted = True
        if time.monotonic() > deadline:
            raise ConfigError(
                f"{pid} is not admitted with this key: ask the operator to run "
                f"`fi-stream admin admit --id {pid} --pubkey {key}`")
        await asyncio.sleep(0.2)
    check_admitted(admitted, mine)
    return admitted


def check_admitted(admitted: Participant, mine: Participant) -> None:
    """Run with what the operator admitted: the audit holds a participant to the privacy
    parameters and budget of its trusted entry, so a looser local setting is an error."""
    wrong = []
    if admitted.privacy != mine.privacy:
        wrong.append(f"privacy {admitted.privacy} (here {mine.privacy})")
    a, m = admitted.budget, mine.budget
    if a is not None and m is not None and (m.epsilon_max > a.epsilon_max or m.delta != a.delta):
        wrong.append(f"budget ε_max={a.epsilon_max}, δ={a.delta} "
                     f"(here ε_max={m.epsilon_max}, δ={m.delta})")
    if wrong:
        raise ConfigError(f"{mine.participant_id} was admitted with " + "; ".join(wrong)
                          + ": set FI_PRIVACY__… to match, or ask the operator to re-admit")
