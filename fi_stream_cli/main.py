"""`fi-stream`: kafka, topics, keys, participant, aggregator, query, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console

from fi_stream.kafka import bootstrap_servers, ensure_topics
from fi_stream.kafka.local_broker import LocalKafka
from fi_stream.settings import Settings
from fi_stream_cli.bench import bench_app
from fi_stream_cli.runtime import run_async, serve, settings_from

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Federated inference over Kafka.")
kafka_app = typer.Typer(no_args_is_help=True, help="The local single-node Kafka (KRaft) broker.")
topics_app = typer.Typer(no_args_is_help=True, help="Topics of DESIGN §2.")
keys_app = typer.Typer(no_args_is_help=True, help="Ed25519 signing keys.")
participant_app = typer.Typer(no_args_is_help=True, help="Train, run and inspect participants.")
aggregator_app = typer.Typer(no_args_is_help=True, help="Run the aggregator.")
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(keys_app, name="keys")
app.add_typer(participant_app, name="participant")
app.add_typer(aggregator_app, name="aggregator")
app.add_typer(bench_app, name="bench")

console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file.")]


@app.callback()
def _root(ctx: typer.Context, config: ConfigOpt = None,
          log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, ...")] = None) -> None:
    ctx.ensure_object(dict).update(config=config, log_level=log_level)


def _local(settings: Settings) -> LocalKafka:
    k = settings.kafka
    return LocalKafka(k.local_home, port=k.local_port, controller_port=k.local_controller_port)


# -- kafka -----------------------------------------------------------------------------------

@kafka_app.command("up")
def kafka_up(ctx: typer.Context) -> None:
    """Start the local broker (resolving its jars with Maven once) and wait until it answers."""
    settings = settings_from(ctx)
    if settings.kafka.bootstrap:
        console.print(f"FI_KAFKA_BOOTSTRAP={settings.kafka.bootstrap}: no local broker needed")
        return
    status = run_async(lambda: _local(settings).up())
    console.print(f"kafka up at {status.bootstrap} (pid {status.pid}, data in {status.home})")


@kafka_app.command("down")
def kafka_down(ctx: typer.Context) -> None:
    """Stop the local broker (controlled shutdown)."""
    was = _local(settings_from(ctx)).down()
    console.print("kafka stopped" if was else "kafka was not running")


@kafka_app.command("status")
def kafka_status(ctx: typer.Context) -> None:
    """Exit 0 if the local broker runs, 1 if not."""
    s = _local(settings_from(ctx)).status()
    console.print(f"running (pid {s.pid}) at {s.bootstrap}" if s.running else "not running")
    raise typer.Exit(0 if s.running else 1)


@topics_app.command("create")
def topics_create(ctx: typer.Context,
                  partitions: Annotated[int | None, typer.Option(min=1)] = None) -> None:
    """Create the topics (idempotent); checks co-partitioned topics share a partition count."""
    settings = settings_from(ctx, kafka={"partitions": partitions} if partitions else None)
    created = run_async(lambda: ensure_topics(settings))
    console.print(f"topics ready on {bootstrap_servers(settings)}; created: {created or 'none'}")


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


# -- participant ------------------------------------------------------------------------------

def _model_dir(pid: str, model: Path | None) -> Path:
    return model or Path(".fi/models") / pid


@participant_app.command("train")
def participant_train(
    pid: Annotated[str, typer.Option("--id", help="Participant id.")],
    shard: Annotated[int, typer.Option(min=0)],
    of: Annotated[int, typer.Option(min=1)],
    alpha: Annotated[float, typer.Option(min=0.0)] = 0.3,
    seed: int = 0,
    out: Annotated[Path | None, typer.Option(help="Model dir (default .fi/models/ID).")] = None,
) -> None:
    """Train a digits model on Dirichlet(α) shard K of N; writes safetensors + spec.json."""
    from fi_stream.models import save_model, train_participant

    if shard >= of:
        raise typer.BadParameter(f"--shard must be < --of ({of})")
    module, spec = train_participant(shard=shard, of=of, alpha=alpha, seed=seed,
                                     participant_id=pid)
    directory = _model_dir(pid, out)
    save_model(directory, module, spec)
    console.print(f"{pid}: {spec.metrics} → {directory}")


@participant_app.command("run")
def participant_run(
    ctx: typer.Context,
    pid: Annotated[str, typer.Option("--id", help="Participant id.")],
    model: Annotated[Path | None, typer.Option(help="Model dir (default .fi/models/ID).")] = None,
    max_batch: Annotated[int | None, typer.Option(min=1)] = None,
    max_wait_ms: Annotated[int | None, typer.Option(min=0)] = None,
    device: str | None = None,
    clip_norm: Annotated[float | None, typer.Option(min=0.0)] = None,
    noise_multiplier: Annotated[float | None, typer.Option(min=0.0)] = None,
    epsilon_max: float | None = None,
    metrics_port: int | None = None,
) -> None:
    """Answer queries until SIGTERM/SIGINT."""
    from consumers.participant import make_participant
    from fi_stream.metrics import serve_metrics

    settings = settings_from(
        ctx, participant=_some(max_batch=max_batch, max_wait_ms=max_wait_ms, device=device),
        privacy=_some(clip_norm=clip_norm, noise_multiplier=noise_multiplier,
                      epsilon_max=epsilon_max),
        metrics_port=metrics_port)

    if settings.participant.torch_threads:
        import torch

        torch.set_num_threads(settings.participant.torch_threads)

    async def main() -> None:
        service = make_participant(settings, participant_id=pid,
                                   model_dir=_model_dir(pid, model))
        serve_metrics(service.metrics_registry, settings.metrics_port)
        await serve(service)

    run_async(main)


@participant_app.command("budget")
def participant_budget(
    ctx: typer.Context,
    pid: Annotated[str, typer.Option("--id", help="Participant id.")],
    model: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Print the privacy spent so far (ε at δ) and what is left."""
    from fi_stream.ledger import LEDGER_FILE, PrivacyLedger
    from fi_stream.privacy import PrivacyBudget, max_answers

    settings = settings_from(ctx)
    p = settings.privacy
    ledger = PrivacyLedger.open(_model_dir(pid, model) / LEDGER_FILE,
                                PrivacyBudget(epsilon_max=p.epsilon_max, delta=p.delta),
                                p.noise_multiplier)
    cap = max_answers(p.epsilon_max, p.delta, p.noise_multiplier)
    # A running participant's reservation ahead counts: it is what a restart would count.
    print(f"{pid}: {ledger.answers} answers spent, ε = {ledger.epsilon:.4g} at δ = {p.delta:g}"
          f" (budget ε_max = {p.epsilon_max:g}, σ = {p.noise_multiplier:g});"
          f" {max(0, cap - ledger.answers)} answers left")


