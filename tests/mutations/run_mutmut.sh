#!/usr/bin/env bash
# `make mutation`: issue 18's hand mutations, then mutmut over the pure core, one module at a
# time (MODULES="privacy join" to pick), one child process (the machine is shared).
# Prints the score per module and the surviving mutants; `mutmut show NAME` shows one.
set -uo pipefail
BIN=${BIN:-.venv/bin}
MODULES=${MODULES:-"fi_stream.privacy fi_stream.aggregation fi_stream.incentives fi_stream.join fi_stream.results fi_stream.merit fi_stream.ledger schemas.codec"}
unset PYTHONPATH  # mutmut imports the mutated copy under mutants/, never the checkout
if [ -z "${SKIP_HAND:-}" ]; then
  "$BIN/python" -m tests.mutations.hand_mutations || exit 1
fi
mkdir -p mutants
for m in $MODULES; do
  # A run that cannot start (its clean test run fails) leaves the module "not checked":
  # say so, with the log, instead of printing a score of nothing.
  if ! "$BIN/mutmut" run --max-children "${MAX_CHILDREN:-1}" "$m.*" >"mutants/run-$m.log" 2>&1
  then
    echo "mutmut failed on $m: see mutants/run-$m.log" >&2
  fi
done
"$BIN/mutmut" results --all true 2>/dev/null | "$BIN/python" tests/mutations/score.py $MODULES
