"""Building blocks for tests on the real broker: a federation of in-process services,
a raw topic reader, and a hand-driven participant that signs what the test tells it to."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka.structs import ConsumerRecord
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.aggregator import AggregatorService
from consumers.participant import ParticipantService, make_participant
from fi_stream.admission import participant_entry, publish, settings_privacy
from fi_stream.block_signing import sign_response_block
from fi_stream.clock import now_ms
from fi_stream.kafka import make_consumer, make_producer
from fi_stream.kafka.reading import read_to_end
from fi_stream.models.store import load_spec
from fi_stream.registry import RegistryView
from fi_stream.settings import Settings, load_settings
from fi_stream.signing import PRIVATE_KEY_FILE, load_or_create_key, public_key_bytes
from schemas import Budget, Participant, Privacy, ResponseBatch, Result, encode, headers
from schemas.blocks import (
    DECLINE_CODES,
    ResponseBlock,
    decode_response_block,
    decode_result_block,
    encode_query_block,
    encode_response_block,
    query_block,
    split_query_id,
)
from schemas.blocks.convert import response_batch_of, results_of

Record = ConsumerRecord[bytes, bytes]


def query_value(block_id: str, x: Any, *, created_at_ms: int, deadline_ms: int,
                quorum: int = 1, strategy: str | None = None, task: str = "digits",
                client_id: str = "anonymous") -> bytes:
    """The record of a block of one (query id `block_id.0`) with input `x` as <f4; `x` of
    shape [N, 64]: a block of N (ids `block_id.0` … `block_id.N-1`)."""
    inputs = np.asarray(x, dtype=np.float32)
    inputs = inputs[None] if inputs.ndim == 1 else inputs
    return encode_query_block(query_block(
        block_id, task, inputs, created_at_ms=created_at_ms, deadline_ms=deadline_ms,
        quorum=quorum, strategy=strategy, client_id=client_id))


def response_batches(records: list[Record]) -> list[ResponseBatch]:
    """The per-query views of the response block records (fi.responses)."""
    return [response_batch_of(decode_response_block(r.value)) for r in records]


def results_in(records: list[Record]) -> list[Result]:
    """Every Result of the result block records (fi.results), in log order."""
    return [res for r in records for res in results_of(decode_result_block(r.value))]


@dataclass
class Federation:
    participants: dict[str, ParticipantService]
    aggregator: AggregatorService


def operator_settings(settings: Settings) -> tuple[Settings, Ed25519PrivateKey]:
    """`settings` with a fresh operator key every service trusts, and that key."""
    operator = Ed25519PrivateKey.generate()
    pub = base64.b64encode(public_key_bytes(operator)).decode()
    values = settings.model_dump(exclude_unset=True)
    values["security"] = {**values.get("security", {}), "operator_pubkey": pub}
    return load_settings(None, **values), operator


async def admit_models(settings: Settings, operator: Ed25519PrivateKey,
                       model_dirs: dict[str, Path]) -> None:
    """The operator admits each participant with the key in its model directory."""
    p = settings.privacy
    for pid, directory in model_dirs.items():
        key = load_or_create_key(directory / PRIVATE_KEY_FILE)
        await publish(settings, participant_entry(
            pid, public_key_bytes(key), tasks=["digits"],
            budget=Budget(epsilon_max=p.epsilon_max, delta=p.delta),
            privacy=settings_privacy(settings, load_spec(directory).teachers),
        ), operator)


@contextlib.asynccontextmanager
async def federation(settings: Settings, model_dirs: dict[str, Path],
                     with_aggregator: bool = True,
                     operator: Ed25519PrivateKey | None = None) -> AsyncIterator[Federation]:
    """Participants first (they register, or the `operator` admits them), then the
    aggregator (it reads the registry)."""
    services: list[Any] = []
    if operator is not None:
        await admit_models(settings, operator, model_dirs)
    try:
        participants = {}
        for pid, directory in model_dirs.items():
            p = make_participant(settings, participant_id=pid, model_dir=directory)
            await p.start()
            services.append(p)
            participants[pid] = p
        aggregator = AggregatorService(settings, instance_id=uuid.uuid4().hex[:6])
        if with_aggregator:
            await aggregator.start()
            await aggregator.registry.wait_for(set(model_dirs), timeout=30)
            services.append(aggregator)
        yield Federation(participants, aggregator)
    finally:
        for s in reversed(services):
            await s.stop()


async def read_topic(settings: Settings, topic: str, *, min_records: int = 0,
                     timeout: float = 20.0) -> list[ConsumerRecord[bytes, bytes]]:
    """Every committed record of `topic` (waiting until there are at least `min_records`)."""
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            while True:
                records = await read_to_end(consumer, topic)
                if len(records) >= min_records:
                    return records
                await asyncio.sleep(0.2)
    finally:
        await consumer.stop()


async def read_results(settings: Settings, *, min_results: int = 0,
                       timeout: float = 20.0) -> list[Result]:
    """Every committed Result on fi.results (waiting until there are `min_results`)."""
    async with asyncio.timeout(timeout):
        while True:
            results = results_in(await read_topic(settings, settings.topic_names.results,
                                                  timeout=timeout))
            if len(results) >= min_results:
                return results
            await asyncio.sleep(0.2)


class HandParticipant:
    """A registered participant whose answers the test writes by hand."""

    def __init__(self, settings: Settings, participant_id: str) -> None:
        self.settings = settings
        self.participant_id = participant_id
        self.key = Ed25519PrivateKey.generate()
        self.privacy = Privacy(clip_norm=1.0, noise_multiplier=0.0)

    async def register(self) -> None:
        entry = Participant(participant_id=self.participant_id,
                            public_key=public_key_bytes(self.key), tasks=["digits"],
                            model_version="hand", privacy=self.privacy,
                            registered_at_ms=now_ms())
        await self.produce_raw(self.settings.topic_names.registry, encode(entry),
                               key=self.participant_id, hdrs=headers(Participant))

    def batch(self, partition: int, answers: dict[str, int],
              declined: dict[str, str] | None = None,
              key: Ed25519PrivateKey | None = None,
              outputs: np.ndarray[Any, Any] | None = None) -> bytes:
        """A signed response block record: answers (query_id → predicted class, a one-hot
        output, or the matching row of `outputs`) and declines (query_id → reason). The
        ids must cover whole blocks (`B.0` … `B.n-1`); one span per block, in the order
        the blocks first appear."""
        wanted: dict[str, int | str] = {**answers, **(declined or {})}
        given = {q: i for i, q in enumerate(answers)}
        by_block: dict[str, dict[int, str]] = {}
        for qid in wanted:
            block_id, row = split_query_id(qid)
            by_block.setdefault(block_id, {})[row] = qid
        order = [rows[n] for rows in by_block.values() for n in range(len(rows))]
        rows_out = np.zeros((len(order), 10), np.float32)
        status = np.zeros(len(order), np.uint8)
        for r, qid in enumerate(order):
            value = wanted[qid]
            if isinstance(value, str):
                status[r] = DECLINE_CODES.index(value)
            elif outputs is not None:
                rows_out[r] = outputs[given[qid]]
            else:
                rows_out[r, value] = 1.0
        spans = [(block_id, len(rows)) for block_id, rows in by_block.items()]
        block = ResponseBlock(self.participant_id, uuid.uuid4().hex, "digits", "hand",
                              self.privacy, now_ms(), partition, spans, rows_out, status)
        return sign_response_block(encode_response_block(block), key or self.key)

    async def produce_raw(self, topic: str, value: bytes, *, key: str,
                          partition: int | None = None,
                          hdrs: list[tuple[str, bytes]] | None = None) -> None:
        producer = make_producer(self.settings)
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key.encode(), partition=partition,
                                         headers=hdrs)
        finally:
            await producer.stop()


async def registered(settings: Settings, ids: set[str]) -> None:
    view = RegistryView(settings)
    await view.start()
    try:
        await view.wait_for(ids, timeout=20)
    finally:
        await view.stop()
