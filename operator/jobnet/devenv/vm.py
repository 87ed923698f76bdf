"""Namespace "VMs": a network namespace with its own real OpenSSH sshd, user, disk and boot id.

``jobnet dev`` runs its local VM as one, and the tests use them wherever the product talks to an
external VM:

* a network namespace ``jnvm<slot>`` joined to the host by a veth pair (``jnh<slot>`` on the
  host, ``jnv<slot>`` inside), a /30 from 198.18.0.0/15 (RFC 2544 benchmarking range; the
  host side is ``.1``, the VM ``.2``). Before anything is created, every address and route of
  the host is checked and an overlap is refused (:class:`AddressOverlap`). A blackhole route
  for the whole range keeps traffic for a cut VM from ever leaving through the default route.
* its own sshd (``/usr/sbin/sshd -D`` inside the namespace, generated ed25519 host key,
  ``LogLevel VERBOSE`` into ``sshd.log``, no PAM, root login refused);
* a dedicated unix user (``jnvm<slot>``, or a name of the caller's that must not exist yet) with
  a home in the VM's directory, shell ``/bin/sh`` and no profile: a clean, fast login (root's
  ``.bashrc`` initialises pyenv, ~150 ms per command);
* a boot-id file (the agent's ``--boot-id-file``); :meth:`crash` changes it.

Slots are claimed with an exclusive file in ``/run/jobnet-vms/slots`` holding the owner's pid, so
concurrent pytest-xdist workers (and concurrent sessions) never share names or addresses, and
leftovers of a crashed run (owner pid gone) are removed before a new VM is made. Only users made
by this module (recognised by their comment) are ever deleted.

Fault helpers: :meth:`cut`/:meth:`restore` (host-side link down/up), :meth:`drop`/:meth:`undrop`
(iptables DROP inside the namespace: silent loss), :meth:`kill_agent` (kill -9 of the agent's
``serve``/``supervise`` processes), :meth:`crash` + :meth:`start` (every process of the VM dies,
the boot id changes, the disk stays; then sshd starts again).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from jobnet.devenv.net import VM_RANGE, overlaps, tcp_port_open, wait_until
from jobnet_agent.procfs import SUPERVISING_PROCESS_NAME, process_alive

SLOTS_DIR = Path("/run/jobnet-vms/slots")
DATA_ROOT = Path("/var/tmp/jobnet-vms")
MAX_SLOT = VM_RANGE.num_addresses // 4 - 1
SSH_PORT = 22
REQUIRED_TOOLS = ("ip", "iptables", "ssh-keygen", "useradd", "userdel", "chpasswd", "setpriv")
SSHD = "/usr/sbin/sshd"
VM_PATH = "/usr/bin:/bin"
#: How many times :meth:`NamespaceVM.crash` kills what is left of a VM.
CRASH_PASSES = 10


class VMError(RuntimeError):
    """The namespace VM could not be set up or driven."""


class AddressOverlap(VMError):
    """The VM's subnet overlaps an address or route the host already has."""


def missing_requirements() -> str | None:
    """Why namespace VMs cannot run here (a skip reason), or None when they can."""
    if os.geteuid() != 0:
        return "namespace VMs need root (ip netns, veth, iptables, useradd)"
    if not os.path.exists(SSHD):
        return f"OpenSSH server not installed ({SSHD} missing; apt-get install openssh-server)"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"tools missing for namespace VMs: {', '.join(missing)}"
    if not os.path.exists("/usr/bin/python3"):
        return "/usr/bin/python3 is missing (the agent runs with the VM's python3)"
    return None


def _run(
    cmd: Sequence[str], *, check: bool = True, timeout: float = 20, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise VMError(f"{' '.join(cmd)} failed with exit code {result.returncode}: {result.stderr.strip()}")
    return result


def _netns_pids(netns: str) -> list[int]:
    out = _run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in out.stdout.split()] if out.returncode == 0 else []


def _user_pids(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except FileNotFoundError:
                continue
    return pids


def _kill_and_wait(pids: Iterable[int], what: str, timeout: float = 5.0) -> list[int]:
    pids = sorted(set(pids))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # Our own children must be reaped or they linger as zombies (and count as alive).
    def all_gone() -> bool:
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        return all(process_gone(pid) for pid in pids)

    wait_until(all_gone, timeout=timeout, what=f"{what} processes {pids} gone")
    return pids


def process_gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as gone)."""
    return not process_alive(pid, None)


def ensure_safety_route() -> None:
    """Blackhole the whole VM range on the host: the /30 routes of live VMs are more specific;
    when a VM's link is down, its packets die here instead of following the default route."""
    _run(["ip", "route", "replace", "blackhole", str(VM_RANGE)])


