"""Build, encode and read back the JobNet snapshot of a 10,000-job run (docs/scale.md).

Two shapes: the nested one of bench_expansion.py (3 JobNets, 10 x 10 x 100 jobs) and the worst
case, one JobNet of 10,000 chained jobs whose names, scripts, args and env are random (gzip
cannot shrink them much). For each: the snapshot's size, the time to build and encode it (run
start), and the time to decode it and expand the run again (operator restart). Medians.

Run: python3 benchmarks/bench_snapshot.py [--repeat N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import time
from collections.abc import Callable

from bench_expansion import build_catalog

from jobnet.core.expansion import expand
from jobnet.core.models import JobNetSpec
from jobnet.core.snapshot import decode_snapshot, encode_snapshot, snapshot_status, used_jobnets

HOST = {"address": "vm1.batch.example", "user": "batch", "credentialsSecret": "vm1-ssh"}


def random_flat_catalog(jobs: int) -> dict[str, JobNetSpec]:
    rng = random.Random(12)

    def word(length: int) -> str:
        return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(length))

    names = [word(12) for _ in range(jobs)]
    return {
        "flat": JobNetSpec.model_validate(
            {
                "host": HOST,
                "jobs": [
                    {
                        "name": name,
                        "script": f"/opt/{word(20)}.sh",
                        "args": ["--part", word(8)],
                        "env": {"PART": word(6)},
                        "after": [names[index - 1]] if index else [],
                    }
                    for index, name in enumerate(names)
                ],
            }
        )
    }


def median_ms(action: Callable[[], object], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def measure(label: str, root: str, catalog: dict[str, JobNetSpec], repeat: int) -> None:
    def build() -> str:
        used = used_jobnets(root, catalog)
        data = encode_snapshot(used)
        snapshot_status("bench", data, {}, used)
        return data

    data = build()
    status = snapshot_status("bench", data, {}, used_jobnets(root, catalog))
    jobs = len(expand(root, decode_snapshot(data, status), run_id="bench").jobs())
    start_ms = median_ms(build, repeat)
    resume_ms = median_ms(lambda: expand(root, decode_snapshot(data, status), run_id="bench"), repeat)
    print(
        f"{label}: {jobs} jobs, snapshot {status.size_bytes} bytes gzipped ({len(data)} "
        f"base64); build+encode median {start_ms:.1f} ms, decode+expand median {resume_ms:.1f} ms "
        f"over {repeat} runs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs (default 5)")
    args = parser.parse_args()
    measure("nested 10 x 10 x 100", "bench-root", build_catalog(), args.repeat)
    measure("flat, random names", "flat", random_flat_catalog(10_000), args.repeat)


if __name__ == "__main__":
    main()
