"""The discovery documents of an API server (``/``, ``/version``, ``/api``, ``/apis``, a group, a
group version), rendered from a catalogue of resources (kmock's bundled one plus the CRDs).

Pure: the catalogue is passed in. Versions are listed in the order they were registered, the
first one preferred.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jobnet.devenv.emulator.kube import ApiError, Body, ResourceKey

SERVER_VERSION: Body = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0-jobnet-emulator",
    "gitCommit": "",
    "gitTreeState": "clean",
    "buildDate": "2024-04-17T00:00:00Z",
    "goVersion": "go1.22.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}
#: What a subresource supports (the emulator serves ``status``, and ``token`` of ServiceAccounts).
SUBRESOURCE_VERBS = {"status": ["get", "patch", "update"], "token": ["create"]}


#: The resources served: (group, version, plural) -> kmock's ResourceInfo (kind, singular,
#: namespaced, verbs, shortnames, categories, subresources), in the order they were registered.
Catalogue = Mapping[ResourceKey, Any]


def versions(catalogue: Catalogue) -> dict[str, list[str]]:
    """Each API group's versions (the core group is "")."""
    found: dict[str, list[str]] = {}
    for group, version, _ in catalogue:
        if version not in found.setdefault(group, []):
            found[group].append(version)
    return found


def root(catalogue: Catalogue) -> Body:
    paths = {"/api", "/apis", "/version"}
    for group, served in versions(catalogue).items():
        for version in served:
            paths |= {f"/api/{version}"} if not group else {f"/apis/{group}", f"/apis/{group}/{version}"}
    return {"paths": sorted(paths)}


def api_versions() -> Body:
    return {"kind": "APIVersions", "versions": ["v1"]}


def _group(name: str, versions: Iterable[str]) -> Body:
    listed = [{"groupVersion": f"{name}/{version}", "version": version} for version in versions]
    return {"name": name, "preferredVersion": listed[0], "versions": listed}


def api_groups(catalogue: Catalogue) -> Body:
    groups = [_group(name, served) for name, served in sorted(versions(catalogue).items()) if name]
    return {"apiVersion": "v1", "kind": "APIGroupList", "groups": groups}


def api_group(catalogue: Catalogue, group: str) -> Body:
    served = versions(catalogue).get(group) if group else None
    if not served:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource (/apis/{group})")
    return {"apiVersion": "v1", "kind": "APIGroup", **_group(group, served)}


def api_resources(catalogue: Catalogue, group: str, version: str) -> Body:
    """The APIResourceList of one group version (404 if the group version is not served)."""
    resources: list[Body] = []
    for (res_group, res_version, plural), info in sorted(catalogue.items()):
        if (res_group, res_version) != (group, version):
            continue
        resources.append(
            {
                "name": plural,
                "kind": info.kind,
                "singularName": info.singular or plural,
                "shortNames": sorted(info.shortnames),
                "categories": sorted(info.categories),
                "verbs": sorted(info.verbs),
                "namespaced": info.namespaced,
            }
        )
        for subresource in sorted(info.subresources):
            resources.append(
                {
                    "name": f"{plural}/{subresource}",
                    "kind": info.kind,
                    "singularName": "",
                    "shortNames": [],
                    "categories": [],
                    "verbs": SUBRESOURCE_VERBS.get(subresource, ["get"]),
                    "namespaced": info.namespaced,
                }
            )
    if not resources and group:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource (/apis/{group}/{version})")
    group_version = f"{group}/{version}" if group else version
    return {"apiVersion": "v1", "kind": "APIResourceList", "groupVersion": group_version, "resources": resources}
