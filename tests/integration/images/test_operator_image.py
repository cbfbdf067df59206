"""The operator image, built from the Dockerfile and run as the chart runs it,
against the API server emulator (any kubeconfig would do: scripts/run-image.sh
mounts $KUBECONFIG)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from kube_emulator import KubeEmulator, OperatorProcess
from tests.integration.images.conftest import RUN, Image
from tests.tools import free_port
from vigil_operator.core import manifests

pytestmark = pytest.mark.slow

GROUP, VERSION, PLURAL = "vigil.dev", "v1alpha1", "models"


def run_image(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUN), "operator", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )


def test_image_runs_as_the_units_uid_without_torch(operator_image: Image) -> None:
    config = operator_image.config
    assert config["User"] == f"{manifests.RUN_AS}:{manifests.RUN_AS}"
    assert (config["Entrypoint"], config["Cmd"]) == (["vigil"], ["operator"])
    help_run = run_image("operator", "--help")
    assert help_run.returncode == 0, help_run.stderr
    assert "--liveness-port" in help_run.stdout and "--default-image" in help_run.stdout
    probe = run_image(
        "-c",
        "import importlib.util as u, os; print(os.getuid(), os.getgid(), "
        "u.find_spec('torch') is None, u.find_spec('pip') is None, u.find_spec('kopf') is None)",
        VIGIL_ENTRYPOINT="python",
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["65532", "65532", "True", "True", "False"]


def get(port: int, path: str) -> tuple[int, str] | None:
    """(status, body) of http://127.0.0.1:port/path; None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as reply:
            return int(reply.status), reply.read().decode()
    except OSError:
        return None


@pytest.mark.asyncio(loop_scope="session")  # the emulator fixtures run on the session loop
@pytest.mark.kube_emulator(pod_start_delay=0.1)
async def test_operator_connects_reports_ready_and_hosts_a_model(
    operator_image: Image,
    kube: KubeEmulator,
    kubeconfig: Path,
    kube_api: client.ApiClient,
    kube_namespace: str,
    container_name: str,
    tmp_path: Path,
) -> None:
    liveness, metrics = free_port(), free_port()
    process = OperatorProcess(
        [
            str(RUN),
            "operator",
            "operator",
            f"--namespace={kube_namespace}",
            f"--liveness-port={liveness}",
            f"--metrics-port={metrics}",
            "--reconcile-interval=1",
            "--default-image=vigil/unit:test",
        ],
        kubeconfig=kubeconfig,
        log_path=tmp_path / "operator.log",
        env={"VIGIL_CONTAINER_NAME": container_name},
    )
    async with process:

        async def ready() -> bool:
            assert process.running, process.tail()
            reply = await asyncio.to_thread(get, liveness, "/healthz")
            return reply is not None and reply[0] == 200

        await kube.wait_for(ready, timeout=60, interval=0.5)
        await client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
            GROUP,
            VERSION,
            kube_namespace,
            PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Model",
                "metadata": {"name": "pcb"},
                "spec": {"artifact": {"uri": "file:///models/pcb.vigil"}, "minUnits": 3},
            },
        )

        async def hosted() -> bool:
            model = await client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
                GROUP, VERSION, kube_namespace, PLURAL, "pcb"
            )
            assert model.get("status", {}).get("phase") == "Hosted", model.get("status")
            return True

        await kube.wait_for(hosted, timeout=30, interval=0.2)
        names = sorted(d["metadata"]["name"] for d in kube.deployments(kube_namespace))
        assert names == ["pcb-zone-a", "pcb-zone-b", "pcb-zone-c"]
        reply = await asyncio.to_thread(get, metrics, "/metrics")
        assert reply is not None
        labels = f'{{model="pcb",namespace="{kube_namespace}"}}'
        assert f"vigil_model_desired_inference_units{labels} 3.0" in reply[1].splitlines()
    assert process.process is not None and process.process.returncode == 0, process.tail()
    assert "Traceback" not in process.log, process.tail()
