"""Scrapes every Ready unit's /metrics directly, as Knative's autoscaler
scrapes its queue proxies: scaling needs no Prometheus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from vigil.v1.wire import METRICS_PORT
from vigil_operator.core.autoscaling import Sample
from vigil_operator.core.unit_load import UnitReading, parse_unit_metrics, unit_load


def pod_ready(pod: Mapping[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def metrics_port(pod: Mapping[str, Any]) -> int:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == "metrics":
                return int(port["containerPort"])
    return METRICS_PORT


class UnitScraper:
    """Keeps each Pod's last reading; a load needs two readings of one Pod."""

    def __init__(self, session: aiohttp.ClientSession, timeout_s: float = 1.0) -> None:
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.last: dict[str, UnitReading] = {}

    async def _read(self, pod: Mapping[str, Any]) -> tuple[str, UnitReading] | None:
        ip = (pod.get("status") or {}).get("podIP")
        uid = str((pod.get("metadata") or {}).get("uid"))
        if not ip:
            return None
        url = f"http://{ip}:{metrics_port(pod)}/metrics"
        try:
            async with self.session.get(url, timeout=self.timeout) as resp:
                if resp.status != 200:
                    return None
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None  # not answering: neither zero load nor capacity
        return uid, parse_unit_metrics(text, time.monotonic())

    async def sample(self, pods: Iterable[Mapping[str, Any]], metric: str) -> Sample | None:
        ready = [p for p in pods if pod_ready(p)]
        readings = [r for r in await asyncio.gather(*map(self._read, ready)) if r is not None]
        total, units = 0.0, 0
        for uid, reading in readings:
            prev = self.last.get(uid)
            load = unit_load(prev, reading, metric) if prev is not None else None
            if load is not None:
                total += load
                units += 1
        self.last = dict(readings)  # Pods that went away are forgotten
        return Sample(time.monotonic(), total, units) if units else None
