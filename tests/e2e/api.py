"""Plain-JSON calls to the Kubernetes API through ``kubernetes_asyncio``'s client.

The client handles the kubeconfig (server, CA, token or client certificate);
bodies stay dicts, as the API server sends them (the generated models refuse
some objects real servers return, as ``vigil_operator.cluster.kube`` notes).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

Obj = dict[str, Any]
MERGE = "application/merge-patch+json"


class Api:
    """``await api.get("/api/v1/nodes")``; raises ApiException with the body on errors."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.client = api_client

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float | None = 30,  # noqa: ASYNC109 - the HTTP request's own timeout
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        return await self.client.call_api(
            path,
            method,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )

    async def request(self, method: str, path: str, **kw: Any) -> Obj:
        response = await self._call(method, path, **kw)
        try:
            raw = await response.read()
        finally:
            response.release()
        if response.status >= 400:
            error = ApiException(status=response.status, reason=response.reason)
            error.body = raw.decode(errors="replace")
            raise error
        data: Obj = json.loads(raw or b"{}")
        return data

    async def get(self, path: str, **query: Any) -> Obj:
        return await self.request("GET", path, query=query)

    async def create(self, path: str, body: Obj, **query: Any) -> Obj:
        return await self.request("POST", path, body=body, query=query)

    async def patch(self, path: str, body: Obj, **query: Any) -> Obj:
        return await self.request("PATCH", path, body=body, query=query, content_type=MERGE)

    async def delete(self, path: str, body: Obj | None = None, **query: Any) -> Obj:
        return await self.request("DELETE", path, body=body, query=query)

    async def watch(self, path: str, **query: Any) -> AsyncIterator[Obj]:
        """Events of a watch until the server ends it (``timeoutSeconds``)."""
        response = await self._call("GET", path, query={**query, "watch": "true"}, timeout=None)
        try:
            if response.status >= 400:
                error = ApiException(status=response.status, reason=response.reason)
                error.body = (await response.read()).decode(errors="replace")
                raise error
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)
        finally:
            response.release()


def pod_path(namespace: str, name: str = "", sub: str = "") -> str:
    return "/".join(p for p in (f"/api/v1/namespaces/{namespace}/pods", name, sub) if p)


def model_path(namespace: str, name: str = "", sub: str = "") -> str:
    root = f"/apis/vigil.dev/v1alpha1/namespaces/{namespace}/models"
    return "/".join(p for p in (root, name, sub) if p)


async def create_model(kube: Api, namespace: str, name: str, artifact_uri: str, units: int) -> None:
    """A Model of `units` one-GPU units serving `artifact_uri`."""
    body: Obj = {
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"artifact": {"uri": artifact_uri}, "minUnits": units, "unit": {"gpus": 1}},
    }
    await kube.create(model_path(namespace), body)


def hosted(kube: Api, namespace: str, name: str, units: int) -> Any:
    """A check for `eventually`: Hosted with `units` desired and in service, and the
    status written for the current generation."""

    async def check() -> Obj:
        model = await kube.get(model_path(namespace, name))
        s = model.get("status") or {}
        got = (s.get("phase"), s.get("desiredUnits"), s.get("inServiceUnits"))
        assert got == ("Hosted", units, units), s
        assert s.get("observedGeneration") == model["metadata"]["generation"], s
        return dict(s)

    check.__name__ = f"{name} Hosted with {units} units"
    return check
