"""The Helm chart, rendered and linted offline with Helm's own Go code (helm-python-sdk).

Every test renders the real chart with a set of values and asserts on the Kubernetes
objects a cluster would receive. ``lookup`` returns nothing offline, so these renders are
what a first install produces; the upgrade path (reusing the existing webhook Secret) is
covered by the template's structure, not by a test here.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from jobnet.core.admission import ENDPOINTS
from jobnet.kube.cli import add_operator_arguments

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "jobnet-operator"
RELEASE = "jobnet-operator"
NAMESPACE = "jobnet-system"
FULLNAME = "jobnet-operator"
WEBHOOK_SERVICE = f"{FULLNAME}-webhook"
WEBHOOK_SECRET = f"{FULLNAME}-webhook-tls"
CLUSTER_NAME = f"{FULLNAME}-{NAMESPACE}"  # cluster-scoped objects: the operator's ClusterRole, the webhooks
#: The Role and ClusterRole that let the operator keep its own webhook certificate (self-signed mode).
WEBHOOK_TLS_ROLE = WEBHOOK_SECRET
WEBHOOK_CA_CLUSTER_ROLE = f"{CLUSTER_NAME}-webhook-ca"
#: The Role that lets the replicas elect their leader over one Lease in the release's namespace.
LEADER_ELECTION_ROLE = f"{FULLNAME}-leader-election"
WEBHOOK_TLS_NAMES = [
    f"{WEBHOOK_SERVICE}.{NAMESPACE}.svc",
    WEBHOOK_SERVICE,
    f"{WEBHOOK_SERVICE}.{NAMESPACE}",
    f"{WEBHOOK_SERVICE}.{NAMESPACE}.svc.cluster.local",
]

#: The operator's command line, exactly as the `jobnet operator` CLI defines it.
OPERATOR_ARGS = [
    "--webhook-port", "9443",
    "--webhook-tls-secret", f"{NAMESPACE}/{WEBHOOK_SECRET}",
    *(arg for name in WEBHOOK_TLS_NAMES for arg in ("--webhook-tls-name", name)),
    "--webhook-sync-ca-bundle", CLUSTER_NAME,
    "--webhook-tls-validity-days", "365",
    "--webhook-tls-renew-before-days", "30",
    "--liveness-endpoint", "http://0.0.0.0:8080/healthz",
    "--metrics-port", "9090",
    "--leader-election-namespace", NAMESPACE,
    "--lease-name", FULLNAME,
    "--lease-duration", "15",
    "--renew-deadline", "10",
    "--retry-period", "2",
    "--log-format", "json",
    "--agent-idle-timeout", "300",
    "--observation-write-delay", "1",
    "--event-retry-for", "300",
    "--event-restore-window", "3600",
]  # fmt: skip
#: ... and with cert-manager: the mounted certificate instead of the operator's own.
CERT_MANAGER_TLS_ARGS = [
    "--webhook-cert",
    "/etc/jobnet/webhook/tls.crt",
    "--webhook-key",
    "/etc/jobnet/webhook/tls.key",
]

#: The operator answers an AdmissionReview by its URL path (jobnet.core.admission.ENDPOINTS).
JOBNET_WEBHOOK_PATH = "/validate-jobnet"
JOBRUN_WEBHOOK_PATH = "/validate-jobrun"
JOBRUN_MUTATING_WEBHOOK_PATH = "/mutate-jobrun"
WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")

#: The only permissions the operator needs in a watched namespace (or cluster-wide).
OPERATOR_RULES = {
    ("jobnet.dev", "jobnets"): {"list", "watch"},  # kopf keeps no state in JobNets
    # JobSchedules create their runs, and delete old finished ones (history limits); a run's loop
    # reads its run again after a conflicting write (get).
    ("jobnet.dev", "jobruns"): {"list", "watch", "get", "patch", "create", "delete"},
    ("jobnet.dev", "jobschedules"): {"list", "watch"},
    ("jobnet.dev", "jobcalendars"): {"list", "watch"},
    ("jobnet.dev", "jobschedules/status"): {"patch"},
    ("jobnet.dev", "jobnets/status"): {"patch"},
    ("jobnet.dev", "jobruns/status"): {"patch"},
    ("", "events"): {"create"},
    ("", "configmaps"): {"create", "get", "delete"},
    ("", "secrets"): {"get"},
}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "single-namespace": {"watchNamespaces": ["batch"]},
    "two-namespaces": {"watchNamespaces": ["batch", "etl"], "rbac": {"secretNames": ["vm1-ssh", "vm2-ssh"]}},
    "cert-manager": {"webhook": {"certManager": {"enabled": True}}},
    "cert-manager-cluster-issuer": {
        "webhook": {"certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}
    },
    "one-replica": {"replicas": 1},
    "no-election": {"replicas": 1, "leaderElection": {"enabled": False}},
    "custom-image": {
        "image": {
            "repository": "registry.example.com/batch/jobnet-operator",
            "tag": "0.1.0-rc1",
            "pullPolicy": "Always",
        }
    },
    "image-digest": {"image": {"digest": "sha256:" + "ab" * 32}},
    "metrics-monitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "crd-watch": {"rbac": {"watchCRDs": True}, "watchNamespaces": ["batch"]},
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    assert objects, f"the chart rendered nothing with {values}"
    return objects


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(values) for name, values in VALUE_SETS.items()}


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected exactly one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (operator,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return operator


def rules_of(role: dict[str, Any]) -> Iterator[tuple[str, str, frozenset[str], tuple[str, ...]]]:
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                yield group, resource, frozenset(rule["verbs"]), tuple(rule.get("resourceNames", ()))


def operator_cluster_role(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (role,) = [r for r in of_kind(objects, "ClusterRole") if r["metadata"]["name"] == CLUSTER_NAME]
    return role


#: ClusterRoles for users (aggregated into view/edit/admin), not bound to the operator.
AGGREGATED_ROLES = ("jobnet-view", "jobnet-edit")


def without_webhook_tls_rbac(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The operator's (Cluster)Roles and bindings of ``kind`` other than those for the webhook
    certificate and the leader election (and the users' aggregated roles)."""
    others = (WEBHOOK_TLS_ROLE, WEBHOOK_CA_CLUSTER_ROLE, LEADER_ELECTION_ROLE, *AGGREGATED_ROLES)
    return [o for o in of_kind(objects, kind) if o["metadata"]["name"] not in others]


