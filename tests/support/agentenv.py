"""Environment for every agent process on a namespace VM (crash and pause points)."""

from __future__ import annotations

from tests.support.vm import NamespaceVM


def set_agent_env(vm: NamespaceVM, name: str, value: str) -> None:
    """Every agent process on ``vm`` gets ``name=value`` (through sshd's SetEnv).

    sshd reads its configuration when it starts, so the VM is restarted: call it before
    anything ran there."""
    config = vm.sshd_config.read_text()
    assert "SetEnv JOBNET_AGENT_BOOT_ID_FILE=" in config
    vm.sshd_config.write_text(config.replace("SetEnv ", f"SetEnv {name}={value} ", 1))
    vm.crash()
    vm.start()
