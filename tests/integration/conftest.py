from __future__ import annotations

from pathlib import Path

import pytest

from fi_stream.models import save_model, train_participant


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three real digits participants, trained once per session on non-IID shards."""
    root = tmp_path_factory.mktemp("models")
    dirs = {}
    for k in range(3):
        pid = f"p{k + 1}"
        module, spec = train_participant(shard=k, of=3, alpha=1.0, seed=0, participant_id=pid)
        save_model(root / pid, module, spec)
        dirs[pid] = root / pid
    return dirs
