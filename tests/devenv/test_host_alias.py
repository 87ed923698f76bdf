"""``jobnet operator --host-alias NAME=ADDRESS``: the SSH layer connects to ADDRESS whenever a
JobNet names host NAME, and the host key is still verified against knownHosts under NAME."""

from __future__ import annotations

import argparse
from pathlib import Path

import helm_python
import pytest
import yaml

from jobnet.console.command import add_console_arguments
from jobnet.devenv.vm import NamespaceVM
from jobnet.kube.cli import add_operator_arguments, runtime_config_from_arguments
from jobnet.plugin.commands import add_plugin_commands
from jobnet.ssh import HostConnectionPool, HostKeyMismatch, HostUnreachable, SshCredentials, SshSettings, SshTarget

NAME = "vm1.batch.example"
CHART = Path(__file__).resolve().parents[2] / "charts" / "jobnet-operator"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="jobnet operator", exit_on_error=False)
    add_operator_arguments(parser)
    return parser.parse_args(list(argv))


def test_host_aliases_reach_the_ssh_settings() -> None:
    args = parse(f"--host-alias={NAME}=198.18.0.2", "--host-alias", "db.example = 10.1.2.3")
    assert runtime_config_from_arguments(args).ssh.host_aliases == {NAME: "198.18.0.2", "db.example": "10.1.2.3"}
    assert runtime_config_from_arguments(parse()).ssh.host_aliases == {}


@pytest.mark.parametrize("bad", ["vm1", "=10.0.0.1", "vm1=", "vm1=a=b"])
def test_a_malformed_host_alias_is_refused_naming_the_expected_form(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="jobnet operator")
    add_operator_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args([f"--host-alias={bad}"])
    assert f"expected NAME=ADDRESS (e.g. vm1.batch.example=10.0.0.7), not {bad!r}" in capsys.readouterr().err


def test_the_console_and_kubectl_jobnet_logs_take_host_aliases_too() -> None:
    """They read a job's output from its VM as the operator reaches it (``jobnet dev``'s console)."""
    console = argparse.ArgumentParser(prog="jobnet console")
    add_console_arguments(console)
    assert console.parse_args([f"--host-alias={NAME}=198.18.0.2"]).host_aliases == [(NAME, "198.18.0.2")]
    assert console.parse_args([]).host_aliases == []
    plugin = argparse.ArgumentParser(prog="kubectl jobnet")
    add_plugin_commands(plugin.add_subparsers(dest="command"))
    logs = plugin.parse_args(["logs", "run-1", "/n/a", "--host-alias", f"{NAME}=198.18.0.2"])
    assert logs.host_aliases == [(NAME, "198.18.0.2")]


def test_a_name_aliased_twice_is_refused() -> None:
    args = parse(f"--host-alias={NAME}=198.18.0.2", f"--host-alias={NAME}=198.18.0.6")
    with pytest.raises(SystemExit, match=rf"--host-alias names a host twice: \['{NAME}'\]"):
        runtime_config_from_arguments(args)


def test_an_unreachable_alias_says_both_the_name_and_the_address() -> None:
    pool = HostConnectionPool(SshSettings(connect_timeout=1, host_aliases={NAME: "127.0.0.1"}))
    # Port 1 on loopback: nothing listens there, the connect is refused at once.
    credentials = SshCredentials(
        known_hosts=f"[{NAME}]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDtUV1Vn8Kd2Rz1jHn1n3vP8K0WfGqI8Wl7GmBGNw2iX\n",
        password="unused",
    )
    with pytest.raises(HostUnreachable, match=rf"cannot reach sshd at {NAME}:1 \(host alias: 127.0.0.1\)"):
        pool.transport(SshTarget(NAME, 1, "batch"), credentials)


@pytest.mark.vm
def test_an_aliased_name_connects_to_the_address_and_verifies_the_key_under_the_name(vm: NamespaceVM) -> None:
    pool = HostConnectionPool(SshSettings(connect_timeout=2, host_aliases={NAME: vm.address}))
    target = SshTarget(NAME, 22, vm.user)
    try:
        transport = pool.transport(
            target, SshCredentials(known_hosts=vm.known_hosts_for(NAME), private_key=vm.client_key)
        )
        assert transport.is_authenticated()
        assert f"Accepted publickey for {vm.user}" in vm.read_sshd_log()  # it really was this VM's sshd
    finally:
        pool.close()


@pytest.mark.vm
def test_a_key_known_only_under_the_address_is_not_trusted_for_the_name(vm: NamespaceVM) -> None:
    pool = HostConnectionPool(SshSettings(connect_timeout=2, host_aliases={NAME: vm.address}))
    with pytest.raises(HostKeyMismatch, match=f"no host key for {NAME} in knownHosts"):
        pool.transport(
            SshTarget(NAME, 22, vm.user), SshCredentials(known_hosts=vm.known_hosts, private_key=vm.client_key)
        )
    pool.close()
    assert "Accepted publickey" not in vm.read_sshd_log()  # credentials never sent


def test_the_chart_passes_host_aliases_to_the_operator() -> None:
    chart = helm_python.Chart.load(str(CHART))
    rendered = chart.render(values={"hostAliases": {NAME: "10.0.0.7", "db.example": "10.0.0.8"}})
    deployment = yaml.safe_load(rendered["jobnet-operator/templates/deployment.yaml"])
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--host-alias")] == [
        "--host-alias=db.example=10.0.0.8",
        f"--host-alias={NAME}=10.0.0.7",
    ]
    default = yaml.safe_load(chart.render(values={})["jobnet-operator/templates/deployment.yaml"])
    assert not [a for a in default["spec"]["template"]["spec"]["containers"][0]["args"] if a.startswith("--host-alias")]
