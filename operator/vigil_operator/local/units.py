"""Unit processes: `vigil serve` started in a simulated zone, probed over
grpc.health.v1, restarted when it dies (with back-off, as the kubelet does),
drained on SIGTERM and killed when the grace period runs out.

Each unit is its own process group (so a terminal's Ctrl-C reaches only the
control process, which drains the units in order) and asks the kernel, before
it execs, to SIGKILL it when the control process dies (PR_SET_PDEATHSIG), so
units never outlive `vigil local up`, even when it is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vigil_operator.core.manifests import HEALTH_SERVICE
from vigil_operator.local.world import LOOPBACK, Phase, UnitView

log = logging.getLogger("vigil.local")

MAX_BACKOFF_S: Final = 30.0
HEALTHY_RESET_S: Final = 30.0  # Ready this long: a later crash starts the back-off afresh
_SERVING: Final = health_pb2.HealthCheckResponse.SERVING

# Runs in the new child before it becomes the unit: ask for SIGKILL when the
# control process dies (PR_SET_PDEATHSIG survives exec), then exec the unit.
# This is the child's pre-exec step, but as a program rather than a Python
# preexec_fn: a preexec_fn forces fork(), and gRPC's fork handlers can start a
# poller thread in the forked child that aborts it (SIGABRT, "epoll_wait: Bad
# file descriptor") before it execs. Without one, subprocess uses vfork(),
# which runs no fork handlers.
LAUNCHER: Final = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
except (OSError, AttributeError):  # not Linux: no parent-death signal
    pass
if os.getppid() != int(sys.argv[1]):  # the parent died before prctl took effect
    os._exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def launch_command(argv: list[str], parent: int) -> list[str]:
    """`argv` run through the launcher, tied to the life of process `parent`."""
    return [sys.executable, "-S", "-c", LAUNCHER, str(parent), *argv]


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal a unit and anything it started (it leads its own process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def log_tail(path: Path, limit: int = 300) -> str:
    """The last line a unit wrote (its error message, when it failed)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return last[-limit:]


class Zones:
    """Which simulated zones are up; units wait here while theirs is down."""

    def __init__(self, names: Iterable[str]) -> None:
        self._up: dict[str, asyncio.Event] = {}
        for name in names:
            self._up[name] = asyncio.Event()
            self._up[name].set()

    @property
    def names(self) -> list[str]:
        return list(self._up)

    def health(self) -> dict[str, bool]:
        return {name: event.is_set() for name, event in self._up.items()}

    def up(self, zone: str) -> bool:
        event = self._up.get(zone)
        return event is not None and event.is_set()

    def set(self, zone: str, up: bool) -> None:
        if zone not in self._up:
            raise KeyError(zone)
        if up:
            self._up[zone].set()
        else:
            self._up[zone].clear()

    async def wait_up(self, zone: str) -> None:
        if zone not in self._up:  # a zone with no node never comes up
            await asyncio.Event().wait()
        await self._up[zone].wait()


@dataclass(frozen=True)
class Launch:
    """How units are started and stopped."""

    log_dir: Path
    grace_s: float = 15.0  # SIGTERM to SIGKILL
    startup_timeout_s: float = 300.0  # not SERVING by then: killed and restarted
    extra_args: tuple[str, ...] = ()  # more `vigil serve` flags
    # Ready units run this much nicer than starting ones. On one machine every
    # unit shares the CPUs: without it, a unit started to relieve a saturated
    # machine starts slowly, starved by the load it is meant to take (in a
    # cluster it would have a node or GPU of its own).
    serving_nice: int = 0
    python: str = sys.executable

    def command(self, model: str, grpc_port: int, metrics_port: int) -> list[str]:
        # The unit drains for a little less than the grace period, so it
        # exits by itself rather than being killed mid-drain.
        drain = max(1.0, self.grace_s - 2.0)
        return [
            self.python,
            "-m",
            "vigil_cli",
            "serve",
            "--model",
            model,
            "--host",
            LOOPBACK,
            "--port",
            str(grpc_port),
            "--metrics-port",
            str(metrics_port),
            "--grace-seconds",
            f"{drain:g}",
            *self.extra_args,
        ]


