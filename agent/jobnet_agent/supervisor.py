"""The supervising process: starts the jobs serve hands it, pumps their output, enforces timeouts
and kills, records their ends. One per serve, long-lived, single-threaded.

Started by serve (:mod:`jobnet_agent.handover`: serve's first one a fork of serve, a later one
``jobnet-agent supervise --channel-fd N``) fully detached: its own session, stdin from /dev/null,
never a child of serve (reparented to init by a fork), named ``jobnetsupervise``. It reads
hand-overs from its channel; it leaves once serve is gone (end of the channel) and its last job
ended. It holds each of its jobs' ``supervisor.lock`` while it supervises the job
(serve uses that lock to know whether a job's supervisor lives).

Each script runs under a tiny ``/bin/sh`` wrapper (:func:`jobnet_agent.endrule.wrapper_command`),
in its own session and process group (pgid = the wrapper's pid), so a kill reaches the whole
tree; the supervising process is the wrapper's parent and reaps it. The wrapper waits for a *go*
line on its stdin before it runs the script, and the supervising process writes it only once the
job's ``running`` record (with pid and pgid) is durable: that record is the durable mark that the
script may have started, and a job whose supervisor died before it is known never to have run.
The wrapper writes the script's exit code to the job's ``exitcode`` file before it exits: if the
supervising process dies at any moment, the result is still known. Output goes through pipes
whose read ends the wrapper also holds: a dead supervisor never SIGPIPEs the job, and the next
supervising process (``adopt``) reopens the same pipes through ``/proc/<wrapper pid>/fd/1`` and
``/fd/2`` and resumes pumping them.

What happens together shares one fsync: the jobs handed over together are started together (one
fsync of their ``running`` events, then their go lines), and the ends seen together are recorded
together. Kills are read from the event log, which the process follows like a watcher (woken by
every journal writer), so any process that records a kill reaches the job.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import resource
import selectors
import signal
import socket
import stat
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

from jobnet_agent.config import AgentConfig
from jobnet_agent.endrule import end_of, signal_name, wrapper_command
from jobnet_agent.faults import crash_point
from jobnet_agent.handover import ADOPT, START, receive_job
from jobnet_agent.jobdir import JobDir
from jobnet_agent.journal import GroupCommit, Journal
from jobnet_agent.log import AgentLog
from jobnet_agent.output import CappedWriter
from jobnet_agent.procfs import (
    SUPERVISING_PROCESS_NAME,
    group_alive,
    name_this_process,
    process_alive,
    process_start_ticks,
)
from jobnet_agent.protocol import (
    ACCEPTED,
    FAILED_TO_START,
    KILLED,
    RUNNING,
    JobKey,
    JobRecord,
    LaunchSpec,
)

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_PIPE_SIZE = 1024 * 1024
_READ_CHUNK = 256 * 1024
#: Poll interval for an adopted job (not our child: no SIGCHLD tells us it ended).
_ADOPTED_POLL_SECONDS = 0.05
#: The longest sleep with nothing due (a bound, not a synchronisation: every event wakes it).
_IDLE_SECONDS = 1.0
_INTERNAL_ENV_PREFIX = "JOBNET_AGENT_"
#: How long after SIGKILL a process group may take to disappear before the end is recorded anyway.
_KILL_WAIT_SECONDS = 5.0
#: Hand-overs taken per round (the rest wait for the next round, after this one's fsync).
_MAX_HANDOVERS_PER_ROUND = 64
#: In an event's line, a record with no kill requested (as the journal encodes it, compactly).
_NO_KILL = b'"killRequested":null'


def check_launchable(spec: LaunchSpec, working_dir: str) -> Optional[Tuple[str, str]]:
    """Why the job cannot start, as (reason, message), or None. Checked before anything starts."""
    if not os.path.isdir(working_dir):
        return "BadWorkingDirectory", f"working directory {working_dir} does not exist or is not a directory"
    if not os.access(working_dir, os.X_OK):
        return "BadWorkingDirectory", f"working directory {working_dir} is not accessible (no search permission)"
    try:
        info = os.stat(spec.script)
    except FileNotFoundError:
        return "ScriptNotFound", f"script {spec.script} does not exist"
    except NotADirectoryError:
        return "ScriptNotFound", f"script {spec.script} does not exist (a path component is not a directory)"
    except PermissionError:
        return "PermissionDenied", f"script {spec.script} cannot be reached: permission denied"
    if stat.S_ISDIR(info.st_mode):
        return "PermissionDenied", f"script {spec.script} is a directory, not an executable file"
    if not os.access(spec.script, os.X_OK) or not info.st_mode & 0o111:
        return "PermissionDenied", f"script {spec.script} is not executable (mode {info.st_mode & 0o7777:o})"
    return None


@functools.lru_cache(maxsize=1)
def _inherited_environment() -> Tuple[Tuple[str, str], ...]:
    """What every job inherits of the agent's environment (read once: nothing changes it)."""
    return tuple((k, v) for k, v in os.environ.items() if not k.startswith(_INTERNAL_ENV_PREFIX))


