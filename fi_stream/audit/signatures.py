"""Signatures: every response record a result lists verifies with a key registered for
its participant (with an operator: the key valid when it was produced). The Ed25519
signature is checked on the record's own bytes (fi_stream.block_signing), so a record
altered anywhere after signing fails; each once, however many results list it."""

from __future__ import annotations

from fi_stream.audit.context import AuditContext
from fi_stream.audit.findings import ref


def check_signatures(ctx: AuditContext) -> None:
    for key, listings in ctx.listings.items():
        batch = ctx.batches[key]
        pid = batch.participant_id
        keys = ctx.registry.valid_keys(pid, batch.produced_at_ms)
        ctx.counts["signatures_verified"] += 1
        operated = ctx.registry.periods is not None
        if keys is None:
            ctx.findings.add("unknown_participant", f"{pid} is not in the registry"
                             + (" (as admitted by the operator)" if operated else ""),
                             participant_id=pid, refs=(ref("responses", *key),))
            continue
        # On an open registry any key the participant registered (a rotated key still
        # signed older batches); with an operator, the key valid when it was produced.
        if ctx.genuine(key):
            continue
        which = "valid" if operated else "registered"
        for listing in listings:
            ctx.findings.on_result(
                listing.checked.logged, "bad_signature", f"batch {batch.batch_id} does not "
                f"verify with a key {which} for {pid} at {batch.produced_at_ms}",
                ref("responses", key[0], key[1], listing.index), pid=pid)
