# tierwise — the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup clients demo test lint typecheck check clean bench bench-streams bench-ab soak profile chaos fuzz audit reliability

setup: $(STAMP)

# Re-installs only when the project's dependency list changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(BIN)/tierwise demo

# Real clients that tests/clients/ drives beyond the Python ones in the dev extra: the Claude Code
# CLI from npm, pinned, into .ci/claude-code/ (a no-op when present; skipped without npm outside CI).
clients:
	@bash .ci/install-claude-code

# Without -q: pytest's header says which PostgreSQL and Redis the tests found (tests/dbs.py).
test: setup clients
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: setup
	$(BIN)/mypy

check: lint typecheck test

# Reliability suites at full size (make test runs small configurations); see RELIABILITY.md.
# chaos: the full hostile suite against one `tierwise serve` (fault-injection mix, malicious
# upstream, client floods, budgeted keys under attack, all at once); prints the table of
# RELIABILITY.md "Under faults" and fails on a bound. WORKERS=2 REDIS_URL=redis://... for the
# multi-worker variant (budgets in Redis); GC_PROBE=1 times the gateway's garbage collections.
chaos: setup
	@mkdir -p artifacts
	$(BIN)/python -m tests.hostile_chaos --json artifacts/chaos-full.json \
		$(if $(WORKERS),--workers $(WORKERS)) $(if $(REDIS_URL),--redis-url $(REDIS_URL)) \
		$(if $(GC_PROBE),--gc-probe)

fuzz: setup
	TIERWISE_FUZZ_EXAMPLES=1000 $(BIN)/python -m pytest -q tests/test_gateway_fuzz.py

# Known-vulnerable dependencies (needs the PyPI JSON API; says so when it is unreachable).
audit: setup
	$(BIN)/pip-audit --skip-editable --vulnerability-service pypi --progress-spinner off

reliability: chaos fuzz
	$(BIN)/python -m pytest -q tests/test_chaos.py tests/test_security.py tests/test_gateway_bad_input.py

# Benchmarks (never part of `make test`): tierwise vs LiteLLM vs a direct call, see BENCHMARKS.md.
# QUICK=1: one short run into .bench/quick/; SOAK=1: only the 100,000-request soak.
# `make bench` ends with the long-stream benchmark (bench-streams: C concurrent SSE streams through
# one worker, LiteLLM and direct; QUICK=1: C=200, 50 events over 5 s, about a minute).
bench: setup
	$(BIN)/python benchmarks/run.py $(if $(QUICK),--quick) $(if $(SOAK),--soak)

bench-streams: setup
	$(BIN)/python benchmarks/run.py --streams $(if $(QUICK),--quick) $(if $(LABEL),--label "$(LABEL)")

# CPU per short request (and, with STREAMS=C, per relayed event) of the working tree against REF,
# alternated in one session: the figure to judge an optimisation by on this shared machine.
REF ?= main
ROUNDS ?= 5
bench-ab: setup
	$(BIN)/python benchmarks/ab.py --ref $(REF) --rounds $(ROUNDS) $(if $(STREAMS),--streams $(STREAMS))

soak: setup
	$(BIN)/python benchmarks/run.py --soak

profile: setup
	$(BIN)/python benchmarks/profile.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache

# -- learned router: rebuild and evaluate (slow; not part of `make test`) ------------------------
DATA ?= ../shared/data
EVAL_OUT ?= docs/eval

.PHONY: select train eval eval-latency

# Leave-one-source-out model selection for the prior (train halves only): docs/eval/selection.json.
select: setup
	$(BIN)/python training/select_prior.py --data $(DATA) --out $(EVAL_OUT)/selection.json

# Rebuilds src/tierwise/models/router-v2.json and its model card from the licence-clean train halves.
train: setup
	$(BIN)/tierwise train --data $(DATA) --cache .cache/tierwise-train

# Every number and plot in EVALUATION.md (test splits).
eval: setup
	@mkdir -p $(EVAL_OUT)
	$(BIN)/tierwise eval routellm --benchmark mmlu --data $(DATA)/routellm --plot $(EVAL_OUT)/routellm-mmlu.png --json > $(EVAL_OUT)/routellm-mmlu.json
	$(BIN)/tierwise eval routellm --benchmark gsm8k --data $(DATA)/routellm --plot $(EVAL_OUT)/routellm-gsm8k.png --json > $(EVAL_OUT)/routellm-gsm8k.json
	$(BIN)/tierwise eval arena --data $(DATA) --plot $(EVAL_OUT)/arena.png --json > $(EVAL_OUT)/arena.json
	$(BIN)/tierwise eval routerbench --data $(DATA) --plot $(EVAL_OUT)/routerbench.png --json > $(EVAL_OUT)/routerbench.json
	$(BIN)/tierwise eval tiers --json > $(EVAL_OUT)/tiers.json
	$(MAKE) eval-latency
	$(BIN)/python -m tierwise.evals.report $(EVAL_OUT)

# Decision latency over the real ShareGPT first turns (a benchmark: depends on the machine's load).
eval-latency: setup
	@mkdir -p $(EVAL_OUT)
	$(BIN)/tierwise eval latency --prompts $(DATA)/prompts/sharegpt_first_turns.jsonl --repeat 5 --json > $(EVAL_OUT)/latency.json
