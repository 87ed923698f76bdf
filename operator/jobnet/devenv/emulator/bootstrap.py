"""The RBAC objects every real cluster starts with (a compact subset of Kubernetes' bootstrap policy).

``cluster-admin`` for ``system:masters``; discovery, ``kubectl auth can-i``/``whoami`` and the
version for every authenticated user; the user-facing ``admin``/``edit``/``view`` ClusterRoles,
aggregated from any ClusterRole labelled ``rbac.authorization.k8s.io/aggregate-to-<role>:
"true"`` (so a chart's aggregated roles show up in them as on a real cluster), seeded with the
core rules of the real ``system:aggregate-to-*`` roles for the resources tests use.
"""

from __future__ import annotations

from typing import Any

from jobnet.devenv.emulator.authorization import (
    AUTHENTICATED_GROUP,
    PRIVILEGED_GROUP,
    RBAC_GROUP,
    UNAUTHENTICATED_GROUP,
)

Body = dict[str, Any]

READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]
BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}


def _cluster_role(name: str, rules: list[Body], labels: dict[str, str] | None = None, **extra: Any) -> Body:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {**BOOTSTRAP_LABELS, **(labels or {})}},
        "rules": rules,
        **extra,
    }


def _aggregate_to(role: str) -> dict[str, str]:
    return {f"{RBAC_GROUP}/aggregate-to-{role}": "true"}


def _aggregated(name: str, labels: dict[str, str] | None = None) -> Body:
    return _cluster_role(
        name, [], labels, aggregationRule={"clusterRoleSelectors": [{"matchLabels": _aggregate_to(name)}]}
    )


def _binding(name: str, role: str, *groups: str) -> Body:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": dict(BOOTSTRAP_LABELS)},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": group} for group in groups],
    }


CORE_READABLE = [
    "configmaps",
    "endpoints",
    "events",
    "limitranges",
    "namespaces",
    "persistentvolumeclaims",
    "pods",
    "pods/log",
    "pods/status",
    "replicationcontrollers",
    "resourcequotas",
    "serviceaccounts",
    "services",
]
CORE_WRITABLE = [
    "configmaps",
    "endpoints",
    "persistentvolumeclaims",
    "pods",
    "replicationcontrollers",
    "secrets",
    "serviceaccounts",
    "services",
]

BOOTSTRAP_OBJECTS: list[Body] = [
    _cluster_role(
        "cluster-admin",
        [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ],
    ),
    _cluster_role(
        "system:discovery",
        [
            {
                "nonResourceURLs": [
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                ]
                + ["/readyz", "/version", "/version/"],
                "verbs": ["get"],
            }
        ],
    ),
    _cluster_role(
        "system:basic-user",
        [
            {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews"], "verbs": ["create"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectrulesreviews"], "verbs": ["create"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
        ],
    ),
    _cluster_role(
        "system:public-info-viewer",
        [{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}],
    ),
    _aggregated("admin"),
    _aggregated("edit", _aggregate_to("admin")),
    _aggregated("view", _aggregate_to("edit")),
    _cluster_role(
        "system:aggregate-to-admin",
        [
            {"apiGroups": [RBAC_GROUP], "resources": ["rolebindings", "roles"], "verbs": READ + WRITE},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]},
        ],
        _aggregate_to("admin"),
    ),
    _cluster_role(
        "system:aggregate-to-edit",
        [
            {"apiGroups": [""], "resources": CORE_WRITABLE, "verbs": WRITE},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": READ},
            {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
        ],
        _aggregate_to("edit"),
    ),
    _cluster_role(
        "system:aggregate-to-view",
        [{"apiGroups": [""], "resources": CORE_READABLE, "verbs": READ}],
        _aggregate_to("view"),
    ),
    _binding("cluster-admin", "cluster-admin", PRIVILEGED_GROUP),
    _binding("system:discovery", "system:discovery", AUTHENTICATED_GROUP),
    _binding("system:basic-user", "system:basic-user", AUTHENTICATED_GROUP),
    _binding("system:public-info-viewer", "system:public-info-viewer", AUTHENTICATED_GROUP, UNAUTHENTICATED_GROUP),
]
