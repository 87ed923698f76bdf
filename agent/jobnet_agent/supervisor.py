"""The per-job supervisor: starts one job, pumps its output, enforces timeout and kill, records the end.

Started by ``serve`` (``jobnet-agent supervise``, or forked by its fork server) fully detached:
its own session, stdin from /dev/null, never a child of serve (reparented to init by a fork, or
once the fork server exits with serve), holding the job's ``supervisor.lock`` for its whole life
(serve uses that lock to know whether a supervisor is alive).

The script runs under a tiny ``/bin/sh`` wrapper, in its own session and process group (pgid =
the wrapper's pid), so a kill reaches the whole tree. The wrapper writes the script's exit code
to the job's ``exitcode`` file before it exits: if this supervisor dies at any moment, the
result is still known. Output goes through pipes whose read ends the wrapper also holds: a
dead supervisor never SIGPIPEs the job, and a new supervisor started in ``--adopt`` mode reopens
the same pipes through ``/proc/<wrapper pid>/fd/1`` and ``/fd/2`` and resumes pumping them (pipes,
not FIFOs in the job directory: a file costs an inode allocation, ~0.5 ms on a crowded ext4).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import selectors
import signal
import stat
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

from jobnet_agent.config import AgentConfig
from jobnet_agent.endrule import end_of, signal_name, wrapper_command
from jobnet_agent.faults import crash_point
from jobnet_agent.jobdir import JobDir
from jobnet_agent.journal import Journal
from jobnet_agent.log import AgentLog
from jobnet_agent.output import CappedWriter
from jobnet_agent.procfs import group_alive, process_alive, process_start_ticks
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
_INTERNAL_ENV_PREFIX = "JOBNET_AGENT_"
#: How long after SIGKILL a process group may take to disappear before the end is recorded anyway.
_KILL_WAIT_SECONDS = 5.0


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
    if os.path.isdir(spec.script):
        return "PermissionDenied", f"script {spec.script} is a directory, not an executable file"
    if not os.access(spec.script, os.X_OK) or not info.st_mode & 0o111:
        return "PermissionDenied", f"script {spec.script} is not executable (mode {info.st_mode & 0o7777:o})"
    return None


def job_environment(key: JobKey, spec: LaunchSpec) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INTERNAL_ENV_PREFIX)}
    env.setdefault("JOBNET_RUN", key.run)
    env.setdefault("JOBNET_JOB_PATH", key.path)
    env.setdefault("JOBNET_ATTEMPT", str(key.attempt))
    env.update(spec.env)
    return env


@dataclasses.dataclass
class _Kill:
    reason: str  # "stop" or "timeout"
    kill_at: float  # monotonic time of the SIGKILL
    sigkill_sent: bool = False


class _Leader:
    """The job's process-group leader (the wrapper): pid, pgid, and how to learn it ended."""

    def __init__(
        self, pid: int, pgid: int, proc: Optional[subprocess.Popen[bytes]], start_ticks: Optional[int], job: JobDir
    ) -> None:
        self.pid = pid
        self.pgid = pgid
        self._proc = proc
        self._start_ticks = start_ticks
        self._job = job
        self.status: Optional[int] = None  # Popen returncode: -N for signal N
        self.ended = False

    @property
    def adopted(self) -> bool:
        return self._proc is None

    def poll(self) -> bool:
        if not self.ended:
            if self._proc is not None:
                self.status = self._proc.poll()
                self.ended = self.status is not None
            elif not process_alive(self.pid, self._start_ticks):
                # Not our child: the wrapper's record says the script ended; without one (the
                # wrapper was killed on its own), the job lasts as long as its process group.
                self.ended = self._job.read_wrapper_exit() is not None or not group_alive(self.pgid)
        return self.ended


