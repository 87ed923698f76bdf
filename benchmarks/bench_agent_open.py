"""A cold agent channel's opening on the VM, alone: ``serve`` started from the zipapp over pipes
(as the operator's SSH session runs it, without sshd), hello, then one ``/bin/true`` launched at
once, as a cold run's first job. Per opening it prints the wall times (serve's command → hello
answered, → the launch answered with its pid, the agent log's accepted → started), serve's own
CPU (``/proc/<pid>/schedstat``) and minor page faults until the launch was answered, and the CPU of
every process of the opening (serve, its supervising process, the job), measured by making this
process the subreaper of them all (``PR_SET_CHILD_SUBREAPER``): each is reaped here and its CPU
counted in ``RUSAGE_CHILDREN``.

``PYTHONPATH=<tree>/agent python3 benchmarks/bench_agent_open.py [--runs 15]``: the zipapp is
built from the ``jobnet_agent`` that PYTHONPATH finds (run it for two trees, alternating, for an
A/B). Linux only (the subreaper is a prctl).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import jobnet_agent
from jobnet_agent.bundle import build_zipapp

_PR_SET_CHILD_SUBREAPER = 36
#: At most this long for the opening's processes to leave once serve's channel closed.
_LEAVE_SECONDS = 30.0


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap_all(deadline: float) -> None:
    """Reap every descendant (the supervising process is reparented to us) until none is left."""
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.01)  # bounded by the deadline; nothing to be woken by
    raise AssertionError("the opening's processes did not all leave")


def log_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def one_opening(zipapp: Path, state: Path, boot_id_file: Path) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    log = state / "agent.log"
    log_start = log.stat().st_size if log.exists() else 0
    started = time.monotonic()
    serve = subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-S",
            str(zipapp),
            "serve",
            "--state-dir",
            str(state),
            "--boot-id-file",
            str(boot_id_file),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert serve.stdin is not None and serve.stdout is not None
    key = {"run": uuid.uuid4().hex[:12], "path": "/open/first", "attempt": 1}
    serve.stdin.write(b'{"id": 1, "op": "hello", "protocol": 1, "client": "bench"}\n')
    serve.stdin.flush()
    assert json.loads(serve.stdout.readline())["ok"]
    hello = time.monotonic() - started
    launch = {"id": 2, "op": "launch", "key": key, "script": "/bin/true", "args": [], "env": {}}
    serve.stdin.write(json.dumps(launch).encode() + b"\n")
    serve.stdin.flush()
    answer = json.loads(serve.stdout.readline())
    assert answer["ok"], answer
    launched = time.monotonic() - started
    serve_cpu = int(Path(f"/proc/{serve.pid}/schedstat").read_text().split()[0]) / 1e9
    serve_faults = int(Path(f"/proc/{serve.pid}/stat").read_text().rsplit(")", 1)[1].split()[7])
    serve.stdin.close()
    serve.wait(timeout=_LEAVE_SECONDS)
    reap_all(time.monotonic() + _LEAVE_SECONDS)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, encoding="utf-8") as handle:
        handle.seek(log_start)
        text = handle.read()
    run = re.escape(key["run"])
    accepted = re.search(r"(\S+Z) serve\[\d+\] " + run + r"\S* accepted", text)
    script = re.search(r"(\S+Z) supervise\[\d+\] " + run + r"\S* started", text)
    assert accepted and script, text
    return {
        "hello answered, ms": hello * 1e3,
        "launch answered, ms": launched * 1e3,
        "accepted -> started, ms": (log_time(script.group(1)) - log_time(accepted.group(1))) * 1e3,
        "serve's CPU until the launch was answered, ms": serve_cpu * 1e3,
        "serve's minor page faults until then": serve_faults,
        "CPU of the opening's processes, user, ms": (after.ru_utime - before.ru_utime) * 1e3,
        "CPU of the opening's processes, system, ms": (after.ru_stime - before.ru_stime) * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="openings measured, after one warm-up (default 15)")
    args = parser.parse_args()
    become_subreaper()
    print(f"agent from {jobnet_agent.__file__}; load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        zipapp = build_zipapp(root / "jobnet-agent.pyz")
        boot_id_file = root / "boot_id"
        boot_id_file.write_text(str(uuid.uuid4()) + "\n")
        one_opening(zipapp, root / "state", boot_id_file)  # warm-up: the state dir made
        results = [one_opening(zipapp, root / "state", boot_id_file) for _ in range(args.runs)]
    for name in results[0]:
        values = [result[name] for result in results]
        print(f"  {name}: median {statistics.median(values):.1f} (min {min(values):.1f}, max {max(values):.1f})")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
