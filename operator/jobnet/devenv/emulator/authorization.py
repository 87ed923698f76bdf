"""RBAC authorization as a real API server does it (pure: no I/O, no storage, no clock).

The emulator hands each request's identity and attributes to :func:`authorize` together with
the Role, ClusterRole, RoleBinding and ClusterRoleBinding objects it stores (an
:class:`RbacPolicy`), and answers 403 with :func:`forbidden_message` when nothing allows it.
The rules follow Kubernetes' ``plugin/pkg/auth/authorizer/rbac`` and
``pkg/apis/rbac/v1/evaluation_helpers.go``: ``*`` wildcards, ``*/subresource``, resourceNames,
nonResourceURLs with a trailing ``*``, ServiceAccount subjects defaulting to the binding's
namespace, and ``system:masters`` allowed everything before RBAC is consulted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

Body = dict[str, Any]

PRIVILEGED_GROUP = "system:masters"
AUTHENTICATED_GROUP = "system:authenticated"
UNAUTHENTICATED_GROUP = "system:unauthenticated"
ANONYMOUS_USER = "system:anonymous"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"
RBAC_GROUP = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class UserInfo:
    """An authenticated (or impersonated) identity."""

    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""

    def review(self) -> Body:
        """The ``userInfo`` of AdmissionReviews and SelfSubjectReviews."""
        return {"username": self.username, "groups": list(self.groups), **({"uid": self.uid} if self.uid else {})}


def service_account_user(namespace: str, name: str, uid: str = "") -> UserInfo:
    """The identity a ServiceAccount's token authenticates as."""
    return UserInfo(
        f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}",
        (SERVICE_ACCOUNTS_GROUP, f"{SERVICE_ACCOUNTS_GROUP}:{namespace}", AUTHENTICATED_GROUP),
        uid,
    )


def service_account_of(username: str) -> tuple[str, str] | None:
    """``(namespace, name)`` of a ServiceAccount username, else None."""
    if not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    namespace, _, name = username.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
    return (namespace, name) if namespace and name and ":" not in name else None


def impersonated_user(username: str, groups: Iterable[str], uid: str = "") -> UserInfo:
    """Whom a request impersonates: the groups asked for plus those the API server adds."""
    wanted = list(groups)
    service_account = service_account_of(username)
    if service_account is not None and not wanted:
        wanted = [SERVICE_ACCOUNTS_GROUP, f"{SERVICE_ACCOUNTS_GROUP}:{service_account[0]}"]
    added = UNAUTHENTICATED_GROUP if username == ANONYMOUS_USER else AUTHENTICATED_GROUP
    return UserInfo(username, (*wanted, *([added] if added not in wanted else [])), uid)


@dataclass(frozen=True)
class Request:
    """What is asked (Kubernetes' ``authorizer.Attributes``)."""

    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # of a non-resource request
    resource_request: bool = True

    @property
    def qualified_resource(self) -> str:
        return f"{self.resource}.{self.api_group}" if self.api_group else self.resource


def forbidden_message(user: UserInfo, request: Request, reason: str = "") -> str:
    """The message of a real API server's 403 (``responsewriters.Forbidden`` + ``NewForbidden``)."""
    if not request.resource_request:
        return f'forbidden: User "{user.username}" cannot {request.verb} path "{request.path}"' + (
            f": {reason}" if reason else ""
        )
    combined = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
    scope = f'in the namespace "{request.namespace}"' if request.namespace else "at the cluster scope"
    why = (
        f'User "{user.username}" cannot {request.verb} resource "{combined}" '
        f'in API group "{request.api_group}" {scope}' + (f": {reason}" if reason else "")
    )
    subject = f'{request.qualified_resource} "{request.name}"' if request.name else request.qualified_resource
    return f"{subject} is forbidden: {why}"


# --- rules ----------------------------------------------------------------------------------


def _verb_matches(rule: Mapping[str, Any], verb: str) -> bool:
    verbs = rule.get("verbs") or []
    return "*" in verbs or verb in verbs


def _group_matches(rule: Mapping[str, Any], group: str) -> bool:
    groups = rule.get("apiGroups") or []
    return "*" in groups or group in groups


