"""The cluster under test: the one KUBECONFIG names, or the emulator as a process.

Everything here reaches the cluster the way a user would: the API over HTTP
with a kubeconfig, ``kubectl`` and ``helm``, and simulated kubelets that are
themselves API clients (:mod:`tests.e2e.kubelet`). Waits poll with deadlines
sized for a real control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tests.tools import ROOT

T = TypeVar("T")
ZONES = ("zone-a", "zone-b", "zone-c")
NODES_PER_ZONE = 2
GPUS_PER_NODE = 4
SYSTEM_NODE = "vigil-e2e-system"
SYSTEM_ROLE_LABEL = "vigil.dev/e2e-role"
# Seconds without heartbeats before the emulator marks a Node Ready=Unknown
# (a real kube-controller-manager: --node-monitor-grace-period, 40-50 s).
EMULATOR_GRACE_S = 4.0


async def eventually(
    check: Callable[[], Awaitable[T]], within_s: float, every_s: float = 0.5, what: str = ""
) -> T:
    """Poll ``check`` until it returns a truthy value; an AssertionError means "not yet"."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    last: AssertionError | None = None
    while True:
        try:
            result = await check()
            if result:
                return result
        except AssertionError as e:
            last = e
        if loop.time() > deadline:
            detail = f": {last}" if last else ""
            raise AssertionError(f"not within {within_s:.0f} s: {what or check.__name__}{detail}")
        await asyncio.sleep(every_s)


def run(argv: Sequence[str | Path], *, kubeconfig: Path, check: bool = True) -> str:
    """A kubectl or helm command; its combined output (AssertionError with it on failure)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    done = subprocess.run(
        [str(a) for a in argv], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    output = done.stdout + done.stderr
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {done.returncode}:\n{output}")
    return output


@dataclass
class Process:
    """A child process with its output in a log file."""

    argv: list[str]
    log: Path
    env: Mapping[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                cwd=ROOT,
            )
        return self

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def start_emulator(workdir: Path) -> tuple[Process, Path]:
    """``python -m kube_emulator``; returns it and its kubeconfig."""
    kubeconfig = workdir / "kubeconfig"
    emulator = Process(
        [
            sys.executable,
            "-m",
            "kube_emulator",
            "--kubeconfig",
            str(kubeconfig),
            "--node-monitor-grace-period",
            str(EMULATOR_GRACE_S),
        ],
        workdir / "emulator.log",
    ).start()
    deadline = time.monotonic() + 60
    while not kubeconfig.exists():
        if not emulator.running:
            raise RuntimeError(f"the emulator exited:\n{emulator.tail()}")
        if time.monotonic() > deadline:
            emulator.stop()
            raise RuntimeError(f"the emulator wrote no kubeconfig in 60 s:\n{emulator.tail()}")
        time.sleep(0.1)
    return emulator, kubeconfig


@dataclass
class Kubelets:
    """Simulated kubelets: one process per zone, and one for the system node."""

    kubeconfig: Path
    workdir: Path
    processes: dict[str, Process] = field(default_factory=dict)

    def nodes(self, zone: str) -> list[str]:
        return [f"vigil-e2e-{zone}-{i}" for i in range(1, NODES_PER_ZONE + 1)]

    def _argv(self, key: str) -> list[str]:
        index = 0 if key == "system" else ZONES.index(key) + 1
        argv = [
            sys.executable,
            "-m",
            "tests.e2e.kubelet",
            "--kubeconfig",
            str(self.kubeconfig),
            "--pod-cidr",
            f"127.{201 + index}.0.0/16",
            "--workdir",
            str(self.workdir / "pods"),
        ]
        if key == "system":
            label = f"{SYSTEM_ROLE_LABEL}=system"
            return [*argv, "--node", SYSTEM_NODE, "--gpus", "0", "--label", label]
        return [*argv, "--zone", key, "--gpus", str(GPUS_PER_NODE)] + [
            arg for node in self.nodes(key) for arg in ("--node", node)
        ]

    def start(self, key: str) -> None:
        """Start (or restart) the kubelets of a zone, or "system"."""
        if key in self.processes and self.processes[key].running:
            return
        log = self.workdir / f"kubelet-{key}.log"
        self.processes[key] = Process(self._argv(key), log).start()

    def stop(self, key: str) -> None:
        """A zone outage: the kubelets stop, their containers die, no more heartbeats."""
        process = self.processes.get(key)
        if process is not None:
            process.stop()

    def signal(self, key: str, sig: signal.Signals) -> None:
        """Send a zone's kubelets a signal (SIGUSR1: nodes NotReady/Ready; SIGUSR2:
        readiness probes fail/pass; see tests.e2e.kubelet)."""
        process = self.processes[key]
        assert process.popen is not None and process.running, f"kubelets of {key} not running"
        process.popen.send_signal(sig)

    def stop_all(self) -> None:
        for key in list(self.processes):
            self.stop(key)

    @property
    def node_names(self) -> list[str]:
        return [SYSTEM_NODE] + [n for zone in ZONES for n in self.nodes(zone)]


def kill_container(container_id: str) -> None:
    """SIGKILL a container a simulated kubelet runs (containerID vigil-e2e://PID)."""
    scheme, _, pid = container_id.partition("://")
    assert scheme == "vigil-e2e", f"not a simulated container: {container_id}"
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(pid), signal.SIGKILL)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
