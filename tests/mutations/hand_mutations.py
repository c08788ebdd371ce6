"""Issue 18's hand mutations: each one, applied to a copy of the tree, must make the unit
tests named with it fail. Cheap (a few seconds each) and kept: `make mutation` runs it
before the mutation tool, and it fails loudly when a mutation no longer applies (the code
moved: update its `old` text, do not drop it).

    python -m tests.mutations.hand_mutations [--only N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COPY = ("fi_stream", "schemas", "consumers", "producers", "fi_stream_cli", "tests",
        "pyproject.toml")


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation("engine publishes raw probabilities (no clip, no noise)", "fi_stream/engine.py",
             "noised = release(scores, self.mechanism, generator)",
             "noised = torch.softmax(scores.float(), dim=-1)",
             ("tests/unit/test_privacy_applied.py",)),
    Mutation("clip slack 1.5·C", "fi_stream/privacy.py",
             "inside = peak.mul_(unit_norm) <= clip_norm",
             "inside = peak.mul_(unit_norm) <= 1.5 * clip_norm",
             ("tests/unit/test_privacy_applied.py", "tests/unit/test_privacy.py")),
    Mutation("clip slack 3·C", "fi_stream/privacy.py",
             "inside = peak.mul_(unit_norm) <= clip_norm",
             "inside = peak.mul_(unit_norm) <= 3 * clip_norm",
             ("tests/unit/test_privacy_applied.py", "tests/unit/test_privacy.py")),
    Mutation("noise std σ instead of σ·C", "fi_stream/privacy.py",
             "return noise.mul_(mechanism.noise_std).add_(clipped)",
             "return noise.mul_(mechanism.noise_multiplier).add_(clipped)",
             ("tests/unit/test_privacy.py", "tests/unit/test_privacy_applied.py")),
    Mutation("a participant answers the expired rows of a batch", "fi_stream/screening.py",
             "status[(deadline <= now_ms) & (kind != 1)] = EXPIRED",
             "status[(deadline < now_ms) & (kind != 1)] = EXPIRED",
             ("tests/unit/test_engine_blocks.py",)),
    Mutation("audit drops the merit comparison", "fi_stream/audit/merit.py",
             "if getattr(inc, name) != getattr(expected, name):", "if False:",
             ("tests/unit/test_audit_reference.py",)),
    Mutation("merit ρ is spearman(φ, φ)", "fi_stream/merit.py",
             "rho = _finite(spearman(dict(label_free_rewards), phi))",
             "rho = _finite(spearman(phi, phi))",
             ("tests/unit/test_boundaries.py", "tests/unit/test_merit.py")),
    Mutation("spectral weights ignore a tied top eigenvalue", "fi_stream/strategies/spectral.py",
             "if k > 1 and top - vals[-2] <= 1e-9 * top:", "if False:",
             ("tests/unit/test_boundaries.py", "tests/unit/test_aggregation.py")),
    Mutation("an answer at the deadline is late (> → >=)", "fi_stream/join.py",
             "if answer.produced_at_ms > oq.query.deadline_ms:",
             "if answer.produced_at_ms >= oq.query.deadline_ms:",
             ("tests/unit/test_boundaries.py", "tests/unit/test_join.py")),
    Mutation("a Result's status ignores late answers", "fi_stream/results.py",
             "len(missing) + len(late) + len(excluded)),",
             "len(missing) + len(excluded)),",
             ("tests/unit/test_boundaries.py", "tests/unit/test_results.py")),
    Mutation("batched scores used for any incentive method", "fi_stream/incentives/window.py",
             "pre = batched.pre.get(self.method) if batched is not None else None",
             "pre = next(iter(batched.pre.values()), None) if batched is not None else None",
             ("tests/unit/test_boundaries.py", "tests/unit/test_results.py")),
    Mutation("the id pattern is dropped", "schemas/events.py",
             "Id = Field(min_length=1, max_length=128, pattern=r\"^[A-Za-z0-9_.:\\-]+$\")",
             "Id = Field(min_length=1, max_length=128)",
             ("tests/unit/test_boundaries.py", "tests/unit/test_schemas.py")),
)


def run(m: Mutation, workdir: Path) -> tuple[bool, str]:
    """(caught, detail) for one mutation, applied in a fresh copy under `workdir`."""
    tree = workdir / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir()
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, tree / name)
    target = tree / m.path
    text = target.read_text()
    if text.count(m.old) != 1:
        return False, f"does not apply: {m.old!r} occurs {text.count(m.old)} times in {m.path}"
    target.write_text(text.replace(m.old, m.new))
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
         "-o", "addopts=", *m.tests], cwd=tree, env=env, capture_output=True, text=True,
        timeout=600, check=False)
    last = proc.stdout.strip().splitlines()[-1:] or [""]
    return proc.returncode == 1, last[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", type=int, help="run mutation N (1-based) only")
    args = parser.parse_args()
    chosen = list(enumerate(MUTATIONS, 1))
    if args.only:
        chosen = [chosen[args.only - 1]]
    survivors = 0
    with tempfile.TemporaryDirectory(prefix="fi-hand-mutations-") as tmp:
        for n, m in chosen:
            started = time.monotonic()
            caught, detail = run(m, Path(tmp))
            survivors += not caught
            print(f"{n:2d} {'caught  ' if caught else 'SURVIVED'} {m.name} "
                  f"({time.monotonic() - started:.0f}s: {detail})", flush=True)
    print(f"hand mutations: {len(chosen) - survivors}/{len(chosen)} caught")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
