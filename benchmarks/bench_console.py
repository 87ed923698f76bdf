"""The console's job network monitor for runs of 100, 1,000 and 10,000 jobs: time to first render
in headless Chromium (the Navigation Timing API: from the start of navigation until the drawing
and the job list are in the page),
the first time (the console builds the run's graph) and again (cached), the server's share (one
HTTP read of the page), and the console's memory (resident set) afterwards. Prints the numbers;
asserts nothing about them.

Each run is a JobRun in the API emulator with a JobNet snapshot and a status as the operator
writes it (a tenth of the jobs Running, one Stuck, the rest Pending or Succeeded), so the console
does what it does in production: read the run, build the graph from the snapshot, lay out the
visible part (sub-jobnets collapsed when large), render. Needs Debian's chromium and
chromium-driver (scripts/setup). Run from the repository root or anywhere."""

from __future__ import annotations

import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobnet.core.expansion import expand  # noqa: E402
from jobnet.core.snapshot import encode_snapshot, snapshot_configmap, snapshot_status, used_jobnets  # noqa: E402
from jobnet.core.validation import parse_jobnet  # noqa: E402
from tests.console.browser import ConsoleProcess, Page, chromium, missing_browser  # noqa: E402
from tests.support.emulator import EmulatorServer  # noqa: E402
from tests.support.large_jobnet import large_jobnet_specs  # noqa: E402

HOST = {"address": "vm1.batch.example", "user": "batch", "credentialsSecret": "vm1-ssh"}
SIZES = (100, 1_000, 10_000)


def specs_for(jobs: int) -> tuple[str, dict[str, dict[str, Any]]]:
    """A root JobNet of ``jobs`` jobs: 10 chained sub-jobnets of jobs/10 chained jobs (10,000:
    scenario A08's three-level JobNet)."""
    if jobs == 10_000:
        return "bench-root", large_jobnet_specs(HOST)
    leaf = [{"name": f"j{i}", "script": "/bin/true", "after": [f"j{i - 1}"] if i else []} for i in range(jobs // 10)]
    parts = [{"name": f"p{i}", "expand": f"leaf{jobs}", "after": [f"p{i - 1}"] if i else []} for i in range(10)]
    return f"root{jobs}", {f"root{jobs}": {"host": HOST, "jobs": parts}, f"leaf{jobs}": {"jobs": leaf}}


def make_run(emulator: EmulatorServer, jobs: int) -> str:
    root, raw = specs_for(jobs)
    catalog = {name: parse_jobnet(spec) for name, spec in raw.items()}
    graph = expand(root, catalog)  # type: ignore[arg-type]
    name = f"bench-{jobs}"
    run = emulator.put(
        {
            "apiVersion": "jobnet.dev/v1alpha1",
            "kind": "JobRun",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"jobNetRef": root},
        }
    )
    data = encode_snapshot(used_jobnets(root, catalog))  # type: ignore[arg-type]
    config_map = emulator.put(snapshot_configmap(run, data))
    states = {}
    for index, node in enumerate(graph.jobs()):
        state = "Succeeded" if index < jobs // 3 else "Running" if index % 10 == 0 else "Pending"
        states[node.path] = {
            "state": state,
            **({"attempt": 1, "startedAt": "2026-11-22T03:00:00Z"} if state != "Pending" else {}),
        }
    states[graph.jobs()[jobs // 3].path] = {"state": "Stuck", "attempt": 1, "reason": "HeartbeatLost"}
    snapshot = snapshot_status(config_map["metadata"]["name"], data, {}, catalog)  # type: ignore[arg-type]
    run["status"] = {
        "phase": "Stuck",
        "progress": f"{jobs // 3}/{jobs}",
        "startedAt": "2026-11-22T03:00:00Z",
        "jobs": states,
        "jobNetSnapshot": snapshot.model_dump(by_alias=True, exclude_none=True),
    }
    emulator.put(run)
    return name


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def first_render(page: Page, path: str) -> float:
    """Seconds from the start of navigation until the monitor is shown: the page's
    DOMContentLoaded handlers done (the drawing is in the HTML; the job list is drawn by then)."""
    page.open(path)
    page.find("#graph svg, #graph-too-large")
    page.find("#job-list .vlist-row")
    timing = page.driver.execute_script("return performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
    return float(timing) / 1000


def main() -> int:
    reason = missing_browser()
    if reason:
        print(f"bench_console: skipped: {reason}")
        return 0
    with tempfile.TemporaryDirectory() as scratch, EmulatorServer(Path(scratch)) as emulator:
        names = {jobs: make_run(emulator, jobs) for jobs in SIZES}
        console = ConsoleProcess(emulator.kubeconfig, Path(scratch)).start()
        assert console.process is not None
        try:
            print(f"console at start: {rss_mib(console.process.pid):.0f} MiB resident")
            print(f"{'jobs':>6}  {'first render':>12}  {'again':>8}  {'server':>8}  {'page':>8}  {'console RSS':>11}")
            with chromium() as driver:
                page = Page(driver, console.url, timeout=60)
                page.open("/runs")  # the browser's own first-start costs are not the monitor's
                page.find("#runs-table")
                for jobs, name in names.items():
                    path = f"/runs/default/{name}"
                    cold = first_render(page, path)  # the console builds the run's graph from its snapshot
                    warm = first_render(page, path)  # the graph and its layout are cached
                    started = time.perf_counter()
                    with urllib.request.urlopen(console.url + path, timeout=60) as response:
                        size = len(response.read())
                    server = time.perf_counter() - started
                    print(
                        f"{jobs:>6}  {cold:>11.3f}s  {warm:>7.3f}s  {server:>7.3f}s  {size / 1024:>5.0f}KiB  "
                        f"{rss_mib(console.process.pid):>7.0f} MiB"
                    )
        finally:
            console.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
