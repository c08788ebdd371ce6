"""Ed25519 keys: a participant's signing key next to its model, and raw public keys for the
registry. What is signed, and how it is verified, is fi_stream.block_signing (one
signature per response record) and fi_stream.admission (registry entries).

Keys and signing use cryptography; verifying uses libsodium (PyNaCl): 54 µs against
OpenSSL's 105 µs on the 2-core sandbox. Both are standard Ed25519 (RFC 8032) over raw
32-byte keys, so either verifies the other's signatures."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fi_stream.errors import SignatureError

PRIVATE_KEY_FILE = "signing_key.pem"


def generate_key(path: Path) -> Ed25519PrivateKey:
    """Write a new private key (PEM, mode 0600); refuses to overwrite an existing one."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise SignatureError(
            f"no signing key at {path}: create one with `fi-stream keys generate --out {path}`"
        ) from None
    except ValueError as exc:
        raise SignatureError(f"{path} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    return load_private_key(path) if path.exists() else generate_key(path)


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
