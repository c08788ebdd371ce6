"""`fi-stream`: kafka, topics, keys, participant, aggregator, query, demo.

Heavy libraries (torch, scikit-learn, aiokafka, numpy) are imported inside the commands that
use them: `fi-stream --help` and `fi-stream status` would otherwise pay ~3 s of imports.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from fi_stream.choices import LOG_LEVELS, strategy_names
from fi_stream_cli.admin import admin_app
from fi_stream_cli.bench import bench_app
from fi_stream_cli.experiment import experiment_app
from fi_stream_cli.failures import CliApp, one_line
from fi_stream_cli.runtime import run_async, serve_with_metrics, settings_from

if TYPE_CHECKING:
    from fi_stream.kafka.local_broker import LocalKafka
    from fi_stream.settings import Settings

app = CliApp(no_args_is_help=True, add_completion=True,
             help="Federated inference over Kafka.")
kafka_app = typer.Typer(no_args_is_help=True, help="The local single-node Kafka (KRaft) broker.")
topics_app = typer.Typer(no_args_is_help=True, help="Topics of DESIGN §2.")
keys_app = typer.Typer(no_args_is_help=True, help="Ed25519 signing keys.")
participant_app = typer.Typer(no_args_is_help=True, help="Train, run and inspect participants.")
aggregator_app = typer.Typer(no_args_is_help=True, help="Run the aggregator.")
privacy_app = typer.Typer(no_args_is_help=True, help="Privacy accounting (DESIGN §5).")
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(keys_app, name="keys")
app.add_typer(participant_app, name="participant")
app.add_typer(aggregator_app, name="aggregator")
app.add_typer(privacy_app, name="privacy")
app.add_typer(experiment_app, name="experiment")
app.add_typer(bench_app, name="bench")
app.add_typer(admin_app, name="admin")

console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="TOML settings file (see docs/config.example.toml).")]
MetricsPortOpt = Annotated[int | None, typer.Option(
    min=0, max=65535, help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics "
    "(FI_METRICS_HOST to bind elsewhere).")]


def _choices(name: str, values: list[str] | tuple[str, ...]) -> type[StrEnum]:
    """An enum of `values`: typer lists an enum's members in --help and rejects the rest."""
    return StrEnum(name, {v: v for v in values})  # type: ignore[return-value]


StrategyName = _choices("StrategyName", strategy_names())
LogLevel = _choices("LogLevel", LOG_LEVELS)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"fi-stream {version('fi-stream')}")
        raise typer.Exit()


