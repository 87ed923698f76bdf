"""``jobnet dev --demo``: the examples end to end with the real kubectl, then a Stuck job settled.

1. ``kubectl create -f`` examples 01 and 03; both runs Succeed; ``kubectl get jobruns`` and
   ``kubectl jobnet tree`` of each.
2. Example 05 (``stuckResolution: Manual``): while its job ``work`` runs, the VM's link is cut
   until the operator has marked it Stuck (HeartbeatLost) and the job has ended on the VM; the
   link comes back, the operator shows what the agent's journal says, a person (the demo) settles
   it with ``kubectl annotate ... jobnet.dev/override``, and the run Succeeds.

Every wait polls with a deadline; the whole demo stays well under two minutes. The operations
console (``jobnet console``) runs alongside on a free port of 127.0.0.1, its URL printed first, so
the demo can be watched in a browser.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from jobnet.devenv.command import DEV_HOST, NAMESPACE, DevEnvironment, DevError
from jobnet.devenv.net import DeadlineExceeded, wait_until

T = TypeVar("T")

JOBRUNS = ("jobnet.dev/v1alpha1", "jobruns")
SUCCESS_EXAMPLES = ("01-hello.yaml", "03-nested-expansion.yaml")
STUCK_EXAMPLE = "05-stuck-demo.yaml"
STUCK_JOB = "/stuck-demo/work"
RUN_DEADLINE = 45.0
#: The whole demo (after start-up) ends within this, success or not.
DEMO_DEADLINE = 100.0
STUCK_DEADLINE = 30.0
POLL_INTERVAL = 0.2


class DemoFailed(Exception):
    """A step of the demo did not happen; the message says which and what was seen instead."""


def _poll(
    probe: Callable[[], T | None], timeout: float, what: str, seen: Callable[[], str], *, overall: float = float("inf")
) -> T:
    """Poll ``probe`` until truthy, for ``timeout`` seconds but never past the ``overall`` deadline;
    a probe raising DemoFailed ends the demo at once."""
    limit = max(0.0, min(timeout, overall - time.monotonic()))
    try:
        return wait_until(probe, timeout=limit, what=what, interval=POLL_INTERVAL, ignoring=())
    except DeadlineExceeded:
        raise DemoFailed(
            f"{what} did not happen in time (step limit {timeout:.0f}s, whole demo {DEMO_DEADLINE:.0f}s); {seen()}"
        ) from None


class Demo:
    def __init__(self, env: DevEnvironment, examples: Path) -> None:
        assert env.emulator is not None
        self.env = env
        self.emulator = env.emulator
        self.examples = examples
        self.deadline = time.monotonic() + DEMO_DEADLINE

    # -------------------------------------------------------------- showing

    @staticmethod
    def say(text: str) -> None:
        print(f"\n== {text}", flush=True)

    def show(self, *args: str, input: str | None = None, shown_as: str | None = None) -> str:
        """Run kubectl, print the command line and its output; a failure ends the demo."""
        print(f"$ kubectl {shown_as or ' '.join(args)}", flush=True)
        try:
            result = self.env.kubectl(*args, input=input)
        except DevError as error:
            raise DemoFailed(str(error)) from None
        print(result.stdout.rstrip(), flush=True)
        if result.returncode != 0:
            raise DemoFailed(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
        return result.stdout

    # -------------------------------------------------------------- reading

    def status(self, run: str) -> dict[str, Any]:
        body = self.emulator.get(*JOBRUNS, NAMESPACE, run) or {}
        return dict(body.get("status") or {})

    def seen(self, run: str) -> Callable[[], str]:
        def describe() -> str:
            status = self.status(run)
            jobs = ", ".join(
                f"{path} {job.get('state')}{' (' + job['message'] + ')' if job.get('message') else ''}"
                for path, job in (status.get("jobs") or {}).items()
            )
            return (
                f"run {run} is {status.get('phase', 'without status')}: {jobs or 'no jobs yet'}; "
                f"operator log: {self.env.operator.log_path if self.env.operator else '-'}"
            )

        return describe

    def wait_phase(self, run: str, phase: str, timeout: float = RUN_DEADLINE) -> None:
        def reached() -> bool:
            current = self.status(run).get("phase")
            if current in ("Failed", "Stopped") and current != phase:
                raise DemoFailed(f"run {run} ended {current} instead of {phase}: {self.seen(run)()}")
            return current == phase

        _poll(reached, timeout, f"run {run} {phase}", self.seen(run), overall=self.deadline)

    def wait_job(self, run: str, path: str, state: str, timeout: float = STUCK_DEADLINE) -> dict[str, Any]:
        def job() -> dict[str, Any] | None:
            found = (self.status(run).get("jobs") or {}).get(path) or {}
            return found if found.get("state") == state else None

        return _poll(job, timeout, f"job {path} of {run} {state}", self.seen(run), overall=self.deadline)

    def wait_event(self, run: str, reason: str, timeout: float = STUCK_DEADLINE) -> dict[str, Any]:
        def event() -> dict[str, Any] | None:
            return next((e for e in self.emulator.events_for(NAMESPACE, run) if e.get("reason") == reason), None)

        return _poll(event, timeout, f"Event {reason} on {run}", self.seen(run), overall=self.deadline)

    # -------------------------------------------------------------- applying

    def manifests(self, name: str) -> str:
        """The example's YAML, its VM host blocks pointed at the local VM's user and port (the
        same as written, for the namespace VM)."""
        path = self.examples / name
        if not path.is_file():
            raise DemoFailed(f"{path}: no such example")
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for document in documents:
            host = (document.get("spec") or {}).get("host")
            if isinstance(host, dict) and host.get("address") == DEV_HOST:
                host.update(self.env.host)
        text: str = yaml.safe_dump_all(documents, sort_keys=False)
        return text

    def create(self, name: str) -> list[str]:
        """``kubectl create -f`` an example (its JobRuns use generateName); the JobRuns' names."""
        created = self.show(
            "create", "-f", "-", "-o", "name", input=self.manifests(name), shown_as=f"create -f {self.examples / name}"
        )
        return re.findall(r"^jobrun\.jobnet\.dev/(\S+)$", created, re.MULTILINE)

    # -------------------------------------------------------------- the story

    def successful_runs(self) -> None:
        self.say("Two examples: create them with kubectl, the operator runs them on the VM")
        runs = [run for name in SUCCESS_EXAMPLES for run in self.create(name)]
        if len(runs) != len(SUCCESS_EXAMPLES):
            raise DemoFailed(f"expected one JobRun per example, kubectl created {runs}")
        for run in runs:
            self.wait_phase(run, "Succeeded")
        self.show("get", "jobruns")
        for run in runs:
            self.show("jobnet", "tree", run, "--color=never")

    def stuck_job_settled(self) -> None:
        vm = self.env.vm
        if vm is None:
            self.say("Skipping the Stuck job: cutting the link needs the namespace VM (run as root)")
            return
        self.say(f"A Stuck job: {self.examples / STUCK_EXAMPLE} (stuckResolution: Manual)")
        run = self.create(STUCK_EXAMPLE)[0]
        self.wait_job(run, STUCK_JOB, "Running")
        self.say(f"{STUCK_JOB} is running; cutting the VM's network link")
        vm.cut()
        try:
            stuck = self.wait_job(run, STUCK_JOB, "Stuck")
            if stuck.get("reason") != "HeartbeatLost":
                raise DemoFailed(f"{STUCK_JOB} went Stuck for {stuck.get('reason')}, not HeartbeatLost: {stuck}")
            self.show("jobnet", "tree", run, "--color=never", "--wide")
            self.say("Nobody can know whether it finished: the operator waits. The job ends on the VM meanwhile")
            _poll(
                lambda: re.search(rf"{re.escape(STUCK_JOB)}#1 exited with code \d+", vm.read_agent_log()),
                STUCK_DEADLINE,
                f"{STUCK_JOB} ending on the VM",
                lambda: f"agent log: {vm.state_dir / 'agent.log'}",
                overall=self.deadline,
            )
        finally:
            vm.restore()
        self.say("The link is back: the operator shows what the agent's journal says, and waits for a person")
        self.wait_event(run, "StuckOutcomeKnown")
        self.show("jobnet", "tree", run, "--color=never", "--wide")
        self.say("A person settles it")
        self.show(
            "annotate",
            "jobrun",
            run,
            f"jobnet.dev/override={STUCK_JOB}=Succeeded",
            "--overwrite",
            shown_as=f"annotate jobrun {run} jobnet.dev/override='{STUCK_JOB}=Succeeded' --overwrite",
        )
        self.wait_phase(run, "Succeeded")
        self.show("jobnet", "tree", run, "--color=never", "--wide")
        self.show("get", "jobruns")


@contextlib.contextmanager
def console_alongside(env: DevEnvironment) -> Iterator[str]:
    """``jobnet console`` on the dev kubeconfig while the demo runs; yields its URL."""
    log_path = env.workdir / "console.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobnet.cli",
                "console",
                f"--kubeconfig={env.kubeconfig}",
                "--port=0",
                env.host_alias_argument,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        listening = _poll(
            lambda: re.search(r"jobnet console: (http://\S+)", log_path.read_text()) or process.poll() is not None,
            20.0,
            "the console listening",
            lambda: f"console log: {log_path}",
        )
        if not isinstance(listening, re.Match):
            raise DemoFailed(f"the console exited ({process.returncode}): {log_path.read_text().strip()}")
        yield listening.group(1)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def run_demo(env: DevEnvironment, examples: Path) -> None:
    demo = Demo(env, examples)
    with console_alongside(env) as url:
        demo.say(f"Watch it in the browser: {url} (jobnet console, live while the demo runs)")
        demo.successful_runs()
        demo.stuck_job_settled()
