"""The scenario harness: the real operator, the API emulator and namespace VMs, driven with kubectl.

A :class:`Scenario` (fixture ``scenario`` in tests/scenarios/conftest.py) gives a test:

* ``scenario.vm()``: a fresh namespace VM (real sshd, clean user) plus a credentials Secret for
  it in the emulator (its client key and known_hosts line); ``scenario.host(vm)`` is the
  ``host:`` block of a JobNet for it;
* the real ``jobnet operator`` subprocess with short deadlines, started on first use (or with
  :meth:`Scenario.start_operator` and extra arguments); with exactly one VM the agent gets that
  VM's boot-id file, so a VM "reboot" (``vm.crash()``) is visible to the agent;
* kubectl: :meth:`apply` (``kubectl apply -f -``), :meth:`annotate`
  (``kubectl annotate --overwrite``), :meth:`kubectl`;
* reading: :meth:`get_run`, :meth:`job`, :meth:`events`, :meth:`operator_log`, :meth:`agent_log`;
* waiting (poll with a deadline, never a bare sleep): :meth:`wait_phase`, :meth:`wait_job_state`,
  :meth:`wait_event`, :meth:`wait_agent_log`;
* scripts: :meth:`write_script` writes one into the VM user's home; :meth:`marker_script` writes
  one that appends a line to a marker file every time it runs, and :meth:`script_runs` counts
  those lines (proves exactly-once).

Every test gets its own emulator, operator and VMs (own slots, ports and names), so scenario
tests are safe under pytest-xdist.
"""

from __future__ import annotations

import base64
import os
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support.emulator import EmulatorServer, KubectlResult
from tests.support.netutil import wait_until
from tests.support.operator_proc import OperatorProcess, register_webhooks
from tests.support.vm import NamespaceVM

JOBRUNS = ("jobnet.dev/v1alpha1", "jobruns")
NAMESPACE = "default"

#: Short runtime deadlines so that failure scenarios end within seconds.
FAST_RUNTIME_ARGS = (
    "--heartbeat-deadline=4",
    "--dispatch-timeout=5",
    "--kill-grace=0.5",
    "--agent-request-timeout=3",
    "--ssh-connect-timeout=1",
    "--ssh-handshake-timeout=3",
    "--ssh-keepalive=1",
    "--ssh-dead-connection-timeout=3",
    "--reconnect-backoff-min=0.05",
    "--reconnect-backoff-max=0.5",
    "--launch-retry-window=3",
)
#: Short agent deadlines (as in tests/vm/harness.py).
FAST_AGENT_ARGS = (
    "--heartbeat-seconds",
    "0.2",
    "--grace-seconds",
    "0.5",
    "--sweep-seconds",
    "0.1",
    "--start-timeout-seconds",
    "2",
)


