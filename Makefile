# The demo and the tests install what they need themselves (scripts/setup).
PYTHON ?= python3
PYTEST_WORKERS ?= 4

.PHONY: setup demo test unit lint explore chaos bench crds

setup:
	@scripts/setup

demo: setup
	@scripts/demo

# Property tests run derandomized (tests/conftest.py's "ci" profile): the same examples every run.
test: setup
	HYPOTHESIS_PROFILE=ci $(PYTHON) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -q

# ruff, ruff format --check, mypy --strict on every package, import-linter (scripts/lint).
lint: setup
	PYTHON=$(PYTHON) scripts/lint

# The property and randomized tests with a fresh seed, printed first: `make explore SEED=n` repeats a run.
explore: setup
	@seed=$${SEED:-$$($(PYTHON) -c 'import secrets; print(secrets.randbelow(2**32))')}; \
	echo "explore: seed $$seed (repeat with: make explore SEED=$$seed)"; \
	HYPOTHESIS_PROFILE=explore JOBNET_RANDOM_SEED=$$seed $(PYTHON) -m pytest -n $(PYTEST_WORKERS) -q \
	  -m "property or randomized" --hypothesis-seed=$$seed tests

# The randomized fault test (tests/chaos) with a fresh seed, printed first: `make chaos SEED=n` repeats
# a run, FAULTS=n changes the number of faults (default 1,000). It prints the faults by kind, the runs
# and the violations (there must be none). `make test` runs a seeded slice of 200 faults.
chaos: setup
	@seed=$${SEED:-$$($(PYTHON) -c 'import secrets; print(secrets.randbelow(2**32))')}; \
	echo "chaos: seed $$seed (repeat with: make chaos SEED=$$seed)"; \
	HYPOTHESIS_PROFILE=ci JOBNET_RANDOM_SEED=$$seed JOBNET_CHAOS_FAULTS=$${FAULTS:-1000} $(PYTHON) -m pytest -q -s \
	  tests/chaos/test_chaos.py

unit: setup
	$(PYTHON) -m pytest tests/unit -q

crds: setup
	jobnet crds --output-dir crds
	cp crds/*.yaml charts/jobnet-operator/crds/

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done