def _some(**values: Any) -> dict[str, Any] | None:
    kept = {k: v for k, v in values.items() if v is not None}
    return kept or None


# -- aggregator -------------------------------------------------------------------------------

@aggregator_app.command("run")
def aggregator_run(
    ctx: typer.Context,
    instance_id: Annotated[str | None, typer.Option(
        help="Stable id of this member (its transactional id); default host-pid.")] = None,
    strategy: str | None = None,
    metrics_port: int | None = None,
) -> None:
    """Join responses and emit results and incentives until SIGTERM/SIGINT."""
    from consumers.aggregator import AggregatorService
    from fi_stream.metrics import serve_metrics

    settings = settings_from(ctx, aggregator=_some(strategy=strategy), metrics_port=metrics_port)

    async def main() -> None:
        service = AggregatorService(settings, instance_id=instance_id)
        serve_metrics(service.metrics_registry, settings.metrics_port)
        await serve(service)

    run_async(main)


@app.command("merit")
def merit_run(
    ctx: typer.Context,
    label_wait_s: Annotated[float, typer.Option(
        min=0.0, help="Score a window this long after it closed even if labels are missing.")
    ] = 30.0,
    metrics_port: int | None = None,
) -> None:
    """Score closed incentive windows by merit (Shapley) once their labels have arrived."""
    from consumers.merit import MeritService
    from fi_stream.metrics import serve_metrics

    settings = settings_from(ctx, metrics_port=metrics_port)

    async def main() -> None:
        service = MeritService(settings, label_wait_s=label_wait_s)
        serve_metrics(service.metrics_registry, settings.metrics_port)
        await serve(service)

    run_async(main)


# -- query ------------------------------------------------------------------------------------

@app.command("query")
def query(
    ctx: typer.Context,
    test_index: Annotated[int, typer.Option(help="Use this digits test sample as input.")] = 0,
    input_file: Annotated[Path | None, typer.Option("--input", help=".npy float32 input.")] = None,
    deadline_ms: Annotated[int, typer.Option(min=1)] = 2000,
    quorum: Annotated[int, typer.Option(min=1)] = 1,
    strategy: str | None = None,
) -> None:
    """Send one query and print its Result as JSON."""
    from fi_stream.models import load_digits_split
    from producers.query_client import QueryClient

    settings = settings_from(ctx)
    label: int | None = None
    if input_file is not None:
        x = np.load(input_file, allow_pickle=False).astype(np.float32)
    else:
        split = load_digits_split()
        x, label = split.x_test[test_index], int(split.y_test[test_index])

    async def main() -> None:
        async with QueryClient(settings, quorum=quorum, strategy=strategy) as client:
            result = await client.infer(x, deadline_ms=deadline_ms)
        print(result.model_dump_json(indent=2, exclude={"aggregate"}))
        if label is not None:
            console.print(f"true label {label}, predicted {result.prediction}")

    run_async(main)


@app.command("demo")
def demo(
    ctx: typer.Context,
    participants: Annotated[int, typer.Option(min=2)] = 5,
    alpha: Annotated[float, typer.Option(min=0.0)] = 0.3,
    seed: int = 0,
    deadline_ms: Annotated[int, typer.Option(min=1)] = 5000,
) -> None:
    """Train N participants, start them and an aggregator, stream the test split, report."""
    from fi_stream_cli.demo import run_demo

    settings = settings_from(ctx)
    code = run_async(lambda: run_demo(settings, participants=participants, alpha=alpha,
                                      seed=seed, deadline_ms=deadline_ms, console=console))
    raise typer.Exit(code)


from fi_stream_cli.audit import register as _register_audit  # noqa: E402

_register_audit(app)
