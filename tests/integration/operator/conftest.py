"""Fixtures for tests against the API server emulator (see emulator/fixtures.py)."""

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
