"""Shared setup of the agent benchmarks: a namespace VM with the real agent behind jobnet.ssh.

Needs root, ip netns and OpenSSH (like tests/vm). Run from the repository root or anywhere:
the repository root is put on sys.path so the test support code can be reused."""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jobnet_agent  # noqa: E402
from jobnet_agent.bundle import build_zipapp  # noqa: E402

from jobnet.ssh import AgentInstaller  # noqa: E402
from tests.support.vm import NamespaceVM, missing_requirements  # noqa: E402
from tests.vm.harness import AgentHarness  # noqa: E402


@contextlib.contextmanager
def agent_on_vm(extra_args: Sequence[str] = ()) -> Iterator[AgentHarness]:
    reason = missing_requirements()
    if reason:
        sys.exit(f"cannot run: {reason}")
    with tempfile.TemporaryDirectory() as tmp, NamespaceVM(label="bench") as vm:
        installer = AgentInstaller(build_zipapp(Path(tmp) / "jobnet-agent.pyz"), jobnet_agent.__version__)
        harness = AgentHarness(vm, installer, request_timeout=60)
        try:
            harness.connect(extra_args=extra_args)
            yield harness
        finally:
            harness.close()


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary_ms(values: Sequence[float]) -> str:
    return (f"median {statistics.median(values) * 1e3:.3f} ms, p95 {percentile(values, 0.95) * 1e3:.3f} ms, "
            f"min {min(values) * 1e3:.3f} ms, n={len(values)}")
