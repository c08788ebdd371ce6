"""The federation operator's signature on registry entries, and which entries to trust.

Anyone who can write fi.registry could otherwise admit a sybil, replace a participant's
key (a hijack) or delete it with a bare tombstone. With an operator key configured
(`security.operator_pubkey`), only entries the operator signed count:

- an admission, a key rotation and a removal are each a `Participant` (or `Client`)
  record carrying `operator_signature` over all its other fields; a removal is a signed
  record with ``active = false``, never a bare tombstone;
- a signed record older than (or as old as) the trusted one for the same id is a replay
  of an earlier admission (e.g. to undo a rotation) and is refused as `stale`.

Pure: no I/O. `RegistryView` applies `judge` to every record it reads, and the audit
replays the same decisions over the log.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from fi_stream.errors import ConfigError
from schemas import Client, Participant

Entry = Participant | Client

#: Registry keys of query clients start with this (a '/' is not allowed in ids, so a client
#: key can never collide with a participant id).
CLIENT_KEY_PREFIX = "client/"

Verdict = Literal["trusted", "open", "unsigned", "forged", "stale", "bare_tombstone",
                  "key_mismatch"]
#: Verdicts that make an entry (or a removal) count.
ACCEPTED: frozenset[Verdict] = frozenset({"trusted", "open"})


def entry_id(entry: Entry) -> str:
    return entry.participant_id if isinstance(entry, Participant) else entry.client_id


def registry_key(entry: Entry) -> str:
    """The record key of `entry` on fi.registry (compaction keeps the newest per key)."""
    if isinstance(entry, Participant):
        return entry.participant_id
    return CLIENT_KEY_PREFIX + entry.client_id


def entry_bytes(entry: Entry) -> bytes:
    """What the operator signs: every field but `operator_signature`, keys sorted."""
    return orjson.dumps(entry.model_dump(mode="json", exclude={"operator_signature"}),
                        option=orjson.OPT_SORT_KEYS)


def sign_entry(entry: Entry, key: Ed25519PrivateKey) -> Entry:
    return entry.model_copy(update={"operator_signature": key.sign(entry_bytes(entry))})


def verify_entry(entry: Entry, operator_pubkey: bytes) -> bool:
    if not entry.operator_signature:
        return False
    try:
        VerifyKey(operator_pubkey).verify(entry_bytes(entry), entry.operator_signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def judge(entry: Entry | None, key: str, current: Entry | None,
          operator_pubkey: bytes | None) -> Verdict:
    """Whether a registry record under `key` (None: a tombstone) may replace `current`,
    the trusted entry for that key so far.

    Without an operator key the registry is open: every entry and tombstone counts (the
    development mode of earlier versions; the services log a warning)."""
    if operator_pubkey is None:
        return "open"
    if entry is None:
        return "bare_tombstone"
    if registry_key(entry) != key:
        return "key_mismatch"  # a signed entry replayed under another id's key
    if not entry.operator_signature:
        return "unsigned"
    if not verify_entry(entry, operator_pubkey):
        return "forged"
    if current is not None and entry.registered_at_ms <= current.registered_at_ms:
        return "stale"
    return "trusted"


@dataclass(frozen=True, slots=True)
class KeyPeriod:
    """A participant key the operator made valid from `since_ms` until `until_ms` (None:
    still valid), as the audit reconstructs it from the registry's history."""

    public_key: bytes
    since_ms: int
    until_ms: int | None

    def covers(self, t_ms: int) -> bool:
        return self.since_ms <= t_ms and (self.until_ms is None or t_ms < self.until_ms)


def parse_pubkey(text: str) -> bytes:
    """A raw 32-byte Ed25519 public key from base64 (as `keys generate` prints it)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{text!r} is not a base64 public key") from None
    if len(raw) != 32:
        raise ConfigError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return raw


def load_operator_pubkey(value: str | None, file: Path | None) -> bytes | None:
    """The operator's public key from a base64 setting or a file holding it (either a
    base64 line or the PEM private key itself, for the operator's own tools)."""
    if value:
        return parse_pubkey(value)
    if file is None:
        return None
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise ConfigError(f"operator key file {file} does not exist") from None
    if "PRIVATE KEY" in text:
        from fi_stream.signing import load_private_key, public_key_bytes

        return public_key_bytes(load_private_key(file))
    return parse_pubkey(text)
