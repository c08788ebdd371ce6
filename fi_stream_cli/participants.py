"""`fi-stream participant …`: train a participant's model, run it, read its privacy spend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fi_stream_cli.options import MetricsPortOpt, model_dir, some
from fi_stream_cli.runtime import run_async, serve_with_metrics, settings_from

participant_app = typer.Typer(no_args_is_help=True, help="Train, run and inspect participants.")
console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.add_typer(participant_app, name="participant")


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
    directory = model_dir(pid, out)
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
        ctx, participant=some(max_batch=max_batch, max_wait_ms=max_wait_ms, device=device),
        privacy=some(clip_norm=clip_norm, noise_multiplier=noise_multiplier,
                      epsilon_max=epsilon_max),
        metrics_port=metrics_port)

    async def main() -> None:
        from consumers.participant import ParticipantService, make_participant

        if settings.participant.torch_threads:
            import torch

            torch.set_num_threads(settings.participant.torch_threads)

        def make() -> ParticipantService:
            return make_participant(settings, participant_id=pid,
                                    model_dir=model_dir(pid, model),
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
    directory = model_dir(pid, model)
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
