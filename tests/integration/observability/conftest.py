"""The API server emulator fixtures (tests/integration/operator/emulator)."""

from tests.integration.operator.emulator.fixtures import (
    kube,
    kube_api,
    kube_namespace,
    kube_options,
    kubeconfig,
    pytest_configure,
)

__all__ = [
    "kube",
    "kube_api",
    "kube_namespace",
    "kube_options",
    "kubeconfig",
    "pytest_configure",
]
