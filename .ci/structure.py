"""The house rules `make lint` enforces beyond ruff: no function above a cyclomatic
complexity of 15 (radon's count, which includes boolean operators and comprehensions) and no
module over 400 lines, in the packages that ship.

Usage: python .ci/structure.py [--max-cc N] [--max-lines N] [paths...]
Prints one line per breach and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from radon.complexity import cc_visit
from radon.visitors import Function

PACKAGES = ("fi_stream", "consumers", "producers", "fi_stream_cli", "schemas")


def breaches(paths: list[Path], max_cc: int, max_lines: int) -> list[str]:
    found: list[str] = []
    for path in sorted(p for root in paths for p in
                       ([root] if root.is_file() else root.rglob("*.py"))):
        text = path.read_text()
        lines = text.count("\n")
        if lines > max_lines:
            found.append(f"{path}: {lines} lines (at most {max_lines})")
        for item in cc_visit(text):  # functions and methods (and classes, skipped)
            if isinstance(item, Function) and item.complexity > max_cc:
                found.append(f"{path}:{item.lineno}: {item.fullname} has cyclomatic "
                             f"complexity {item.complexity} (at most {max_cc})")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-cc", type=int, default=15)
    parser.add_argument("--max-lines", type=int, default=400)
    parser.add_argument("paths", nargs="*", type=Path, default=[Path(p) for p in PACKAGES])
    args = parser.parse_args()
    found = breaches(args.paths, args.max_cc, args.max_lines)
    print("\n".join(found) or "structure: every function CC ≤ "
          f"{args.max_cc}, every module ≤ {args.max_lines} lines")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