def permissions(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for group, resource, verbs, _ in rules_of(role):
        granted.setdefault((group, resource), set()).update(verbs)
    return granted


def shipped_crd_names(chart: Any) -> set[str]:
    return {doc["metadata"]["name"] for crd in chart.crds for doc in yaml.safe_load_all(crd["data"]) if doc}


# --- lint and schema --------------------------------------------------------------------


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_chart_lints_strict(value_set: str) -> None:
    report = helm.lint(CHART, VALUE_SETS[value_set], strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["total_charts_linted"] == 1
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_chart_metadata() -> None:
    with helm.Chart.load(CHART) as chart:
        metadata = chart.metadata
    assert metadata["apiVersion"] == "v2"
    assert metadata["name"] == "jobnet-operator"
    assert metadata["appVersion"] == "0.1.0"


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"replicas": "two"}, "replicas"),
        ({"replicas": 0}, "replicas"),
        ({"replicaCount": 2}, "replicaCount"),
        ({"webhook": {"failurePolicy": "Maybe"}}, "failurePolicy"),
        ({"webhook": {"timeoutSeconds": 60}}, "timeoutSeconds"),
        ({"watchNamespaces": ["Batch_Jobs"]}, "watchNamespaces"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"rbac": {"secretNames": "vm1-ssh"}}, "secretNames"),
        ({"webhook": {"certManager": {"issuerRef": {"kind": "Vault"}}}}, "kind"),
        ({"observationWriteDelaySeconds": -1}, "observationWriteDelaySeconds"),
        ({"eventRetryForSeconds": 0}, "eventRetryForSeconds"),
    ],
)
def test_schema_rejects_bad_values_naming_the_key(values: dict[str, Any], named: str) -> None:
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmError) as validated:
            chart.validate_schema(chart.merge_values(values))
        assert named in str(validated.value)
        with pytest.raises(helm.HelmError):
            chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def test_schema_accepts_defaults() -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.values)


