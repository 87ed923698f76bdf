"""Issue-4 benchmark: what the JobRun admission webhooks cost per write.

The real operator (its kopf webhook server, plain HTTP on localhost) gets real AdmissionReviews:

* a JobRun UPDATE that does not steer (the operator removing an applied annotation, kopf's
  bookkeeping, a label): every such write now passes ``/mutate-jobrun`` and ``/validate-jobrun``;
  this is the overhead per write, on top of the API server's own work;
* a JobRun UPDATE that sets ``jobnet.dev/override`` on a run of a JobNet with ``--jobs`` jobs:
  the validating webhook lists the namespace's JobNets and expands the run's graph to check the
  paths; the mutating webhook stamps the requester.

Prints median and p95 in milliseconds. Run from the repository root:
``python3 benchmarks/bench_admission.py [--jobs 1000] [--rounds 200]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.emulator import EmulatorServer
from tests.support.kube import jobnet, jobrun, kubectl_apply, script_job
from tests.support.operator_proc import OperatorProcess, admission_review


def timed(operator: OperatorProcess, path: str, review: dict[str, Any], rounds: int) -> list[float]:
    """Milliseconds per call; every answer must allow the write."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = operator.admission_review(path, review)
        times.append((time.perf_counter() - started) * 1000)
        assert response["allowed"], response
    return times


def report(label: str, times: list[float]) -> None:
    p95 = sorted(times)[max(0, int(len(times) * 0.95) - 1)]
    print(f"{label:<64} median {statistics.median(times):7.2f} ms   p95 {p95:7.2f} ms   ({len(times)} calls)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs of the JobNet the run steers (default 1000)")
    parser.add_argument("--rounds", type=int, default=200, help="calls per measurement (default 200)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-admission-") as tmp, EmulatorServer(Path(tmp)) as emulator:
        operator = OperatorProcess(emulator, Path(tmp)).start()
        try:
            jobs = [script_job("j0")] + [script_job(f"j{i}", f"j{i - 1}") for i in range(1, args.jobs)]
            result = kubectl_apply(emulator, jobnet("big", *jobs))
            assert result.rc == 0, result.stderr
            before = jobrun("big", name="big-1")
            before["metadata"].update(uid="3f1c6a52-0000-4000-8000-000000000001", annotations={"team": "etl"})

            relabelled = copy.deepcopy(before)
            relabelled["metadata"]["labels"] = {"tier": "gold"}
            plain = admission_review("UPDATE", relabelled, before, username="system:serviceaccount:jobnet:operator")
            steered = copy.deepcopy(before)
            steered["metadata"]["annotations"]["jobnet.dev/override"] = f"/big/j{args.jobs - 1}=Succeeded"
            steering = admission_review("UPDATE", steered, before, username="alice")

            timed(operator, "/validate-jobrun", plain, 10)  # warm-up: connections, imports
            print(f"JobRun admission, real operator webhook over HTTP on localhost ({args.jobs}-job JobNet)")
            report("UPDATE without steering: /mutate-jobrun", timed(operator, "/mutate-jobrun", plain, args.rounds))
            report("UPDATE without steering: /validate-jobrun", timed(operator, "/validate-jobrun", plain, args.rounds))
            report(
                "UPDATE setting jobnet.dev/override: /mutate-jobrun",
                timed(operator, "/mutate-jobrun", steering, args.rounds),
            )
            report(
                "UPDATE setting jobnet.dev/override: /validate-jobrun (expands)",
                timed(operator, "/validate-jobrun", steering, args.rounds),
            )
        finally:
            operator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
