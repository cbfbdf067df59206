"""The API server emulator fixtures (kube_emulator),
and the operator's identity from the chart's RBAC (see chart_rbac.py)."""

from kube_emulator.fixtures import (
    kube,
    kube_api,
    kube_namespace,
    kube_options,
    kubeconfig,
    pytest_configure,
)
from tests.integration.operator.chart_rbac import chart_rbac, operator_identity
from tests.unit.chart.conftest import helm, render

__all__ = [
    "chart_rbac",
    "helm",
    "kube",
    "kube_api",
    "kube_namespace",
    "kube_options",
    "kubeconfig",
    "operator_identity",
    "pytest_configure",
    "render",
]