#: Every user this module makes has a comment starting with this; no other user is ever deleted.
USER_COMMENT_PREFIX = "jobnet "


def _names(slot: int) -> dict[str, str]:
    return {"netns": f"jnvm{slot}", "host_if": f"jnh{slot}", "vm_if": f"jnv{slot}", "user": f"jnvm{slot}"}


def _slot_user(slot: int) -> str:
    """The user of a slot: the name recorded in its directory (a caller's choice), else ``jnvm<slot>``."""
    try:
        return (DATA_ROOT / str(slot) / "user").read_text().strip() or _names(slot)["user"]
    except FileNotFoundError:
        return _names(slot)["user"]


def _destroy_slot(slot: int) -> None:
    """Remove every trace of a VM slot (processes, namespace, link, user, disk, claim)."""
    names = _names(slot)
    user = _slot_user(slot)
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        entry = None
    uid = entry.pw_uid if entry is not None and entry.pw_gecos.startswith(USER_COMMENT_PREFIX) else None
    pids = _netns_pids(names["netns"]) + (_user_pids(uid) if uid is not None else [])
    if pids:
        _kill_and_wait(pids, f"VM slot {slot}")
    _run(["ip", "netns", "del", names["netns"]], check=False)
    _run(["ip", "link", "del", names["host_if"]], check=False)
    if uid is not None:
        _userdel(user)
    shutil.rmtree(DATA_ROOT / str(slot), ignore_errors=True)
    (SLOTS_DIR / str(slot)).unlink(missing_ok=True)


def _with_passwd_lock_retry(cmd: Sequence[str], input: str | None = None) -> None:
    """useradd/userdel/chpasswd fail while another worker holds /etc/passwd's lock: retry."""
    for _ in range(100):
        result = _run(cmd, check=False, input=input)
        if result.returncode == 0:
            return
        if "lock" not in result.stderr.lower():
            break
        time.sleep(0.05)
    raise VMError(f"{' '.join(cmd)} failed with exit code {result.returncode}: {result.stderr.strip()}")


