"""`fi-stream admin`: the federation operator's commands (README "Security model")."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fi_stream.admission import (
    client_entry,
    participant_entry,
    publish,
    remove,
    settings_privacy,
)
from fi_stream.operator import CLIENT_KEY_PREFIX, parse_pubkey
from fi_stream.signing import generate_key, load_private_key, public_key_bytes
from fi_stream_cli.runtime import run_async, settings_from
from schemas import Budget

admin_app = typer.Typer(no_args_is_help=True,
                        help="The operator: its key, admissions, removals, ACLs.")
console = Console(stderr=True)

DEFAULT_KEY = Path(".fi/operator/operator.pem")
KeyOpt = Annotated[Path, typer.Option("--key", help="The operator's private key (PEM).")]


@admin_app.command("keygen")
def keygen(out: Annotated[Path, typer.Option(help="Where to write it.")] = DEFAULT_KEY
           ) -> None:
    """Create the operator's Ed25519 key; prints the public key every service is given
    (FI_SECURITY__OPERATOR_PUBKEY)."""
    if out.exists():
        console.print(f"[red]{out} exists; refusing to overwrite a private key[/]")
        raise typer.Exit(2)
    print(base64.b64encode(public_key_bytes(generate_key(out))).decode())


@admin_app.command("admit")
def admit(
    ctx: typer.Context,
    pid: Annotated[str, typer.Option("--id", help="Participant id.")],
    pubkey: Annotated[str, typer.Option(help="Its public key (base64, from `keys generate`).")],
    tasks: Annotated[str, typer.Option(help="Comma-separated tasks it serves.")] = "digits",
    budget: Annotated[float | None, typer.Option(help="ε_max (default: the settings').")] = None,
    model_version: Annotated[str, typer.Option()] = "any",
    teachers: Annotated[int | None, typer.Option(
        help="Its model's teachers K (`train --teachers`); unset: one model.")] = None,
    key: KeyOpt = DEFAULT_KEY,
) -> None:
    """Admit a participant, or rotate its key (the same id with a new key), signed."""
    settings = settings_from(ctx)
    p = settings.privacy
    entry = participant_entry(
        pid, parse_pubkey(pubkey), tasks=[t for t in tasks.split(",") if t],
        budget=Budget(epsilon_max=budget if budget is not None else p.epsilon_max,
                      delta=p.delta),
        privacy=settings_privacy(settings, teachers),
        model_version=model_version)
    operator = load_private_key(key)
    run_async(lambda: publish(settings, entry, operator))
    console.print(f"admitted {pid} ({settings.topic_names.registry})")


@admin_app.command("admit-client")
def admit_client(
    ctx: typer.Context,
    cid: Annotated[str, typer.Option("--id", help="Client id.")],
    pubkey: Annotated[str, typer.Option(help="Its public key (base64).")],
    key: KeyOpt = DEFAULT_KEY,
) -> None:
    """Admit a query client: participants charge the queries it signs to its quota."""
    settings = settings_from(ctx)
    operator = load_private_key(key)
    run_async(lambda: publish(settings, client_entry(cid, parse_pubkey(pubkey)), operator))
    console.print(f"admitted client {cid}")


@admin_app.command("remove")
def remove_cmd(
    ctx: typer.Context,
    pid: Annotated[str | None, typer.Option("--id", help="Participant id.")] = None,
    client: Annotated[str | None, typer.Option(help="Or a client id.")] = None,
    key: KeyOpt = DEFAULT_KEY,
) -> None:
    """Remove a participant or client: a signed removal record (not a bare tombstone)."""
    if (pid is None) == (client is None):
        console.print("[red]give exactly one of --id and --client[/]")
        raise typer.Exit(2)
    settings = settings_from(ctx)
    operator = load_private_key(key)
    entry_key = pid if pid is not None else CLIENT_KEY_PREFIX + str(client)
    run_async(lambda: remove(settings, entry_key, operator))
    console.print(f"removed {entry_key}")


@admin_app.command("acls")
def acls(
    ctx: typer.Context,
    participant: Annotated[list[str], typer.Option(help="A participant's SASL user (repeat).")
                           ] = [],  # noqa: B006
    client: Annotated[list[str], typer.Option(help="A query client's SASL user (repeat).")
                      ] = [],  # noqa: B006
    aggregator: Annotated[list[str], typer.Option(help="An aggregator's SASL user.")
                          ] = ["aggregator"],  # noqa: B006
    auditor: Annotated[list[str], typer.Option(help="An auditor's SASL user.")
                       ] = [],  # noqa: B006
    operator: Annotated[str, typer.Option(help="The operator's SASL user.")] = "operator",
    dry_run: Annotated[bool, typer.Option(help="Print them, change nothing.")] = False,
) -> None:
    """Apply the federation's ACLs (README "Security model") to the cluster in the
    settings; run as a user allowed to alter the cluster's ACLs (a super user)."""
    from fi_stream.kafka import make_admin
    from fi_stream.kafka.acls import Principals, apply_acls, federation_acls

    settings = settings_from(ctx)
    bindings = federation_acls(
        settings.topic_names,
        Principals(operator=operator, aggregators=tuple(aggregator),
                   participants=tuple(participant), clients=tuple(client),
                   auditors=tuple(auditor)),
        prefix=settings.kafka.topic_prefix)
    for b in bindings:
        print(b.line())
    if dry_run:
        return

    async def main() -> int:
        admin = make_admin(settings)
        await admin.start()
        try:
            return await apply_acls(admin, bindings)
        finally:
            await admin.close()

    console.print(f"{run_async(main)} ACLs applied")
