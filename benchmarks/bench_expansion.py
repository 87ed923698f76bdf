"""Validate and expand a 10,000-job JobNet built from three levels of nested expansions (A08).

Shape: see tests/support/large_jobnet.py. Prints the median of several runs (target: under 100 ms).

Run: python3 benchmarks/bench_expansion.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobnet.core.expansion import expand
from jobnet.core.models import JobNetSpec
from jobnet.core.validation import validate_jobnet, validate_jobrun
from tests.support.large_jobnet import ROOT, large_jobnet_specs


def build_catalog() -> dict[str, JobNetSpec]:
    return {name: JobNetSpec.model_validate(spec) for name, spec in large_jobnet_specs().items()}


def validate_and_expand(catalog: dict[str, JobNetSpec]) -> int:
    for name, spec in catalog.items():
        assert not validate_jobnet(name, spec, catalog)
    assert not validate_jobrun({"jobNetRef": ROOT}, catalog)
    graph = expand(ROOT, catalog, run_id="6f1c2a9e-bench")
    return len(graph.jobs())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed runs (default 15)")
    args = parser.parse_args()
    catalog = build_catalog()
    jobs = validate_and_expand(catalog)
    timings = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        validate_and_expand(catalog)
        timings.append((time.perf_counter() - started) * 1000)
    print(
        f"validate + expand {jobs} jobs (3 levels of nested expansion): "
        f"median {statistics.median(timings):.1f} ms, min {min(timings):.1f} ms, "
        f"max {max(timings):.1f} ms over {args.repeat} runs"
    )


if __name__ == "__main__":
    main()