@app.callback()
def _root(ctx: typer.Context, config: ConfigOpt = None,
          log_level: Annotated[LogLevel | None, typer.Option(
              case_sensitive=False,
              help="Log level; DEBUG also shows the traceback of a failure.")] = None,
          version: Annotated[bool, typer.Option(
              "--version", callback=_version, is_eager=True,
              help="Print the version and exit.")] = False) -> None:
    ctx.ensure_object(dict).update(config=config, log_level=log_level and log_level.value)


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

    settings = settings_from(ctx, kafka=_some(partitions=partitions,
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


# -- participant ------------------------------------------------------------------------------

def _model_dir(pid: str, model: Path | None) -> Path:
    return model or Path(".fi/models") / pid


@participant_app.command("train")
def participant_train(
    pid: Annotated[str, typer.Option("--id", help="Participant id.")],
    shard: Annotated[int, typer.Option(min=0, help="Which shard (0-based) of the training set.")],
    of: Annotated[int, typer.Option(min=1, help="How many shards the training set is cut in.")],
    alpha: Annotated[float, typer.Option(
        min=0.0, help="Dirichlet α of the label skew: small = very non-IID.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Random seed of the split and the training.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Model dir (default .fi/models/ID).")] = None,
    teachers: Annotated[int | None, typer.Option(
        min=1, help="Train K teachers on disjoint parts of the shard; the participant then "
                    "answers with their noised vote histogram (mechanism teachers).")] = None,
) -> None:
    """Train a digits model on Dirichlet(α) shard K of N; writes safetensors + spec.json."""
    from torch import nn

    from fi_stream.models import save_model, train_participant
    from fi_stream.models.train import train_teachers

    if shard >= of:
        raise typer.BadParameter(f"--shard must be < --of ({of})")
    module: nn.Module
    if teachers is None:
        module, spec = train_participant(shard=shard, of=of, alpha=alpha, seed=seed,
                                         participant_id=pid)
    else:
        module, spec = train_teachers(shard=shard, of=of, alpha=alpha, seed=seed,
                                      teachers=teachers, participant_id=pid)
    directory = _model_dir(pid, out)
    save_model(directory, module, spec)
    console.print(f"{pid}: {spec.metrics} → {directory}")


@participant_app.command("run")
def participant_run(
    ctx: typer.Context,
    pid: Annotated[str, typer.Option("--id", help="Participant id.")],
    model: Annotated[Path | None, typer.Option(help="Model dir (default .fi/models/ID).")] = None,
    max_batch: Annotated[int | None, typer.Option(
        min=1, help="Most queries per micro-batch (default 256).")] = None,
    max_wait_ms: Annotated[int | None, typer.Option(
        min=0, help="Longest wait to fill a micro-batch, ms (default 30).")] = None,
    device: Annotated[str | None, typer.Option(
        help="auto (CUDA if present), cpu, cuda, cuda:N or mps.")] = None,
    clip_norm: Annotated[float | None, typer.Option(
        min=0.0, help="C: each output is clipped to L2 norm ≤ C (default 1.0).")] = None,
    noise_multiplier: Annotated[float | None, typer.Option(
        min=0.0, help="σ: Gaussian noise of std σ·C is added to each output (default 0.3).")
    ] = None,
    epsilon_max: Annotated[float | None, typer.Option(
        help="The privacy budget ε at δ; answering stops when it is spent.")] = None,
    metrics_port: MetricsPortOpt = None,
    behaviour: Annotated[str, typer.Option(
        help="Experiments and tests only: honest, random, constant, uniform, lazy, copycat, "
             "colluding (see fi_stream.behaviours).")] = "honest",
    collusion_secret: Annotated[str, typer.Option(
        help="colluding: the secret every colluder shares.")] = "",
    copy_from: Annotated[str | None, typer.Option(
        help="copycat: whose answers to copy (default: the first answer to each query).")
    ] = None,
) -> None:
    """Answer queries until SIGTERM/SIGINT."""
    from fi_stream.choices import BEHAVIOURS

    if behaviour not in BEHAVIOURS:
        raise typer.BadParameter(f"--behaviour must be one of {', '.join(BEHAVIOURS)}")
    settings = settings_from(
        ctx, participant=_some(max_batch=max_batch, max_wait_ms=max_wait_ms, device=device),
        privacy=_some(clip_norm=clip_norm, noise_multiplier=noise_multiplier,
                      epsilon_max=epsilon_max),
        metrics_port=metrics_port)

    async def main() -> None:
        from consumers.participant import ParticipantService, make_participant

        if settings.participant.torch_threads:
            import torch

            torch.set_num_threads(settings.participant.torch_threads)

        def make() -> ParticipantService:
            return make_participant(settings, participant_id=pid,
                                    model_dir=_model_dir(pid, model),
                                    behaviour=behaviour,  # type: ignore[arg-type]
                                    collusion_secret=collusion_secret.encode(),
                                    copy_from=copy_from)

        await serve_with_metrics(make, settings)

    # No fail-fast probe: a service waits for Kafka with bounded backoff (`serve`).
    run_async(main)


@participant_app.command("budget")
def participant_budget(
    ctx: typer.Context,
    pid: Annotated[str, typer.Option("--id", help="Participant id.")],
    model: Annotated[Path | None, typer.Option(
        help="Model dir (default .fi/models/ID).")] = None,
) -> None:
    """Print the privacy spent so far: answers given and reserved ahead, ε of the budget at
    δ, under which mechanisms, what is left; whether the participant runs now."""
    from fi_stream.errors import UnknownParticipantError
    from fi_stream.ledger import LEDGER_FILE, PrivacyLedger
    from fi_stream.models import load_spec
    from fi_stream.privacy import PrivacyBudget, choose_mechanism
    from fi_stream_cli.budget import describe, read_ledger

    settings = settings_from(ctx)
    p = settings.privacy
    directory = _model_dir(pid, model)
    if not directory.is_dir():
        raise UnknownParticipantError(
            f"no participant {pid!r} here: {directory} does not exist (train it with "
            f"`fi-stream participant train --id {pid} ...`, or pass --model DIR)")
    budget = PrivacyBudget(epsilon_max=p.epsilon_max, delta=p.delta)
    mechanism = choose_mechanism(teachers=load_spec(directory).teachers, clip_norm=p.clip_norm,
                                 noise_multiplier=p.noise_multiplier, budget=budget,
                                 budget_answers=p.budget_answers)
    ledger = PrivacyLedger.open(directory / LEDGER_FILE, budget, mechanism)
    # The file counts the block reserved ahead as spent while the participant runs (or
    # after a crash); read_ledger tells answered from reserved, and who holds the ledger.
    spent = ", ".join(f"{n:,} × {m.describe()}" for m, n in ledger.spend.items() if n) or "none"
    print(describe(pid, read_ledger(directory), epsilon_max=p.epsilon_max, delta=p.delta,
                   answers_left=ledger.answers_left, fit_under=mechanism.describe())
          + f". Counted per mechanism: {spent}; reused answers (free): {ledger.reused:,}")


@privacy_app.command("epsilon")
def privacy_epsilon(
    mechanism: Annotated[str, typer.Option(help="gaussian or teachers.")],
    sigma: Annotated[float, typer.Option(
        min=0.0, help="Noise std relative to the bound C of the released vector.")],
    answers: Annotated[int, typer.Option(min=0)],
    delta: Annotated[float, typer.Option()] = 1e-5,
    teachers: Annotated[int | None, typer.Option(min=1, help="K, for teachers.")] = None,
    clip_norm: Annotated[float, typer.Option(help="C, for gaussian.")] = 1.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """ε of ANSWERS answers of a mechanism, by the same function the ledger and the audit
    use (dp-accounting RDP, replace-one adjacency)."""
    import json

    from fi_stream.errors import PrivacyError
    from fi_stream.privacy import MECHANISMS, Mechanism, epsilon_spent

    if mechanism not in MECHANISMS:
        raise typer.BadParameter(f"--mechanism must be one of {', '.join(MECHANISMS)}")
    try:
        m = Mechanism(name=mechanism, noise_multiplier=sigma, teachers=teachers,  # type: ignore[arg-type]
                      clip_norm=clip_norm)
        eps = epsilon_spent(answers, m, delta)
    except PrivacyError as exc:
        raise typer.BadParameter(str(exc)) from None
    out = {"mechanism": m.name, "sigma": sigma, "teachers": m.teachers,
           "clip_norm": m.clip_norm, "answers": answers, "delta": delta,
           "sensitivity": m.sensitivity, "noise_multiplier": m.accountant_multiplier,
           "epsilon": eps if eps != float("inf") else None,
           "epsilon_per_answer": epsilon_spent(1, m, delta) if sigma > 0 else None}
    if json_out:
        print(json.dumps(out))
    else:
        print(f"{m.describe()}: {answers} answers cost ε = {eps:.4g} at δ = {delta:g} "
              f"(L2 sensitivity {m.sensitivity:.4g}, accountant noise multiplier "
              f"{m.accountant_multiplier:.4g})")


def _some(**values: Any) -> dict[str, Any] | None:
    kept = {k: v for k, v in values.items() if v is not None}
    return kept or None


# -- aggregator -------------------------------------------------------------------------------

@aggregator_app.command("run")
def aggregator_run(
    ctx: typer.Context,
    instance_id: Annotated[str | None, typer.Option(
        help="Stable id of this member (its transactional id); default host-pid.")] = None,
    strategy: Annotated[StrategyName | None, typer.Option(
        help="Aggregation rule for queries that name none (default soft_vote).")] = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Join responses and emit results and incentives until SIGTERM/SIGINT."""
    settings = settings_from(ctx, aggregator=_some(strategy=strategy and strategy.value),
                             metrics_port=metrics_port)

    async def main() -> None:
        from consumers.aggregator import AggregatorService

        def make() -> AggregatorService:
            # A fresh member after an outage, with the same transactional id: it fences
            # the old producer and resumes its partitions from the committed resume state.
            return AggregatorService(settings, instance_id=instance_id)

        await serve_with_metrics(make, settings)

    run_async(main)


@app.command("merit")
def merit_run(
    ctx: typer.Context,
    label_wait_s: Annotated[float, typer.Option(
        min=0.0, help="Score a window this long after it closed even if labels are missing.")
    ] = 30.0,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Score closed incentive windows by merit (Shapley) once their labels have arrived."""
    settings = settings_from(ctx, metrics_port=metrics_port)

    async def main() -> None:
        from consumers.merit import MeritService

        await serve_with_metrics(lambda: MeritService(settings, label_wait_s=label_wait_s),
                                 settings)

    run_async(main)


# -- status -----------------------------------------------------------------------------------

@app.command("status")
def status(
    ctx: typer.Context,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Redraw every --interval seconds until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(min=0.5, help="Seconds between redraws.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    recent: Annotated[int, typer.Option(
        min=1, help="Results read back per partition for the status counts.")] = 200,
) -> None:
    """The federation: participants (live, lag, ε of budget), aggregators, open queries,
    recent results by status, dead letters."""
    import json as json_lib

    settings = settings_from(ctx)

    async def main() -> None:
        from fi_stream_cli.status import render, snapshot

        if not watch:
            doc = await snapshot(settings, recent=recent)
            if as_json:
                print(json_lib.dumps(doc, indent=2))
            else:
                Console().print(render(doc))
            return
        import asyncio

        from rich.live import Live

        with Live(render(await snapshot(settings, recent=recent)), console=Console(),
                  auto_refresh=False) as live:
            while True:
                await asyncio.sleep(interval)
                live.update(render(await snapshot(settings, recent=recent)), refresh=True)

    try:
        run_async(main, kafka=settings)
    except KeyboardInterrupt:
        return


# -- query ------------------------------------------------------------------------------------

#: `fi-stream query` exit codes by result status (scripts can tell them apart).
QUERY_EXIT = {"complete": 0, "partial": 3, "insufficient": 4, "rejected": 5}


@app.command("query")
def query(
    ctx: typer.Context,
    test_index: Annotated[int, typer.Option(
        min=0, help="Use this digits test sample as input (0 to 359).")] = 0,
    input_file: Annotated[Path | None, typer.Option("--input", help=".npy float32 input.")] = None,
    deadline_ms: Annotated[int, typer.Option(
        min=1, help="Time budget from now, ms: answers after it are not used.")] = 2000,
    quorum: Annotated[int, typer.Option(
        min=1, help="Fewest answers for a `partial` result at the deadline.")] = 1,
    strategy: Annotated[str | None, typer.Option(
        help="Aggregation rule for this query (default: the aggregator's). The aggregator "
        "decides: it rejects a name it does not run (exit 5). This build runs "
        f"{', '.join(strategy_names())}.")] = None,
    wait_ready: Annotated[int, typer.Option(
        min=0, help="First wait until this many participants are live (consuming).")] = 0,
    wait_timeout_s: Annotated[float, typer.Option(
        min=0.0, help="Give up --wait-ready after this many seconds.")] = 120.0,
) -> None:
    """Send one query and print its Result as JSON. Exit 0 if complete, 3 if partial,
    4 if insufficient, 5 if rejected."""
    settings = settings_from(ctx)
    label: int | None = None
    if input_file is not None:
        import numpy as np

        x = np.load(input_file, allow_pickle=False).astype(np.float32)
    else:
        from fi_stream.models import load_digits_split

        split = load_digits_split()
        if test_index >= len(split.x_test):
            raise typer.BadParameter(f"{test_index} is past the test split (0 to "
                                     f"{len(split.x_test) - 1})", param_hint="--test-index")
        x, label = split.x_test[test_index], int(split.y_test[test_index])
    # --strategy is passed as given: the aggregator is the one authority on the names it
    # runs (a newer one may run more than this client knows), and it answers an unknown
    # one with a `rejected` Result whose reason is printed here.

    async def main() -> str:
        from producers.query_client import QueryClient, QueryRejectedError

        if wait_ready:
            from fi_stream_cli.status import wait_ready as wait_live

            live = await wait_live(settings, wait_ready, wait_timeout_s)
            console.print(f"{len(live)} participants live: {', '.join(live)}")
        async with QueryClient(settings, quorum=quorum, strategy=strategy) as client:
            try:
                result = await client.infer(x, deadline_ms=deadline_ms)
            except QueryRejectedError as exc:
                print(exc.result.model_dump_json(indent=2, exclude={"aggregate"}))
                typer.secho(f"error: {one_line(str(exc))}", fg="red", err=True)
                return "rejected"
        print(result.model_dump_json(indent=2, exclude={"aggregate"}))
        if label is not None:
            console.print(f"true label {label}, predicted {result.prediction} ({result.status}"
                          f"{'; missing ' + ', '.join(result.missing) if result.missing else ''})")
        return str(result.status)

    status = run_async(main, kafka=settings)
    raise typer.Exit(QUERY_EXIT.get(status, 1))


@app.command("demo")
def demo(
    ctx: typer.Context,
    participants: Annotated[int, typer.Option(min=2, help="How many participants to train.")
                            ] = 5,
    alpha: Annotated[float, typer.Option(
        min=0.0, help="Dirichlet α of the label skew: small = very non-IID.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Random seed of the shards and training.")] = 0,
    deadline_ms: Annotated[int, typer.Option(min=1, help="Each query's time budget, ms.")
                           ] = 5000,
    teachers: Annotated[int, typer.Option(
        min=0, help="Teachers per participant (0: one model, mechanism gaussian).")] = 16,
) -> None:
    """Train N participants, start them and an aggregator, stream the test split, report
    accuracy and each participant's ε (default budget: ε = 100 per 1,000 answers)."""
    from fi_stream_cli.demo import run_demo

    settings = settings_from(ctx)
    code = run_async(lambda: run_demo(settings, participants=participants, alpha=alpha,
                                      seed=seed, deadline_ms=deadline_ms, console=console,
                                      teachers=teachers or None))
    raise typer.Exit(code)


experiment_app = typer.Typer(no_args_is_help=True, help="Experiments (JSON out).")
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("incentives")
def experiment_incentives(
    json_out: Annotated[Path, typer.Option("--json", help="Write the rows here.")],
    plot_out: Annotated[Path | None, typer.Option("--plot", help="PNG of the shares.")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds 0..N-1.")] = 3,
) -> None:
    """Every incentive scheme against strategic participants (5 honest + 7 strategic),
    at α = 0.3 and 1; prints the scheme × behaviour table of reward shares."""
    import orjson

    from fi_stream_cli.incentive_experiment import plot, run, table

    result = run(seeds=tuple(range(seeds)))
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2
                                      | orjson.OPT_NON_STR_KEYS))
    for alpha in result["setup"]["alphas"]:
        print(f"\nα = {alpha:g} (mean reward share per participant over "
              f"{seeds} seeds; copy detection on):\n")
        print(table(result, alpha))
    d = result["detection"]
    print(f"\ncopies flagged: {d['copied_flagged']}/{d['copied']}; honest answers flagged: "
          f"{d['honest_flagged']}/{d['honest']}; goals met by {result['default_scheme']} at "
          f"α = 1: {result['goals']['met']}; {result['wall_s']} s")
    if plot_out is not None:
        plot(result, plot_out)
        console.print(f"plot: {plot_out}")


from fi_stream_cli.audit import register as _register_audit  # noqa: E402

_register_audit(app)
