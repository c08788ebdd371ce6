"""Ed25519 over response blocks: the signature is the record's last 64 bytes and covers
every byte before it (docs/wire-format.md), so no canonical re-encoding is needed to sign
or verify, in any language. Same keys and libraries as fi_stream.signing."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from schemas.blocks import SIGNATURE_SIZE, ResponseBlock


def sign_response_block(record: bytes, key: Ed25519PrivateKey) -> bytes:
    """`record` (an encoded response block, signature bytes zero) with its signature."""
    signed = record[:-SIGNATURE_SIZE]
    return signed + key.sign(signed)


def verify_response_block(block: ResponseBlock, public_key: bytes) -> bool:
    """Does `block` (as decoded, with the bytes it was read from) verify under the key?"""
    try:
        VerifyKey(public_key).verify(block.signed, block.signature)
    except (BadSignatureError, ValueError, TypeError):  # forged, or a malformed key/signature
        return False
    return True
