"""Getting jobs to a supervising process: serve's side of the hand-over, and the message.

Each ``serve`` starts one *supervising process* ahead of time (``jobnet-agent supervise
--channel-fd N``, :mod:`jobnet_agent.supervisor`) and hands it every job it accepts, so a launch
costs a message and one fork+exec of the job's ``/bin/sh`` wrapper, not a Python process. The
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
import os
import socket
import subprocess
import sys
import threading
import time
from typing import List, Optional, Tuple

import jobnet_agent
from jobnet_agent.config import AgentConfig

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
