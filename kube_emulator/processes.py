"""Running an operator process (kopf, or later ``vigil operator``) against the emulator.

The process gets the emulator's kubeconfig through ``KUBECONFIG``; its output
goes to a log file (a pipe nobody reads would fill up and stall it) that
tests can wait on and that is shown when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType


def kopf_command(
    *paths: str | Path,
    namespace: str | None = None,
    standalone: bool = True,
    verbose: bool = True,
) -> list[str]:
    """``python -m kopf run``: one namespace, or all of them when ``namespace`` is None."""
    args = [sys.executable, "-m", "kopf", "run"]
    if standalone:
        args.append("--standalone")  # no peering objects: the emulator has no kopf.dev CRDs
    args.append(f"--namespace={namespace}" if namespace else "--all-namespaces")
    if verbose:
        args.append("--verbose")
    return args + [str(p) for p in paths]


class OperatorProcess:
    """An async context manager: start the command, stop it gracefully on exit."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        kubeconfig: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_timeout: float = 10.0,
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> OperatorProcess:
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> int | None:
        """SIGINT (kopf's graceful stop), then SIGKILL after ``stop_timeout``."""
        if self.process is None or self.process.returncode is not None:
            return self.process.returncode if self.process else None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGINT)
        try:
            return await asyncio.wait_for(self.process.wait(), self.stop_timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            return await self.process.wait()

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def wait_for_log(self, text: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until ``text`` shows up in the log; fail early if the process exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while text not in self.log:
            if not self.running:
                raise AssertionError(f"the process exited before logging {text!r}:\n{self.tail()}")
            if loop.time() > deadline:
                raise TimeoutError(f"{text!r} not logged in {timeout}s:\n{self.tail()}")
            await asyncio.sleep(0.05)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.splitlines()[-lines:])
