"""The README's hand-run block works when pasted (issue 15): the block is read from
README.md (so the two cannot drift apart) and run as a bash script, as-is, against the
shared test broker under a fresh topic prefix, in a fresh directory (models, ledgers and
the audit report land there)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
HEADING = "## Running the pieces by hand"


def hand_run_block(readme: str) -> str:
    """The first ```bash block after the hand-run heading."""
    after = readme[readme.index(HEADING):]
    match = re.search(r"```bash\n(.*?)```", after, re.S)
    assert match is not None, f"no bash block under {HEADING!r}"
    return match.group(1)


def test_the_block_is_what_this_test_runs() -> None:
    block = hand_run_block((ROOT / "README.md").read_text())
    assert block.startswith(". .venv/bin/activate\n")
    assert "query --wait-ready 3" in block and "topics tail results" in block
    assert 'kill "${pids[@]}"' in block and block.rstrip().endswith("fi-stream kafka down")


@pytest.mark.timeout(900)  # trains 3 models and starts 5 processes: minutes on a busy machine
def test_the_hand_run_block_runs_as_a_script(tmp_path: Path, kafka_bootstrap: str) -> None:
    block = hand_run_block((ROOT / "README.md").read_text())
    # The block activates the checkout's venv; here that is the venv running the tests.
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text(
        f'export PATH="{Path(sys.executable).parent}:$PATH" PYTHONPATH="{ROOT}"\n')
    script = tmp_path / "hand_run.sh"
    script.write_text("set -euo pipefail\n" + block)
    prefix = f"t-{uuid.uuid4().hex[:8]}."
    env = {k: v for k, v in os.environ.items() if not k.startswith("FI_")}
    env.update(FI_KAFKA__BOOTSTRAP=kafka_bootstrap, FI_KAFKA__TOPIC_PREFIX=prefix,
               FI_KAFKA__PARTITIONS="2", COLUMNS="160")
    proc = subprocess.Popen(["bash", str(script)], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=900)
    finally:  # whatever the block left running (a failed step stops it before its kill)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-4000:]}\n{err[-6000:]}"
    assert '"status": "complete"' in out, out
    assert f"── {prefix}fi.results [" in out, out  # topics tail
    assert "p0: 1 answers given, none reserved" in out, out  # the clean stop released it
    assert "audit clean" in err + out
    assert (tmp_path / "audit.html").stat().st_size > 1000
    assert "Traceback" not in err, err[-6000:]
