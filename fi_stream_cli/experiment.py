"""`fi-stream experiment privacy`: the privacy–utility frontier as JSON, a table and a plot;
`fi-stream experiment incentives`: every incentive scheme against strategic participants."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

experiment_app = typer.Typer(no_args_is_help=True, help="Experiments (JSON out).")
console = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(experiment_app, name="experiment")


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{what} takes comma-separated numbers, got {text!r}") from None


@experiment_app.command("privacy")
def experiment_privacy(
    json_out: Annotated[Path, typer.Option("--json", help="Write the rows here.")],
    plot: Annotated[Path | None, typer.Option(help="Also draw accuracy vs ε (PNG).")] = None,
    teachers: Annotated[str, typer.Option(help="Teacher counts K to sweep.")] = "16",
    epsilons: Annotated[str, typer.Option(help="ε per 1,000 answers.")] = "10,30,100,300,1000",
    alphas: Annotated[str, typer.Option(help="Dirichlet α of the shards.")] = "0.3,1.0",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds 0..N-1 (shards, init, noise).")] = 3,
    gaussian: Annotated[bool, typer.Option(help="Include the gaussian mechanism.")] = True,
) -> None:
    """Sweep mechanism × ε per 1,000 answers × α on digits, 5 participants, δ = 1e-5, with
    the participants' release and the aggregator's soft vote (no Kafka)."""
    import torch

    from fi_stream.experiment import ANSWERS, DELTA, PARTICIPANTS, frontier

    torch.set_num_threads(1)  # tiny models: more threads only spin on a shared machine
    ks = [int(k) for k in _floats(teachers, "--teachers")]
    started = time.perf_counter()
    rows = frontier(teachers=ks, epsilons=_floats(epsilons, "--epsilons"),
                    alphas=_floats(alphas, "--alphas"), seeds=range(seeds),
                    include_gaussian=gaussian, progress=console.print)
    out: dict[str, Any] = {
        "experiment": "privacy", "dataset": "digits", "participants": PARTICIPANTS,
        "answers": ANSWERS, "delta": DELTA, "strategy": "soft_vote",
        "seconds": round(time.perf_counter() - started, 1),
        "rows": [r.to_json() for r in rows]}
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(out, indent=2) + "\n")
    _print(out)
    if plot is not None:
        draw(out, plot)
        console.print(f"plot → {plot}")
    console.print(f"rows → {json_out} ({out['seconds']} s)")


def _print(out: dict[str, Any]) -> None:
    table = Table(title=f"digits, {out['participants']} participants, δ = {out['delta']:g}: "
                        "federated accuracy (mean ± std over seeds)")
    for col in ("mechanism", "K", "α", "ε / 1,000", "σ", "federated", "best solo noised",
                "best solo clean"):
        table.add_column(col, justify="right")
    for r in out["rows"]:
        table.add_row(r["mechanism"], str(r["teachers"] or ""), f"{r['alpha']:g}",
                      f"{r['epsilon_per_1000']:g}", f"{r['sigma']:.3g}",
                      f"{r['federated_accuracy']:.3f} ± {r['federated_accuracy_std']:.3f}",
                      f"{r['best_solo_noised_accuracy']:.3f}", f"{r['best_solo_accuracy']:.3f}")
    console.print(table)


def draw(out: dict[str, Any], path: Path) -> None:
    """Accuracy vs ε, one panel per α, one line per mechanism; best solo and chance marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise typer.BadParameter(
            "--plot needs matplotlib: pip install 'fi-stream[plot]'") from None
    alphas = sorted({r["alpha"] for r in out["rows"]})
    fig, axes = plt.subplots(1, len(alphas), figsize=(5.5 * len(alphas), 4.2), squeeze=False,
                             sharey=True)
    for ax, alpha in zip(axes[0], alphas, strict=True):
        _panel(ax, [r for r in out["rows"] if r["alpha"] == alpha], alpha, out["delta"])
    axes[0][0].set_ylabel("federated accuracy (digits test split)")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"fi-stream privacy–utility frontier: {out['participants']} participants, "
                 f"soft vote, mean of {len(out['rows'][0]['seeds'])} seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _panel(ax: Any, rows: list[dict[str, Any]], alpha: float, delta: float) -> None:
    """One α: a line per mechanism (and K), the best solo model and chance."""
    for key in sorted({(r["mechanism"], r["teachers"] or 0) for r in rows}):
        line = sorted((r for r in rows if (r["mechanism"], r["teachers"] or 0) == key),
                      key=lambda r: r["epsilon_per_1000"])
        label = key[0] if not key[1] else f"{key[0]} (K = {key[1]})"
        ax.errorbar([r["epsilon_per_1000"] for r in line],
                    [r["federated_accuracy"] for r in line],
                    yerr=[r["federated_accuracy_std"] for r in line], marker="o",
                    capsize=3, label=f"federated, {label}")
    best = max(r["best_solo_accuracy"] for r in rows)
    ax.axhline(best, color="grey", linestyle="--",
               label=f"best solo, own model, no noise ({best:.2f})")
    ax.axhline(rows[0]["chance"], color="black", linestyle=":", label="chance (0.10)")
    ax.set_xscale("log")
    ax.set_xlabel(f"ε per 1,000 answers per participant (δ = {delta:g})")
    ax.set_title(f"Dirichlet α = {alpha:g}")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)


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
        Console(stderr=True).print(f"plot: {plot_out}")
