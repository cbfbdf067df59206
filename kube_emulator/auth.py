"""Authentication and RBAC, decided per request as kube-apiserver decides them.

A request carries a bearer token: the admin's (``kubernetes-admin`` in
``system:masters``, which RBAC never refuses) or one the TokenRequest API
issued for a ServiceAccount (valid while that ServiceAccount exists). Any
other request is a 401; anonymous access is off, as with
``--anonymous-auth=false``. Everything else is allowed only by the Roles,
ClusterRoles and bindings stored in the emulator, including the bootstrap
ones a cluster starts with (discovery for every authenticated user).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import errors
from .resources import RBAC

if TYPE_CHECKING:
    from .store import ObjectStore

Obj = dict[str, Any]
ADMIN_TOKEN = "vigil-emulator-token"
AUTHENTICATED = "system:authenticated"


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...]


ADMIN = Identity("kubernetes-admin", ("system:masters", AUTHENTICATED))


@dataclass(frozen=True)
class Request:
    """What the authoriser sees: a resource request, or a path (``resource == ""``)."""

    verb: str
    path: str
    group: str = ""
    resource: str = ""
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None


def _rule(verbs: list[str], urls: list[str]) -> Obj:
    return {"verbs": verbs, "nonResourceURLs": urls}


# Bootstrap policy (what `kubectl get clusterroles` shows on a fresh cluster), trimmed
# to what clients touch: cluster-admin for system:masters, discovery for everyone.
_HEALTH = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
BOOTSTRAP_ROLES: dict[str, tuple[list[Obj], str]] = {
    "cluster-admin": (
        [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, _rule(["*"], ["*"])],
        "system:masters",
    ),
    "system:discovery": (
        [
            _rule(
                ["get"], ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", *_HEALTH]
            )
        ],
        AUTHENTICATED,
    ),
    "system:public-info-viewer": ([_rule(["get"], _HEALTH)], AUTHENTICATED),
}


def bootstrap_policy() -> Iterator[tuple[str, Obj]]:
    """(plural, body) of the bootstrap ClusterRoles and their ClusterRoleBindings."""
    for name, (rules, group) in BOOTSTRAP_ROLES.items():
        labels = {"kubernetes.io/bootstrapping": "rbac-defaults"}
        yield "clusterroles", {"metadata": {"name": name, "labels": labels}, "rules": rules}
        yield (
            "clusterrolebindings",
            {
                "metadata": {"name": name, "labels": labels},
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": name},
                "subjects": [{"apiGroup": RBAC, "kind": "Group", "name": group}],
            },
        )


class Authenticator:
    """Bearer tokens -> identities: the admin's, and ServiceAccount tokens it issued."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._accounts: dict[str, tuple[str, str, str]] = {}  # token -> (namespace, name, uid)

    def issue(self, account: Obj) -> str:
        """A token for a ServiceAccount (the TokenRequest API), bound to its uid."""
        md = account["metadata"]
        token = secrets.token_urlsafe(32)
        self._accounts[token] = (md["namespace"], md["name"], md["uid"])
        return token

    def authenticate(self, authorization: str | None) -> Identity:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and token == ADMIN_TOKEN:
            return ADMIN
        bound = self._accounts.get(token) if scheme.lower() == "bearer" else None
        if bound is not None:
            namespace, name, uid = bound
            sa = self.store.catalog.types[("", "v1", "serviceaccounts")]
            account = self.store.peek(sa, namespace, name)
            if account is not None and account["metadata"]["uid"] == uid:
                return Identity(
                    f"system:serviceaccount:{namespace}:{name}",
                    (
                        "system:serviceaccounts",
                        f"system:serviceaccounts:{namespace}",
                        AUTHENTICATED,
                    ),
                )
        raise errors.ApiError(401, "Unauthorized", "Unauthorized")


def authorize(store: ObjectStore, who: Identity, request: Request) -> None:
    """Raise the API server's 403 unless a stored RBAC rule allows the request."""
    if "system:masters" in who.groups or any(
        rule_allows(rule, request) for rule in _rules_for(store, who, request.namespace)
    ):
        return
    action = f'User "{who.user}" cannot {request.verb}'
    if not request.resource:
        raise errors.forbidden(f'forbidden: {action} path "{request.path}"')
    resource = request.resource + (f"/{request.subresource}" if request.subresource else "")
    scope = (
        f'in the namespace "{request.namespace}"' if request.namespace else "at the cluster scope"
    )
    action += f' resource "{resource}" in API group "{request.group}" {scope}'
    what = f"{request.resource}.{request.group}" if request.group else request.resource
    named = f' "{request.name}"' if request.name else ""
    details: Obj = {"kind": request.resource, **({"group": request.group} if request.group else {})}
    if request.name:
        details["name"] = request.name
    raise errors.ApiError(403, "Forbidden", f"{what}{named} is forbidden: {action}", details)


def _rules_for(store: ObjectStore, who: Identity, namespace: str | None) -> Iterator[Obj]:
    types = store.catalog.types
    cluster_roles = types[(RBAC, "v1", "clusterroles")]
    for binding in store.iter(types[(RBAC, "v1", "clusterrolebindings")]):
        if _binds(binding, who, None):
            yield from _role_rules(store, cluster_roles, None, binding)
    if namespace:
        roles = types[(RBAC, "v1", "roles")]
        for binding in store.iter(types[(RBAC, "v1", "rolebindings")], namespace):
            if _binds(binding, who, namespace):
                kind = (binding.get("roleRef") or {}).get("kind")
                if kind == "Role":
                    yield from _role_rules(store, roles, namespace, binding)
                else:
                    yield from _role_rules(store, cluster_roles, None, binding)


def _role_rules(store: ObjectStore, rt: Any, namespace: str | None, binding: Obj) -> list[Obj]:
    role = store.peek(rt, namespace, (binding.get("roleRef") or {}).get("name", ""))
    return list((role or {}).get("rules") or [])


def _binds(binding: Obj, who: Identity, namespace: str | None) -> bool:
    for subject in binding.get("subjects") or []:
        kind, name = subject.get("kind"), subject.get("name")
        if (kind == "User" and name == who.user) or (kind == "Group" and name in who.groups):
            return True
        if kind == "ServiceAccount":
            account_ns = subject.get("namespace") or namespace
            if who.user == f"system:serviceaccount:{account_ns}:{name}":
                return True
    return False


def rule_allows(rule: Obj, request: Request) -> bool:
    """RBAC's PolicyRule match: verbs, groups, resources (``*/sub``), names, URL prefixes."""
    if not _has(rule.get("verbs"), request.verb):
        return False
    if not request.resource:
        return any(
            url == request.path
            or url == "*"
            or (url.endswith("*") and request.path.startswith(url[:-1]))
            for url in rule.get("nonResourceURLs") or []
        )
    if not _has(rule.get("apiGroups"), request.group):
        return False
    combined = request.resource + (f"/{request.subresource}" if request.subresource else "")
    resources = rule.get("resources") or []
    if not (
        _has(resources, combined)
        or (request.subresource and f"*/{request.subresource}" in resources)
    ):
        return False
    names = rule.get("resourceNames") or []
    return not names or request.name in names


def _has(values: list[str] | None, wanted: str) -> bool:
    return values is not None and ("*" in values or wanted in values)
