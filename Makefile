# Everything a fresh clone needs: `make demo` and `make test` set up what they use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install demo test test-faults lint typecheck schemas unit integration mutation kafka-up \
        kafka-down clean experiment

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/fi-stream demo

# ruff, then the house rules: every function CC <= 15 (radon), every module <= 400 lines.
lint: install
	$(BIN)/ruff check .
	$(BIN)/python .ci/structure.py

typecheck: install
	$(BIN)/mypy fi_stream schemas consumers producers fi_stream_cli

schemas: install
	$(BIN)/python -m schemas.generate --check

unit: install
	OMP_NUM_THREADS=1 $(BIN)/pytest tests/unit

test: install lint typecheck schemas
	OMP_NUM_THREADS=1 $(BIN)/pytest

# Incentive schemes against strategic participants (~1-2 min; README: incentives).
experiment: install
	$(BIN)/fi-stream experiment incentives --json benchmarks/incentives/incentives.json \
		--plot benchmarks/incentives/incentives.png

# The long fault suite on brokers of its own (ports 39200-39399): broker SIGKILL/SIGSTOP,
# participant SIGSTOP, a 3-broker cluster losing a leader, a soak (FI_SOAK_S, default 600 s).
# Not part of `make test`; figures go to .fi/faults/report.jsonl.
test-faults: install
	@mkdir -p .fi/faults && rm -f .fi/faults/report.jsonl
	$(BIN)/pytest -m faults tests/faults_long -v; status=$$?; \
	  cat .fi/faults/report.jsonl 2>/dev/null; exit $$status

# Slow (minutes per module): hand mutations, then mutmut over the pure core. See README.
mutation: install
	BIN=$(BIN) tests/mutations/run_mutmut.sh

kafka-up: install
	$(BIN)/fi-stream kafka up

kafka-down: install
	$(BIN)/fi-stream kafka down

clean:
	-$(BIN)/fi-stream kafka down
	rm -rf .fi
