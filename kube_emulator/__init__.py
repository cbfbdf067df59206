"""A Kubernetes API server emulator for the operator's integration tests.

Built on kmock's KubernetesEmulator: a real HTTP server on a free loopback
port that kopf and ``kubernetes_asyncio`` talk to through a kubeconfig, with
the API server's semantics and a simulated control plane (GC, Deployments,
scheduler, kubelet, node lifecycle, PodDisruptionBudgets). See README.md.
"""

from .auth import ADMIN_TOKEN
from .controllers import PodStartHook, PodStopHook
from .errors import ApiError
from .processes import OperatorProcess, kopf_command
from .resources import ResourceType, model_crd
from .server import DEFAULT_ZONES, GPU, ZONE_LABEL, ApiCall, KubeEmulator
from .store import Change, DeleteOptions
from .thread import EmulatorThread

__all__ = [
    "ADMIN_TOKEN",
    "DEFAULT_ZONES",
    "GPU",
    "ZONE_LABEL",
    "ApiCall",
    "ApiError",
    "Change",
    "DeleteOptions",
    "EmulatorThread",
    "KubeEmulator",
    "OperatorProcess",
    "PodStartHook",
    "PodStopHook",
    "ResourceType",
    "kopf_command",
    "model_crd",
]
