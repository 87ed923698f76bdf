"""The real operator runs as its ServiceAccount with exactly the RBAC the Helm chart renders.

The chart is rendered with Helm's own code (as tests/chart does), its ServiceAccount, roles and
bindings are applied to the emulator, and the operator gets a token of that ServiceAccount; it
elects itself leader over the chart's Lease (with short durations). A JobNet then runs on a
namespace VM to Succeeded. A verb the operator needs and the chart does not grant shows up as a
denial; a granted verb no request needed shows up as unused. ``UNUSED_GRANTS`` is what the chart
grants today without need: shrink it as the chart is tightened, down to empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from jobnet.devenv.emulator.authorization import Request, unused_permissions
from tests.scenarios.conftest import scenario, vm_factory  # noqa: F401 (the fixtures, shared)
from tests.support.operator_proc import OperatorProcess, register_webhooks
from tests.support.scenario import FAST_AGENT_ARGS, FAST_RUNTIME_ARGS, Scenario

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a test dependency: pip install -e '.[test]'")

pytestmark = [pytest.mark.emulator, pytest.mark.vm]

CHART = Path(__file__).resolve().parents[2] / "charts" / "jobnet-operator"
RELEASE = NAMESPACE = "jobnet-system"
ACCOUNT = f"system:serviceaccount:{NAMESPACE}:jobnet-operator"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}

#: What kopf tries and does without when refused ("changes of resources will not be noticed");
#: the chart grants it only with ``rbac.watchCRDs=true``.
TOLERATED_DENIALS = ["list customresourcedefinitions.apiextensions.k8s.io"]
#: (apiGroup, resource, verb) the chart's default values grant and a whole run never used.
UNUSED_GRANTS: set[tuple[str, str, str]] = set()
#: Roles this run does not exercise: the users' aggregated ones (bound to no one), and those for
#: the operator's own webhook certificate (this run serves plain HTTP; tests/chart/
#: test_chart_operator.py runs the chart's command line under the chart's RBAC for them).
NOT_EXERCISED_ROLES = {
    "jobnet-view",
    "jobnet-edit",
    "jobnet-operator-webhook-tls",
    "jobnet-operator-jobnet-system-webhook-ca",
}
#: Needed off the happy path this test takes: a start retried after a crash replaces its stale
#: snapshot ConfigMap (``kube/app.py`` ``store_snapshot``); a run resumed after a restart, and the
#: admission of an override or stop, read the run's snapshot ConfigMap back; a run's loop whose
#: status write conflicted (the run changed since the version it decided from) reads the run again.
NEEDED_BY_RECOVERY = {("", "configmaps", "delete"), ("", "configmaps", "get"), ("jobnet.dev", "jobruns", "get")}
#: Patching a JobRun itself (not its status): the runtime removes the steering annotations it
#: applied, a schedule's Replace stops a run with one. This run is not steered (and kopf keeps
#: no handler state in JobRuns: new runs are started from watch events).
NEEDED_BY_STEERING = {("jobnet.dev", "jobruns", "patch")}
#: The schedule controller's own grants (``kube/schedules.py``): it creates a slot's JobRun,
#: deletes runs past the history limits and writes a JobSchedule's status. This run has no
#: JobSchedule; the H scenarios exercise these (as the administrator, not under this RBAC).
NEEDED_BY_SCHEDULES = {
    ("jobnet.dev", "jobruns", "create"),
    ("jobnet.dev", "jobruns", "delete"),
    ("jobnet.dev", "jobschedules/status", "patch"),
}


def render_chart(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name="jobnet-operator", namespace=RELEASE, is_install=True)
    return [
        doc
        for name, text in sorted(manifests.items())
        if name.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def operator_args(rendered: list[dict[str, Any]]) -> list[str]:
    [deployment] = [obj for obj in rendered if obj["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args: list[str] = container["args"]
    return args


def test_the_operator_runs_a_jobnet_with_exactly_the_charts_rbac(scenario: Scenario, tmp_path: Path) -> None:  # noqa: F811
    emulator = scenario.emulator
    rendered = render_chart({})
    emulator.create_namespace(NAMESPACE)
    installed = [obj for obj in rendered if obj["kind"] in RBAC_KINDS]
    applied = emulator.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(installed))
    assert applied.rc == 0, applied.stderr
    issued = emulator.kubectl("create", "token", "jobnet-operator", "-n", NAMESPACE)
    assert issued.rc == 0, issued.stderr
    kubeconfig = emulator.write_kubeconfig(tmp_path / "operator.kubeconfig", issued.stdout.strip())

    vm = scenario.vm()
    args = operator_args(rendered)
    election = [
        f"{option}={args[args.index(option) + 1]}" for option in ("--leader-election-namespace", "--lease-name")
    ]
    agent_args = [*FAST_AGENT_ARGS, "--boot-id-file", str(vm.boot_id_file)]
    process = OperatorProcess(
        emulator,
        tmp_path,
        kubeconfig=kubeconfig,
        leader_election=True,
        extra_args=(
            *election,
            "--lease-duration=4",
            "--renew-deadline=3",
            "--retry-period=0.25",
            *FAST_RUNTIME_ARGS,
            *(f"--agent-serve-arg={arg}" for arg in agent_args),
        ),
    )
    register_webhooks(emulator, process.webhook_url)
    scenario.operator = process.start()

    script = scenario.marker_script(vm, "extract", "echo extracted\n")
    run = scenario.run_jobnet("nightly", scenario.host(vm), [{"name": "extract", "script": script}])
    status = scenario.wait_phase(run, "Succeeded", timeout=60)
    assert status["jobs"]["/nightly/extract"]["outputTail"] == "extracted\n"
    scenario.wait_event(run, "RunSucceeded")
    assert scenario.script_runs(vm, "extract") == 1
    process.stop()  # its shutdown's requests count too

    denied = sorted(_describe(request) for user, request in emulator.denial_log() if user == ACCOUNT)
    assert denied == TOLERATED_DENIALS, f"the chart's RBAC lacks what the operator needs: {denied}"
    used = [request for user, request in emulator.access_log() if user == ACCOUNT]
    granted = [
        rule
        for obj in installed
        if obj["kind"] in ("ClusterRole", "Role") and obj["metadata"]["name"] not in NOT_EXERCISED_ROLES
        for rule in obj.get("rules") or []
    ]
    unused = unused_permissions(granted, used) - NEEDED_BY_RECOVERY - NEEDED_BY_SCHEDULES - NEEDED_BY_STEERING
    assert unused == UNUSED_GRANTS, (
        f"granted but unused now: {sorted(unused)}; needed: {sorted({_describe(request) for request in used})}"
    )


def _describe(request: Request) -> str:
    resource = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
    return (
        f"{request.verb} {resource}.{request.api_group}"
        if request.resource_request
        else f"{request.verb} {request.path}"
    )
