"""The emulator's RBAC evaluation (pure): rules, subjects, scopes, aggregation, messages."""

from __future__ import annotations

from typing import Any

import pytest

from jobnet.devenv.emulator.authorization import (
    RbacPolicy,
    Request,
    UserInfo,
    aggregated_rules,
    authorize,
    forbidden_message,
    impersonated_user,
    rule_allows,
    selector_matches,
    service_account_user,
    unused_permissions,
)

ALICE = UserInfo("alice", ("ops", "system:authenticated"))
PATCH_RUN = Request("patch", "jobnet.dev", "jobruns", namespace="batch", name="nightly-1")


def rule(verbs: list[str], resources: list[str], groups: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "apiGroups": groups if groups is not None else ["jobnet.dev"],
        "resources": resources,
        "verbs": verbs,
        **extra,
    }


def role(kind: str, name: str, rules: list[dict[str, Any]], namespace: str = "", **extra: Any) -> dict[str, Any]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": kind, "metadata": meta, "rules": rules, **extra}


def binding(
    kind: str, name: str, role_kind: str, role_name: str, subjects: list[dict[str, str]], namespace: str = ""
) -> dict[str, Any]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": kind, "metadata": meta, "roleRef": {"kind": role_kind, "name": role_name}, "subjects": subjects}


@pytest.mark.parametrize(
    ("granted", "allowed"),
    [
        (rule(["patch"], ["jobruns"]), True),
        (rule(["*"], ["jobruns"]), True),
        (rule(["patch"], ["*"]), True),
        (rule(["patch"], ["jobruns"], ["*"]), True),
        (rule(["get", "list"], ["jobruns"]), False),
        (rule(["patch"], ["jobnets"]), False),
        (rule(["patch"], ["jobruns"], [""]), False),
        (rule(["patch"], ["jobruns/status"]), False),  # a subresource is not its resource
        (rule(["patch"], ["jobruns"], resourceNames=["nightly-1"]), True),
        (rule(["patch"], ["jobruns"], resourceNames=["other"]), False),
    ],
)
def test_rule_matching_of_verbs_groups_resources_and_names(granted: dict[str, Any], allowed: bool) -> None:
    assert rule_allows(granted, PATCH_RUN) is allowed


def test_subresources_match_exactly_or_by_star_slash() -> None:
    status = Request("patch", "jobnet.dev", "jobruns", "status", "batch", "nightly-1")
    assert rule_allows(rule(["patch"], ["jobruns/status"]), status)
    assert rule_allows(rule(["patch"], ["*/status"]), status)
    assert rule_allows(rule(["patch"], ["*"]), status)
    assert not rule_allows(rule(["patch"], ["jobruns"]), status)
    assert not rule_allows(rule(["patch"], ["*/scale"]), status)


def test_a_resource_names_rule_never_allows_a_list_or_a_create() -> None:
    named = rule(["get", "list", "create"], ["secrets"], [""], resourceNames=["vm1-ssh"])
    assert rule_allows(named, Request("get", "", "secrets", namespace="batch", name="vm1-ssh"))
    assert not rule_allows(named, Request("list", "", "secrets", namespace="batch"))
    assert not rule_allows(named, Request("create", "", "secrets", namespace="batch"))


def test_non_resource_urls_match_exactly_or_by_prefix_star() -> None:
    discovery = {"nonResourceURLs": ["/apis/*", "/version"], "verbs": ["get"]}
    assert rule_allows(discovery, Request("get", path="/apis/jobnet.dev/v1alpha1", resource_request=False))
    assert rule_allows(discovery, Request("get", path="/version", resource_request=False))
    assert not rule_allows(discovery, Request("get", path="/metrics", resource_request=False))
    assert not rule_allows(discovery, Request("post", path="/version", resource_request=False))
    assert not rule_allows(rule(["*"], ["*"], ["*"]), Request("get", path="/version", resource_request=False))


def test_system_masters_may_do_anything_without_any_binding() -> None:
    admin = UserInfo("kubernetes-admin", ("system:masters", "system:authenticated"))
    assert authorize(admin, PATCH_RUN, RbacPolicy()).allowed
    assert not authorize(ALICE, PATCH_RUN, RbacPolicy()).allowed


def test_a_role_binding_grants_only_in_its_namespace_and_a_cluster_role_binding_everywhere() -> None:
    policy = RbacPolicy.of(
        [
            role("ClusterRole", "run-editor", [rule(["patch"], ["jobruns"])]),
            binding("RoleBinding", "ops", "ClusterRole", "run-editor", [{"kind": "Group", "name": "ops"}], "batch"),
        ]
    )
    assert authorize(ALICE, PATCH_RUN, policy).allowed
    assert not authorize(ALICE, Request("patch", "jobnet.dev", "jobruns", namespace="etl", name="x"), policy).allowed
    assert not authorize(ALICE, Request("list", "jobnet.dev", "jobruns"), policy).allowed  # all namespaces

    policy.cluster_role_bindings.append(
        binding("ClusterRoleBinding", "alice", "ClusterRole", "run-editor", [{"kind": "User", "name": "alice"}])
    )
    decision = authorize(ALICE, Request("patch", "jobnet.dev", "jobruns", namespace="etl", name="x"), policy)
    assert decision.allowed
    assert decision.reason == (
        'RBAC: allowed by ClusterRoleBinding "alice" of ClusterRole "run-editor" to User "alice"'
    )


