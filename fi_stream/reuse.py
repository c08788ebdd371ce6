"""Answer reuse: a repeated input gets the answer it got before, never fresh noise.

Sending the same noised vector again is post-processing of a release already paid for, so
it costs no privacy budget. Drawing fresh noise for a repeated input would be a new
release: averaging T fresh answers to one input divides the noise std by √T, which is
exactly what the accountant charges for. The cache is keyed by the input's bytes and the
mechanism with its parameters, bounded (least recently used out), and lives in memory: an
evicted or restarted entry is answered afresh and paid for.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fi_stream.errors import ConfigError
from fi_stream.privacy import Mechanism

Infer = Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]
Reserve = Callable[[int], int]


class AnswerCache:
    """(input bytes, mechanism) → the released vector; at most `max_entries` entries."""

    def __init__(self, mechanism: Mechanism, max_entries: int) -> None:
        if max_entries < 0:
            raise ConfigError(f"the reuse cache size must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        # The parameters are part of every key: an answer released under one mechanism is
        # never handed out as an answer under another.
        self._salt = hashlib.blake2b(repr(mechanism).encode()).digest()  # 64 bytes
        self._rows: OrderedDict[bytes, np.ndarray[Any, Any]] = OrderedDict()

    def key(self, data: bytes) -> bytes:
        """A 16-byte digest: bounded memory per entry, collisions out of reach."""
        return hashlib.blake2b(data, digest_size=16, key=self._salt).digest()

    def get(self, key: bytes) -> np.ndarray[Any, Any] | None:
        row = self._rows.get(key)
        if row is not None:
            self._rows.move_to_end(key)
        return row

    def put(self, key: bytes, row: np.ndarray[Any, Any]) -> None:
        if self.max_entries == 0:
            return
        self._rows[key] = row
        self._rows.move_to_end(key)
        while len(self._rows) > self.max_entries:
            self._rows.popitem(last=False)

    def __len__(self) -> int:
        return len(self._rows)


@dataclass(frozen=True)
class Answers:
    """`outputs[j]` answers input `answered[j]`; inputs not in `answered` are over budget."""

    answered: list[int]
    outputs: np.ndarray[Any, Any]
    reused: int  # answered from the cache (or a repeat within the batch): free
    fresh: int  # answered with new noise: paid for


def answer_batch(inputs: np.ndarray[Any, Any], cache: AnswerCache, reserve: Reserve,
                 infer: Infer, num_classes: int) -> Answers:
    """Answer every input: from the cache when it was answered before, else (within what
    `reserve` grants) by `infer`, once per distinct input of the batch."""
    keys = [cache.key(row.tobytes()) for row in inputs]
    known: dict[bytes, np.ndarray[Any, Any]] = {}
    misses: list[int] = []  # first index of each distinct input not in the cache
    for i, key in enumerate(keys):
        if key in known:
            continue
        row = cache.get(key)
        if row is not None:
            known[key] = row
        else:
            known[key] = np.empty(0)  # placeholder: a miss, filled below if granted
            misses.append(i)
    granted = reserve(len(misses)) if misses else 0
    if granted:
        computed = infer(np.ascontiguousarray(inputs[misses[:granted]]))
        for i, row in zip(misses[:granted], computed, strict=True):
            known[keys[i]] = row
            cache.put(keys[i], row)
    answered = [i for i, key in enumerate(keys) if known[key].size]
    outputs = (np.stack([known[keys[i]] for i in answered]).astype(np.float32, copy=False)
               if answered else np.zeros((0, num_classes), np.float32))
    return Answers(answered=answered, outputs=outputs, reused=len(answered) - granted,
                   fresh=granted)