def test_several_replicas_without_leader_election_are_refused() -> None:
    with pytest.raises(helm.HelmError, match="leaderElection.enabled"):
        render({"replicas": 2, "leaderElection": {"enabled": False}})


@pytest.mark.parametrize(
    "durations",
    [{"leaseDuration": 10, "renewDeadline": 10}, {"renewDeadline": 2, "retryPeriod": 2}],
    ids=["lease-not-longer-than-renew", "renew-not-longer-than-retry"],
)
def test_election_durations_that_break_the_guarantee_are_refused(durations: dict[str, int]) -> None:
    with pytest.raises(helm.HelmError, match="leaseDuration > renewDeadline > retryPeriod"):
        render({"leaderElection": durations})


# --- Deployment ---------------------------------------------------------------------------


def test_deployment_runs_the_operator_cli_exactly(rendered: dict[str, list[dict[str, Any]]]) -> None:
    operator = container(rendered["default"])
    assert operator["command"] == ["jobnet", "operator"]
    assert operator["args"] == OPERATOR_ARGS


def test_runtime_values_reach_the_operator_command_line() -> None:
    values = {"observationWriteDelaySeconds": 0, "agentIdleTimeoutSeconds": 30, "eventRetryForSeconds": 60}
    args = container(render({**values, "eventRestoreWindowSeconds": 600}))["args"]
    assert args[args.index("--observation-write-delay") + 1] == "0"
    assert args[args.index("--event-retry-for") + 1] == "60"
    assert args[args.index("--event-restore-window") + 1] == "600"
    assert args[args.index("--agent-idle-timeout") + 1] == "30"


def operator_options() -> set[str]:
    parser = argparse.ArgumentParser()
    add_operator_arguments(parser)
    return {option for action in parser._actions for option in action.option_strings if option.startswith("--")}