def job_environment(key: JobKey, spec: LaunchSpec) -> Dict[str, str]:
    env = dict(_inherited_environment())
    env.setdefault("JOBNET_RUN", key.run)
    env.setdefault("JOBNET_JOB_PATH", key.path)
    env.setdefault("JOBNET_ATTEMPT", str(key.attempt))
    env.update(spec.env)
    return env


def _returncode(status: int) -> int:
    """A wait status as ``Popen.returncode`` gives it: -N for signal N."""
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


class _Kill:
    def __init__(self, reason: str, kill_at: float) -> None:
        self.reason = reason  # "stop" or "timeout"
        self.kill_at = kill_at  # monotonic time of the SIGKILL
        self.sigkill_sent = False


class _Leader:
    """The job's process-group leader (the wrapper): pid, pgid, and how to learn it ended."""

    def __init__(
        self, pid: int, proc: Optional[subprocess.Popen[bytes]], start_ticks: Optional[int], job: JobDir
    ) -> None:
        self.pid = pid
        self.pgid = pid
        #: Our child (reaped by us), or None when adopted.
        self.proc = proc
        self._start_ticks = start_ticks
        self._job = job
        self.status: Optional[int] = None  # Popen returncode: -N for signal N
        self.ended = False

    @property
    def adopted(self) -> bool:
        return self.proc is None

    def reaped(self, status: int) -> None:
        assert self.proc is not None
        self.status = self.proc.returncode = _returncode(status)
        self.ended = True

    def poll(self) -> bool:
        if not self.ended and self.proc is None and not process_alive(self.pid, self._start_ticks):
            # Not our child: the wrapper's record says the script ended; without one (the
            # wrapper was killed on its own), the job lasts as long as its process group.
            self.ended = self._job.read_wrapper_exit() is not None or not group_alive(self.pgid)
        return self.ended


class _Job:
    """One job the supervising process holds: its lock, its output, its leader, its kill."""

    def __init__(self, key: JobKey, job: JobDir, lock_fd: int, ready_fd: Optional[int]) -> None:
        self.key = key
        self.job = job
        self.lock_fd = lock_fd
        #: serve's readiness pipe: a byte once the job has a pid or failed to start.
        self.ready_fd = ready_fd
        #: The write end of the wrapper's go pipe until the go line is written.
        self.go_fd: Optional[int] = None
        self.leader: Optional[_Leader] = None
        #: Per stream: the pipe fd we read (None: closed, or unreachable after an adoption) and its writer.
        self.readers: List[Tuple[Optional[int], CappedWriter]] = []
        self.kill: Optional[_Kill] = None
        self.deadline: Optional[float] = None
        self.timeout_seconds: Optional[int] = None
        self.script = ""


