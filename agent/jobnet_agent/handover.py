"""Getting jobs to a supervising process: serve's side of the hand-over, and the message.

Each ``serve`` starts one *supervising process* ahead of time (:mod:`jobnet_agent.supervisor`) and
hands it every job it accepts, so a launch costs a message and one fork+exec of the job's
``/bin/sh`` wrapper, not a Python process. The first one is a fork of ``serve`` taken before
serve starts a thread (:func:`fork_supervising_process`): the agent is imported already, so it is
ready within milliseconds, where a new interpreter (``jobnet-agent supervise --channel-fd N``,
:func:`start_supervising_process`) takes a Python start-up; the later ones (a replacement, one
for a job alone) are started that way, as serve then has threads. The
hand-over is one SOCK_SEQPACKET message: what to do (start or adopt), the job directory, and the
job's supervisor lock (held) plus, for a start, the write end of its readiness pipe as SCM_RIGHTS,
so the lock changes hands without ever being free (:func:`send_job`, :func:`receive_job`).

The supervising process outlives serve (it leaves once serve is gone and its last job ended);
the next serve starts its own. A launch that comes while it is starting waits for it (bounded);
if it is not there in time, or died, another one is started for that job alone (it leaves when
the job ended) and a new one is prepared for the next launches.
"""

from __future__ import annotations

import array
import gc
import os
import socket
import subprocess
import sys
import threading
import time
from typing import List, NoReturn, Optional, Tuple

import jobnet_agent
from jobnet_agent.config import AgentConfig
from jobnet_agent.procfs import SUPERVISING_PROCESS_NAME, name_this_process

#: What a hand-over asks for: start an accepted job, or adopt a running one whose supervisor died.
START = b"S"
ADOPT = b"A"