class Unit:
    """One inference unit: a Pod whose container is a `vigil serve` process."""

    def __init__(
        self,
        name: str,
        zone: str,
        template: str,
        launch: Launch,
        zones: Zones,
        on_change: Callable[[Unit], None],
    ) -> None:
        self.name, self.zone, self.template = name, zone, template
        self.uid = str(uuid.uuid4())
        self.launch, self.zones, self._on_change = launch, zones, on_change
        self.created = datetime.now(UTC)
        self.created_mono = time.monotonic()
        self.log_path = launch.log_dir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.grpc_port: int | None = None
        self.metrics_port: int | None = None
        self.phase: Phase = "Pending"
        self.ready = False
        self.ready_since: float | None = None
        self.restarts = 0
        self.waiting_reason = ""
        self.last_exit_code: int | None = None
        self.last_message = ""
        self.unschedulable_since: datetime | None = None
        self.deleting = False
        self.deletion_time: datetime | None = None
        self._outage = False
        self._task: asyncio.Task[None] | None = None

    # -- what the world sees -------------------------------------------------

    @property
    def pid(self) -> int | None:
        proc = self.proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def address(self) -> str | None:
        return f"{LOOPBACK}:{self.grpc_port}" if self.grpc_port else None

    @property
    def routable(self) -> bool:
        """Takes new requests: Ready, not terminating, its zone up."""
        return self.ready and not self.deleting and self.zones.up(self.zone)

    def view(self) -> UnitView:
        return UnitView(
            name=self.name,
            uid=self.uid,
            zone=self.zone,
            created=self.created,
            template=self.template,
            created_mono=self.created_mono,
            ready_since=self.ready_since,
            phase=self.phase,
            ready=self.ready,
            terminating=self.deleting,
            deletion_time=self.deletion_time,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
            pid=self.pid,
            restarts=self.restarts,
            waiting_reason=self.waiting_reason,
            last_exit_code=self.last_exit_code,
            last_message=self.last_message,
            unschedulable_since=self.unschedulable_since,
        )

    def _changed(self) -> None:
        self._on_change(self)

    def _set_ready(self, ready: bool) -> None:
        ready = ready and not self.deleting
        if ready == self.ready:
            return
        self.ready = ready
        self.ready_since = time.monotonic() if ready else None
        proc = self.proc
        if ready and self.launch.serving_nice > 0 and proc is not None:
            with contextlib.suppress(OSError):  # every thread of its process group
                nice = os.getpriority(os.PRIO_PROCESS, 0) + self.launch.serving_nice
                os.setpriority(os.PRIO_PGRP, proc.pid, min(nice, 19))
        if ready:
            log.info(
                "unit %s ready (zone %s, pid %s, %s)", self.name, self.zone, self.pid, self.address
            )
        self._changed()

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"unit {self.name}")

    async def _run(self) -> None:
        backoff, crashed = 1.0, False
        while not self.deleting:
            if not self.zones.up(self.zone):
                self.unschedulable_since = self.unschedulable_since or datetime.now(UTC)
                self.phase = "Pending"
                self._changed()
                await self.zones.wait_up(self.zone)
                self.unschedulable_since = None
                continue
            if crashed:  # the kubelet's CrashLoopBackOff, shorter
                self.waiting_reason = "CrashLoopBackOff"
                self._changed()
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF_S)
                self.waiting_reason, crashed = "", False
                continue
            try:
                code, ready_for = await self._run_once()
                message = log_tail(self.log_path)
                if code < 0:  # as the kubelet reports a signal: 128 + its number
                    message = f"killed by {signal.Signals(-code).name}"
                    code = 128 - code
            except OSError as exc:  # could not even start it
                code, ready_for, message = 127, 0.0, f"cannot start vigil serve: {exc}"
                self.grpc_port = self.metrics_port = None
            if self.deleting:
                break
            if self._outage:  # killed with its zone: not the unit's fault
                self._outage = False
                continue
            self.restarts += 1
            self.last_exit_code = code
            self.last_message = message
            if ready_for >= HEALTHY_RESET_S:
                backoff = 1.0
            crashed = True
            log.warning(
                "unit %s exited with %s (restart %d): %s",
                self.name,
                code,
                self.restarts,
                self.last_message or "no output",
            )
            self._changed()

    async def _run_once(self) -> tuple[int, float]:
        """Start the process, probe it until it exits; (exit code, seconds Ready)."""
        self.grpc_port, self.metrics_port = free_port(), free_port()
        args = self.launch.command(self.template, self.grpc_port, self.metrics_port)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "VIGIL_ZONE": self.zone}
        self.launch.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *launch_command(args, os.getpid()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                process_group=0,  # its own group: a terminal's Ctrl-C is ours to handle
            )
        self.proc, self.phase = proc, "Running"
        log.info(
            "unit %s started in zone %s (pid %d, %s)", self.name, self.zone, proc.pid, self.address
        )
        self._changed()
        probe = asyncio.create_task(self._probe(proc), name=f"probe {self.name}")
        ready_for = 0.0
        try:
            code = await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled: never leave the process behind
                signal_group(proc.pid, signal.SIGKILL)
                await asyncio.shield(proc.wait())
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
            if self.ready_since is not None:
                ready_for = time.monotonic() - self.ready_since
            self._set_ready(False)
            self.grpc_port = self.metrics_port = None
            self.proc = None
        log.info("unit %s (pid %d) exited with %s", self.name, proc.pid, code)
        return code, ready_for

    async def _probe(self, proc: asyncio.subprocess.Process) -> None:
        """grpc.health.v1 Check, as the Pod's probes: Ready on SERVING; NOT_SERVING
        (draining) at once, or two failed checks in a row, make it not Ready."""
        started = time.monotonic()
        failures = 0
        async with grpc.aio.insecure_channel(str(self.address)) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while proc.returncode is None:
                try:
                    reply = await stub.Check(
                        health_pb2.HealthCheckRequest(service=HEALTH_SERVICE),
                        timeout=3.0 if self.ready else 1.0,  # the Pod's probe: 3 s
                    )
                except grpc.aio.AioRpcError:
                    failures += 1
                    if failures >= 2:
                        self._set_ready(False)
                else:
                    failures = 0
                    self._set_ready(reply.status == _SERVING)
                if (
                    self.ready_since is None
                    and time.monotonic() - started > self.launch.startup_timeout_s
                ):
                    log.warning(
                        "unit %s not SERVING after %gs: killed",
                        self.name,
                        self.launch.startup_timeout_s,
                    )
                    signal_group(proc.pid, signal.SIGKILL)
                    return
                await asyncio.sleep(1.0 if self.ready else 0.25)

    def kill(self) -> None:
        """SIGKILL, as an outage does: no drain. The unit restarts when its zone is up."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            self._outage = not self.zones.up(self.zone)
            signal_group(proc.pid, signal.SIGKILL)
        self._set_ready(False)

    async def delete(self, grace_s: float | None = None) -> None:
        """Take it out of rotation, SIGTERM (it drains), SIGKILL after the grace period."""
        grace = self.launch.grace_s if grace_s is None else grace_s
        if not self.deleting:
            self.deleting = True
            self.deletion_time = datetime.now(UTC)
            self._set_ready(False)
            self._changed()
        task, proc = self._task, self.proc
        if task is None:
            return
        if proc is not None and proc.returncode is None:
            signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(task), grace)
            except TimeoutError:
                log.warning("unit %s still running %gs after SIGTERM: SIGKILL", self.name, grace)
                signal_group(proc.pid, signal.SIGKILL)
            except Exception:  # the supervisor failed; it is cancelled below
                log.exception("unit %s supervisor failed", self.name)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self.phase = "Succeeded"
        self._changed()
