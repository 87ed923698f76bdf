"""The demo VM of the kind quick start: its manifests applied with kubectl to the API emulator
(refused without their namespace, accepted with it, unchanged when applied again) and checked to
fit together with the image, the entrypoint, the Secrets kind-up creates and the chart values."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.chart.test_dockerfile import parse as parse_dockerfile
from tests.kind.support import ENTRYPOINT, KIND_DIR, KIND_UP, REPO, VM_DIR, manifests, script_value
from tests.support.emulator import EmulatorServer

NAMESPACE_FILE = KIND_DIR / "namespace.yaml"
VM_FILE = KIND_DIR / "vm.yaml"


def stored(emulator: EmulatorServer, api_version: str, plural: str, name: str) -> dict[str, Any]:
    body = emulator.get(api_version, plural, script_value("DEMO_NAMESPACE"), name)
    assert body is not None, f"{plural}/{name} was not stored"
    return dict(body)


def test_demo_vm_manifests_need_their_namespace_then_apply_idempotently(emulator: EmulatorServer) -> None:
    refused = emulator.kubectl("apply", "-f", str(VM_FILE))
    assert refused.rc != 0 and 'namespaces "jobnet-demo" not found' in refused.stderr, refused

    for path in (NAMESPACE_FILE, VM_FILE):
        applied = emulator.kubectl("apply", "-f", str(path))
        assert applied.rc == 0, applied.stderr
    again = emulator.kubectl("apply", "-f", str(VM_FILE))
    assert again.rc == 0, again.stderr
    assert again.stdout.split("\n")[:2] == ["deployment.apps/vm1 unchanged", "service/vm1 unchanged"], again.stdout


def test_demo_vm_deployment_and_service_fit_together(emulator: EmulatorServer) -> None:
    for path in (NAMESPACE_FILE, VM_FILE):
        assert emulator.kubectl("apply", "-f", str(path)).rc == 0
    deployment = stored(emulator, "apps/v1", "deployments", "vm1")
    service = stored(emulator, "v1", "services", "vm1")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()

    (vm,) = pod["spec"]["containers"]
    assert vm["image"] == script_value("VM_IMAGE") and vm["imagePullPolicy"] == "Never"
    (ssh_port,) = vm["ports"]
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == 22 and service_port["targetPort"] == ssh_port["name"]
    assert ssh_port["containerPort"] == 22 and vm["readinessProbe"]["tcpSocket"]["port"] == ssh_port["name"]

    # The Secret volume holds the files the entrypoint reads, where its environment says.
    env = {item["name"]: item["value"] for item in vm["env"]}
    (mount,) = vm["volumeMounts"]
    (volume,) = pod["spec"]["volumes"]
    assert volume["name"] == mount["name"] and mount["mountPath"] == env["JOBNET_VM_KEYS"]
    assert volume["secret"]["secretName"] == "vm1-sshd"
    files = {item["path"] for item in volume["secret"]["items"]}
    assert files == {"ssh_host_ed25519_key", "authorized_keys"}
    entrypoint = ENTRYPOINT.read_text()
    assert all(name in entrypoint for name in files)
    assert f"id {env['JOBNET_VM_USER']}" not in entrypoint  # the user is a variable, not hard-coded
    (stage,) = parse_dockerfile((VM_DIR / "Dockerfile").read_text())[1]
    assert f"--password '*' {env['JOBNET_VM_USER']}" in stage.all("RUN")[0]  # not locked: sshd lets it in


def test_kind_up_puts_the_keys_under_the_names_the_vm_and_the_operator_read() -> None:
    text = KIND_UP.read_text()
    for key in ("ssh_host_ed25519_key", "authorized_keys"):
        assert f"--from-file={key}=" in text
    # docs/install.md: the credentials Secret holds privateKey (or password) and knownHosts.
    for key in ("privateKey", "knownHosts"):
        assert f"--from-file={key}=" in text


def test_the_host_alias_points_at_the_demo_vm_service() -> None:
    values = yaml.safe_load((KIND_DIR / "values.yaml").read_text())
    (service,) = [doc for doc in manifests(VM_FILE) if doc["kind"] == "Service"]
    meta = service["metadata"]
    assert values["hostAliases"] == {
        script_value("VM_HOST", KIND_UP): f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    }
    assert values["watchNamespaces"] == [meta["namespace"]] == [script_value("DEMO_NAMESPACE")]
    assert values["rbac"]["secretNames"] == ["vm1-ssh"]
    assert f"{values['image']['repository']}:{values['image']['tag']}" == script_value("OPERATOR_IMAGE")


def test_the_kind_cluster_config_is_a_kind_cluster() -> None:
    (config,) = manifests(KIND_DIR / "cluster.yaml")
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [node["role"] for node in config["nodes"]] == ["control-plane"]


def test_the_vm_image_is_a_pinned_debian_with_sshd_python3_and_no_host_key() -> None:
    _, stages = parse_dockerfile((VM_DIR / "Dockerfile").read_text())
    (stage,) = stages
    assert re.fullmatch(r"debian:\d+\.\d+-slim", stage.base), f"not an exact Debian release: {stage.base}"
    (install,) = stage.all("RUN")
    assert re.search(r"apt-get install -y --no-install-recommends openssh-server python3(?: |$)", install)
    assert "rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*" in install  # the host key comes from the Secret
    copies = {tuple(value.split()) for value in stage.all("COPY")}
    assert copies == {("batch/", "/opt/batch/"), ("entrypoint.sh", "/usr/local/bin/jobnet-vm-entrypoint")}
    assert json.loads(stage.all("ENTRYPOINT")[0]) == ["/usr/local/bin/jobnet-vm-entrypoint"]
    assert stage.all("EXPOSE") == ["22"] and stage.all("USER") == []  # sshd starts as root, like on a VM


def test_the_vm_image_has_every_script_example_02_runs(tmp_path: Path) -> None:
    scripts = {
        job["script"]
        for doc in manifests(REPO / "examples" / "02-nightly.yaml")
        if doc["kind"] == "JobNet"
        for job in doc["spec"]["jobs"] + doc["spec"].get("finally", [])
        if "script" in job  # not the expansion
    }
    assert scripts and all(script.startswith("/opt/batch/") for script in scripts)
    for script in sorted(scripts):
        local = VM_DIR / "batch" / script.removeprefix("/opt/batch/")
        result = subprocess.run(
            [str(local), "--date", "today"],
            capture_output=True,
            text=True,
            timeout=10,
            env={"PATH": os.defpath, "JOBNET_JOB_PATH": "/nightly/x", "JOBNET_ATTEMPT": "1"},
        )
        assert result.returncode == 0, result.stderr
        assert (
            result.stdout.startswith(f"{local.stem} on ")
            and "job /nightly/x attempt 1, args: --date today" in result.stdout
        )
