"""Several operator replicas in one scenario (leader election, catalogue G01-G03 and H03's
leader change): each replica authenticates with a token of its own, so the emulator can record
one replica's requests or cut it off from the API while the others go on.

Each start of a replica is a new pod (``POD_NAME`` ``replica-a-1``, ``replica-a-2``, ...), so its
Lease identity (``<pod>_<random>``, see ``default_identity``) tells which replica's current
process holds the Lease: :func:`leader`.

Scripts written with :func:`ledger_script` append ``start <path>`` and ``end <path>`` to one
ledger file on the VM: :func:`ledger` reads it back, to prove that no job ran twice.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from jobnet.core.lease import LeaseRecord
from tests.support.emulator import EmulatorServer
from tests.support.operator_proc import OperatorProcess, register_webhooks
from tests.support.scenario import Scenario
from tests.support.vm import NamespaceVM

#: Short, with client-go's proportions (15/10/2): a takeover after a crash takes about 4 s.
LEASE_DURATION = 4.0
RENEW_DEADLINE = 3.0
RETRY_PERIOD = 0.25
ELECTION_ARGS = (
    f"--lease-duration={LEASE_DURATION}",
    f"--renew-deadline={RENEW_DEADLINE}",
    f"--retry-period={RETRY_PERIOD}",
)
#: How late a loaded machine may notice what is due (polls, scheduling of 2 shared cores).
SLACK = 3.0
#: The longest a candidate waits for a dead leader's Lease: its duration, then its next try.
TAKEOVER = LEASE_DURATION + RETRY_PERIOD * 2.2 + SLACK
LEADS = r"Leader election: \S+ is the leader now"
STOPS = r"Leader election: \S+ stops leading"
ACQUIRED = r"Leader election: \S+ acquired Lease"
#: A request to an agent, as the runtime logs it right before it leaves.
AGENT_REQUEST = re.compile(r"launching |killing \(|fencing |ack ")
#: kopf's text log line: "[2026-12-03 07:30:00,123] ..."
STAMP = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


#: The Lease the replicas elect their leader with (the operator's defaults).
LEASE = ("coordination.k8s.io/v1", "leases", "default", "jobnet-operator")


@dataclass
class Replica:
    name: str
    process: OperatorProcess
    token: str
    starts: int = 0

    @property
    def pod(self) -> str:
        """The pod name of the current (or last) process: a new one at each start."""
        return f"{self.name}-{self.starts}"

    def start(self, *, wait_ready: bool = True) -> Replica:
        """Start the process (again), as a new pod: a new candidate for the Lease."""
        self.starts += 1
        self.process.environment["POD_NAME"] = self.pod
        self.process.start(wait_ready=wait_ready)
        return self

    def holds(self, identity: str | None) -> bool:
        """Is ``identity`` (a Lease's holder) this replica's current process?"""
        return identity is not None and identity.startswith(f"{self.pod}_")

    def log(self) -> str:
        return self.process.log_text()

    def wait_log(self, pattern: str, timeout: float = 15.0, since: int = 0) -> re.Match[str]:
        """Until ``pattern`` appears in this replica's log from offset ``since`` on (``len(log())``
        taken before a fault, so that a line of an earlier phase cannot match)."""
        return self.process.wait_for_log(pattern, timeout, since)

    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    def freeze(self) -> None:
        os.kill(self.pid(), signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid(), signal.SIGCONT)


def start_replicas(
    scenario: Scenario, count: int, *extra_args: str, environment: dict[str, str] | None = None
) -> list[Replica]:
    """``count`` replicas with leader election; the first is the leader when this returns, the
    others campaign. The admission webhook is the last replica's (every replica serves it), and
    so is ``scenario.operator``."""
    replicas = []
    for index in range(count):
        name = f"replica-{'abcdefgh'[index]}"
        workdir = scenario.workdir / name
        workdir.mkdir()
        token = scenario.emulator.issue_token(name, groups=("system:masters",))
        kubeconfig = scenario.emulator.write_kubeconfig(workdir / "kubeconfig", token)
        process = scenario.operator_process(
            workdir,
            *ELECTION_ARGS,
            *extra_args,
            # The log's time stamps (stamp_of) in UTC: compared across replicas, never across a DST change.
            environment={"TZ": "UTC", **(environment or {})},
            kubeconfig=kubeconfig,
            leader_election=True,
        )
        replica = Replica(name, process, token).start()
        replicas.append(replica)
        replica.wait_log(r"Leader election: \S+ is a candidate" if index else LEADS)
    register_webhooks(scenario.emulator, replicas[-1].process.webhook_url)
    scenario.operator = replicas[-1].process  # the scenario's operator: it starts no other
    return replicas


def stop_replicas(replicas: list[Replica]) -> None:
    for replica in replicas:
        if replica.process.process is not None and replica.process.process.poll() is None:
            replica.thaw()  # a frozen process cannot act on SIGTERM
        replica.process.stop()


def leader(emulator: EmulatorServer, replicas: list[Replica]) -> Replica | None:
    """The replica whose current process holds the Lease, unexpired, and runs; None if none does
    (nobody campaigned yet, or the holder died or stopped renewing and nobody took over yet)."""
    lease = emulator.get(*LEASE)
    record = None if lease is None else LeaseRecord.from_lease(lease)
    if record is None or record.renew_time is None:
        return None
    renewed = datetime.datetime.fromisoformat(record.renew_time)
    expires = renewed + datetime.timedelta(seconds=record.lease_duration_seconds)
    if expires <= datetime.datetime.now(datetime.UTC):
        return None
    for replica in replicas:
        running = replica.process.process is not None and replica.process.process.poll() is None
        if running and replica.holds(record.holder):
            return replica
    return None


def lease_transitions(emulator: EmulatorServer) -> int:
    """How often leadership changed hands (the Lease's ``leaseTransitions``)."""
    lease = emulator.get(*LEASE)
    return 0 if lease is None else LeaseRecord.from_lease(lease).transitions


def wait_to_lead(replica: Replica, timeout: float, since: int = 0) -> float:
    """Until ``replica`` logs that it leads (from log offset ``since`` on: a replica that led
    before, as a loaded machine's handover in the set-up may make it, must lead again); how long
    that took (seconds)."""
    started = time.monotonic()  # not the local wall clock: a DST change would add or take an hour
    replica.wait_log(LEADS, timeout, since)
    return time.monotonic() - started


def stamp_of(log: str, pattern: str, after: int = 0) -> datetime.datetime:
    """When the first line matching ``pattern`` (from offset ``after`` on) was logged."""
    match = re.compile(pattern).search(log, after)
    assert match is not None, f"{pattern!r} not in the log"
    line_start = log.rfind("\n", 0, match.start()) + 1
    stamp = STAMP.match(log, line_start)
    assert stamp is not None, log[line_start : match.end()]
    return datetime.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f")


def agent_requests(log: str, after: int = 0) -> list[str]:
    """The lines of ``log`` (from offset ``after`` on) that say a request to an agent leaves."""
    return [line for line in log[after:].splitlines() if AGENT_REQUEST.search(line)]


def ledger_script(scenario: Scenario, vm: NamespaceVM, name: str, body: str = "true\n") -> str:
    """A script ``bin/<name>.sh`` that appends ``start <path>`` to the ledger, runs ``body``,
    then appends ``end <path>``."""
    ledger_file = _ledger_path(vm)
    text = (
        f'echo "start $JOBNET_JOB_PATH" >> {ledger_file}\n'
        + textwrap.dedent(body)
        + f'\necho "end $JOBNET_JOB_PATH" >> {ledger_file}\n'
    )
    return scenario.write_script(vm, f"bin/{name}.sh", text)


def ledger(vm: NamespaceVM) -> Counter[str]:
    """How often each ``start <path>``/``end <path>`` line is in the ledger."""
    path = _ledger_path(vm)
    return Counter(path.read_text().splitlines() if path.exists() else [])


def _ledger_path(vm: NamespaceVM) -> Path:
    return vm.home / "ledger"