class Supervisor:
    """Runs one job from its ``accepted`` record to its end, or adopts a running job whose
    supervisor died.

    It exists so that a job outlives everything that started it (the SSH session, serve, the
    fork server): it is detached, and the only process that waits for the job. It guarantees:
    the script is started at most once (after the durable ``started`` marker, never again after
    it); ``running`` is recorded, with pid and pgid, before serve answers the launch; output is
    kept within its cap (head and tail) with flat memory; a kill or timeout reaches the whole
    process group (SIGTERM, then SIGKILL after the grace period); the end is recorded by the end
    rule (:func:`jobnet_agent.endrule.end_of`), never a guessed success. It holds the job's
    ``supervisor.lock`` for its whole life: that lock is how serve knows it lives.
    """

    def __init__(self, config: AgentConfig, job_dir: str) -> None:
        self.config = config
        self.job = JobDir(os.path.abspath(job_dir))
        self.journal = Journal(config.state_dir, "supervise")
        self.log = AgentLog(config.agent_log_path, "supervise")
        record = self.job.read_record()
        if record is None:
            raise RuntimeError(f"no journal record in {self.job.path}")
        self.key = record.key
        #: Per stream: the pipe fd we read (None: unreachable after an adoption) and its writer.
        self._readers: List[Tuple[Optional[int], CappedWriter]] = []
        #: The write ends we hold so that the pipes never report EOF to us.
        self._pipe_write_ends: List[int] = []
        self._kill: Optional[_Kill] = None

    # -- journal helpers ---------------------------------------------------------------------

    def _commit_if(self, states: Tuple[str, ...], **changes: object) -> Optional[JobRecord]:
        _, committed = self.journal.update(self.key, lambda r: r.replace(**changes) if r.state in states else None)
        return committed

    def _fail_to_start(self, reason: str, message: str) -> None:
        self._commit_if((ACCEPTED,), state=FAILED_TO_START, reason=reason, message=message, ended_at=time.time())
        self.log.line(f"failed to start: {message} ({reason})", self.key)

    # -- start -------------------------------------------------------------------------------

    def start(self, ready_fd: Optional[int]) -> None:
        """Start the job of an ``accepted`` record, then supervise it to its end."""
        try:
            leader = self._start()
        finally:
            if ready_fd is not None:
                try:
                    os.write(ready_fd, b"1")
                except OSError:
                    pass  # serve is gone; the journal has everything
                os.close(ready_fd)
        if leader is not None:
            crash_point("supervise:after-running")
            self._supervise(leader)

    def _start(self) -> Optional[_Leader]:
        record = self.journal.read_record(self.key)
        if record is None or record.state != ACCEPTED:
            self.log.line("supervisor not needed: job is already %s" % (record.state if record else "gone"), self.key)
            return None
        if record.kill_requested:
            self._commit_if(
                (ACCEPTED,),
                state=KILLED,
                reason="StopRequested",
                message="stopped before it started",
                ended_at=time.time(),
            )
            self.log.line("stopped before it started (kill requested)", self.key)
            return None
        spec = self.journal.read_spec(self.key)
        working_dir = spec.working_dir or os.path.expanduser("~")
        problem = check_launchable(spec, working_dir)
        if problem is not None:
            self._fail_to_start(*problem)
            return None
        self._open_pipes()
        # From here on a crash means "the script may have started": never start it again.
        self.job.mark_started()
        crash_point("supervise:before-start")
        keep_fds = tuple(fd for fd, _ in self._readers if fd is not None)
        wrapper = wrapper_command(self.job.exit_code_path, keep_fds, os.getpid())
        out_w, err_w = self._pipe_write_ends
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", wrapper, spec.script, spec.script] + spec.args,
                cwd=working_dir,
                env=job_environment(self.key, spec),
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                pass_fds=keep_fds,
                start_new_session=True,
            )
        except OSError as exc:
            reason = "BadWorkingDirectory" if exc.filename == working_dir else "PermissionDenied"
            self._fail_to_start(reason, f"cannot start {spec.script}: {exc}")
            return None
        crash_point("supervise:after-start")
        ticks = process_start_ticks(proc.pid)
        now = time.time()
        running = self._commit_if(
            (ACCEPTED,), state=RUNNING, pid=proc.pid, pgid=proc.pid, started_at=now, pid_start_ticks=ticks
        )
        self.log.line(f"started pid {proc.pid} (script {spec.script})", self.key)
        if running is None:
            # Impossible unless someone edited the journal by hand: do not leave an orphan behind.
            self.log.line(f"journal changed under the supervisor; killing pid {proc.pid}", self.key)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
        return _Leader(proc.pid, proc.pid, proc, ticks, self.job)

    def _open_pipes(self) -> None:
        for stream in ("stdout", "stderr"):
            read_end, write_end = os.pipe()
            os.set_blocking(read_end, False)
            self._pipe_write_ends.append(write_end)
            self._add_reader(stream, read_end, resume=False)

    def _reopen_pipes(self, leader_pid: int, start_ticks: Optional[int]) -> None:
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
                    self.key,
                )
            self._add_reader(stream, fd, resume=True)

    def _add_reader(self, stream: str, fd: Optional[int], resume: bool) -> None:
        if fd is not None:
            try:
                fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
            except OSError:
                pass  # a smaller pipe only costs throughput
        writer = CappedWriter(
            self.job.path, stream, self.config.max_output_bytes, self.config.tail_bytes, resume=resume
        )
        self._readers.append((fd, writer))

    # -- adopt -------------------------------------------------------------------------------

    def adopt(self, ready_fd: Optional[int]) -> None:
        """Take over a running job whose supervisor died (same boot, process still alive)."""
        if ready_fd is not None:
            os.close(ready_fd)
        record = self.journal.read_record(self.key)
        if record is None or record.state != RUNNING or record.pid is None:
            return
        self._reopen_pipes(record.pid, record.pid_start_ticks)
        leader = _Leader(record.pid, record.pgid or record.pid, None, record.pid_start_ticks, self.job)
        self.log.line(f"adopted pid {record.pid}: its supervisor was gone, the job still runs", self.key)
        self._supervise(leader)

    # -- supervise ---------------------------------------------------------------------------

    def _supervise(self, leader: _Leader) -> None:
        # Listening before the record is read: a kill recorded after this read wakes us. Made
        # here, not with the claim, so its inode allocation is off the launch path (serve
        # reminds a supervisor without one yet of a recorded kill on its sweep).
        control = self.job.open_control()
        record = self.journal.read_record(self.key)
        assert record is not None
        spec = self.journal.read_spec(self.key)
        deadline: Optional[float] = None
        if spec.timeout_seconds is not None and record.started_at is not None:
            deadline = time.monotonic() + spec.timeout_seconds - (time.time() - record.started_at)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.signal(signal.SIGCHLD, _ignore_signal)
        signal.set_wakeup_fd(wake_w)
        selector = selectors.DefaultSelector()
        for fd, writer in self._readers:
            if fd is not None:
                selector.register(fd, selectors.EVENT_READ, writer)
        selector.register(control, selectors.EVENT_READ, "control")
        selector.register(wake_r, selectors.EVENT_READ, "wake")
        if record.kill_requested:
            self._begin_kill(leader, record.kill_requested, record.grace_seconds)
        try:
            while True:
                now = time.monotonic()
                if deadline is not None and self._kill is None and now >= deadline:
                    self._timeout(leader, spec.timeout_seconds or 0)
                if self._kill is not None and not self._kill.sigkill_sent and now >= self._kill.kill_at:
                    self._send(leader, signal.SIGKILL)
                    self._kill.sigkill_sent = True
                if leader.poll():
                    self._pump_all()
                    if self._kill is None or not group_alive(leader.pgid) or self._kill_overdue(now):
                        break
                timeout = 1.0 if not leader.adopted else _ADOPTED_POLL_SECONDS
                if leader.ended:
                    timeout = min(timeout, 0.01)
                for moment in (deadline if self._kill is None else None, self._pending_sigkill()):
                    if moment is not None:
                        timeout = min(timeout, max(0.0, moment - now))
                for selected, _ in selector.select(timeout):
                    if selected.data == "control":
                        self._drain(control)
                        self._on_control(leader)
                    elif selected.data == "wake":
                        self._drain(wake_r)
                    else:
                        self._pump(selected.fd, selected.data)
            crash_point("supervise:after-exit")
            self._record_end(leader)
        finally:
            signal.set_wakeup_fd(-1)
            selector.close()
            for fd in (wake_r, wake_w, control, *self._pipe_write_ends):
                os.close(fd)
            for fd, writer in self._readers:
                if fd is not None:
                    os.close(fd)
                writer.close()

    def _kill_overdue(self, now: float) -> bool:
        """SIGKILL was sent long ago and some of the group still stands (e.g. stuck in the
        kernel): record the end rather than wait forever; the log says so."""
        if self._kill is None or not self._kill.sigkill_sent or now < self._kill.kill_at + _KILL_WAIT_SECONDS:
            return False
        self.log.line(
            f"process group still has members {_KILL_WAIT_SECONDS:.0f}s after SIGKILL; recording the end",
            self.key,
        )
        return True

    def _pending_sigkill(self) -> Optional[float]:
        if self._kill is not None and not self._kill.sigkill_sent:
            return self._kill.kill_at
        return None

    @staticmethod
    def _drain(fd: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except BlockingIOError:
            pass

    def _pump(self, fd: int, writer: CappedWriter, max_chunks: int = 16) -> None:
        for _ in range(max_chunks):
            try:
                data = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                return
            if not data:
                return
            writer.write(data)

    def _pump_all(self) -> None:
        """Take what the pipes hold once the script ended (bounded: a background child the
        script left behind may keep writing; what it writes later is not the job's output)."""
        for fd, writer in self._readers:
            if fd is not None:
                self._pump(fd, writer, max_chunks=2 * _PIPE_SIZE // _READ_CHUNK + 1)

    def _on_control(self, leader: _Leader) -> None:
        record = self.journal.read_record(self.key)
        if record is not None and record.kill_requested and self._kill is None and not leader.ended:
            self._begin_kill(leader, record.kill_requested, record.grace_seconds)

    def _timeout(self, leader: _Leader, timeout_seconds: int) -> None:
        grace = self.config.grace_seconds
        self.journal.update(
            self.key,
            lambda r: (
                r.replace(kill_requested="timeout", grace_seconds=grace)
                if r.state == RUNNING and not r.kill_requested
                else None
            ),
        )
        self.log.line(f"timed out after {timeout_seconds}s: killing pid {leader.pid}", self.key)
        self._begin_kill(leader, "timeout", grace)

    def _begin_kill(self, leader: _Leader, reason: str, grace: Optional[float]) -> None:
        grace = self.config.grace_seconds if grace is None else grace
        self._kill = _Kill(reason=reason, kill_at=time.monotonic() + grace)
        self._send(leader, signal.SIGTERM)
        crash_point("supervise:after-sigterm")
        if grace <= 0:
            self._send(leader, signal.SIGKILL)
            self._kill.sigkill_sent = True

    def _send(self, leader: _Leader, signum: int) -> None:
        try:
            os.killpg(leader.pgid, signum)
        except ProcessLookupError:
            self.log.line(f"{signal_name(signum)} not sent: process group {leader.pgid} is gone", self.key)
            return
        self.log.line(f"sent {signal_name(signum)} to process group {leader.pgid}", self.key)

    def _record_end(self, leader: _Leader) -> None:
        (_, out), (_, err) = self._readers
        sizes = dict(
            stdout_bytes=out.total_bytes,
            stdout_dropped=out.dropped_bytes,
            stderr_bytes=err.total_bytes,
            stderr_dropped=err.dropped_bytes,
        )
        end = end_of(
            wrapper_exit=self.job.read_wrapper_exit(),
            status=leader.status,
            kill_reason=self._kill.reason if self._kill else None,
        )
        committed = self._commit_if((RUNNING,), ended_at=time.time(), **sizes, **end.changes())
        if committed is not None:
            how = committed.describe_end()
            details = "" if committed.message in (None, how) else f" ({committed.message})"
            self.log.line(how + details, self.key)


def detach() -> None:
    """Fork once more so the supervisor is reparented to init and serve's child exits at once."""
    if os.fork() != 0:
        os._exit(0)
    ignore_hangups()


def ignore_hangups() -> None:
    # A handler, not SIG_IGN: ignored signals would be inherited by the job through exec.
    signal.signal(signal.SIGHUP, _ignore_signal)


def _ignore_signal(signum: int, frame: object) -> None:
    return None


def supervise_job(config: AgentConfig, job_dir: str, lock_fd: int, ready_fd: Optional[int], adopt: bool) -> int:
    """Take the job's supervisor lock (handed over already held) and supervise it to its end."""
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        sys.stderr.write(f"jobnet-agent supervise: {job_dir} already has a supervisor\n")
        return 1
    supervisor = Supervisor(config, job_dir)
    JobDir.note_supervisor_pid(lock_fd, os.getpid())
    if adopt:
        supervisor.adopt(ready_fd)
    else:
        supervisor.start(ready_fd)
    return 0
