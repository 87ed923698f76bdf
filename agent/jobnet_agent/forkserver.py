"""Starting supervisors: the fork server, both sides of the hand-over, and the slow way.

Each ``serve`` starts one *fork server* ahead of time: a ``jobnet-agent supervise`` process that
has imported everything a supervisor needs and forks one for every job serve hands it, so a
launch costs a message and a fork (about a millisecond) instead of a Python start-up (tens to
hundreds of milliseconds, more from a zipapp). The hand-over is one SOCK_SEQPACKET message: the
job directory, with the job's supervisor lock (held) and the write end of its readiness pipe as
SCM_RIGHTS, so the lock changes hands without ever being free (:func:`send_job`,
:func:`receive_job`). A launch that comes while the fork server is starting waits for it
(bounded); if it is not there in time, a supervisor is started the slow way
(:func:`start_supervisor_process`) and a new fork server is started.
"""

from __future__ import annotations

import array
import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from typing import List, Optional, Tuple

import jobnet_agent
from jobnet_agent.config import AgentConfig
from jobnet_agent.supervisor import detach, ignore_hangups, supervise_job


def start_supervisor_process(config: AgentConfig, args: List[str], pass_fds: List[int]) -> None:
    """Run ``jobnet-agent supervise ARGS`` detached; returns once it has forked away."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(jobnet_agent.__file__)))
    boot = (
        f"import sys; sys.path.insert(0, {package_root!r}); "
        "from jobnet_agent.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    log_fd = os.open(config.agent_log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        # The supervisor forks at once and this child exits: nothing to reap later.
        subprocess.Popen(
            # -I -S: no site-packages to scan (the agent is standard library only), no env surprises.
            [sys.executable, "-I", "-S", "-c", boot, "supervise"] + config.to_args() + args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_fd,  # a crashing supervisor's traceback lands in the agent log
            pass_fds=pass_fds,
            start_new_session=True,
        ).wait()
    finally:
        os.close(log_fd)


def spawn_adopting_supervisor(config: AgentConfig, job_dir: str, lock_fd: int) -> None:
    """Start a supervisor that takes over the running job of ``job_dir``; hands it the lock."""
    try:
        start_supervisor_process(config, ["--job-dir", job_dir, "--lock-fd", str(lock_fd), "--adopt"], [lock_fd])
    finally:
        os.close(lock_fd)


class SupervisorForkServer:
    """A supervisor process started ahead of time that forks a supervisor for each job.

    A launch then costs a message and a fork instead of a Python start-up (tens of
    milliseconds, more from a zipapp). The job's lock and readiness pipe travel with the
    message (SCM_RIGHTS). It exits when serve goes away; if it dies, a new one is started and
    the launch waits for it (bounded, see :meth:`hand_over`) before starting a supervisor the
    slow way.
    """

    def __init__(self, config: AgentConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        #: notified (under the lock) when a start of the fork server has ended, well or not
        self._started = threading.Condition(self._lock)
        self._channel: Optional[socket.socket] = None
        self._preparing = False

    def prepare(self) -> None:
        """Start the fork server in the background unless it runs or is on its way."""
        with self._lock:
            if self._channel is not None or self._preparing:
                return
            self._preparing = True
        threading.Thread(target=self._start, daemon=True).start()

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        started = False
        try:
            start_supervisor_process(self._config, ["--fork-server-fd", str(theirs.fileno())], [theirs.fileno()])
            started = True
        finally:
            theirs.close()
            if not started:
                ours.close()  # launches start supervisors the slow way meanwhile
            with self._lock:
                self._channel = ours if started else None
                self._preparing = False
                self._started.notify_all()

    def start_supervisor(self, job_dir: str, lock_fd: int, ready_w: int) -> None:
        """Get the job a supervisor: handed to the fork server, or started the slow way when it
        is not there. The caller keeps (and closes) its copies of the fds."""
        if not self.hand_over(job_dir, lock_fd, ready_w):
            start_supervisor_process(
                self._config,
                ["--job-dir", job_dir, "--lock-fd", str(lock_fd), "--ready-fd", str(ready_w)],
                [lock_fd, ready_w],
            )

    def hand_over(self, job_dir: str, lock_fd: int, ready_w: int) -> bool:
        """Give a job to the fork server; False means start a supervisor anew.

        A fork server on its way (serve just started, or the last one died) is waited for, up to
        half of ``--start-timeout-seconds``: a fork costs about a millisecond, while a supervisor
        started the slow way costs a Python start-up, and a burst of them on a small VM slows
        every other launch too. One that is not there by then (or dies twice) is not waited for."""
        deadline = time.monotonic() + self._config.start_timeout_seconds / 2
        for _ in range(2):  # the fork server there is (or is coming), then once more if it died
            with self._started:
                self._started.wait_for(lambda: not self._preparing, max(0.0, deadline - time.monotonic()))
                channel = self._channel
                if channel is None and self._preparing:
                    return False  # still starting at the deadline
                if channel is not None:
                    try:
                        send_job(channel, job_dir, lock_fd, ready_w)
                        return True
                    except OSError:
                        self._channel = None  # it died: start a new one
                        channel.close()
            self.prepare()
        return False


def send_job(channel: socket.socket, job_dir: str, lock_fd: int, ready_w: int) -> None:
    """Hand a job to the fork server: its directory, its supervisor lock (held) and the write end
    of its readiness pipe, in one message. Raises OSError when the fork server is gone."""
    channel.sendmsg(
        [job_dir.encode("utf-8")],
        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [lock_fd, ready_w]))],
    )


def receive_job(channel: socket.socket) -> Optional[Tuple[str, int, int]]:
    """Wait for serve to hand over a job: (job dir, lock fd, ready fd); None once serve is gone.

    The fds come with the message (SCM_RIGHTS), so the job's supervisor lock changes hands
    without ever being free.
    """
    fds = array.array("i")
    message, ancillary, _, _ = channel.recvmsg(4096, socket.CMSG_SPACE(2 * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if not message or len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return None
    return message.decode("utf-8"), fds[0], fds[1]


def serve_as_fork_server(config: AgentConfig, channel_fd: int) -> int:
    """Fork a supervisor for every job serve hands over, until serve goes away.

    Started once per serve: every module a supervisor needs is imported already, so a launch
    costs one fork (about a millisecond) instead of a Python start-up (tens to hundreds of
    milliseconds, more from a zipapp). Single-threaded, so forking is safe. The kernel reaps the
    supervisors (SIGCHLD ignored), so one fork suffices; they are reparented to init when this
    process exits with serve.
    """
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=channel_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    # Everything imported so far stays as it is: a collection in a supervisor would touch (and so
    # copy) every page of it.
    gc.freeze()
    try:
        while True:
            job = receive_job(channel)
            if job is None:
                return 0
            job_dir, lock_fd, ready_fd = job
            try:
                child = os.fork()
            except OSError as exc:
                # Closing the fds frees the job's lock: serve's sweep settles it (never started).
                sys.stderr.write(f"jobnet-agent supervise: cannot fork a supervisor for {job_dir}: {exc}\n")
                child = None
            if child == 0:
                channel.close()
                _run_forked_supervisor(config, job_dir, lock_fd, ready_fd)
            os.close(lock_fd)
            os.close(ready_fd)
    finally:
        channel.close()


def _run_forked_supervisor(config: AgentConfig, job_dir: str, lock_fd: int, ready_fd: int) -> None:
    """In the fork server's child: become a detached supervisor (never returns)."""
    code = 1
    try:
        # The supervisor waits for its job: its children must not be reaped by the kernel.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        ignore_hangups()
        os.setsid()
        code = supervise_job(config, job_dir, lock_fd, ready_fd, adopt=False)
    except BaseException:
        traceback.print_exc()  # stderr is the agent log
    finally:
        sys.stderr.flush()
        os._exit(code)


def run_supervise_command(
    config: AgentConfig,
    job_dir: Optional[str],
    lock_fd: Optional[int],
    ready_fd: Optional[int],
    adopt: bool,
    fork_server_fd: Optional[int],
) -> int:
    detach()
    if fork_server_fd is not None:
        return serve_as_fork_server(config, fork_server_fd)
    if job_dir is None or lock_fd is None:
        sys.stderr.write("jobnet-agent supervise: needs --job-dir and --lock-fd, or --fork-server-fd\n")
        return 2
    return supervise_job(config, job_dir, lock_fd, ready_fd, adopt)