def options_without_a_chart_value() -> set[str]:
    """The options docs/install.md lists, with a reason, as having no chart value."""
    text = (REPO / "docs" / "install.md").read_text()
    table = text.split("| options | why the chart has no value for them |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"`(--[a-z0-9-]+)`", table))


def test_every_operator_option_has_a_chart_value_or_a_documented_reason(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    charted = {
        arg.split("=", 1)[0]
        for objects in [*rendered.values(), render({"hostAliases": {"vm1.batch.example": "10.0.0.7"}})]
        for arg in container(objects)["args"]
        if arg.startswith("--")
    }
    documented = options_without_a_chart_value()
    options = operator_options() - {"--help"}
    assert options - charted - documented == set(), "options with neither a chart value nor a reason"
    assert documented & charted == set(), "options the chart sets, listed as having no value"
    assert documented - options == set(), "listed options jobnet operator does not have"


def test_deployment_args_name_each_watched_namespace(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert container(rendered["two-namespaces"])["args"] == [
        "--namespace", "batch", "--namespace", "etl", *OPERATOR_ARGS
    ]  # fmt: skip


def test_without_leader_election_one_replica_runs_with_no_lease(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["no-election"]
    args = container(objects)["args"]
    assert "--no-leader-election" in args and "--lease-name" not in args
    assert [r for r in of_kind(objects, "Role") if r["metadata"]["name"] == LEADER_ELECTION_ROLE] == []


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_pod_is_hardened(rendered: dict[str, list[dict[str, Any]]], value_set: str) -> None:
    pod = one(rendered[value_set], "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container(rendered[value_set])["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_pod_has_resources_tmp_and_webhook_certificate(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["default"]
    operator = container(objects)
    assert set(operator["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(operator["resources"]["requests"])
    assert {"cpu", "memory"} <= set(operator["resources"]["limits"])
    mounts = {m["name"]: m for m in operator["volumeMounts"]}
    volumes = {v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]
    assert "webhook-tls" not in mounts and "webhook-tls" not in volumes  # the operator reads its Secret itself
    cert_manager = container(rendered["cert-manager"])
    mounts = {m["name"]: m for m in cert_manager["volumeMounts"]}
    volumes = {v["name"]: v for v in one(rendered["cert-manager"], "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert mounts["webhook-tls"]["mountPath"] == "/etc/jobnet/webhook"
    assert mounts["webhook-tls"]["readOnly"] is True
    assert volumes["webhook-tls"]["secret"]["secretName"] == WEBHOOK_SECRET
    env = {e["name"]: e for e in operator["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_liveness_probe_hits_kopfs_liveness_endpoint(rendered: dict[str, list[dict[str, Any]]]) -> None:
    operator = container(rendered["default"])
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    probe = operator["livenessProbe"]["httpGet"]
    endpoint = operator["args"][operator["args"].index("--liveness-endpoint") + 1]
    assert endpoint == f"http://0.0.0.0:{ports[probe['port']]}{probe['path']}"
    readiness = operator["readinessProbe"]["tcpSocket"]
    webhook_port = operator["args"][operator["args"].index("--webhook-port") + 1]
    assert str(ports[readiness["port"]]) == webhook_port


@pytest.mark.parametrize(
    ("value_set", "image", "pull_policy"),
    [
        ("default", "ghcr.io/jobnet-dev/jobnet-operator:0.1.0", "IfNotPresent"),
        ("custom-image", "registry.example.com/batch/jobnet-operator:0.1.0-rc1", "Always"),
        ("image-digest", "ghcr.io/jobnet-dev/jobnet-operator@sha256:" + "ab" * 32, "IfNotPresent"),
    ],
)
def test_image_reference(
    rendered: dict[str, list[dict[str, Any]]], value_set: str, image: str, pull_policy: str
) -> None:
    operator = container(rendered[value_set])
    assert operator["image"] == image
    assert operator["imagePullPolicy"] == pull_policy


@pytest.mark.parametrize(("value_set", "replicas", "has_pdb"), [("default", 2, True), ("one-replica", 1, False)])
def test_replicas_and_disruption_budget(
    rendered: dict[str, list[dict[str, Any]]], value_set: str, replicas: int, has_pdb: bool
) -> None:
    objects = rendered[value_set]
    assert one(objects, "Deployment")["spec"]["replicas"] == replicas
    budgets = of_kind(objects, "PodDisruptionBudget")
    assert len(budgets) == int(has_pdb)
    if has_pdb:
        assert budgets[0]["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("value_set", ["default", "two-namespaces"])
def test_replicas_may_create_and_renew_only_their_lease_in_the_release_namespace(
    rendered: dict[str, list[dict[str, Any]]], value_set: str
) -> None:
    objects = rendered[value_set]
    args = container(objects)["args"]
    lease = args[args.index("--lease-name") + 1]
    assert args[args.index("--leader-election-namespace") + 1] == NAMESPACE
    (role,) = [r for r in of_kind(objects, "Role") if r["metadata"]["name"] == LEADER_ELECTION_ROLE]
    assert role["metadata"]["namespace"] == NAMESPACE
    assert sorted((group, resource, sorted(verbs), names) for group, resource, verbs, names in rules_of(role)) == [
        ("coordination.k8s.io", "leases", ["create"], ()),
        ("coordination.k8s.io", "leases", ["get", "update"], (lease,)),
    ]
    (binding,) = [b for b in of_kind(objects, "RoleBinding") if b["metadata"]["name"] == LEADER_ELECTION_ROLE]
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"]["name"] == LEADER_ELECTION_ROLE
    assert binding["subjects"][0]["name"] == one(objects, "ServiceAccount")["metadata"]["name"]


def test_no_kopf_peering_ships_with_the_chart(rendered: dict[str, list[dict[str, Any]]]) -> None:
    with helm.Chart.load(CHART) as chart:
        names = shipped_crd_names(chart)
    assert not [name for name in names if name.endswith(".kopf.dev")]
    for objects in rendered.values():
        assert not [obj for obj in objects if obj["apiVersion"].startswith("kopf.dev/")]


# --- RBAC ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_rbac_has_no_wildcards(rendered: dict[str, list[dict[str, Any]]], value_set: str) -> None:
    roles = of_kind(rendered[value_set], "ClusterRole") + of_kind(rendered[value_set], "Role")
    assert roles
    for role in roles:
        for group, resource, verbs, names in rules_of(role):
            assert "*" not in group and "*" not in resource and "*" not in verbs and "*" not in names, role


def test_cluster_wide_rbac_is_exactly_what_the_operator_calls(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["default"]
    assert without_webhook_tls_rbac(objects, "Role") == []
    role = operator_cluster_role(objects)
    assert permissions(role) == OPERATOR_RULES
    (binding,) = without_webhook_tls_rbac(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]
    }  # fmt: skip
    service_account = one(objects, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": service_account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == service_account["metadata"]["name"]


def test_namespaced_rbac_is_one_role_per_namespace(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["two-namespaces"]
    assert without_webhook_tls_rbac(objects, "ClusterRole") == []
    assert without_webhook_tls_rbac(objects, "ClusterRoleBinding") == []
    roles = without_webhook_tls_rbac(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["batch", "etl"]
    for role in roles:
        assert permissions(role) == OPERATOR_RULES
    bindings = without_webhook_tls_rbac(objects, "RoleBinding")
    assert sorted((b["metadata"]["namespace"], b["roleRef"]["kind"]) for b in bindings) == [
        ("batch", "Role"), ("etl", "Role")
    ]  # fmt: skip
    for binding in bindings:
        assert binding["subjects"][0]["namespace"] == NAMESPACE


def test_secret_access_can_be_restricted_by_name(rendered: dict[str, list[dict[str, Any]]]) -> None:
    roles = without_webhook_tls_rbac(rendered["two-namespaces"], "Role")
    assert len(roles) == 2  # one per watched namespace
    for role in roles:
        secret_rules = [r for r in rules_of(role) if r[1] == "secrets"]
        assert secret_rules == [("", "secrets", frozenset({"get"}), ("vm1-ssh", "vm2-ssh"))]
    default_role = operator_cluster_role(rendered["default"])
    assert [r[3] for r in rules_of(default_role) if r[1] == "secrets"] == [()]


def test_crd_watch_is_opt_in(rendered: dict[str, list[dict[str, Any]]]) -> None:
    def crd_verbs(objects: list[dict[str, Any]]) -> set[str]:
        return {
            verb
            for role in of_kind(objects, "ClusterRole")
            for group, resource, verbs, _ in rules_of(role)
            if resource == "customresourcedefinitions"
            for verb in verbs
        }

    assert crd_verbs(rendered["default"]) == set()
    assert crd_verbs(rendered["crd-watch"]) == {"list", "watch"}


def test_users_get_jobnets_through_the_aggregated_view_and_edit_roles(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    roles = {r["metadata"]["name"]: r for r in of_kind(rendered["default"], "ClusterRole")}
    view, edit = roles["jobnet-view"], roles["jobnet-edit"]

    def aggregated_into(role: dict[str, Any]) -> set[str]:
        prefix = "rbac.authorization.k8s.io/aggregate-to-"
        return {
            k.removeprefix(prefix)
            for k, v in role["metadata"]["labels"].items()
            if k.startswith(prefix) and v == "true"
        }

    assert aggregated_into(view) == {"view", "edit", "admin"} and aggregated_into(edit) == {"edit", "admin"}
    assert permissions(view) == {
        ("jobnet.dev", resource): {"get", "list", "watch"}
        for resource in ("jobnets", "jobruns", "jobnets/status", "jobruns/status")
    }
    assert permissions(edit) == {
        ("jobnet.dev", resource): {"create", "update", "patch", "delete", "deletecollection"}
        for resource in ("jobnets", "jobruns")
    }
    bound = {b["roleRef"]["name"] for b in of_kind(rendered["default"], "ClusterRoleBinding")}
    assert not bound & set(AGGREGATED_ROLES)  # for users through view/edit, never the operator
    off = render({"rbac": {"aggregatedRoles": False}})
    assert not {r["metadata"]["name"] for r in of_kind(off, "ClusterRole")} & set(AGGREGATED_ROLES)


# --- webhook ------------------------------------------------------------------------------


def webhooks_by_resource(
    objects: list[dict[str, Any]], kind: str = "ValidatingWebhookConfiguration"
) -> dict[str, dict[str, Any]]:
    configuration = one(objects, kind)
    found: dict[str, dict[str, Any]] = {}
    for webhook in configuration["webhooks"]:
        (rule,) = webhook["rules"]
        assert rule["apiGroups"] == ["jobnet.dev"] and rule["apiVersions"] == ["v1alpha1"]
        (resource,) = rule["resources"]
        found[resource] = webhook
    assert found, f"{kind} has no webhooks"  # the callers' loops must check something
    return found


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_webhook_rules_cover_jobnet_writes_and_jobrun_create_and_update(
    rendered: dict[str, list[dict[str, Any]]], value_set: str
) -> None:
    webhooks = webhooks_by_resource(rendered[value_set])
    assert set(webhooks) == {"jobnets", "jobruns", "jobschedules", "jobcalendars"}
    assert sorted(webhooks["jobnets"]["rules"][0]["operations"]) == ["CREATE", "DELETE", "UPDATE"]
    assert webhooks["jobschedules"]["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert sorted(webhooks["jobcalendars"]["rules"][0]["operations"]) == ["CREATE", "DELETE", "UPDATE"]
    assert webhooks["jobschedules"]["clientConfig"]["service"]["path"] == "/validate-jobschedule"
    assert webhooks["jobcalendars"]["clientConfig"]["service"]["path"] == "/validate-jobcalendar"
    assert webhooks["jobruns"]["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert webhooks["jobnets"]["clientConfig"]["service"]["path"] == JOBNET_WEBHOOK_PATH
    assert webhooks["jobruns"]["clientConfig"]["service"]["path"] == JOBRUN_WEBHOOK_PATH
    names = [w["name"] for w in webhooks.values()]
    assert len(set(names)) == len(webhooks) and all(name.count(".") >= 2 for name in names)
    for webhook in webhooks.values():
        assert webhook["failurePolicy"] == "Fail"
        assert webhook["sideEffects"] == "None"
        assert webhook["admissionReviewVersions"] == ["v1"]
        assert 1 <= webhook["timeoutSeconds"] <= 30


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_chart_webhook_is_an_endpoint_the_operator_serves(
    rendered: dict[str, list[dict[str, Any]]], value_set: str
) -> None:
    """The operator answers a path no endpoint has with 404 (the write then fails): the chart's
    paths, kinds and operations are exactly the operator's endpoint table."""
    served = {(e.path, e.plural, tuple(sorted(e.operations)), e.mutating) for e in ENDPOINTS}
    configured = {
        (webhook["clientConfig"]["service"]["path"], plural, tuple(sorted(webhook["rules"][0]["operations"])), mutating)
        for kind, mutating in (("ValidatingWebhookConfiguration", False), ("MutatingWebhookConfiguration", True))
        for plural, webhook in webhooks_by_resource(rendered[value_set], kind).items()
    }
    assert configured == served


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_mutating_webhook_stamps_jobrun_writes_through_the_same_service(
    rendered: dict[str, list[dict[str, Any]]], value_set: str
) -> None:
    objects = rendered[value_set]
    (mutating,) = webhooks_by_resource(objects, "MutatingWebhookConfiguration").values()
    validating = webhooks_by_resource(objects)["jobruns"]
    assert mutating["name"] == "jobruns.mutate.jobnet.dev"
    assert mutating["rules"][0]["resources"] == ["jobruns"]
    assert mutating["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert mutating["clientConfig"]["service"]["path"] == JOBRUN_MUTATING_WEBHOOK_PATH
    assert mutating["sideEffects"] == "None" and mutating["admissionReviewVersions"] == ["v1"]
    assert mutating["reinvocationPolicy"] == "IfNeeded"  # stamped again after another webhook's change
    for same in ("failurePolicy", "timeoutSeconds", "namespaceSelector"):
        assert mutating[same] == validating[same], same
    assert {k: v for k, v in mutating["clientConfig"].items() if k != "service"} == {
        k: v for k, v in validating["clientConfig"].items() if k != "service"
    }  # the same CA bundle (or none)
    configurations = [one(objects, kind)["metadata"] for kind in WEBHOOK_KINDS]
    assert configurations[0] == configurations[1]  # name, labels and cert-manager's CA injection


def test_webhook_reaches_the_operators_admission_port(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["default"]
    service = next(s for s in of_kind(objects, "Service") if s["metadata"]["name"] == WEBHOOK_SERVICE)
    deployment = one(objects, "Deployment")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    operator = container(objects)
    container_ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    assert str(container_ports[port["targetPort"]]) == operator["args"][operator["args"].index("--webhook-port") + 1]
    for webhook in [w for kind in WEBHOOK_KINDS for w in webhooks_by_resource(objects, kind).values()]:
        target = webhook["clientConfig"]["service"]
        assert (target["name"], target["namespace"], target["port"]) == (WEBHOOK_SERVICE, NAMESPACE, port["port"])


def test_self_signed_mode_lets_the_operator_keep_its_certificate(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["default"]
    secret = one(objects, "Secret")
    assert secret["metadata"]["name"] == WEBHOOK_SECRET
    assert secret["type"] == "Opaque" and "data" not in secret  # filled and renewed by the operator
    for webhook in [w for kind in WEBHOOK_KINDS for w in webhooks_by_resource(objects, kind).values()]:
        assert "caBundle" not in webhook["clientConfig"]  # set by the operator (--webhook-sync-ca-bundle)
    for kind in WEBHOOK_KINDS:
        assert one(objects, kind)["metadata"]["name"] == CLUSTER_NAME
    assert "annotations" not in one(objects, "Deployment")["spec"]["template"]["metadata"]
    # Exactly what it then needs, by name.
    (secret_role,) = [r for r in of_kind(objects, "Role") if r["metadata"]["name"] == WEBHOOK_TLS_ROLE]
    assert secret_role["metadata"]["namespace"] == NAMESPACE
    assert list(rules_of(secret_role)) == [("", "secrets", frozenset({"get", "patch"}), (WEBHOOK_SECRET,))]
    (ca_role,) = [r for r in of_kind(objects, "ClusterRole") if r["metadata"]["name"] == WEBHOOK_CA_CLUSTER_ROLE]
    assert sorted(rules_of(ca_role)) == [
        ("admissionregistration.k8s.io", plural, frozenset({"get", "patch"}), (CLUSTER_NAME,))
        for plural in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")
    ]
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    for kind, role in (("RoleBinding", secret_role), ("ClusterRoleBinding", ca_role)):
        (binding,) = [b for b in of_kind(objects, kind) if b["roleRef"]["name"] == role["metadata"]["name"]]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_the_chart_renders_identically_twice(value_set: str) -> None:
    """GitOps tools (Argo CD, Flux) render offline on every sync: any difference is a change."""
    assert render(VALUE_SETS[value_set]) == render(VALUE_SETS[value_set])


@pytest.mark.parametrize("value_set", ["cert-manager", "cert-manager-cluster-issuer"])
def test_cert_manager_mode_issues_and_injects_the_certificate(
    rendered: dict[str, list[dict[str, Any]]], value_set: str
) -> None:
    objects = rendered[value_set]
    assert of_kind(objects, "Secret") == []
    assert container(objects)["args"] == [
        *OPERATOR_ARGS[:2], *CERT_MANAGER_TLS_ARGS, *OPERATOR_ARGS[OPERATOR_ARGS.index("--liveness-endpoint"):]
    ]  # fmt: skip
    assert [r["metadata"]["name"] for r in of_kind(objects, "Role")] == [LEADER_ELECTION_ROLE]  # no certificate
    certificates = {c["metadata"]["name"]: c for c in of_kind(objects, "Certificate")}
    certificate = certificates.pop(f"{FULLNAME}-webhook")
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert certificate["spec"]["secretName"] == WEBHOOK_SECRET
    assert f"{WEBHOOK_SERVICE}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert "server auth" in certificate["spec"]["usages"]
    for kind in WEBHOOK_KINDS:
        configuration = one(objects, kind)
        assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"{NAMESPACE}/{certificate['metadata']['name']}"
        )
        assert configuration["webhooks"]
        for webhook in configuration["webhooks"]:
            assert "caBundle" not in webhook["clientConfig"]
    volumes = {v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["webhook-tls"]["secret"]["secretName"] == WEBHOOK_SECRET
    issuer_ref = certificate["spec"]["issuerRef"]
    if value_set == "cert-manager":
        # As cert-manager documents a CA bootstrap: selfSigned Issuer -> CA Certificate -> CA Issuer
        # -> the serving Certificate (renewing it keeps the CA, so the injected caBundle holds).
        issuers = {i["metadata"]["name"]: i["spec"] for i in of_kind(objects, "Issuer")}
        (ca,) = certificates.values()
        assert ca["spec"]["isCA"] is True
        assert issuers[ca["spec"]["issuerRef"]["name"]] == {"selfSigned": {}}
        assert issuers[issuer_ref["name"]] == {"ca": {"secretName": ca["spec"]["secretName"]}}
        assert issuer_ref["kind"] == "Issuer" and ca["spec"]["secretName"] != WEBHOOK_SECRET
    else:
        assert of_kind(objects, "Issuer") == [] and certificates == {}
        assert issuer_ref == {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}


def test_webhook_sees_only_watched_namespaces(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for webhook in webhooks_by_resource(rendered["default"]).values():
        assert webhook["namespaceSelector"] == {}
    for webhook in webhooks_by_resource(rendered["two-namespaces"]).values():
        assert webhook["namespaceSelector"] == {
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["batch", "etl"]}]
        }


def test_webhook_namespace_selector_is_configurable() -> None:
    selector = {"matchLabels": {"jobnet.dev/enabled": "true"}}
    objects = render({"webhook": {"namespaceSelector": selector, "failurePolicy": "Ignore", "timeoutSeconds": 5}})
    for webhook in [w for kind in WEBHOOK_KINDS for w in webhooks_by_resource(objects, kind).values()]:
        assert webhook["namespaceSelector"] == selector
        assert webhook["failurePolicy"] == "Ignore"
        assert webhook["timeoutSeconds"] == 5


# --- metrics ------------------------------------------------------------------------------


def test_service_monitor_is_off_by_default(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert of_kind(rendered["default"], "ServiceMonitor") == []
    metrics = [s for s in of_kind(rendered["default"], "Service") if s["metadata"]["name"].endswith("-metrics")]
    assert [p["port"] for p in metrics[0]["spec"]["ports"]] == [9090]


def test_service_monitor_scrapes_the_metrics_port(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["metrics-monitor"]
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    metrics_service = next(s for s in of_kind(objects, "Service") if s["metadata"]["name"].endswith("-metrics"))
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics_service["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    assert ports["metrics"] == 9090


# --- every object -------------------------------------------------------------------------


CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", *WEBHOOK_KINDS}


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_objects_are_labelled_and_placed(rendered: dict[str, list[dict[str, Any]]], value_set: str) -> None:
    watched = set(VALUE_SETS[value_set].get("watchNamespaces", []))
    for obj in rendered[value_set]:
        metadata = obj["metadata"]
        assert metadata["labels"]["app.kubernetes.io/instance"] == RELEASE, obj["kind"]
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in metadata, obj["kind"]
        elif obj["kind"] in {"Role", "RoleBinding"} and metadata["name"] in (WEBHOOK_TLS_ROLE, LEADER_ELECTION_ROLE):
            assert metadata["namespace"] == NAMESPACE  # the certificate Secret, the Lease
        elif obj["kind"] in {"Role", "RoleBinding"}:
            assert metadata["namespace"] in watched
        else:
            assert metadata["namespace"] == NAMESPACE, obj["kind"]


# --- CRDs ---------------------------------------------------------------------------------


def test_chart_crds_are_the_generated_crds() -> None:
    generated = sorted((REPO / "crds").glob("*.yaml"))
    assert generated, "crds/ holds no generated CRDs: `make crds` writes them"
    for source in generated:
        copy = CHART / "crds" / source.name
        assert copy.is_file(), f"{copy.relative_to(REPO)} is missing: copy it from crds/ (make crds)"
        assert copy.read_bytes() == source.read_bytes(), f"{copy.relative_to(REPO)} differs from crds/{source.name}"
    with helm.Chart.load(CHART) as chart:
        shipped = shipped_crd_names(chart)
    assert {"jobnets.jobnet.dev", "jobruns.jobnet.dev"} <= shipped


@pytest.mark.parametrize(
    ("values", "watching"), [({}, "all namespaces"), ({"watchNamespaces": ["batch"]}, "namespaces batch")]
)
def test_notes_say_what_was_installed_and_how_to_upgrade_crds(values: dict[str, Any], watching: str) -> None:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    (notes,) = [text for template, text in manifests.items() if template.endswith("NOTES.txt")]
    assert f"Watching: {watching}" in notes
    assert f"rollout status deployment/{FULLNAME}" in notes
    assert "helm show crds" in notes and "kubectl apply --server-side" in notes
