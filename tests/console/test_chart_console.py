"""The chart's optional console (``console.enabled``): off by default; when on, a Deployment of
``jobnet console --forward-token`` with no credentials or RBAC of its own, and a Service that
selects only the console's pods."""

from __future__ import annotations

import pytest

from tests.chart.test_chart import NAMESPACE, of_kind, one, render

pytest.importorskip("helm_python", reason="helm-python-sdk is a test dependency: pip install -e '.[test]'")


def test_console_is_off_by_default() -> None:
    objects = render({})
    assert not [o for o in objects if o["metadata"]["name"].endswith("-console")]


def test_console_forwards_the_viewers_token_and_has_no_rights_of_its_own() -> None:
    objects = render({"console": {"enabled": True, "port": 8080}})
    (deployment,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"].endswith("-console")]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["jobnet", "console"]
    assert container["args"] == ["--forward-token", "--address", "0.0.0.0", "--port", "8080", "--namespace", NAMESPACE]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    (volume,) = pod["volumes"]
    sources = volume["projected"]["sources"]
    assert [s["configMap"]["name"] for s in sources if "configMap" in s] == ["kube-root-ca.crt"]
    assert not [s for s in sources if "serviceAccountToken" in s or "secret" in s]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    operator = next(d for d in of_kind(objects, "Deployment") if not d["metadata"]["name"].endswith("-console"))
    operator_selector = operator["spec"]["selector"]["matchLabels"]
    console_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert not all(console_labels.get(k) == v for k, v in operator_selector.items()), console_labels
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    console_service = services[deployment["metadata"]["name"]]
    assert console_service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert console_service["spec"]["type"] == "ClusterIP" and console_service["spec"]["ports"][0]["port"] == 8080
    for name, service in services.items():  # no operator Service reaches the console's pods
        if service is not console_service:
            assert not all(console_labels.get(k) == v for k, v in service["spec"]["selector"].items()), name
    assert one(objects, "ServiceAccount")  # the operator's, unchanged


def test_console_values_are_checked() -> None:
    with pytest.raises(Exception, match="console"):
        render({"console": {"enabled": True, "prot": 8080}})
