"""Per-client quotas: no client can spend another's share of a participant's budget.

Who asked? A consumer cannot see the SASL principal that produced a record, so a query
carries its client's identity itself: the client signs the exact bytes of the record value
with its Ed25519 key (header ``fi-client-sig``); the operator admitted that key in the
registry (`Client` entry). Signing the raw value, not a canonical re-encoding, keeps the
participant's check to one verify over bytes it already holds (measured: README
"Security model"). A query that is unsigned, signed by an unknown client or whose
signature does not verify is charged to the shared ``anonymous`` client.

Each client may be granted at most `share` × the participant's whole budget of answers;
beyond it the participant declines with ``quota_exhausted``. A query block is signed as
one record, so its rows are charged together, each to the block's verified client: the
first rows up to the client's quota are answered, the rest declined. Counts persist next to the
privacy ledger (`client_quota.json`) whenever the ledger persists, as upper bounds: a
restart never hands a client a fresh quota.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from schemas.blocks import QueryBlock

SIGNATURE_HEADER = "fi-client-sig"
ANONYMOUS = "anonymous"
QUOTA_FILE = "client_quota.json"


def sign_query(value: bytes, key: Ed25519PrivateKey) -> list[tuple[str, bytes]]:
    """The header a client adds to a query record it produces."""
    return [(SIGNATURE_HEADER, key.sign(value))]


def verified_client(claimed: str, value: bytes, signature: bytes | None,
                    keys: Mapping[str, bytes]) -> str:
    """`claimed` if that admitted client signed `value`, else ANONYMOUS."""
    public = keys.get(claimed)
    if public is None or signature is None:
        return ANONYMOUS
    try:
        VerifyKey(public).verify(value, signature)
    except (BadSignatureError, ValueError, TypeError):
        return ANONYMOUS
    return claimed


@dataclass
class QuotaBook:
    """Answers granted per client against a cap of `share` × `total` (the budget's answers)."""

    total: int
    share: float
    path: Path | None = None
    spent: dict[str, int] = field(default_factory=dict)

    @property
    def cap(self) -> int:
        return int(self.total * self.share)

    @classmethod
    def open(cls, path: Path | None, total: int, share: float) -> QuotaBook:
        book = cls(total, share, path)
        if path is not None and path.exists():
            book.spent = {k: int(v) for k, v in json.loads(path.read_text()).items()}
        return book

    def take(self, client: str, rows: int = 1) -> int:
        """Charge up to `rows` answers to `client` (the rows of one of its query blocks
        that could be answered); how many it may have, the rest being over its quota.
        Nothing is charged for the rows refused."""
        used = self.spent.get(client, 0)
        granted = max(0, min(rows, self.cap - used))
        if granted:
            self.spent[client] = used + granted
        return granted

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write(json.dumps(self.spent, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


#: (claimed client id, record value, signature header or None) → charged client id.
Identify = Callable[[str, bytes, bytes | None], str]


def signature_of(headers: Iterable[tuple[str, bytes]]) -> bytes | None:
    """The client's signature header of a record, if any."""
    return next((v for k, v in headers if k == SIGNATURE_HEADER), None)


#: (item index, block, rows wanted) → rows its client may be answered (fi_stream.engine).
Quota = Callable[[int, QueryBlock, int], int]


def block_charger(book: QuotaBook, signed: Sequence[tuple[bytes, bytes | None]],
                  keys: Mapping[str, bytes]) -> Quota:
    """fi_stream.engine's quota for a micro-batch whose item i is the record `signed[i]`
    (value, signature): a block's rows are charged to its verified client, one signature
    check per record however many rows it carries."""
    def charge(index: int, block: QueryBlock, rows: int) -> int:
        value, signature = signed[index]
        return book.take(verified_client(block.client_id, value, signature, keys), rows)
    return charge
