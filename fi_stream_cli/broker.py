"""`fi-stream kafka …`, `topics …` and `keys …`: the local broker, the topics, signing keys."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from fi_stream_cli.options import some
from fi_stream_cli.runtime import run_async, settings_from

if TYPE_CHECKING:
    from fi_stream.kafka.local_broker import LocalKafka
    from fi_stream.settings import Settings

kafka_app = typer.Typer(no_args_is_help=True, help="The local single-node Kafka (KRaft) broker.")
topics_app = typer.Typer(no_args_is_help=True, help="Topics of DESIGN §2.")
keys_app = typer.Typer(no_args_is_help=True, help="Ed25519 signing keys.")
console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.add_typer(kafka_app, name="kafka")
    app.add_typer(topics_app, name="topics")
    app.add_typer(keys_app, name="keys")


def _local(settings: Settings, *, secure: bool = False, users: list[str] | None = None
           ) -> LocalKafka:
    from fi_stream.kafka.local_broker import LocalKafka

    k = settings.kafka
    return LocalKafka(k.local_home, port=k.local_port, controller_port=k.local_controller_port,
                      secure=secure, users=users)


# -- kafka -----------------------------------------------------------------------------------

@kafka_app.command("up")
def kafka_up(
    ctx: typer.Context,
    secure: Annotated[bool, typer.Option(
        help="SASL_SSL with SCRAM users, TLS from a CA it makes, ACLs (StandardAuthorizer). "
             "Decided when the broker's storage is first formatted.")] = False,
    user: Annotated[list[str], typer.Option(
        help="With --secure: a SCRAM user to create (repeat); `admin` always is.")
    ] = ["operator", "aggregator"],  # noqa: B006
) -> None:
    """Start the local broker (resolving its jars with Maven once) and wait until it answers."""
    settings = settings_from(ctx)
    if settings.kafka.bootstrap:
        console.print(f"FI_KAFKA_BOOTSTRAP={settings.kafka.bootstrap}: no local broker needed")
        return
    broker = _local(settings, secure=secure, users=user)
    status = run_async(lambda: broker.up())
    console.print(f"kafka up at {status.bootstrap} (pid {status.pid}, data in {status.home})")
    if secure:
        files = broker.secure_files
        console.print(f"SASL_SSL, {', '.join(sorted(files.passwords()))}: passwords in "
                      f"{files.users}, CA in {files.ca}; then `fi-stream admin acls`")


@kafka_app.command("down")
def kafka_down(ctx: typer.Context) -> None:
    """Stop the local broker (controlled shutdown)."""
    settings = settings_from(ctx)
    if settings.kafka.bootstrap:
        console.print(f"FI_KAFKA_BOOTSTRAP={settings.kafka.bootstrap}: no local broker to stop")
        return
    was = _local(settings).down()
    console.print("kafka stopped" if was else "kafka was not running")


@kafka_app.command("status")
def kafka_status(ctx: typer.Context) -> None:
    """Exit 0 if the local broker runs, 1 if not."""
    s = _local(settings_from(ctx)).status()
    console.print(f"running (pid {s.pid}) at {s.bootstrap}" if s.running else "not running")
    raise typer.Exit(0 if s.running else 1)


@topics_app.command("create")
def topics_create(
    ctx: typer.Context,
    partitions: Annotated[int | None, typer.Option(
        min=1, help="Partitions of the co-partitioned topics (default 4).")] = None,
    replication_factor: Annotated[int | None, typer.Option(
        min=1, help="Replicas per partition; default 3, or the broker count if fewer.")] = None,
    min_insync_replicas: Annotated[int | None, typer.Option(
        min=1, help="In-sync replicas an acks=all write needs; default a majority "
                    "of the replicas (3 → 2, 1 → 1).")] = None,
) -> None:
    """Create the topics (idempotent), replicated to fit the cluster; checks co-partitioned
    topics share a partition count and warns about existing topics replicated below."""
    from fi_stream.kafka import bootstrap_servers, prepare_topics

    settings = settings_from(ctx, kafka=some(partitions=partitions,
                                              replication_factor=replication_factor,
                                              min_insync_replicas=min_insync_replicas))
    report = run_async(lambda: prepare_topics(settings), kafka=settings)
    r = report.replication
    for name, have in sorted(report.under_replicated.items()):
        console.print(f"[yellow]warning: {name} exists with replication factor {have.factor}"
                      f" and min.insync.replicas {have.min_insync}, below {r.factor} and "
                      f"{r.min_insync}: raise them with kafka-reassign-partitions and "
                      "kafka-configs (existing topics are not changed)[/]")
    console.print(f"topics ready on {bootstrap_servers(settings)} ({report.brokers} brokers, "
                  f"replication factor {r.factor}, min.insync.replicas {r.min_insync}); "
                  f"created: {report.created or 'none'}")


@topics_app.command("tail")
def topics_tail(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(
        help="queries, responses, results, incentives, feedback, registry or dlq "
        "(fi.results and the prefixed name work too).")],
    from_beginning: Annotated[bool, typer.Option(
        "--from-beginning", help="Start at the oldest record (default: only new ones).")
    ] = False,
    limit: Annotated[int | None, typer.Option(
        min=1, help="Stop after this many records (default: follow until Ctrl-C).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON document per line instead of the indented form.")] = False,
) -> None:
    """Print a topic's events decoded with their schema; tensors summarised (dtype, shape,
    min/mean/max). Read-only: joins no consumer group."""
    import json as json_lib

    settings = settings_from(ctx)

    async def main() -> None:
        from fi_stream.kafka import make_consumer
        from fi_stream_cli.tail import describe, render, resolve_topic, tail

        name, event_type = resolve_topic(settings, topic)
        consumer = make_consumer(settings, group_id=None)
        await consumer.start()
        try:
            async for record in tail(consumer, name, from_beginning=from_beginning,
                                     limit=limit):
                doc = describe(record, event_type)
                print(json_lib.dumps(doc, ensure_ascii=False) if as_json else render(doc),
                      flush=True)
        finally:
            await consumer.stop()

    try:
        run_async(main, kafka=settings)
    except KeyboardInterrupt:
        return


@keys_app.command("generate")
def keys_generate(out: Annotated[Path, typer.Option(help="Private key file (PEM).")]) -> None:
    """Create an Ed25519 key; prints the public key (base64) for the registry."""
    import base64

    from fi_stream.signing import generate_key, public_key_bytes

    if out.exists():
        console.print(f"[red]{out} exists; refusing to overwrite a private key[/]")
        raise typer.Exit(2)
    key = generate_key(out)
    print(base64.b64encode(public_key_bytes(key)).decode())
