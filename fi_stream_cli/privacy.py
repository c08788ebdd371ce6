"""`fi-stream privacy …`: ε of a mechanism's answers, by the ledger's and the audit's function."""

from __future__ import annotations

from typing import Annotated

import typer

privacy_app = typer.Typer(no_args_is_help=True, help="Privacy accounting (DESIGN §5).")


def register(app: typer.Typer) -> None:
    app.add_typer(privacy_app, name="privacy")


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
        m = Mechanism(name=mechanism, noise_multiplier=sigma, teachers=teachers,
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
