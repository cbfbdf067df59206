"""A real Prometheus server (Debian's package) for a test: a free loopback
port, a temporary config and storage, 1 s scrapes, and a small HTTP API client.

Scrape jobs are built from the chart's rendered ServiceMonitor and PodMonitor
as prometheus-operator would build them (its standard namespace/pod labels,
then the monitor's relabelings and honorLabels), with static or file-based
targets standing in for Kubernetes service discovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.tools import free_port

Target = tuple[str, Mapping[str, str]]  # ("host:port", __meta_* labels)

# What prometheus-operator puts before a monitor's own relabelings.
STANDARD_RELABELINGS = [
    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
]
SNAKE = {
    "sourceLabels": "source_labels",
    "targetLabel": "target_label",
    "replacement": "replacement",
    "regex": "regex",
    "separator": "separator",
    "action": "action",
    "modulus": "modulus",
}


def relabel_configs(endpoint: Mapping[str, Any], job: str) -> list[dict[str, Any]]:
    """A monitor endpoint's relabelings in Prometheus's own spelling."""
    out: list[dict[str, Any]] = [*STANDARD_RELABELINGS, {"target_label": "job", "replacement": job}]
    for rule in endpoint.get("relabelings") or []:
        out.append({SNAKE[k]: v for k, v in rule.items()})
    return out


class Prometheus:
    """`prometheus` on 127.0.0.1:<free port>; use as an async context manager."""

    def __init__(self, binary: Path, workdir: Path, rule_files: Iterable[Path] = ()) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rule_files = [str(p) for p in rule_files]
        self.jobs: list[dict[str, Any]] = []
        self.log_path = workdir / "prometheus.log"
        self.process: asyncio.subprocess.Process | None = None

    def add_job(
        self,
        name: str,
        endpoint: Mapping[str, Any],
        job: str,
        *,
        static: Iterable[Target] = (),
        file_sd: Path | None = None,
    ) -> None:
        """A scrape job for a ServiceMonitor/PodMonitor endpoint (its relabelings,
        honorLabels and path), with its targets given statically or in a file_sd
        file (see write_targets)."""
        config: dict[str, Any] = {
            "job_name": name,
            "honor_labels": bool(endpoint.get("honorLabels", False)),
            "metrics_path": endpoint.get("path", "/metrics"),
            "relabel_configs": relabel_configs(endpoint, job),
        }
        if file_sd is not None:
            write_targets(file_sd, [])
            config["file_sd_configs"] = [{"files": [str(file_sd)], "refresh_interval": "1s"}]
        else:
            config["static_configs"] = [
                {"targets": [address], "labels": dict(meta)} for address, meta in static
            ]
        self.jobs.append(config)

    async def __aenter__(self) -> Prometheus:
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": self.rule_files,
            "scrape_configs": self.jobs,
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                str(self.binary),
                f"--config.file={path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        await self.wait_ready()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Poll /-/ready: a fresh server takes a moment to open its storage."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            assert self.process is not None
            if self.process.returncode is not None:
                raise AssertionError(f"prometheus exited:\n{self.log}")
            with contextlib.suppress(OSError):
                status = await asyncio.to_thread(self._status, "/-/ready")
                if status == 200:
                    return
            if loop.time() > deadline:
                raise TimeoutError(f"prometheus not ready in {timeout}s:\n{self.log}")
            await asyncio.sleep(0.1)

    def _status(self, path: str) -> int:
        with urllib.request.urlopen(self.url + path, timeout=2) as response:
            return int(response.status)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of a successful answer."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400 for a bad query: say which
            raise AssertionError(
                f"{url}: {exc.code} {exc.read().decode(errors='replace')}"
            ) from exc
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result


def write_targets(path: Path, targets: Iterable[Target]) -> None:
    """Replace a file_sd file atomically (Prometheus watches it)."""
    groups = [{"targets": [address], "labels": dict(meta)} for address, meta in targets]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups))
    os.replace(tmp, path)