def _resource_matches(rule: Mapping[str, Any], resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for ruled in rule.get("resources") or []:
        if ruled in ("*", combined) or (subresource and ruled == f"*/{subresource}"):
            return True
    return False


def _name_matches(rule: Mapping[str, Any], name: str) -> bool:
    names = rule.get("resourceNames") or []
    return not names or name in names


def _url_matches(rule: Mapping[str, Any], path: str) -> bool:
    for url in rule.get("nonResourceURLs") or []:
        if url in ("*", path) or (url.endswith("*") and path.startswith(url.rstrip("*"))):
            return True
    return False


def rule_allows(rule: Mapping[str, Any], request: Request) -> bool:
    """Whether one PolicyRule allows the request (``RuleAllows``)."""
    if not _verb_matches(rule, request.verb):
        return False
    if not request.resource_request:
        return _url_matches(rule, request.path)
    return (
        _group_matches(rule, request.api_group)
        and _resource_matches(rule, request.resource, request.subresource)
        and _name_matches(rule, request.name)
    )


# --- label selectors (aggregation) ----------------------------------------------------------


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A ``metav1.LabelSelector`` (matchLabels, matchExpressions) against labels; empty matches all."""
    selector = selector or {}
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key", ""), expression.get("operator", ""), expression.get("values")
        present = key in labels
        if operator == "In" and not (present and labels[key] in (values or [])):
            return False
        if operator == "NotIn" and present and labels[key] in (values or []):
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"{operator!r} is not a valid label selector operator")
    return True


def aggregated_rules(role: Mapping[str, Any], cluster_roles: Iterable[Mapping[str, Any]]) -> list[Body] | None:
    """The rules the aggregation controller writes into an aggregated ClusterRole (None if ``role``
    is not aggregated): those of every other ClusterRole a selector matches, by name, without repeats."""
    selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors")
    if selectors is None:
        return None
    own_name = role["metadata"]["name"]
    others = sorted(
        (other for other in cluster_roles if other["metadata"]["name"] != own_name),
        key=lambda other: str(other["metadata"]["name"]),
    )
    rules: list[Body] = []
    for selector in selectors:
        for other in others:
            if selector_matches(selector, other["metadata"].get("labels") or {}):
                rules += [rule for rule in other.get("rules") or [] if rule not in rules]
    return rules


# --- the policy -----------------------------------------------------------------------------


def _subject_applies(subject: Mapping[str, Any], user: UserInfo, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "User":
        return bool(user.username == name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return bool(namespace) and user.username == f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"
    return False


@dataclass(frozen=True)
class Grant:
    """One rule that applies to a user, and where it comes from (for ``reason`` texts)."""

    rule: Body
    source: str  # e.g. 'RoleBinding "x" of ClusterRole "y" to User "u"'


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


@dataclass
class RbacPolicy:
    """The RBAC objects an API server stores, indexed for authorization."""

    cluster_roles: dict[str, Body] = field(default_factory=dict)
    roles: dict[tuple[str, str], Body] = field(default_factory=dict)
    cluster_role_bindings: list[Body] = field(default_factory=list)
    role_bindings: dict[str, list[Body]] = field(default_factory=dict)

    @classmethod
    def of(cls, objects: Iterable[Mapping[str, Any]]) -> RbacPolicy:
        policy = cls()
        for obj in objects:
            meta = obj.get("metadata") or {}
            kind = obj.get("kind")
            if kind == "ClusterRole":
                policy.cluster_roles[meta["name"]] = dict(obj)
            elif kind == "Role":
                policy.roles[(meta.get("namespace", ""), meta["name"])] = dict(obj)
            elif kind == "ClusterRoleBinding":
                policy.cluster_role_bindings.append(dict(obj))
            elif kind == "RoleBinding":
                policy.role_bindings.setdefault(meta.get("namespace", ""), []).append(dict(obj))
        return policy

    def _role_rules(self, binding: Mapping[str, Any], namespace: str) -> tuple[list[Body], str]:
        """The rules of a binding's roleRef, or an error text if the role does not exist."""
        ref = binding.get("roleRef") or {}
        kind, name = ref.get("kind", ""), ref.get("name", "")
        role = self.cluster_roles.get(name) if kind == "ClusterRole" else self.roles.get((namespace, name))
        if role is None:
            plural = "clusterrole" if kind == "ClusterRole" else "role"
            return [], f'{plural}.{RBAC_GROUP} "{name}" not found'
        return list(role.get("rules") or []), ""

    def grants(self, user: UserInfo, namespace: str) -> tuple[list[Grant], list[str]]:
        """Every rule that applies to ``user`` in ``namespace`` ("" = cluster scope), and the errors
        met on the way (bindings to missing roles), as ``VisitRulesFor`` visits them."""
        found: list[Grant] = []
        errors: list[str] = []
        scopes: list[tuple[str, Iterable[Body]]] = [("", self.cluster_role_bindings)]
        if namespace:
            scopes.append((namespace, self.role_bindings.get(namespace, ())))
        for scope, bindings in scopes:
            for binding in bindings:
                subject = next(
                    (s for s in binding.get("subjects") or [] if _subject_applies(s, user, scope)),
                    None,
                )
                if subject is None:
                    continue
                rules, error = self._role_rules(binding, scope)
                if error:
                    errors.append(error)
                    continue
                ref = binding.get("roleRef") or {}
                where = f" in {scope}" if scope else ""
                source = (
                    f'{binding.get("kind")} "{binding["metadata"]["name"]}"{where} of {ref.get("kind")} '
                    f'"{ref.get("name")}" to {subject.get("kind")} "{subject.get("name")}"'
                )
                found += [Grant(rule, source) for rule in rules]
        return found, errors


def authorize(user: UserInfo, request: Request, policy: RbacPolicy) -> Decision:
    """Allow or deny a request as a real API server (privileged group, then RBAC) does."""
    if PRIVILEGED_GROUP in user.groups:
        return Decision(True, f"{PRIVILEGED_GROUP} may do anything")
    grants, errors = policy.grants(user, request.namespace)
    for grant in grants:
        if rule_allows(grant.rule, request):
            return Decision(True, f"RBAC: allowed by {grant.source}")
    return Decision(False, f"RBAC: {', '.join(errors)}" if errors else "")


# --- what was used --------------------------------------------------------------------------


def rule_permissions(rule: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """The ``(apiGroup, resource, verb)`` triples of a resource rule (nonResourceURLs: ``("", url, verb)``)."""
    for verb in rule.get("verbs") or []:
        for url in rule.get("nonResourceURLs") or []:
            yield ("", url, verb)
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                yield (group, resource, verb)


def unused_permissions(rules: Iterable[Mapping[str, Any]], used: Iterable[Request]) -> set[tuple[str, str, str]]:
    """The ``(apiGroup, resource, verb)`` triples of ``rules`` that no request in ``used`` needed."""
    requests = list(used)
    unused = set()
    for rule in rules:
        for group, resource, verb in rule_permissions(rule):
            narrowed = {**rule, "verbs": [verb], "apiGroups": [group], "resources": [resource]}
            if "nonResourceURLs" in rule:
                narrowed = {"verbs": [verb], "nonResourceURLs": [resource]}
            if not any(rule_allows(narrowed, request) for request in requests):
                unused.add((group, resource, verb))
    return unused
