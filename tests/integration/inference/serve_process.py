"""`vigil serve` as a real process, the way scripts and kubelets run it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

VIGIL = [sys.executable, "-m", "vigil_cli"]


class ServeProcess:
    def __init__(
        self,
        model: Path,
        *options: str,
        vigil: Sequence[str] = VIGIL,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Start and wait for the serving line; `options` extend or override
        the defaults (argparse keeps the last value of a repeated flag); `vigil`
        is this checkout's command by default, or any command that runs it (an
        image: tests/integration/images)."""
        self.proc = subprocess.Popen(
            [
                *vigil,
                "serve",
                "--model",
                str(model),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--metrics-port",
                "0",
                "--max-batch-size",
                "4",
                "--grace-seconds",
                "10",
                *options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env} if env else None,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        assert self._ready.wait(120), f"serve did not come up:\n{self.stderr}"
        ready = next(line for line in self.lines if "grpc_port=" in line)
        self.port = int(re.search(r"grpc_port=(\d+)", ready)[1])  # type: ignore[index]
        self.metrics_port = int(re.search(r"metrics_port=(\d+)", ready)[1])  # type: ignore[index]

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "grpc_port=" in line:
                self._ready.set()
        self._ready.set()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def metric(self, sample: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
        raise AssertionError(f"{sample} not in /metrics")

    def rss_bytes(self) -> int:
        """Resident memory of the unit now (Linux /proc)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        [kib] = re.findall(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(kib) * 1024

    def stop(self) -> int:
        """SIGTERM (a graceful drain), then SIGKILL after 30 s; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()
