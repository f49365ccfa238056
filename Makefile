# Everything bootstraps .venv itself: a newcomer needs only `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The pure core: checked strictly by mypy.
MYPY_PATHS := reconciler/language reconciler/source reconciler/audit reconciler/ca reconciler/plan \
	reconciler/revisions reconciler/controller reconciler/rollout reconciler/analysis \
	proxy_runtime/config proxy_runtime/protocol proxy_runtime/envoy renderers webhooks reconciler/errors.py proxy_runtime/errors.py

.PHONY: venv test lint typecheck layers pytest demo golden clean bench-validate bench-render bench-proxy bench-webhooks bench-converge bench-canary bench-page bench-judge_sim bench-converge-envoy bench-canary-envoy

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

layers: $(STAMP)
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy $(MYPY_PATHS)

# In parallel (pytest-xdist), one worker per CPU; a test file's tests stay on one worker (its
# module fixtures, e.g. a canary mesh, are built once). Serially: make pytest PYTEST_ARGS=
PYTEST_ARGS ?= -n auto --dist loadfile
pytest: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint layers typecheck pytest

# Validates the example, then runs the controller, sample apps, one proxy per app and a steady
# load on this machine and tells the canary story: a good change promoted stage by stage, a bad
# route caught by the canary and rolled back. Then edit and `git push` in
# .meshcd-demo/mesh-config yourself. Ctrl-C stops it all. A second run reuses .meshcd-demo
# (your commits and audit); `.venv/bin/python demo/run_demo.py --fresh` moves it aside first.
demo: $(STAMP)
	$(BIN)/meshcd validate repo_layout_example
	$(BIN)/python demo/run_demo.py

# Rewrites the golden files under tests/golden on purpose; review with git diff.
golden: $(STAMP)
	PYTHONPATH=tests/support $(BIN)/python tests/golden/regenerate.py

# Benchmarks: each prints a table and writes bench/out/<name>.json. Not part of `make test`.
bench-validate bench-render bench-proxy bench-webhooks bench-converge bench-canary bench-page bench-judge_sim: bench-%: $(STAMP)
	mkdir -p bench/out
	$(BIN)/python bench/$*.py --json bench/out/$*.json

# 50 real sidecars (agent + Envoy): set_desired until every Envoy ACKed.
bench-converge-envoy: $(STAMP)
	mkdir -p bench/out
	$(BIN)/python bench/converge.py --envoy 50 --real 0 --sims "" --json bench/out/converge-envoy.json

# The canary benchmark with every proxy an agent and its own Envoy.
bench-canary-envoy: $(STAMP)
	mkdir -p bench/out
	$(BIN)/python bench/canary.py --dataplane envoy --json bench/out/canary-envoy.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .meshcd-demo
