"""Shared setup of the agent benchmarks: a namespace VM with the real agent behind jobnet.ssh.

Needs root, ip netns and OpenSSH (like tests/vm). Run from the repository root or anywhere:
the repository root is put on sys.path so the test support code can be reused."""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jobnet_agent  # noqa: E402
from jobnet.ssh import AgentInstaller  # noqa: E402
from jobnet_agent.bundle import build_zipapp  # noqa: E402
from tests.support.vm import NamespaceVM, missing_requirements  # noqa: E402
from tests.vm.harness import AgentHarness  # noqa: E402

CPUACCT_ROOT = Path("/sys/fs/cgroup/cpuacct")
_group_numbers = itertools.count(1)


class VmCpu:
    """CPU time of every process of a VM (sshd, agent serve, supervisors, job wrappers, scripts),
    counted by a cgroup v1 ``cpuacct`` group that the VM's sshd joins before any login: its
    descendants stay in it even when reparented to init, so short-lived processes count too.

    Without a writable cpuacct hierarchy, :attr:`available` is False and nothing is measured."""

    def __init__(self) -> None:
        self.group = CPUACCT_ROOT / f"jobnet-bench-{os.getpid()}-{next(_group_numbers)}"
        try:
            self.group.mkdir()
            self.available = True
        except OSError:
            self.available = False

    def adopt(self, pids: Sequence[int]) -> None:
        for pid in pids if self.available else ():
            with contextlib.suppress(ProcessLookupError):  # a short-lived process of the VM's setup
                (self.group / "cgroup.procs").write_text(f"{pid}\n")

    def seconds(self) -> tuple[float, float]:
        """(user, system) CPU seconds used so far."""
        if not self.available:
            return 0.0, 0.0
        fields = dict(line.split() for line in (self.group / "cpuacct.stat").read_text().splitlines())
        ticks = os.sysconf("SC_CLK_TCK")
        return int(fields["user"]) / ticks, int(fields["system"]) / ticks

    def release(self) -> None:
        """Remove the group (once the VM is gone; a process still in it moves to the root)."""
        if not self.available:
            return
        parent = self.group.parent / "cgroup.procs"
        for _ in range(3):
            pids = (self.group / "cgroup.procs").read_text().split()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(OSError):  # it may have exited meanwhile
                    parent.write_text(f"{pid}\n")
        try:
            self.group.rmdir()
        except OSError as exc:
            print(f"note: cgroup {self.group} not removed: {exc}", file=sys.stderr)


class CpuMeter:
    """Per-job VM CPU over a stretch of a benchmark: ``with meter.measure(jobs): ...``."""

    def __init__(self, vm_cpu: VmCpu) -> None:
        self.vm_cpu = vm_cpu

    @contextlib.contextmanager
    def measure(self, what: str, jobs: int) -> Iterator[None]:
        user0, system0 = self.vm_cpu.seconds()
        yield
        user1, system1 = self.vm_cpu.seconds()
        if not self.vm_cpu.available:
            print(f"{what}: VM CPU not measured (no writable {CPUACCT_ROOT})")
            return
        user, system = (user1 - user0) / jobs * 1e3, (system1 - system0) / jobs * 1e3
        print(
            f"{what}: VM CPU per job {user + system:.2f} ms (user {user:.2f}, system {system:.2f}; "
            f"all VM processes, {jobs} jobs)"
        )


@contextlib.contextmanager
def agent_on_vm(extra_args: Sequence[str] = ()) -> Iterator[AgentHarness]:
    """The agent on a fresh VM; ``harness.cpu`` (a :class:`CpuMeter`) measures the VM's CPU."""
    reason = missing_requirements()
    if reason:
        sys.exit(f"cannot run: {reason}")
    vm_cpu = VmCpu()
    try:
        with tempfile.TemporaryDirectory() as tmp, NamespaceVM(label="bench") as vm:
            installer = AgentInstaller(build_zipapp(Path(tmp) / "jobnet-agent.pyz"), jobnet_agent.__version__)
            harness = AgentHarness(vm, installer, request_timeout=60)
            vm_cpu.adopt(vm.pids())  # sshd alone so far: every login and job descends from it
            harness.cpu = CpuMeter(vm_cpu)  # type: ignore[attr-defined]
            try:
                harness.connect(extra_args=extra_args)
                yield harness
            finally:
                harness.close()
    finally:
        vm_cpu.release()  # the VM's processes are gone now


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary_ms(values: Sequence[float]) -> str:
    return (
        f"median {statistics.median(values) * 1e3:.3f} ms, p95 {percentile(values, 0.95) * 1e3:.3f} ms, "
        f"min {min(values) * 1e3:.3f} ms, n={len(values)}"
    )
