"""Validate and expand a 10,000-job JobNet built from three levels of nested expansions.

Shape: root `bench-root` expands `bench-mid` 10 times; `bench-mid` expands `bench-leaf`
10 times; `bench-leaf` has 100 script jobs in chains of 10 with fan-in edges.
10 x 10 x 100 = 10,000 jobs. Prints the median of several runs (target: under 100 ms).

Run: python3 benchmarks/bench_expansion.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import time

from jobnet.core.expansion import expand
from jobnet.core.models import JobNetSpec
from jobnet.core.validation import validate_jobnet, validate_jobrun

FAN_OUT = 10
LEAF_JOBS = 100


def build_catalog() -> dict[str, JobNetSpec]:
    leaf_jobs = []
    for index in range(LEAF_JOBS):
        after = [f"j{index - 1}"] if index % 10 else ([f"j{index - 10}", f"j{index - 1}"] if index else [])
        leaf_jobs.append({"name": f"j{index}", "script": "/bin/true", "after": after})
    leaf = {"jobs": leaf_jobs, "env": {"LEVEL": "leaf"}}

    def expander(target: str) -> dict:
        jobs = [
            {"name": f"x{index}", "expand": target, "after": [f"x{index - 1}"] if index else []}
            for index in range(FAN_OUT)
        ]
        return {"jobs": jobs}

    root = expander("bench-mid")
    root["host"] = {"address": "vm1.batch.example", "user": "batch", "credentialsSecret": "vm1-ssh"}
    raw = {"bench-root": root, "bench-mid": expander("bench-leaf"), "bench-leaf": leaf}
    return {name: JobNetSpec.model_validate(spec) for name, spec in raw.items()}


def validate_and_expand(catalog: dict[str, JobNetSpec]) -> int:
    for name, spec in catalog.items():
        assert not validate_jobnet(name, spec, catalog)
    assert not validate_jobrun({"jobNetRef": "bench-root"}, catalog)
    graph = expand("bench-root", catalog, run_id="6f1c2a9e-bench")
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
