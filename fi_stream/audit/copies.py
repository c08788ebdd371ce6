"""Copy flags: every answer a result left out as a copy must be one (`flag_copies` names it
over the result's included and copied rows, registered σ·C), and no included one may be."""

from __future__ import annotations

import numpy as np

from fi_stream.audit.context import AuditContext, Checked
from fi_stream.audit.findings import ref
from fi_stream.copycat import flag_copies


def check_copies(ctx: AuditContext, checked: list[Checked]) -> None:
    for c in checked:
        r = c.result
        if not r.copied and not c.close_pair:
            continue
        ctx.counts["copies_recorded"] += len(r.copied)
        if c.rows is None and c.flat:
            continue  # its rows are unusable: flagged already
        _recheck(ctx, c)


def _recheck(ctx: AuditContext, c: Checked) -> None:
    r = c.result
    ids, rows = list(c.ids), [] if c.rows is None else list(c.rows)
    positions = [(a.offset, a.index) for a in r.included]
    found = True
    for a in r.copied:
        got = ctx.rows.get(a.partition, a.offset)
        if (got is None or not got.answers(a.index, a.participant_id, r.query_id)
                or (rows and got.width != len(rows[0]))):
            found = False
            ctx.findings.on_result(c.logged, "copy_flag_mismatch", "listed as copied, but no "
                                   "such answer of this participant to this query is in the log",
                                   ref("responses", a.partition, a.offset, a.index),
                                   pid=a.participant_id)
            continue
        ids.append(a.participant_id)
        rows.append(ctx.rows.matrices[got.width][got.start + a.index])
        positions.append((a.offset, a.index))
    if not found or len(rows) < 2:
        return
    flags = flag_copies(np.stack(rows), [ctx.registry.noise_std(p) for p in ids], positions)
    want = sorted((ids[f.index], ids[f.of]) for f in flags)
    have = sorted((a.participant_id, a.copy_of) for a in r.copied)
    if want != have:
        ctx.findings.on_result(c.logged, "copy_flag_mismatch",
                               f"recorded copies {have}, recomputed {want}")

