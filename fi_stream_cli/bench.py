"""`fi-stream bench …`: measurements that write JSON. Ratios are measured side by side in one
run; absolute numbers are only comparable on the same machine."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console

from fi_stream.engine import InferenceEngine, Precision, Signer, assemble, pick_device, prepare
from fi_stream.models import ModelSpec, build
from fi_stream.privacy import GaussianMechanism
from schemas import Privacy, Query, Tensor, encode

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (JSON out).")
console = Console(stderr=True)

MODELS = {
    "digits-mlp": ModelSpec(architecture="digits-mlp", task="digits", version="bench",
                            input_shape=(64,), num_classes=10),
    "resnet18-c": ModelSpec(architecture="resnet18-c", task="cifar", version="bench",
                            input_shape=(3, 32, 32), num_classes=10),
}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                            "python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _rate(step: Callable[[], int], seconds: float, sync: Callable[[], None]) -> float:
    """Items per second of `step` (which returns the items it did), after a warm-up."""
    step()
    step()
    sync()
    items, started = 0, time.perf_counter()
    while True:
        items += step()
        if time.perf_counter() - started >= seconds:
            break
    sync()
    return items / (time.perf_counter() - started)


def _records(spec: ModelSpec, n: int, rng: np.random.Generator) -> list[tuple[int, bytes]]:
    now = int(time.time() * 1000)
    return [
        (i % 4, encode(Query(query_id=f"q{i}", task=spec.task, created_at_ms=now,
                             deadline_ms=now + 3_600_000,
                             input=Tensor.from_numpy(rng.random(spec.input_shape,
                                                                dtype=np.float32)))))
        for i in range(n)
    ]


@bench_app.command("engine")
def bench_engine(
    model: Annotated[str, typer.Option(help=f"One of {sorted(MODELS)}.")] = "digits-mlp",
    batch: Annotated[int, typer.Option(min=1)] = 1024,
    device: str = "auto",
    precision: Annotated[str, typer.Option(help="fp32 or bf16 (autocast).")] = "fp32",
    seconds: Annotated[float, typer.Option(min=0.1)] = 3.0,
    json_out: Annotated[Path | None, typer.Option("--json")] = None,
) -> None:
    """Raw forward (ceiling) vs. the participant engine (encoded queries → encoded, signed
    ResponseBatches, pipelined as in the service) vs. one query at a time."""
    if model not in MODELS or precision not in ("fp32", "bf16"):
        raise typer.BadParameter(f"--model in {sorted(MODELS)}, --precision fp32|bf16")
    spec = MODELS[model]
    dev = pick_device(device)
    prec: Precision = "bf16" if precision == "bf16" else "fp32"
    torch.manual_seed(0)
    module = build(spec)
    if len(spec.input_shape) == 3:
        module = module.to(memory_format=torch.channels_last)
    engine = InferenceEngine(module, spec, GaussianMechanism(clip_norm=1.0, noise_multiplier=0.3),
                             dev, prec)
    signer = Signer(participant_id="bench", spec=spec, key=Ed25519PrivateKey.generate(),
                    privacy=Privacy(clip_norm=1.0, noise_multiplier=0.3))
    rng = np.random.default_rng(0)
    records = _records(spec, batch, rng)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    x = torch.rand(batch, *spec.input_shape, device=dev)

    def raw() -> int:
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16,
                                                    enabled=prec == "bf16"):
            engine.module(x)
        return batch

    def compute(prepared: Any) -> int:
        n = len(prepared.answerable)
        outputs = engine.infer(prepared.inputs)
        assemble(prepared, n, outputs, signer, int(time.time() * 1000))
        return n

    pool = ThreadPoolExecutor(max_workers=1)
    in_flight: list[Any] = []

    def pipelined() -> int:
        # As in the participant: the next batch is decoded while this one computes.
        prepared = prepare(records, spec, int(time.time() * 1000))
        done = in_flight.pop().result() if in_flight else 0
        in_flight.append(pool.submit(compute, prepared))
        return done

    naive_records = records[: min(batch, 2000)]

    def naive() -> int:
        for item in naive_records[:256]:
            prepared = prepare([item], spec, int(time.time() * 1000))
            assemble(prepared, 1, engine.infer(prepared.inputs), signer,
                     int(time.time() * 1000))
        return min(256, len(naive_records))

    console.print(f"bench engine: {model} batch {batch} on {dev} ({prec})")
    result: dict[str, Any] = {
        "benchmark": "engine", "model": model, "batch": batch, "device": str(dev),
        "precision": prec, "seconds": seconds, "machine": machine(),
        "raw_items_per_s": _rate(raw, seconds, sync),
        "engine_items_per_s": _rate(pipelined, seconds, sync),
        "naive_items_per_s": _rate(naive, seconds, sync),
    }
    pool.shutdown()
    result["engine_over_raw"] = result["engine_items_per_s"] / result["raw_items_per_s"]
    result["engine_over_naive"] = result["engine_items_per_s"] / result["naive_items_per_s"]
    text = json.dumps(result, indent=2)
    if json_out is not None:
        json_out.write_text(text + "\n")
    print(text)
