"""Who makes a request and what they may do: bearer-token authentication, impersonation, RBAC
authorization over the stored roles and bindings (:mod:`.authorization`), the aggregation of
ClusterRoles, access reviews (``kubectl auth can-i|whoami``) and ServiceAccount tokens."""

from __future__ import annotations

import datetime
import secrets

from kmock import ResourcesArray
from multidict import MultiMapping

from jobnet.devenv.emulator.authorization import (
    ANONYMOUS_USER,
    AUTHENTICATED_GROUP,
    PRIVILEGED_GROUP,
    RBAC_GROUP,
    UNAUTHENTICATED_GROUP,
    RbacPolicy,
    Request,
    UserInfo,
    aggregated_rules,
    authorize,
    forbidden_message,
    impersonated_user,
    service_account_of,
    service_account_user,
)
from jobnet.devenv.emulator.kube import ApiError, Body, ResourceKey, clone, resource_of
from jobnet.devenv.emulator.store import Store

SERVICE_ACCOUNT_TOKEN_SECONDS = 3600  # a TokenRequest's default lifetime
SERVICE_ACCOUNT_TOKEN_MIN_SECONDS = 600  # the shortest one a real API server issues
CLUSTER_ROLES: ResourceKey = (RBAC_GROUP, "v1", "clusterroles")
RBAC_RESOURCES: frozenset[ResourceKey] = frozenset(
    (RBAC_GROUP, "v1", plural) for plural in ("roles", "clusterroles", "rolebindings", "clusterrolebindings")
)
SERVICE_ACCOUNTS: ResourceKey = ("", "v1", "serviceaccounts")


