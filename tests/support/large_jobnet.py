"""The 10,000-job JobNet of scenario A08: three levels of nested expansion.

Root `bench-root` expands `bench-mid` 10 times (a chain); `bench-mid` expands `bench-leaf` 10
times (a chain); `bench-leaf` has 100 script jobs in chains of 10 with fan-in edges.
10 x 10 x 100 = 10,000 jobs. Shared by the A08 scenario test and benchmarks/bench_expansion.py.
"""

from __future__ import annotations

from typing import Any

FAN_OUT = 10
LEAF_JOBS = 100
JOB_COUNT = FAN_OUT * FAN_OUT * LEAF_JOBS
ROOT = "bench-root"
#: The only job with no upstream: everything else waits for it.
FIRST_JOB = f"/{ROOT}/x0/x0/j0"


def large_jobnet_specs(host: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """JobNet name -> spec (plain manifests' spec dicts), root first."""
    leaf_jobs = []
    for index in range(LEAF_JOBS):
        after = [f"j{index - 1}"] if index % 10 else ([f"j{index - 10}", f"j{index - 1}"] if index else [])
        leaf_jobs.append({"name": f"j{index}", "script": "/bin/true", "after": after})

    def expander(target: str) -> dict[str, Any]:
        return {
            "jobs": [
                {"name": f"x{index}", "expand": target, "after": [f"x{index - 1}"] if index else []}
                for index in range(FAN_OUT)
            ]
        }

    root = expander("bench-mid")
    root["host"] = host or {"address": "vm1.batch.example", "user": "batch", "credentialsSecret": "vm1-ssh"}
    return {
        ROOT: root,
        "bench-mid": expander("bench-leaf"),
        "bench-leaf": {"jobs": leaf_jobs, "env": {"LEVEL": "leaf"}},
    }