def test_service_account_subjects_default_to_the_binding_namespace_and_have_their_groups() -> None:
    operator = service_account_user("jobnet-system", "jobnet-operator")
    assert operator.username == "system:serviceaccount:jobnet-system:jobnet-operator"
    assert operator.groups == (
        "system:serviceaccounts",
        "system:serviceaccounts:jobnet-system",
        "system:authenticated",
    )
    reader = role("Role", "reader", [rule(["get"], ["jobruns"])], "jobnet-system")
    local = binding(
        "RoleBinding",
        "local",
        "Role",
        "reader",
        [{"kind": "ServiceAccount", "name": "jobnet-operator"}],
        "jobnet-system",
    )
    get_here = Request("get", "jobnet.dev", "jobruns", namespace="jobnet-system", name="x")
    assert authorize(operator, get_here, RbacPolicy.of([reader, local])).allowed
    stranger = service_account_user("other", "jobnet-operator")
    assert not authorize(stranger, get_here, RbacPolicy.of([reader, local])).allowed
    every_account = binding(
        "RoleBinding", "all", "Role", "reader", [{"kind": "Group", "name": "system:serviceaccounts"}], "jobnet-system"
    )
    assert authorize(stranger, get_here, RbacPolicy.of([reader, every_account])).allowed


def test_a_binding_to_a_missing_role_says_so_in_the_denial() -> None:
    policy = RbacPolicy.of(
        [binding("RoleBinding", "ops", "Role", "gone", [{"kind": "User", "name": "alice"}], "batch")]
    )
    decision = authorize(ALICE, PATCH_RUN, policy)
    assert not decision.allowed
    assert forbidden_message(ALICE, PATCH_RUN, decision.reason) == (
        'jobruns.jobnet.dev "nightly-1" is forbidden: User "alice" cannot patch resource "jobruns" in API group '
        '"jobnet.dev" in the namespace "batch": RBAC: role.rbac.authorization.k8s.io "gone" not found'
    )


def test_forbidden_messages_read_like_a_real_api_servers() -> None:
    assert forbidden_message(ALICE, Request("list", "", "secrets")) == (
        'secrets is forbidden: User "alice" cannot list resource "secrets" in API group "" at the cluster scope'
    )
    status = Request("patch", "jobnet.dev", "jobruns", "status", "batch", "r")
    assert forbidden_message(ALICE, status) == (
        'jobruns.jobnet.dev "r" is forbidden: User "alice" cannot patch resource "jobruns/status" in API group '
        '"jobnet.dev" in the namespace "batch"'
    )
    assert forbidden_message(ALICE, Request("get", path="/metrics", resource_request=False)) == (
        'forbidden: User "alice" cannot get path "/metrics"'
    )


def test_impersonated_identities_get_the_groups_the_api_server_adds() -> None:
    assert impersonated_user("alice", ["ops"]).groups == ("ops", "system:authenticated")
    account = impersonated_user("system:serviceaccount:batch:runner", [])
    assert account.groups == ("system:serviceaccounts", "system:serviceaccounts:batch", "system:authenticated")
    assert impersonated_user("system:anonymous", []).groups == ("system:unauthenticated",)


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ({}, True),
        ({"matchLabels": {"team": "etl"}}, True),
        ({"matchLabels": {"team": "ops"}}, False),
        ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["etl", "ops"]}]}, True),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["etl"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, True),
    ],
)
def test_label_selectors(selector: dict[str, Any], matches: bool) -> None:
    assert selector_matches(selector, {"team": "etl"}) is matches


def test_an_aggregated_cluster_role_collects_the_rules_of_the_roles_its_selectors_match() -> None:
    view = role("ClusterRole", "view", [], aggregationRule={"clusterRoleSelectors": [{"matchLabels": {"v": "1"}}]})
    runs = role("ClusterRole", "b-runs", [rule(["get"], ["jobruns"])])
    nets = role("ClusterRole", "a-nets", [rule(["get"], ["jobnets"]), rule(["get"], ["jobruns"])])
    runs["metadata"]["labels"] = nets["metadata"]["labels"] = {"v": "1"}
    unlabelled = role("ClusterRole", "c-secrets", [rule(["get"], ["secrets"], [""])])

    # by name, without repeats, never its own rules
    assert aggregated_rules(view, [view, runs, nets, unlabelled]) == [
        rule(["get"], ["jobnets"]),
        rule(["get"], ["jobruns"]),
    ]
    assert aggregated_rules(runs, [view, runs]) is None  # not aggregated


def test_unused_permissions_are_those_no_recorded_request_needed() -> None:
    rules = [
        rule(["get", "list", "watch", "patch"], ["jobruns"]),
        rule(["patch"], ["jobruns/status"]),
        rule(["get"], ["secrets"], [""], resourceNames=["vm1-ssh"]),
    ]
    used = [
        Request("list", "jobnet.dev", "jobruns"),
        Request("watch", "jobnet.dev", "jobruns"),
        Request("patch", "jobnet.dev", "jobruns", "status", "batch", "r"),
        Request("get", "", "secrets", namespace="batch", name="other-ssh"),  # allowed elsewhere, not by this rule
    ]
    assert unused_permissions(rules, used) == {
        ("jobnet.dev", "jobruns", "get"),
        ("jobnet.dev", "jobruns", "patch"),
        ("", "secrets", "get"),
    }