class AccessControl:
    """Authentication and authorization of the emulator's requests."""

    def __init__(self, store: Store, resources: ResourcesArray, admin_name: str, admin_token: str) -> None:
        self.store = store
        self.resources = resources
        self.admin_name = admin_name
        self.admin_token = admin_token  # the bearer token of the admin's kubeconfig
        #: What identities other than ``system:masters`` were allowed to do (username, request):
        #: what a role must grant, to compare with what it does grant.
        self.access_log: set[tuple[str, Request]] = set()
        #: What identities were refused (username, request): a missing grant.
        self.denial_log: set[tuple[str, Request]] = set()
        self._tokens: dict[str, tuple[UserInfo, datetime.datetime | None]] = {}  # -> identity, expiry
        self._policy: RbacPolicy | None = None  # rebuilt after RBAC writes

    @property
    def admin(self) -> UserInfo:
        return UserInfo(self.admin_name, (PRIVILEGED_GROUP, AUTHENTICATED_GROUP))

    def issue_token(self, user: UserInfo, lifetime: datetime.timedelta | None = None) -> str:
        """A bearer token that authenticates as ``user`` (for a test's or a person's kubeconfig)."""
        token = secrets.token_urlsafe(32)
        expiry = datetime.datetime.now(datetime.UTC) + lifetime if lifetime is not None else None
        self._tokens[token] = (user, expiry)
        return token

    def authenticate(self, headers: MultiMapping[str], *, secure: bool) -> UserInfo:
        """Who makes a request: the holder of its bearer token; without credentials, the admin on
        the plain-HTTP port (like the old loopback-only insecure port) and ``system:anonymous``
        on the secure one."""
        credentials = headers.get("Authorization", "")
        if not credentials:
            return self.admin if not secure else UserInfo(ANONYMOUS_USER, (UNAUTHENTICATED_GROUP,))
        scheme, _, token = credentials.partition(" ")
        if scheme.lower() == "bearer":
            if token == self.admin_token:
                return self.admin
            user, expiry = self._tokens.get(token, (None, None))
            if user is not None and (expiry is None or expiry > datetime.datetime.now(datetime.UTC)):
                if self._token_holder_exists(user):
                    return user
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def _token_holder_exists(self, user: UserInfo) -> bool:
        """A ServiceAccount's token is valid only while that very ServiceAccount exists."""
        account = service_account_of(user.username)
        if account is None:
            return True
        stored = self.store.objects.get((SERVICE_ACCOUNTS, account[0], account[1]))
        return stored is not None and stored["metadata"]["uid"] == user.uid

    def impersonate(self, actor: UserInfo, headers: MultiMapping[str]) -> UserInfo:
        """Whom the request acts as (``kubectl --as/--as-group``): allowed by the ``impersonate`` verb."""
        username = headers.get("Impersonate-User", "")
        groups = headers.getall("Impersonate-Group", [])
        uid = headers.get("Impersonate-Uid", "")
        if not username:
            if groups or uid:
                raise ApiError(
                    500,
                    "InternalError",
                    "Internal error occurred: requested impersonation without impersonating a user",
                )
            return actor
        account = service_account_of(username)
        checks = [
            Request("impersonate", "", "serviceaccounts", namespace=account[0], name=account[1])
            if account is not None
            else Request("impersonate", "", "users", name=username),
            *(Request("impersonate", "", "groups", name=group) for group in groups),
            *([Request("impersonate", "authentication.k8s.io", "uids", name=uid)] if uid else []),
        ]
        for check in checks:
            self.authorize(actor, check)
        return impersonated_user(username, groups, uid)

    def policy(self) -> RbacPolicy:
        if self._policy is None:
            self._policy = RbacPolicy.of(obj for rkey in RBAC_RESOURCES for obj in self.store.objects_of(rkey, None))
        return self._policy

    def authorize(self, user: UserInfo, request: Request) -> None:
        decision = authorize(user, request, self.policy())
        if not decision.allowed:
            self.denial_log.add((user.username, request))
            details = {"name": request.name, "group": request.api_group, "kind": request.resource}
            raise ApiError(
                403,
                "Forbidden",
                forbidden_message(user, request, decision.reason),
                {key: value for key, value in details.items() if value} if request.resource_request else {},
            )
        if PRIVILEGED_GROUP not in user.groups:
            self.access_log.add((user.username, request))

    def rbac_changed(self, rkey: ResourceKey) -> None:
        self._policy = None
        if rkey == CLUSTER_ROLES:  # what the aggregation controller does
            roles = self.store.objects_of(CLUSTER_ROLES, None)
            for role in roles:
                rules = aggregated_rules(role, roles)
                if rules is not None and rules != (role.get("rules") or []):
                    updated = clone(role)
                    updated["rules"] = rules
                    self.store.commit(CLUSTER_ROLES, None, role["metadata"]["name"], updated, "MODIFIED")
                    return  # that commit aggregated again, with this role's new rules

    def token_request(self, namespace: str, name: str, data: Body) -> Body:
        """``kubectl create token NAME``: a token of the ServiceAccount, valid while it exists."""
        account = self.store.get_or_404(SERVICE_ACCOUNTS, namespace, name)
        spec = data.get("spec") or {}
        seconds = max(
            int(spec.get("expirationSeconds") or SERVICE_ACCOUNT_TOKEN_SECONDS), SERVICE_ACCOUNT_TOKEN_MIN_SECONDS
        )
        lifetime = datetime.timedelta(seconds=seconds)
        token = self.issue_token(service_account_user(namespace, name, account["metadata"]["uid"]), lifetime)
        expiry = datetime.datetime.now(datetime.UTC) + lifetime
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
            "spec": {
                **spec,
                "audiences": spec.get("audiences") or ["https://kubernetes.default.svc"],
                "expirationSeconds": seconds,
            },
            "status": {"token": token, "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")},
        }

    def review(self, rkey: ResourceKey, namespace: str | None, data: Body, user: UserInfo) -> Body:
        """Answer a SelfSubjectReview, a (Self/Local)SubjectAccessReview or a SelfSubjectRulesReview."""
        info = self.resources[resource_of(*rkey)]
        group, version, plural = rkey
        reply = {**data, "apiVersion": f"{group}/{version}", "kind": info.kind}
        reply["metadata"] = {**(data.get("metadata") or {}), "creationTimestamp": None}
        spec = data.get("spec") or {}
        if plural == "selfsubjectreviews":
            return {**reply, "status": {"userInfo": user.review()}}
        if plural == "selfsubjectrulesreviews":
            return {**reply, "status": self._rules_review(user, spec.get("namespace") or "")}
        subject = user
        if plural != "selfsubjectaccessreviews":
            if not spec.get("user") and not spec.get("groups"):
                raise ApiError(
                    422,
                    "Invalid",
                    f'{info.kind}.{group} "" is invalid: spec.user: Invalid value: "": '
                    "at least one of user or group must be specified",
                )
            subject = UserInfo(spec.get("user") or "", tuple(spec.get("groups") or ()), spec.get("uid") or "")
        resource_attributes: Body | None = spec.get("resourceAttributes")
        non_resource: Body = spec.get("nonResourceAttributes") or {}
        if (resource_attributes is None) == (not non_resource):
            raise ApiError(
                422,
                "Invalid",
                f'{info.kind}.{group} "" is invalid: spec.resourceAttributes: Invalid value: "null": '
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )
        if resource_attributes is not None:
            request = Request(
                resource_attributes.get("verb") or "",
                resource_attributes.get("group") or "",
                resource_attributes.get("resource") or "",
                resource_attributes.get("subresource") or "",
                namespace or ""
                if plural == "localsubjectaccessreviews"
                else resource_attributes.get("namespace") or "",
                resource_attributes.get("name") or "",
            )
        else:
            request = Request(
                non_resource.get("verb") or "", path=non_resource.get("path") or "", resource_request=False
            )
        decision = authorize(subject, request, self.policy())
        return {
            **reply,
            "status": {"allowed": decision.allowed, **({"reason": decision.reason} if decision.reason else {})},
        }

    def _rules_review(self, user: UserInfo, namespace: str) -> Body:
        """What ``kubectl auth can-i --list`` shows: every rule that applies in the namespace."""
        if PRIVILEGED_GROUP in user.groups:
            rules = [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ]
            errors: list[str] = []
        else:
            grants, errors = self.policy().grants(user, namespace)
            rules = [grant.rule for grant in grants]
        return {
            "resourceRules": [rule for rule in rules if "nonResourceURLs" not in rule],
            "nonResourceRules": [rule for rule in rules if "nonResourceURLs" in rule],
            "incomplete": bool(errors),
            **({"evaluationError": ", ".join(errors)} if errors else {}),
        }