class Scenario:
    """One scenario test's world (see the module docstring)."""

    def __init__(self, emulator: EmulatorServer, workdir: Path, make_vm: Callable[..., NamespaceVM]) -> None:
        self.emulator = emulator
        self.workdir = workdir
        self._make_vm = make_vm
        self.vms: list[NamespaceVM] = []
        self.operator: OperatorProcess | None = None

    # -------------------------------------------------------------- setting up

    def vm(self, label: str = "") -> NamespaceVM:
        """A new namespace VM with its credentials Secret ``<netns>-ssh`` in the emulator."""
        vm = self._make_vm(label=label)
        self.vms.append(vm)
        self.secret(self.secret_name(vm), private_key=vm.client_key, known_hosts=vm.known_hosts)
        return vm

    @staticmethod
    def secret_name(vm: NamespaceVM) -> str:
        return f"{vm.netns}-ssh"

    def secret(
        self, name: str, *, known_hosts: str, private_key: str | None = None, password: str | None = None
    ) -> None:
        """Create or replace a credentials Secret (``privateKey``/``password``, ``knownHosts``)."""
        data = {"knownHosts": known_hosts, "privateKey": private_key, "password": password}
        self.emulator.put(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "data": {
                    key: base64.b64encode(value.encode()).decode() for key, value in data.items() if value is not None
                },
            }
        )

    def host(self, vm: NamespaceVM, **overrides: Any) -> dict[str, Any]:
        """The ``host:`` block of a JobNet for ``vm``."""
        return {
            "address": vm.address,
            "port": 22,
            "user": vm.user,
            "credentialsSecret": self.secret_name(vm),
            **overrides,
        }

    def start_operator(
        self,
        *extra_args: str,
        verbose: bool = True,
        wait_ready: bool = True,
        environment: dict[str, str] | None = None,
    ) -> OperatorProcess:
        """Start the real operator (fast deadlines, fast agent) unless it already runs;
        ``verbose``: with kopf's debug log (benchmarks measure without); ``wait_ready``: until
        it serves (see OperatorProcess.start); ``environment``: extra variables of its process."""
        if self.operator is not None:
            return self.operator
        process = self.operator_process(self.workdir, *extra_args, verbose=verbose, environment=environment)
        register_webhooks(self.emulator, process.webhook_url)
        self.operator = process.start(wait_ready=wait_ready)
        return process

    def operator_process(
        self,
        workdir: Path,
        *extra_args: str,
        verbose: bool = True,
        environment: dict[str, str] | None = None,
        kubeconfig: Path | None = None,
        leader_election: bool = False,
    ) -> OperatorProcess:
        """An operator process (not started) with the fast deadlines and the fast agent; its log
        and working files in ``workdir``."""
        agent_args = list(FAST_AGENT_ARGS)
        if len(self.vms) == 1:
            agent_args += ["--boot-id-file", str(self.vms[0].boot_id_file)]
        return OperatorProcess(
            self.emulator,
            workdir,
            extra_args=(*FAST_RUNTIME_ARGS, *(f"--agent-serve-arg={arg}" for arg in agent_args), *extra_args),
            verbose=verbose,
            environment=environment,
            kubeconfig=kubeconfig,
            leader_election=leader_election,
        )

    def close(self) -> None:
        if self.operator is not None:
            self.operator.stop()

    # -------------------------------------------------------------- kubectl

    def kubectl(self, *args: str, input: str | None = None) -> KubectlResult:
        return self.emulator.kubectl(*args, input=input)

    def apply(self, manifests: str | list[dict[str, Any]], *, check: bool = True) -> KubectlResult:
        """``kubectl apply -f -`` of YAML text (or manifests); starts the operator first."""
        self.start_operator()
        text = manifests if isinstance(manifests, str) else yaml.safe_dump_all(manifests)
        result = self.kubectl("apply", "-f", "-", input=textwrap.dedent(text))
        if check:
            assert result.rc == 0, f"kubectl apply failed ({result.rc}): {result.stderr}"
        return result

    def run_failed_export_chain(self, export_body: str = "exit 3\n") -> tuple[NamespaceVM, str]:
        """A run of JobNet ``chain`` on a new VM whose ``export`` exited 3 (``export_body``), so
        ``report`` waits: the run Failed, ready for an override. Returns the VM and the run's name."""
        vm = self.vm()
        export = self.marker_script(vm, "export", export_body)
        report = self.marker_script(vm, "report")
        run = self.run_jobnet("chain", self.host(vm), [
            {"name": "export", "script": export},
            {"name": "report", "script": report, "after": ["export"]},
        ])  # fmt: skip
        self.wait_phase(run, "Failed", timeout=60)
        return vm, run

    def run_long_work(
        self, vm: NamespaceVM, jobnet: str, *, followers: tuple[str, ...] = ("after",), **spec: Any
    ) -> str:
        """A run of JobNet ``jobnet`` on ``vm`` whose job ``work`` sleeps 300 s (a job to stop, kill
        or lose), each of ``followers`` a marker script after it; returns the run's name once
        ``work`` is Running and its script has started on the VM (its marker written)."""
        work = self.marker_script(vm, "work", "sleep 300\n")
        followed = [{"name": name, "script": self.marker_script(vm, name), "after": ["work"]} for name in followers]
        run = self.run_jobnet(jobnet, self.host(vm), [{"name": "work", "script": work}, *followed], **spec)
        self.wait_job_state(run, f"/{jobnet}/work", "Running", timeout=60)
        wait_until(lambda: self.script_runs(vm, "work") == 1, timeout=30, what=f"the script of /{jobnet}/work started")
        return run

    def run_jobnet(
        self, jobnet: str, host: dict[str, Any], jobs: list[dict[str, Any]], *, run: str | None = None, **spec: Any
    ) -> str:
        """Apply JobNet ``jobnet`` (``host`` default, ``jobs``, more ``spec`` fields) and a JobRun of
        it named ``run`` (default ``<jobnet>-1``); returns the run's name."""
        run = run or f"{jobnet}-1"
        self.apply(
            [
                {
                    "apiVersion": "jobnet.dev/v1alpha1",
                    "kind": "JobNet",
                    "metadata": {"name": jobnet},
                    "spec": {"host": host, "jobs": jobs, **spec},
                },
                {
                    "apiVersion": "jobnet.dev/v1alpha1",
                    "kind": "JobRun",
                    "metadata": {"name": run},
                    "spec": {"jobNetRef": jobnet},
                },
            ]
        )
        return run

    def annotate(self, run: str, key: str, value: str) -> None:
        result = self.kubectl("annotate", "--overwrite", "jobrun", run, f"{key}={value}")
        assert result.rc == 0, f"kubectl annotate failed ({result.rc}): {result.stderr}"

    def get_runs_table(self) -> str:
        """``kubectl get jobruns`` as people see it."""
        result = self.kubectl("get", "jobruns")
        assert result.rc == 0, result.stderr
        return result.stdout

    # -------------------------------------------------------------- reading

    def get_run(self, name: str) -> dict[str, Any]:
        run = self.emulator.get(*JOBRUNS, NAMESPACE, name)
        assert run is not None, f"JobRun {name} does not exist"
        return run

    def wait_steering_removed(self, run: str, keys: tuple[str, ...] = ("jobnet.dev/override",)) -> None:
        """Until the applied steering annotations are gone: the operator removes them after the
        status write that records them and its Events, so not necessarily yet at the Event."""

        def annotations() -> dict[str, str]:
            return self.get_run(run)["metadata"].get("annotations") or {}

        wait_until(lambda: not set(keys) & set(annotations()), timeout=15, what=f"{', '.join(keys)} removed from {run}")

    def status(self, run: str) -> dict[str, Any]:
        return self.get_run(run).get("status") or {}

    def gone(self, kind: str, name: str) -> bool:
        """``kubectl get KIND NAME`` answers NotFound (a deleted object really went)."""
        result = self.kubectl("get", kind, name, "-o", "name")
        return result.rc != 0 and "NotFound" in result.stderr

    def job(self, run: str, path: str) -> dict[str, Any]:
        return (self.status(run).get("jobs") or {}).get(path) or {}

    def events(self, run: str) -> list[dict[str, Any]]:
        return self.emulator.events_for(NAMESPACE, run)

    def event_reasons(self, run: str) -> list[str]:
        return [event.get("reason", "") for event in self.events(run)]

    def operator_log(self) -> str:
        return self.operator.log_text() if self.operator is not None else ""

    @staticmethod
    def agent_log(vm: NamespaceVM) -> str:
        return vm.read_agent_log()

    def describe(self, run: str | None = None) -> str:
        """What a failing wait prints: the run's status, its Events and the operator log's tail."""
        parts = []
        if run is not None:
            run_body = self.emulator.get(*JOBRUNS, NAMESPACE, run)
            parts.append("status: " + yaml.safe_dump((run_body or {}).get("status")))
            parts.append("events: " + "\n".join(f"  {e.get('reason')}: {e.get('message')}" for e in self.events(run)))
        if self.operator is not None:
            parts.append("operator log (tail):\n" + self.operator.log_tail(60))
        return "\n".join(parts)

    # -------------------------------------------------------------- waiting

    def wait_phase(self, run: str, phase: str, timeout: float = 30.0) -> dict[str, Any]:
        wait_until(
            lambda: self.status(run).get("phase") == phase,
            timeout=timeout,
            what=f"JobRun {run} phase {phase}",
            describe=lambda: self.describe(run),
        )
        return self.status(run)

    def wait_job_state(self, run: str, path: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
        wait_until(
            lambda: self.job(run, path).get("state") == state,
            timeout=timeout,
            what=f"{run} job {path} {state}",
            describe=lambda: self.describe(run),
        )
        return self.job(run, path)

    def wait_event(self, run: str, reason: str, timeout: float = 15.0, contains: str = "") -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next(
                (e for e in self.events(run) if e.get("reason") == reason and contains in e.get("message", "")), None
            )

        return wait_until(
            find, timeout=timeout, what=f"Event {reason} ({contains!r}) on {run}", describe=lambda: self.describe(run)
        )

    def wait_operator_log(self, pattern: str, timeout: float = 15.0, since: int = 0) -> re.Match[str]:
        """Until ``pattern`` appears in the operator log (from offset ``since`` on: pass
        ``len(operator_log())`` taken before a fault to wait for a line the fault caused)."""
        assert self.operator is not None, "the operator has not been started"
        return self.operator.wait_for_log(pattern, timeout, since)

    def wait_connection_given_up(self, vm: NamespaceVM, since: int, timeout: float = 30.0) -> re.Match[str]:
        """Until the operator log, from offset ``since`` on, says it gave up its connection to
        ``vm``: the channel lost (the kernel gave the TCP connection up) or dropped because the
        heartbeat was lost, whichever came first."""
        host = re.escape(f"{vm.user}@{vm.address}:22")
        given_up = rf"agent channel to {host} lost|host={host} no heartbeat for \S+: dropping the connection"
        return self.wait_operator_log(given_up, timeout, since)

    def wait_agent_log(self, vm: NamespaceVM, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        regex = re.compile(pattern)
        return wait_until(
            lambda: regex.search(vm.read_agent_log()),
            timeout=timeout,
            what=f"{pattern!r} in the agent log of {vm.netns}",
            describe=lambda: vm.read_agent_log()[-3000:],
        )

    # -------------------------------------------------------------- scripts on the VM

    @staticmethod
    def write_script(vm: NamespaceVM, path: str, body: str, mode: int = 0o755) -> str:
        """Write a ``/bin/sh`` script to ``path`` (relative to the VM user's home); its absolute path."""
        text = body if body.startswith("#!") else "#!/bin/sh\n" + textwrap.dedent(body)
        return str(vm.put_file(path, text, mode))

    def marker_script(self, vm: NamespaceVM, name: str, body: str = "exit 0\n", mode: int = 0o755) -> str:
        """A script ``bin/<name>.sh`` that first appends a line to ``markers/<name>`` (one per run),
        then runs ``body``."""
        marker = vm.home / "markers" / name
        marker.parent.mkdir(exist_ok=True)
        os.chown(marker.parent, vm.uid, vm.gid)
        head = f'echo "$JOBNET_JOB_PATH#$JOBNET_ATTEMPT pid $$" >> {marker}\n'
        return self.write_script(vm, f"bin/{name}.sh", head + textwrap.dedent(body), mode)

    @staticmethod
    def script_runs(vm: NamespaceVM, name: str) -> int:
        """How many times the marker script ``name`` ran (lines in its marker file)."""
        marker = vm.home / "markers" / name
        return len(marker.read_text().splitlines()) if marker.exists() else 0
