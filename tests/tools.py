"""External tools the chart, alert and dashboard tests run: helm and kubectl
(`make kube-tools`, into .tools/bin), prometheus and promtool (`make
prometheus`, Debian's package), the prometheus-operator models (`make
monitoring-models`, npm, into .tools/npm), buildah, podman and runc for the
image tests (`make image-tools`, Debian's packages).

`make test` installs them all first. A test that needs a missing tool skips
with the command that installs it, except under CI=true, where it fails: CI
must never pass by skipping what it was meant to check.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vigil_operator.local import units

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / ".tools"
INSTALL = {
    "helm": "make kube-tools",
    "kubectl": "make kube-tools",
    "prometheus": "make prometheus",
    "promtool": "make prometheus",
    "node": "apt-get install nodejs",
    "monitoring-models": "make monitoring-models",
    "buildah": "make image-tools",
    "podman": "make image-tools",
    "runc": "make image-tools",
    "root": "sudo make images",
}


def _missing(what: str, where: str) -> None:
    message = f"{what} is not installed ({where}); `{INSTALL[what]}` installs it"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require(tool: str) -> Path:
    """The path of `tool`: .tools/bin first, then PATH; skip or fail if absent."""
    local = TOOLS / "bin" / tool
    if local.is_file() and os.access(local, os.X_OK):
        return local
    found = shutil.which(tool)
    if found is None:
        _missing(tool, f"neither {local} nor on PATH")
    return Path(str(found))


def require_root(why: str) -> None:
    """Skip or fail (as for a missing tool) unless this process runs as root."""
    if os.geteuid() != 0:
        _missing("root", why)


def require_monitoring_models() -> Path:
    """The node_modules folder holding @kubernetes-models/prometheus-operator."""
    modules = TOOLS / "npm" / "node_modules"
    if not (modules / "@kubernetes-models" / "prometheus-operator").is_dir():
        _missing("monitoring-models", f"no {modules}/@kubernetes-models/prometheus-operator")
    return modules


free_port = units.free_port  # one helper: the local runtime's, which picks units' ports
