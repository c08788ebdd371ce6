"""Read `mutmut results --all true` on stdin; print the score per module and the survivors.

Score = killed / (killed + survived), as mutmut counts them: a mutant that times out or
crashes the tests counts as killed, one no unit test reaches ("no tests") as survived.
Usage: mutmut results --all true | python tests/mutations/score.py MODULE...
"""

from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict

KILLED = {"killed", "timeout", "segfault", "suspicious"}
SURVIVED = {"survived", "no tests"}


def main(modules: list[str]) -> int:
    status: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for line in sys.stdin:
        m = re.match(r"\s*([\w.]+)__mutmut_\d+:\s*(.+?)\s*$", line)
        if not m:
            continue
        name, state = m.group(0).split(":")[0].strip(), m.group(2)
        module = next((mod for mod in modules if name.startswith(mod + ".")), None)
        if module is None:
            continue
        status[module][state] += 1
        if state in SURVIVED:
            survivors[module].append(f"{name} ({state})")
    total_k = total_n = 0
    for module in modules:
        c = status[module]
        k, s = sum(c[x] for x in KILLED), sum(c[x] for x in SURVIVED)
        total_k, total_n = total_k + k, total_n + k + s
        score = f"{100 * k / (k + s):5.1f} %" if k + s else "   n/a"
        rest = ", ".join(f"{n} {x}" for x, n in sorted(c.items()) if x not in KILLED | SURVIVED)
        extra = f"  ({rest})" if rest else ""
        print(f"{module:24s} {score}  killed {k:4d}  survived {s:4d}{extra}")
    if total_n:
        print(f"{'pure core':24s} {100 * total_k / total_n:5.1f} %  killed {total_k:4d}  "
              f"survived {total_n - total_k:4d}")
    for module in modules:
        for line in survivors[module]:
            print("  survived:", line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
