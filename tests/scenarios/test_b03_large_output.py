"""B03: a job writing ~200 MB of stdout and stderr completes; the agent's and the operator's memory
stay bounded (peak RSS, VmHWM); the JobRun status holds only a bounded tail; the full output is
retrievable byte for byte with ``kubectl jobnet logs`` (the agent's ``read`` op over SSH)."""

from __future__ import annotations

import hashlib
import subprocess
import sysconfig
from pathlib import Path

import pytest

from jobnet.core.status import OUTPUT_TAIL_MAX_CHARS
from tests.support.netutil import wait_until
from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM

pytestmark = [pytest.mark.emulator, pytest.mark.vm, pytest.mark.slow]

STDOUT_LINES = 15_000_000  # `seq` output: ~124 MB
STDERR_LINES = 10_000_000  # ~79 MB
#: The agent keeps all of it (its default cap keeps 64 MiB per stream, cut in the middle).
KEEP_BYTES = 256 * 1024 * 1024
MIB = 1024 * 1024
#: Peak RSS limits: far below the output size, far above what the processes need (~20 MiB agent,
#: ~100 MiB operator); a process that buffered the output would blow through them.
AGENT_PEAK_LIMIT = 64 * MIB
OPERATOR_GROWTH_LIMIT = 64 * MIB
PLUGIN_DIR = Path(sysconfig.get_path("scripts"))


def _peak_rss(pid: int) -> int | None:
    """VmHWM (peak resident set) of a process in bytes; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def _seq_digest(lines: int) -> tuple[int, str]:
    """Size and SHA-256 of ``seq 1 <lines>`` (what the job writes)."""
    digest, size = hashlib.sha256(), 0
    with subprocess.Popen(["seq", "1", str(lines)], stdout=subprocess.PIPE) as seq:
        assert seq.stdout is not None
        while chunk := seq.stdout.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _kubectl_jobnet_logs(scenario: Scenario, run: str, path: str, *flags: str) -> tuple[int, str]:
    """Size and SHA-256 of ``kubectl jobnet logs RUN PATH [flags]`` (the real kubectl and plugin)."""
    digest, size = hashlib.sha256(), 0
    environment = {
        "PATH": f"{PLUGIN_DIR}:/usr/bin:/bin",
        "HOME": str(scenario.workdir),
        "KUBECONFIG": str(scenario.emulator.kubeconfig),
        "XDG_CACHE_HOME": str(scenario.workdir / "cache"),
    }
    with subprocess.Popen(
        ["kubectl", "jobnet", "logs", run, path, *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
    ) as logs:
        assert logs.stdout is not None and logs.stderr is not None
        while chunk := logs.stdout.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        errors = logs.stderr.read().decode(errors="replace")
        assert logs.wait(timeout=120) == 0, errors
    return size, digest.hexdigest()


def _sample_agent_peaks(vm: NamespaceVM, peaks: dict[int, tuple[str, int]]) -> None:
    for pid, argv in vm.agent_processes().items():
        peak = _peak_rss(pid)
        if peak is not None:
            kind = "supervise" if "supervise" in argv else "serve"
            peaks[pid] = (kind, max(peak, peaks.get(pid, (kind, 0))[1]))


def test_B03_hundreds_of_mb_of_output_memory_bounded_tail_in_status_full_output_retrievable(scenario: Scenario) -> None:
    vm = scenario.vm()
    loud = scenario.marker_script(vm, "loud", f"seq 1 {STDOUT_LINES}\nseq 1 {STDERR_LINES} >&2\n")
    operator = scenario.start_operator("--agent-serve-arg=--max-output-bytes", f"--agent-serve-arg={KEEP_BYTES}")
    assert operator.process is not None
    operator_baseline = _peak_rss(operator.process.pid)
    assert operator_baseline is not None
    run = scenario.run_jobnet("b03", scenario.host(vm), [{"name": "loud", "script": loud}])

    # Sample the agent's processes while the job writes (each one's VmHWM is its own peak).
    agent_peaks: dict[int, tuple[str, int]] = {}

    def sampled_until_succeeded() -> bool:
        _sample_agent_peaks(vm, agent_peaks)
        return scenario.status(run).get("phase") == "Succeeded"

    wait_until(
        sampled_until_succeeded,
        timeout=120,
        interval=0.2,
        what="the run succeeded",
        describe=lambda: scenario.describe(run),
    )
    _sample_agent_peaks(vm, agent_peaks)
    operator_peak = _peak_rss(operator.process.pid)

    job = scenario.job(run, "/b03/loud")
    assert job["state"] == "Succeeded" and job["exitCode"] == 0, job
    assert scenario.script_runs(vm, "loud") == 1
    kinds = {kind for kind, _ in agent_peaks.values()}
    assert kinds == {"serve", "supervise"}, f"agent processes seen: {agent_peaks}"
    worst = max(peak for _, peak in agent_peaks.values())
    assert worst < AGENT_PEAK_LIMIT, f"agent peak RSS {worst / MIB:.0f} MiB: {agent_peaks}"
    assert operator_peak is not None
    assert operator_peak - operator_baseline < OPERATOR_GROWTH_LIMIT, (
        f"operator peak RSS grew from {operator_baseline / MIB:.0f} to {operator_peak / MIB:.0f} MiB"
    )
    # The status holds a bounded tail of both streams.
    tail = job["outputTail"]
    assert len(tail) <= OUTPUT_TAIL_MAX_CHARS, len(tail)
    assert f"\n{STDOUT_LINES}\n" in tail and tail.endswith(f"\n{STDERR_LINES}\n"), tail
    assert "[stdout]" in tail and "[stderr]" in tail
    # Nothing was cut on the VM, and the whole of each stream comes back through the plugin.
    assert "dropped" not in scenario.agent_log(vm)
    assert _kubectl_jobnet_logs(scenario, run, "/b03/loud") == _seq_digest(STDOUT_LINES)
    assert _kubectl_jobnet_logs(scenario, run, "/b03/loud", "--stderr") == _seq_digest(STDERR_LINES)
    print(
        f"B03: agent peak RSS {', '.join(f'{kind} {peak / MIB:.1f} MiB' for kind, peak in agent_peaks.values())}; "
        f"operator {operator_baseline / MIB:.1f} -> {operator_peak / MIB:.1f} MiB"
    )