class Supervisor:
    """Runs the jobs serve hands it from their ``accepted`` record to their end, and adopts
    running jobs whose supervisor died.

    It exists so that a job outlives everything that started it (the SSH session, serve): it is
    detached, and the only process that waits for the job. It guarantees: the script is started
    at most once, and only after its durable ``running`` record (never again after it);
    ``running`` is recorded, with pid and pgid, before serve answers the launch; output is kept
    within its cap (head and tail) with flat memory; a kill or timeout reaches the whole process
    group (SIGTERM, then SIGKILL after the grace period); the end is recorded by the end rule
    (:func:`jobnet_agent.endrule.end_of`), never a guessed success. A job's lock is let go only
    once its end is durable.
    """

    def __init__(self, config: AgentConfig, channel: socket.socket) -> None:
        self.config = config
        self.journal = Journal(config.state_dir, "supervise")
        self.log = AgentLog(config.agent_log_path, "supervise")
        self._channel: Optional[socket.socket] = channel
        self._jobs: Dict[JobKey, _Job] = {}
        self._children: Dict[int, _Job] = {}
        self._selector = selectors.DefaultSelector()
        # Kills: a journal writer that appends a record with a kill wakes us (agents before 0.3:
        # any record); the event log says what changed. Only records with a kill matter here:
        # the others are passed over undecoded, and our own appends (which carry no kill we do
        # not know of) do not wake us.
        self._events = self.journal.events.reader(self.journal.last_seq(), skip=_NO_KILL)
        self._wakeup = self.journal.events.wakeup(kills_only=True)
        self.journal.events.skip_own_wakeup(self._wakeup)
        self._wake_r, self._wake_w = os.pipe()
        #: Jobs started this round: their go lines wait for the round's fsync.
        self._starting: List[_Job] = []
        #: Jobs settled this round (ended, or never started): released after the round's fsync.
        self._settled: List[_Job] = []
        #: The round's group commit (its one transaction), while the round runs.
        self._round_commit: Optional[GroupCommit] = None

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        previous = signal.signal(signal.SIGCHLD, _ignore_signal)
        signal.set_wakeup_fd(self._wake_w)
        channel = self._channel
        assert channel is not None
        channel.setblocking(False)
        self._selector.register(channel, selectors.EVENT_READ, "channel")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "children")
        self._selector.register(self._wakeup.fileno(), selectors.EVENT_READ, "journal")
        try:
            while self._channel is not None or self._jobs:
                self._round()
        finally:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, previous)
            self._wakeup.close()
            self._selector.close()
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
        return 0

    def _round(self) -> None:
        """Wait for something to do, do it, make its journal writes durable (one fsync), then
        let the started jobs go and the settled jobs' locks free."""
        handovers: List[Tuple[bytes, str, List[int]]] = []
        for selected, _ in self._selector.select(self._next_timeout()):
            what = selected.data
            if what == "channel":
                handovers.extend(self._receive())
            elif what == "children":
                _drain(self._wake_r)
                self._reap()
            elif what == "journal":
                self._wakeup.drain()
            else:
                job, writer = what
                self._pump(job, selected.fd, writer)
        # One transaction for the round's writes (nothing in it waits for another process), but
        # the lock is let go while a wrapper starts (a fork+exec: serve's claims need the lock).
        with self.journal.group_commit(one_transaction=True) as self._round_commit:
            for kind, job_dir, fds in handovers:
                self._take(kind, job_dir, fds)
            self._follow_kills()
            now = time.monotonic()
            for job in list(self._jobs.values()):
                self._tend(job, now)
        self._round_commit = None
        # Durable: the go lines, then the answers (ready), then the locks of what was settled.
        for job in self._starting:
            self._go(job)
        if self._starting:
            crash_point("supervise:after-running")
        self._starting.clear()
        for job in self._settled:
            self._release(job)
        self._settled.clear()

    def _next_timeout(self) -> float:
        timeout = _IDLE_SECONDS
        now = time.monotonic()
        for job in self._jobs.values():
            leader = job.leader
            if leader is None:
                continue
            if leader.ended:
                return 0.01  # its process group lingers after a kill: look again soon
            if leader.adopted:
                timeout = min(timeout, _ADOPTED_POLL_SECONDS)
            for moment in (job.deadline if job.kill is None else None, _pending_sigkill(job)):
                if moment is not None:
                    timeout = min(timeout, max(0.0, moment - now))
        return timeout

    def _receive(self) -> List[Tuple[bytes, str, List[int]]]:
        received: List[Tuple[bytes, str, List[int]]] = []
        assert self._channel is not None
        while len(received) < _MAX_HANDOVERS_PER_ROUND:
            try:
                handover = receive_job(self._channel)
            except BlockingIOError:
                break
            if handover is None:
                # serve is gone: finish the jobs we have, take no more.
                self._selector.unregister(self._channel)
                self._channel.close()
                self._channel = None
                break
            if handover[2]:
                received.append(handover)
        return received

    # -- taking jobs -------------------------------------------------------------------------

    def _take(self, kind: bytes, job_dir: str, fds: List[int]) -> None:
        job_files = JobDir(job_dir)
        lock_fd, ready_fd = fds[0], (fds[1] if len(fds) > 1 else None)
        try:
            record = job_files.read_record()
            if record is None or record.key in self._jobs:
                raise RuntimeError(f"no journal record in {job_dir}" if record is None else "handed over twice")
            JobDir.note_supervisor_pid(lock_fd, os.getpid())
            job = _Job(record.key, job_files, lock_fd, ready_fd)
        except Exception as exc:
            self.log.line(f"cannot take the job in {job_dir}: {exc!r}")
            for fd in fds:
                os.close(fd)  # its lock is free: serve's detection settles it
            return
        self._jobs[job.key] = job
        try:
            if kind == START:
                self._start(job, record)
            elif kind == ADOPT:
                self._adopt(job, record)
        except Exception as exc:
            # This job only: the others go on. Whatever it got to is in the journal, and its lock
            # freed with its fds makes serve's detection settle it.
            self.log.line(f"supervising failed: {exc!r}", job.key)
            self._forget(job)

    def _start(self, job: _Job, record: JobRecord) -> None:
        """Start the job of an ``accepted`` record: its wrapper waits for the go line."""
        if record.state != ACCEPTED:
            self.log.line(f"supervisor not needed: job is already {record.state}", job.key)
            self._settled.append(job)
            return
        if record.kill_requested:
            self._commit_if(job, (ACCEPTED,), state=KILLED, reason="StopRequested", message="stopped before it started")
            self.log.line("stopped before it started (kill requested)", job.key)
            self._settled.append(job)
            return
        spec = job.job.read_spec(job.lock_fd)
        working_dir = spec.working_dir or os.path.expanduser("~")
        problem = check_launchable(spec, working_dir)
        if problem is not None:
            self._fail_to_start(job, *problem)
            return
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        go_r, go_w = os.pipe()
        if self._round_commit is not None:
            self._round_commit.release()
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", wrapper_command(job.job.exit_code_path, os.getpid()), spec.script, spec.script]
                + spec.args,
                cwd=working_dir,
                env=job_environment(job.key, spec),
                stdin=go_r,
                stdout=out_w,
                stderr=err_w,
                start_new_session=True,
            )
        except OSError as exc:
            for fd in (out_r, err_r, go_w):
                os.close(fd)
            reason = "BadWorkingDirectory" if exc.filename == working_dir else "PermissionDenied"
            self._fail_to_start(job, reason, f"cannot start {spec.script}: {exc}")
            return
        finally:
            for fd in (out_w, err_w, go_r):
                os.close(fd)
        job.go_fd = go_w
        job.script = spec.script
        ticks = process_start_ticks(proc.pid)
        job.leader = _Leader(proc.pid, proc, ticks, job.job)
        self._children[proc.pid] = job
        for stream, fd in (("stdout", out_r), ("stderr", err_r)):
            self._add_reader(job, stream, fd, resume=False)
        crash_point("supervise:after-start")
        running = self._commit_if(
            job,
            (ACCEPTED,),
            state=RUNNING,
            pid=proc.pid,
            pgid=proc.pid,
            started_at=time.time(),
            pid_start_ticks=ticks,
        )
        if running is None:
            # Impossible unless someone edited the journal by hand: the wrapper never gets its
            # go line, so it exits without running anything.
            self.log.line(f"journal changed under the supervisor; pid {proc.pid} is not let go", job.key)
            os.close(go_w)
            job.go_fd = None
            return
        self._set_deadline(job, spec, running)
        self._starting.append(job)

    def _go(self, job: _Job) -> None:
        """The job's running record is durable: let its wrapper start the script, answer serve."""
        crash_point("supervise:before-start")
        if job.go_fd is not None:
            try:
                os.write(job.go_fd, b"g\n")
            except OSError as exc:
                self.log.line(f"go line not delivered: {exc!r}", job.key)  # the wrapper is gone: it never ran
            os.close(job.go_fd)
            job.go_fd = None
            assert job.leader is not None
            self.log.line(f"started pid {job.leader.pid} (script {job.script})", job.key)
        self._ready(job)

    def _adopt(self, job: _Job, record: JobRecord) -> None:
        """Take over a running job whose supervisor died (same boot, process still alive)."""
        if record.state != RUNNING or record.pid is None:
            self._settled.append(job)
            return
        job.leader = _Leader(record.pid, None, record.pid_start_ticks, job.job)
        job.leader.pgid = record.pgid or record.pid
        self._reopen_pipes(job, record.pid, record.pid_start_ticks)
        self._set_deadline(job, job.job.read_spec(job.lock_fd), record)
        self.log.line(f"adopted pid {record.pid}: its supervisor was gone, the job still runs", job.key)
        if record.kill_requested:
            self._begin_kill(job, record.kill_requested, record.grace_seconds)

    def _set_deadline(self, job: _Job, spec: LaunchSpec, record: JobRecord) -> None:
        if spec.timeout_seconds is not None and record.started_at is not None:
            job.timeout_seconds = spec.timeout_seconds
            job.deadline = time.monotonic() + spec.timeout_seconds - (time.time() - record.started_at)

    def _reopen_pipes(self, job: _Job, leader_pid: int, start_ticks: Optional[int]) -> None:
        """Reach the pipes of an adopted job through its wrapper's stdout and stderr."""
        for stream, fd_number in (("stdout", 1), ("stderr", 2)):
            fd: Optional[int] = None
            try:
                # Read-write: the pipe never reports EOF to us (we are one of its writers too).
                fd = os.open(f"/proc/{leader_pid}/fd/{fd_number}", os.O_RDWR | os.O_NONBLOCK)
                # Still the same wrapper after the open (not a reused pid), and still its pipe (not
                # the exit code file it redirects to for a moment at its very end).
                if not stat.S_ISFIFO(os.fstat(fd).st_mode) or not process_alive(leader_pid, start_ticks):
                    os.close(fd)
                    fd = None
            except OSError:
                fd = None
            if fd is None:
                self.log.line(
                    f"{stream} of pid {leader_pid} cannot be reached any more: the rest of it is not kept",
                    job.key,
                )
            self._add_reader(job, stream, fd, resume=True)

    def _add_reader(self, job: _Job, stream: str, fd: Optional[int], resume: bool) -> None:
        writer = CappedWriter(job.job.path, stream, self.config.max_output_bytes, self.config.tail_bytes, resume=resume)
        if fd is not None:
            os.set_blocking(fd, False)
            try:
                fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
            except OSError:
                pass  # a smaller pipe only costs throughput
            self._selector.register(fd, selectors.EVENT_READ, (job, writer))
        job.readers.append((fd, writer))

    # -- journal helpers ---------------------------------------------------------------------

    def _commit_if(self, job: _Job, states: Tuple[str, ...], **changes: object) -> Optional[JobRecord]:
        _, committed = self.journal.update(job.key, lambda r: r.replace(**changes) if r.state in states else None)
        return committed

    def _fail_to_start(self, job: _Job, reason: str, message: str) -> None:
        self._commit_if(job, (ACCEPTED,), state=FAILED_TO_START, reason=reason, message=message, ended_at=time.time())
        self.log.line(f"failed to start: {message} ({reason})", job.key)
        self._settled.append(job)

    # -- supervising -------------------------------------------------------------------------

    def _reap(self) -> None:
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job = self._children.pop(pid, None)
            if job is not None and job.leader is not None:
                job.leader.reaped(status)

    def _follow_kills(self) -> None:
        """Kills recorded by anyone (serve, a person's command) since the last look."""
        while True:
            records = self._events.poll()
            if not records:
                return
            for record in records:
                job = self._jobs.get(record.key)
                if job is not None and record.kill_requested and job.kill is None and job.leader is not None:
                    if not job.leader.ended and record.state == RUNNING:
                        self._begin_kill(job, record.kill_requested, record.grace_seconds)

    def _tend(self, job: _Job, now: float) -> None:
        """Timeouts, overdue SIGKILLs, and the end of a job whose leader is gone."""
        leader = job.leader
        if leader is None or job in self._starting:
            return
        if job.deadline is not None and job.kill is None and now >= job.deadline:
            self._time_out(job)
        if job.kill is not None and not job.kill.sigkill_sent and now >= job.kill.kill_at:
            self._send(job, signal.SIGKILL)
            job.kill.sigkill_sent = True
        if not leader.poll():
            return
        self._pump_all(job)
        if job.kill is None or not group_alive(leader.pgid) or self._kill_overdue(job, now):
            crash_point("supervise:after-exit")
            self._record_end(job)
            self._settled.append(job)
            self._forget(job, keep_lock=True)

    def _pump(self, job: _Job, fd: int, writer: CappedWriter, max_chunks: int = 16) -> None:
        for _ in range(max_chunks):
            try:
                data = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                return
            if not data:
                # Every writer is gone: nothing more will come.
                self._close_reader(job, fd)
                return
            writer.write(data)

    def _pump_all(self, job: _Job) -> None:
        """Take what the pipes hold once the script ended (bounded: a background child the
        script left behind may keep writing; what it writes later is not the job's output)."""
        for fd, writer in list(job.readers):
            if fd is not None:
                self._pump(job, fd, writer, max_chunks=2 * _PIPE_SIZE // _READ_CHUNK + 1)

    def _close_reader(self, job: _Job, fd: int) -> None:
        self._selector.unregister(fd)
        os.close(fd)
        job.readers = [(None if f == fd else f, w) for f, w in job.readers]

    def _time_out(self, job: _Job) -> None:
        grace = self.config.grace_seconds
        self.journal.update(
            job.key,
            lambda r: (
                r.replace(kill_requested="timeout", grace_seconds=grace)
                if r.state == RUNNING and not r.kill_requested
                else None
            ),
        )
        assert job.leader is not None
        self.log.line(f"timed out after {job.timeout_seconds}s: killing pid {job.leader.pid}", job.key)
        self._begin_kill(job, "timeout", grace)

    def _begin_kill(self, job: _Job, reason: str, grace: Optional[float]) -> None:
        grace = self.config.grace_seconds if grace is None else grace
        job.kill = _Kill(reason=reason, kill_at=time.monotonic() + grace)
        self._send(job, signal.SIGTERM)
        crash_point("supervise:after-sigterm")
        if grace <= 0:
            self._send(job, signal.SIGKILL)
            job.kill.sigkill_sent = True

    def _send(self, job: _Job, signum: int) -> None:
        assert job.leader is not None
        pgid = job.leader.pgid
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            self.log.line(f"{signal_name(signum)} not sent: process group {pgid} is gone", job.key)
            return
        self.log.line(f"sent {signal_name(signum)} to process group {pgid}", job.key)

    def _kill_overdue(self, job: _Job, now: float) -> bool:
        """SIGKILL was sent long ago and some of the group still stands (e.g. stuck in the
        kernel): record the end rather than wait forever; the log says so."""
        kill = job.kill
        if kill is None or not kill.sigkill_sent or now < kill.kill_at + _KILL_WAIT_SECONDS:
            return False
        assert job.leader is not None
        self.log.line(f"process group {job.leader.pgid} still has processes after SIGKILL; recording the end", job.key)
        return True

    def _record_end(self, job: _Job) -> None:
        assert job.leader is not None
        (_, out), (_, err) = job.readers
        sizes = dict(
            stdout_bytes=out.total_bytes,
            stdout_dropped=out.dropped_bytes,
            stderr_bytes=err.total_bytes,
            stderr_dropped=err.dropped_bytes,
        )
        end = end_of(
            wrapper_exit=job.job.read_wrapper_exit(),
            status=job.leader.status,
            kill_reason=job.kill.reason if job.kill else None,
        )
        committed = self._commit_if(job, (RUNNING,), ended_at=time.time(), **sizes, **end.changes())
        if committed is not None:
            how = committed.describe_end()
            details = "" if committed.message in (None, how) else f" ({committed.message})"
            self.log.line(how + details, job.key)

    # -- letting go --------------------------------------------------------------------------

    def _ready(self, job: _Job) -> None:
        """Tell serve the launch has its answer in the journal (a pid, or why it did not start)."""
        if job.ready_fd is not None:
            try:
                os.write(job.ready_fd, b"1")
            except OSError:
                pass  # serve is gone; the journal has everything
            os.close(job.ready_fd)
            job.ready_fd = None

    def _forget(self, job: _Job, keep_lock: bool = False) -> None:
        """Stop supervising the job: close its pipes and files (and its lock, unless it waits
        for this round's fsync)."""
        self._jobs.pop(job.key, None)
        if job.leader is not None and job.leader.proc is not None and not job.leader.ended:
            self._children.pop(job.leader.pid, None)
        for fd, writer in job.readers:
            if fd is not None:
                self._selector.unregister(fd)
                os.close(fd)
            writer.close()
        job.readers = []
        if job.go_fd is not None:
            os.close(job.go_fd)  # never let go: the wrapper exits without running anything
            job.go_fd = None
        if not keep_lock:
            self._release(job)

    def _release(self, job: _Job) -> None:
        if job.key in self._jobs:
            self._forget(job, keep_lock=True)
        self._ready(job)
        if job.lock_fd >= 0:
            os.close(job.lock_fd)
            job.lock_fd = -1


def _pending_sigkill(job: _Job) -> Optional[float]:
    if job.kill is not None and not job.kill.sigkill_sent:
        return job.kill.kill_at
    return None


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _raise_fd_limit() -> None:
    """A job holds a few fds while supervised (its lock, two pipes, its output files): allow as
    many as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # the soft limit stays: fewer jobs at once, each refused cleanly


def detach() -> None:
    """Fork once more so the process is reparented to init and serve's child exits at once."""
    if os.fork() != 0:
        os._exit(0)
    # A handler, not SIG_IGN: ignored signals would be inherited by the jobs through exec.
    signal.signal(signal.SIGHUP, _ignore_signal)


def _ignore_signal(signum: int, frame: object) -> None:
    return None


def run_supervise_command(config: AgentConfig, channel_fd: Optional[int]) -> int:
    if channel_fd is None:
        sys.stderr.write("jobnet-agent supervise: needs --channel-fd (it is started by serve)\n")
        return 2
    detach()
    name_this_process(SUPERVISING_PROCESS_NAME)  # its command line is its own already
    _raise_fd_limit()
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=channel_fd)
    try:
        return Supervisor(config, channel).run()
    except OSError as exc:
        if exc.errno == errno.EBADF:
            sys.stderr.write(f"jobnet-agent supervise: channel fd {channel_fd} is not open\n")
            return 2
        raise


def run_forked_supervisor(config: AgentConfig, channel: socket.socket) -> int:
    """The supervising process forked from serve (:func:`jobnet_agent.handover.fork_supervising_process`:
    detached and named already)."""
    signal.signal(signal.SIGHUP, _ignore_signal)
    _raise_fd_limit()
    return Supervisor(config, channel).run()