def start_supervising_process(config: AgentConfig) -> socket.socket:
    """Start ``jobnet-agent supervise`` detached, connected by a socket pair; returns serve's end
    once it has forked away (it then reads hand-overs from the other end)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(jobnet_agent.__file__)))
    boot = (
        f"import sys; sys.path.insert(0, {package_root!r}); "
        "from jobnet_agent.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    log_fd = os.open(config.agent_log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        # It forks at once and this child exits: nothing to reap later.
        subprocess.Popen(
            # -I -S: no site-packages to scan (the agent is standard library only), no env surprises.
            [sys.executable, "-I", "-S", "-c", boot, "supervise"]
            + config.to_args()
            + ["--channel-fd", str(theirs.fileno())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_fd,  # a crashing supervising process's traceback lands in the agent log
            pass_fds=[theirs.fileno()],
            start_new_session=True,
        ).wait()
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
        os.close(log_fd)
    return ours


def fork_supervising_process(config: AgentConfig) -> socket.socket:
    """Start the supervising process as a fork of this process, connected by a socket pair;
    returns this side's end at once (hand-overs wait in the socket until it reads them).

    Only while the caller is the process's one thread: a fork copies every lock as it is, held
    by a thread that does not exist in the child. The child detaches as
    :func:`start_supervising_process`'s does (its own session, SIGHUP ignored, stdin from
    /dev/null, reparented to init) and holds nothing of serve's: not the SSH channel's stdin and
    stdout, no file serve opened (a shared file description would keep serve's locks)."""
    assert threading.active_count() == 1, "a fork of a threaded process copies locks other threads hold"
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    serve_pid = os.getpid()
    # Every object so far (the agent's modules, mostly) is left alone by the collector from now
    # on, in both processes: a full collection would write to every one of them, copying each
    # page the two share; and the child must never free one of serve's (a file object would
    # close its fd number, by then another file's).
    gc.freeze()
    try:
        pid = os.fork()
    except BaseException:
        ours.close()
        theirs.close()
        raise
    if pid == 0:
        _supervise_in_fork(config, ours, theirs, serve_pid)
    theirs.close()
    # The first child leaves once it forked the supervising process: reaped off serve's way (on a
    # busy VM it may not run for tens of milliseconds).
    threading.Thread(target=os.waitpid, args=(pid, 0), daemon=True).start()
    return ours


def _supervise_in_fork(config: AgentConfig, ours: socket.socket, theirs: socket.socket, serve_pid: int) -> NoReturn:
    """The child of :func:`fork_supervising_process`: detach, drop serve's files, supervise, and
    leave without returning into serve's code (nor running its cleanups)."""
    code = 1
    try:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        # First: until it has, it looks like serve to anyone reading /proc (a kill of serve's).
        # What serve runs from comes first (the zipapp's file, which the process may still import
        # from: `pgrep -af <file>` before deleting an old build's file, docs/operations.md).
        argv = [sys.argv[0], "supervise", f"(forked from serve {serve_pid})", "--state-dir", config.state_dir]
        name_this_process(SUPERVISING_PROCESS_NAME, argv)
        ours.close()
        null = os.open(os.devnull, os.O_RDWR)
        log_fd = os.open(config.agent_log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(log_fd, 2)  # a crashing supervising process's traceback lands in the agent log
        for name in os.listdir("/proc/self/fd"):
            if int(name) > 2 and int(name) != theirs.fileno():
                try:
                    os.close(int(name))
                except OSError:
                    pass  # the listing's own fd, closed by now
        from jobnet_agent.supervisor import run_forked_supervisor

        code = run_forked_supervisor(config, theirs)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


class SupervisingProcess:
    """serve's supervising process: started ahead of time, replaced when it died.

    A launch costs a message and a fork+exec of its wrapper instead of a Python start-up. If it
    dies, its jobs keep running (their wrappers record their ends) and serve's detection hands
    them to the next one (adopt).
    """

    def __init__(self, config: AgentConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        #: notified (under the lock) when a start of the supervising process has ended, well or not
        self._started = threading.Condition(self._lock)
        self._channel: Optional[socket.socket] = None
        self._preparing = False

    def fork(self) -> None:
        """Start the supervising process as a fork of serve, unless it runs or is on its way.
        Only for serve's main thread while it has no other (before its first thread starts)."""
        with self._lock:
            if self._channel is not None or self._preparing:
                return
        try:
            channel = fork_supervising_process(self._config)
        except OSError:
            return  # no process left to fork: the first launch starts one as after a death
        with self._lock:
            self._channel = channel

    def prepare(self) -> None:
        """Start the supervising process in the background unless it runs or is on its way."""
        with self._lock:
            if self._channel is not None or self._preparing:
                return
            self._preparing = True
        threading.Thread(target=self._start, daemon=True).start()

    def _start(self) -> None:
        channel: Optional[socket.socket] = None
        try:
            channel = start_supervising_process(self._config)
        finally:
            with self._lock:
                self._channel = channel  # None: launches use one-job processes meanwhile
                self._preparing = False
                self._started.notify_all()

    def start_job(self, job_dir: str, lock_fd: int, ready_w: int) -> None:
        """Get an accepted job started. The caller keeps (and closes) its copies of the fds."""
        self._hand_over(START, job_dir, [lock_fd, ready_w])

    def adopt_job(self, job_dir: str, lock_fd: int) -> None:
        """Get a running job whose supervisor died supervised again. The caller keeps (and
        closes) its copy of the lock."""
        self._hand_over(ADOPT, job_dir, [lock_fd])

    def _hand_over(self, kind: bytes, job_dir: str, fds: List[int]) -> None:
        """To the supervising process; when it is not there in time, to one started for this job
        alone.

        One on its way (serve just started, or the last one died) is waited for, up to half of
        ``--start-timeout-seconds``: a hand-over costs a message, while a process started for
        one job costs a Python start-up, and a burst of them on a small VM slows every other
        launch too. One that is not there by then (or dies twice) is not waited for."""
        deadline = time.monotonic() + self._config.start_timeout_seconds / 2
        for _ in range(2):  # the process there is (or is coming), then once more if it died
            with self._started:
                self._started.wait_for(lambda: not self._preparing, max(0.0, deadline - time.monotonic()))
                channel = self._channel
                if channel is None and self._preparing:
                    break  # still starting at the deadline
                if channel is not None:
                    try:
                        send_job(channel, kind, job_dir, fds)
                        return
                    except OSError:
                        self._channel = None  # it died: start a new one
                        channel.close()
            self.prepare()
        alone = start_supervising_process(self._config)
        try:
            send_job(alone, kind, job_dir, fds)
        finally:
            alone.close()  # it leaves once this job ended


def send_job(channel: socket.socket, kind: bytes, job_dir: str, fds: List[int]) -> None:
    """Hand a job over: what to do, its directory, and its fds, in one message. Raises OSError
    when the supervising process is gone."""
    channel.sendmsg(
        [kind + job_dir.encode("utf-8")],
        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))],
    )


#: The most fds a hand-over carries.
_MAX_FDS = 2


def receive_job(channel: socket.socket) -> Optional[Tuple[bytes, str, List[int]]]:
    """The next hand-over: (kind, job dir, fds); None once serve is gone. Raises BlockingIOError
    on a non-blocking channel with nothing to read.

    The fds come with the message (SCM_RIGHTS), so the job's supervisor lock changes hands
    without ever being free. A message whose fds could not all be received (no fd left) is
    dropped with those it got: the lock is free again and serve's detection settles the job.
    """
    fds = array.array("i")
    message, ancillary, flags, _ = channel.recvmsg(4096, socket.CMSG_SPACE(_MAX_FDS * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if not message:
        for fd in fds:
            os.close(fd)
        return None
    what, job_dir = message[:1], message[1:].decode("utf-8")
    expected = 2 if what == START else 1
    if flags & socket.MSG_CTRUNC or len(fds) != expected or what not in (START, ADOPT):
        for fd in fds:
            os.close(fd)
        sys.stderr.write(f"jobnet-agent supervise: hand-over of {job_dir} dropped (its fds did not all arrive)\n")
        return what, job_dir, []
    return what, job_dir, list(fds)
