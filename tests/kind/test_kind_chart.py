"""The chart values of the kind quick start render and lint with the chart (real Helm code)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.kind.support import KIND_DIR, script_value

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a test dependency: pip install -e '.[test]'")

from tests.chart.test_chart import (  # noqa: E402
    CHART,
    NAMESPACE,
    container,
    one,
    permissions,
    render,
    without_webhook_tls_rbac,
)

KIND_VALUES: dict[str, Any] = yaml.safe_load((KIND_DIR / "values.yaml").read_text())


def test_kind_values_lint_strict() -> None:
    report = helm.lint(CHART, KIND_VALUES, strict=True, namespace=NAMESPACE, kube_version="v1.31.0")
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_kind_values_render_the_operator_for_the_demo() -> None:
    objects = render(KIND_VALUES)
    operator = container(objects)
    assert operator["image"] == script_value("OPERATOR_IMAGE") and operator["imagePullPolicy"] == "Never"
    demo = script_value("DEMO_NAMESPACE")
    args = operator["args"]
    assert args[:2] == ["--namespace", demo]
    assert "--host-alias=vm1.batch.example=vm1.jobnet-demo.svc.cluster.local" in args
    assert one(objects, "Deployment")["spec"]["replicas"] == 1
    (role,) = without_webhook_tls_rbac(objects, "Role")  # the operator's (not its webhook certificate's)
    assert role["metadata"]["namespace"] == demo
    assert permissions(role)[("", "secrets")] == {"get"}
    (secret_rule,) = [rule for rule in role["rules"] if "secrets" in rule["resources"]]
    assert secret_rule["resourceNames"] == ["vm1-ssh"]
