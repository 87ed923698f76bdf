"""The namespace VM infrastructure itself: reachability, clean login, faults, safety checks."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.netutil import tcp_port_open, wait_until
from tests.support.vm import SLOTS_DIR, AddressOverlap, NamespaceVM, clean_stale, process_gone


def _openssh(vm: NamespaceVM, tmp_path: Path, command: str) -> subprocess.CompletedProcess[str]:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(vm.known_hosts)
    return subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(vm.client_key_file),
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=5",
            f"{vm.user}@{vm.address}",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_sshd_accepts_the_client_key_with_a_clean_login(vm: NamespaceVM, tmp_path: Path) -> None:
    result = _openssh(vm, tmp_path, "id -un; command -v python3; echo HOME=$HOME; env")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == vm.user
    assert lines[1] == "/usr/bin/python3"
    assert f"HOME={vm.home}" in lines
    assert "PYENV" not in result.stdout
    assert f"Accepted publickey for {vm.user}" in vm.read_sshd_log()


def test_exec_runs_as_the_vm_user_inside_the_namespace(vm: NamespaceVM) -> None:
    result = vm.exec("id -u; ip -4 -o addr show")
    uid, addresses = result.stdout.split("\n", 1)
    assert int(uid) == vm.uid
    assert vm.address in addresses
    assert "192.0.2." not in addresses


def test_cut_and_restore(vm: NamespaceVM) -> None:
    assert tcp_port_open(vm.address, 22)
    vm.cut()
    assert not tcp_port_open(vm.address, 22, timeout=0.5)
    vm.restore()
    assert tcp_port_open(vm.address, 22)


def test_drop_is_silent_loss(vm: NamespaceVM) -> None:
    vm.drop()
    with pytest.raises(TimeoutError):
        socket.create_connection((vm.address, 22), timeout=0.5).close()
    vm.undrop()
    assert tcp_port_open(vm.address, 22)


def test_crash_kills_every_process_changes_boot_id_and_keeps_the_disk(vm: NamespaceVM) -> None:
    vm.exec("setsid sleep 300 </dev/null >/dev/null 2>&1 & echo data > ~/kept")
    sleeper = wait_until(
        lambda: [p for p in vm.pids() if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep")],
        timeout=5,
        what="sleep process in the VM",
    )
    old_boot_id = vm.boot_id

    new_boot_id = vm.crash()

    assert new_boot_id != old_boot_id
    assert vm.pids() == []
    assert process_gone(sleeper[0])
    assert not tcp_port_open(vm.address, 22)
    vm.start()
    assert tcp_port_open(vm.address, 22)
    assert (vm.home / "kept").read_text() == "data\n"
    assert vm.boot_id == new_boot_id


def test_kill_agent_spares_other_processes(vm: NamespaceVM) -> None:
    vm.exec("setsid sleep 300 </dev/null >/dev/null 2>&1 &")
    sleeper = wait_until(
        lambda: [p for p in vm.pids() if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep")],
        timeout=5,
        what="sleep process in the VM",
    )
    assert vm.kill_agent() == []
    assert not process_gone(sleeper[0])


def our_slot_claims() -> list[str]:
    """The slots this process holds (other sessions on the machine claim and free theirs meanwhile)."""
    ours = []
    for claim in SLOTS_DIR.iterdir():
        try:
            owner = claim.read_text().strip()
        except FileNotFoundError:
            continue  # freed by its owner while we looked
        if owner == str(os.getpid()):
            ours.append(claim.name)
    return sorted(ours)


def test_a_subnet_overlapping_an_existing_one_is_refused(vm: NamespaceVM) -> None:
    claims_before = our_slot_claims()
    with pytest.raises(AddressOverlap, match=str(vm.host_address)):
        NamespaceVM(subnet=str(vm.subnet)).create()
    with pytest.raises(AddressOverlap, match="must be a /30 inside 198.18.0.0/15"):
        NamespaceVM(subnet="192.0.2.0/30").create()
    assert our_slot_claims() == claims_before == [str(vm.slot)]


def test_leftovers_of_a_dead_test_process_are_cleaned(vm: NamespaceVM) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    claim = SLOTS_DIR / str(vm.slot)
    claim.write_text(str(dead.pid))
    netns = vm.netns
    # From here the slot is no longer ours: another worker may clean it and claim it again, so
    # this test's teardown must never destroy it.
    vm.slot = None

    clean_stale()  # (another worker's VM creation may get there first: same outcome)

    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    claimed_again = claim.exists() and claim.read_text().strip() != str(dead.pid)
    assert claimed_again or netns not in [line.split()[0] for line in listed.splitlines() if line.strip()]
    assert not claim.exists() or claimed_again, "the dead process's claim is still there"


def test_drop_out_lets_requests_in_but_loses_answers(vm: NamespaceVM) -> None:
    vm.exec(
        "setsid python3 -c \"import socket;s=socket.socket();s.bind(('', 7000));s.listen();c,_=s.accept();"
        "d=c.recv(100);open('got','wb').write(d);c.sendall(d)\" </dev/null >/dev/null 2>&1 &"
    )
    client = wait_until(
        lambda: socket.create_connection((vm.address, 7000), timeout=0.5), timeout=5, what="listener in the VM"
    )
    with client:
        vm.drop("out")
        client.sendall(b"hello")
        wait_until(
            lambda: (vm.home / "got").exists() and (vm.home / "got").read_bytes() == b"hello",
            timeout=5,
            what="request arrived in the VM",
        )
        client.settimeout(0.5)
        with pytest.raises(TimeoutError):
            client.recv(100)
        vm.undrop("out")
        client.settimeout(5)
        assert client.recv(100) == b"hello"  # TCP retransmits the lost answer once the path is back
    with pytest.raises(ValueError, match="direction"):
        vm.drop("sideways")


def test_sshd_gives_sessions_the_vms_boot_id_file(vm: NamespaceVM, tmp_path: Path) -> None:
    result = _openssh(vm, tmp_path, 'cat "$JOBNET_AGENT_BOOT_ID_FILE"')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == vm.boot_id
