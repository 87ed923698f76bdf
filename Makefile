# The demo and the tests install what they need themselves (scripts/setup).
PYTHON ?= python3
PYTEST_WORKERS ?= 4

.PHONY: setup demo test unit bench crds lint-imports

setup:
	@scripts/setup

demo: setup
	@scripts/demo

test: setup
	$(PYTHON) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -q

unit: setup
	$(PYTHON) -m pytest tests/unit -q

crds: setup
	jobnet crds --output-dir crds
	cp crds/*.yaml charts/jobnet-operator/crds/

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done
