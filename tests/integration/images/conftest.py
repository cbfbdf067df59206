"""The Dockerfile's images, built for real with buildah (scripts/build-images.sh)
and run with podman as the chart runs them (scripts/run-image.sh): uid 65532,
read-only root filesystem, a tmpfs on /tmp only, the host's network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from kube_emulator.fixtures import (
    kube,
    kube_api,
    kube_namespace,
    kube_options,
    kubeconfig,
    pytest_configure,
)
from tests.tools import ROOT, require, require_root

__all__ = [
    "kube",
    "kube_api",
    "kube_namespace",
    "kube_options",
    "kubeconfig",
    "pytest_configure",
]

BUILD = ROOT / "scripts" / "build-images.sh"
RUN = ROOT / "scripts" / "run-image.sh"
OPERATOR_IMAGE = "localhost/vigil-operator:dev"


@dataclass(frozen=True)
class Image:
    tag: str
    config: dict[str, Any]  # the image's OCI/Docker config: User, Entrypoint, Cmd, Env
    size_bytes: int
    layers: int


def inspect(tag: str) -> Image:
    out = subprocess.run(
        ["podman", "image", "inspect", tag], capture_output=True, text=True, check=True
    ).stdout
    [info] = json.loads(out)
    return Image(tag, info["Config"], int(info["Size"]), len(info["RootFS"]["Layers"]))


@pytest.fixture(scope="session")
def image_tools() -> None:
    for tool in ("buildah", "podman", "runc"):
        require(tool)
    require_root("buildah and podman run rootful here")


@pytest.fixture(scope="session")
def operator_image(image_tools: None) -> Image:
    """The operator target, built now: buildah's layer cache makes an unchanged
    rebuild a few seconds, and any change to the sources is built and run."""
    build = subprocess.run(
        [str(BUILD), "operator"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "PYTHON": sys.executable},  # whose pip config the build mounts
    )
    if build.returncode != 0:
        pytest.fail(f"building the operator image failed:\n{build.stdout[-4000:]}{build.stderr}")
    return inspect(OPERATOR_IMAGE)


@pytest.fixture
def container_name() -> Iterator[str]:
    """A unique container name; the container is removed afterwards whatever happened."""
    name = f"vigil-test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["podman", "rm", "--force", "--time", "0", name], capture_output=True)