def _userdel(user: str) -> None:
    try:
        # --force: a killed process of the user may linger as a zombie until init reaps it.
        _with_passwd_lock_retry(["userdel", "--force", user])
    except VMError:
        if _user_exists(user):
            raise


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def _slots_locked() -> Iterator[None]:
    """One process at a time cleans stale slots or claims one. Without it, two cleaners of the
    same stale slot race: the slower one destroys the VM a third process has meanwhile built
    there. (flock: released by the kernel if the holder dies.)"""
    SLOTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(SLOTS_DIR / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def clean_stale() -> list[int]:
    """Destroy VMs left behind by processes that died (their claim's pid is gone)."""
    with _slots_locked():
        return _clean_stale_locked()


def _clean_stale_locked() -> list[int]:
    stale = []
    for claim in SLOTS_DIR.iterdir():
        if claim.name.startswith(".draft-"):
            if not process_alive(int(claim.name.split("-")[1]), None):
                claim.unlink(missing_ok=True)
            continue
        if not claim.name.isdigit():
            continue
        try:
            text = claim.read_text().strip()
            age = time.time() - claim.stat().st_mtime
        except FileNotFoundError:
            continue
        if not text.isdigit():
            if age < 60:
                continue  # being written by a claimer (older versions of this module wrote the pid late)
            owner = 0
        else:
            owner = int(text)
        if owner and process_alive(owner, None):
            continue
        stale.append(int(claim.name))
        _destroy_slot(int(claim.name))
    return stale


def _claim_slot() -> int:
    with _slots_locked():
        return _claim_slot_locked()


def _claim_slot_locked() -> int:
    # The claim appears with its owner's pid already in it (link of a written file), so another
    # process cleaning stale claims never sees an empty one.
    draft = SLOTS_DIR / f".draft-{os.getpid()}-{uuid.uuid4().hex}"
    draft.write_text(str(os.getpid()))
    try:
        for slot in range(1, MAX_SLOT + 1):
            try:
                os.link(draft, SLOTS_DIR / str(slot))
            except FileExistsError:
                continue
            return slot
    finally:
        draft.unlink()
    raise VMError(f"all {MAX_SLOT} VM slots are claimed (see {SLOTS_DIR})")


def slot_subnet(slot: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"{VM_RANGE.network_address + 4 * slot}/30")


class NamespaceVM:
    """One namespace VM; use as a context manager (or call :meth:`create` / :meth:`destroy`)."""

    def __init__(self, *, subnet: str | None = None, label: str = "", user: str | None = None) -> None:
        self.label = label
        self._requested_user = user
        self._requested_subnet = ipaddress.ip_network(subnet) if subnet else None
        self.slot: int | None = None
        self._sshd: subprocess.Popen[bytes] | None = None
        self.password = secrets.token_urlsafe(16)

    # ------------------------------------------------------------ lifecycle

    def create(self) -> NamespaceVM:
        reason = missing_requirements()
        if reason:
            raise VMError(reason)
        clean_stale()
        subnet = self._requested_subnet
        if subnet is not None:
            if (
                not isinstance(subnet, ipaddress.IPv4Network)
                or subnet.prefixlen != 30
                or not subnet.subnet_of(VM_RANGE)
            ):
                raise AddressOverlap(f"VM subnet {subnet} must be a /30 inside {VM_RANGE}")
        slot = self.slot = _claim_slot()
        try:
            self.subnet = subnet or slot_subnet(slot)
            clashes = overlaps(self.subnet)
            if clashes:
                raise AddressOverlap(
                    f"VM subnet {self.subnet} overlaps what this host already has: {'; '.join(clashes)}"
                )
            self._setup(slot)
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __enter__(self) -> NamespaceVM:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def destroy(self) -> None:
        if self.slot is None:
            return
        if self._sshd is not None:
            self._sshd.kill()
            self._sshd.wait(timeout=5)
            self._sshd = None
        _destroy_slot(self.slot)
        self.slot = None

    def _setup(self, slot: int) -> None:
        names = _names(slot)
        self.netns, self.host_if, self.vm_if = names["netns"], names["host_if"], names["vm_if"]
        self.user = self._requested_user or names["user"]
        hosts = list(self.subnet.hosts())
        self.host_address, self.address = str(hosts[0]), str(hosts[1])
        self.dir = DATA_ROOT / str(self.slot)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, mode=0o755)
        DATA_ROOT.chmod(0o755)
        self.home = self.dir / "home"
        self.boot_id_file = self.dir / "boot_id"
        self.sshd_log = self.dir / "sshd.log"
        self.sshd_config = self.dir / "sshd_config"
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.client_key_file = self.dir / "client_key"
        if _user_exists(self.user):
            raise VMError(
                f"user {self.user!r} already exists on this machine: a namespace VM needs a user "
                "of its own (is another `jobnet dev` running?)"
            )
        (self.dir / "user").write_text(self.user)  # before useradd: a crash leaves nothing unrecorded

        ensure_safety_route()
        _run(["ip", "netns", "add", self.netns])
        _run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.vm_if])
        _run(["ip", "link", "set", self.vm_if, "netns", self.netns])
        _run(["ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_if])
        _run(["ip", "link", "set", self.host_if, "up"])
        self._in_netns(["ip", "addr", "add", f"{self.address}/30", "dev", self.vm_if])
        self._in_netns(["ip", "link", "set", self.vm_if, "up"])
        self._in_netns(["ip", "link", "set", "lo", "up"])

        _with_passwd_lock_retry(
            [
                "useradd",
                "--home-dir",
                str(self.home),
                "--no-create-home",
                "--shell",
                "/bin/sh",
                "--user-group",
                "--comment",
                f"{USER_COMMENT_PREFIX}VM {self.slot} {self.label}".strip(),
                self.user,
            ]
        )
        _with_passwd_lock_retry(["chpasswd"], input=f"{self.user}:{self.password}\n")
        entry = pwd.getpwnam(self.user)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        ssh_dir = self.home / ".ssh"
        ssh_dir.mkdir(parents=True, mode=0o700)
        self.home.chmod(0o755)

        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.netns}-host", "-f", str(self.host_key)])
        _run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"{self.netns}-client",
                "-f",
                str(self.client_key_file),
            ]
        )
        (ssh_dir / "authorized_keys").write_text(Path(f"{self.client_key_file}.pub").read_text())
        for path in (self.home, ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(path, self.uid, self.gid)
        self.boot_id_file.write_text(f"{uuid.uuid4()}\n")

        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.sshd_config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.address}",
                    f"Port {SSH_PORT}",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    "AuthorizedKeysFile .ssh/authorized_keys",
                    f"AllowUsers {self.user}",
                    "PermitRootLogin no",
                    "UsePAM no",
                    "PasswordAuthentication yes",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "UseDNS no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "LogLevel VERBOSE",
                    "MaxStartups 100",
                    "MaxSessions 100",
                    "Subsystem sftp internal-sftp",
                    # The agent reads its boot id source from here (jobnet_agent.config), so an
                    # operator with default settings sees this VM's boot id, not the host's.
                    f"SetEnv JOBNET_AGENT_BOOT_ID_FILE={self.boot_id_file}",
                    "",
                ]
            )
        )
        _run([SSHD, "-t", "-f", str(self.sshd_config)])

    def _in_netns(self, cmd: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "netns", "exec", self.netns, *cmd], check=check)

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart, after :meth:`crash`) the VM's sshd and wait until it accepts."""
        if self._sshd is not None and self._sshd.poll() is None:
            return
        log = open(self.sshd_log, "ab")
        try:
            sshd = self._sshd = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, SSHD, "-D", "-f", str(self.sshd_config), "-E", str(self.sshd_log)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        wait_until(
            lambda: tcp_port_open(self.address, SSH_PORT) or sshd.poll() is not None,
            timeout=timeout,
            what=f"sshd of {self.netns} listening on {self.address}:{SSH_PORT}",
        )
        if sshd.poll() is not None:
            raise VMError(f"sshd of {self.netns} exited with {sshd.returncode}: {self.read_sshd_log()[-2000:]}")

    # ------------------------------------------------------------ what the operator side needs

    @property
    def known_hosts(self) -> str:
        """A known_hosts line for this VM's sshd at its address (as stored in the credentials Secret)."""
        return self.known_hosts_for(self.address)

    def known_hosts_for(self, name: str) -> str:
        """A known_hosts line for this VM's sshd under another ``name`` (reached via a host alias)."""
        key_type, key_b64 = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"{name} {key_type} {key_b64}\n"

    @property
    def client_key(self) -> str:
        """The private key (OpenSSH format) authorised for :attr:`user`."""
        return self.client_key_file.read_text()

    def put_file(self, relative_path: str, content: str, mode: int = 0o755) -> Path:
        """Write a file into the VM user's home (owned by the VM user); returns its path."""
        path = self.home / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(mode)
        os.chown(path, self.uid, self.gid)
        return path

    def authorize_key(self, public_key_line: str) -> None:
        with open(self.home / ".ssh" / "authorized_keys", "a") as keys:
            keys.write(public_key_line.strip() + "\n")

    @property
    def boot_id(self) -> str:
        return self.boot_id_file.read_text().strip()

    @property
    def state_dir(self) -> Path:
        """The agent's default state directory for this VM's user (``~/.jobnet/state``)."""
        return self.home / ".jobnet" / "state"

    def agent_serve_args(self) -> list[str]:
        """``serve`` arguments naming this VM's boot id file explicitly (sshd also exports it as
        ``JOBNET_AGENT_BOOT_ID_FILE``, so an agent started with defaults finds it too)."""
        return ["--boot-id-file", str(self.boot_id_file)]

    def secret_data(self) -> dict[str, str]:
        """The credentials Secret's ``stringData`` for this VM (key auth, known host key)."""
        return {"privateKey": self.client_key, "knownHosts": self.known_hosts}

    def host_spec(self, credentials_secret: str) -> dict[str, object]:
        """A JobNet ``host:`` block pointing at this VM."""
        return {"address": self.address, "port": SSH_PORT, "user": self.user, "credentialsSecret": credentials_secret}

    # ------------------------------------------------------------ inspection

    def exec(self, command: str, *, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside the VM as the VM user, with the VM user's clean environment."""
        env = {"HOME": str(self.home), "USER": self.user, "LOGNAME": self.user, "PATH": VM_PATH, "LANG": "C.UTF-8"}
        result = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                "setpriv",
                f"--reuid={self.uid}",
                f"--regid={self.gid}",
                "--init-groups",
                "/bin/sh",
                "-c",
                command,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=self.home,
        )
        if check and result.returncode != 0:
            raise VMError(f"in {self.netns}: {command!r} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def read_sshd_log(self) -> str:
        return self.sshd_log.read_text(errors="replace") if self.sshd_log.exists() else ""

    def read_agent_log(self) -> str:
        log = self.state_dir / "agent.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def pids(self) -> list[int]:
        """Every process of the VM: in its network namespace or owned by its user."""
        pids = set(_netns_pids(self.netns)) | set(_user_pids(self.uid))
        return sorted(pid for pid in pids if process_alive(pid, None))

    def agent_processes(self, kinds: Sequence[str] = ("serve", "supervise")) -> dict[int, list[str]]:
        """The agent's processes of the given kinds (``serve``, ``supervise``): pid -> argv.

        A supervising process is known by its name (``/proc/<pid>/comm``, the agent's
        ``SUPERVISING_PROCESS_NAME``): a fork of serve writes it first, its command line after
        (best effort), and one started as ``jobnet-agent supervise`` writes it too."""
        found = {}
        for pid in self.pids():
            try:
                supervising = Path(f"/proc/{pid}/comm").read_text().strip() == SUPERVISING_PROCESS_NAME
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except (FileNotFoundError, ProcessLookupError):  # it exited meanwhile (ESRCH while reading)
                continue
            if supervising:
                kind = "supervise"
            elif any("jobnet-agent" in arg or "jobnet_agent" in arg for arg in argv):
                kind = next((kind for kind in ("serve", "supervise") if kind in argv), "")
            else:
                continue
            if kind in kinds:
                found[pid] = argv
        return found

    def job_supervisors(self) -> dict[int, list[str]]:
        """The agent's processes supervising a job right now: a supervising process holds each
        job's ``supervisor.lock`` while it supervises the job (and lives on with ``serve``, an
        open agent channel, without any)."""
        holders = set()
        for lock_file in self.state_dir.glob("jobs/*/*/supervisor.lock"):
            try:
                fd = os.open(lock_file, os.O_RDONLY)
            except FileNotFoundError:  # collected meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                # The pid field: the first 16 bytes (the job's launch spec follows).
                text = os.pread(fd, 16, 0).decode(errors="replace").strip()
                if text.isdigit():
                    holders.add(int(text))
            finally:
                os.close(fd)
        return {pid: argv for pid, argv in self.agent_processes(("supervise",)).items() if pid in holders}

    # ------------------------------------------------------------ faults

    def cut(self) -> None:
        """Take the host side of the link down: packets both ways are lost (blackholed)."""
        _run(["ip", "link", "set", self.host_if, "down"])

    def restore(self) -> None:
        _run(["ip", "link", "set", self.host_if, "up"])
        # The connected route comes back with the link; make sure before returning.
        wait_until(
            lambda: tcp_port_open(self.address, SSH_PORT) or self._sshd is None or self._sshd.poll() is not None,
            timeout=5,
            what=f"{self.netns} reachable again",
        )

    _DROP_RULES = {"in": ("INPUT", "!", "-i", "lo", "-j", "DROP"), "out": ("OUTPUT", "!", "-o", "lo", "-j", "DROP")}

    def drop(self, direction: str = "both") -> None:
        """Silently drop packets into (``in``), out of (``out``) or both ways of the VM
        (iptables inside the namespace). ``out`` lets requests arrive but loses every answer."""
        for chain in self._drop_chains(direction):
            self._in_netns(["iptables", "-w", "5", "-I", *self._DROP_RULES[chain]])

    def undrop(self, direction: str = "both") -> None:
        for chain in self._drop_chains(direction):
            self._in_netns(["iptables", "-w", "5", "-D", *self._DROP_RULES[chain]])

    def _drop_chains(self, direction: str) -> tuple[str, ...]:
        if direction not in ("in", "out", "both"):
            raise ValueError(f"direction must be 'in', 'out' or 'both', not {direction!r}")
        return ("in", "out") if direction == "both" else (direction,)

    def kill_agent(self, kinds: Sequence[str] = ("serve", "supervise")) -> list[int]:
        """kill -9 the agent's processes of the given kinds; jobs themselves keep running."""
        victims = list(self.agent_processes(kinds))
        if victims:
            _kill_and_wait(victims, f"agent ({', '.join(kinds)}) of {self.netns}")
        return victims

    def crash(self) -> str:
        """The VM "loses power": every process dies, the boot id changes, the disk stays.

        sshd is down afterwards; :meth:`start` boots it again. Returns the new boot id.
        A process forked while the others are killed would survive one pass (a real crash spares
        none), so it kills again until none is left (at most ``CRASH_PASSES`` passes)."""
        for _ in range(CRASH_PASSES):
            pids = self.pids()
            if not pids:
                break
            _kill_and_wait(pids, f"all of {self.netns}")
        if self.pids():
            raise VMError(f"processes of {self.netns} still alive after {CRASH_PASSES} kill passes: {self.pids()}")
        if self._sshd is not None:
            self._sshd.wait(timeout=5)
        self.boot_id_file.write_text(f"{uuid.uuid4()}\n")
        return self.boot_id
