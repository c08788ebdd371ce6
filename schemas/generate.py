"""Writes the JSON Schema of every event and block header to schemas/json/; `--check` fails
on drift (docs/wire-format.md describes the block headers).

Run `python -m schemas.generate` after changing a model; CI runs it with `--check`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from schemas.blocks import ALL_BLOCK_HEADERS, BlockHeader
from schemas.events import ALL_EVENTS, Event

OUT = Path(__file__).with_name("json")


def render() -> dict[str, str]:
    models: tuple[type[Event] | type[BlockHeader], ...] = (*ALL_EVENTS, *ALL_BLOCK_HEADERS)
    return {
        f"{cls.SCHEMA}.schema.json": json.dumps(
            cls.model_json_schema(mode="serialization"), indent=2, sort_keys=True
        )
        + "\n"
        for cls in models
    }


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [n for n, text in files.items() if not (OUT / n).exists()
                 or (OUT / n).read_text() != text]
        if stale:
            print(f"schema files drifted from the models: {stale}; run python -m schemas.generate")
            return 1
        return 0
    OUT.mkdir(exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
