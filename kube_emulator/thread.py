"""The emulator on its own event loop in a background thread.

For tests whose event loop may block (synchronous code, ``subprocess.run``)
or that are not async at all. The emulator is not thread-safe: reach it
only through :meth:`EmulatorThread.call` (sync functions) and
:meth:`EmulatorThread.run` / :meth:`EmulatorThread.arun` (coroutines).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from .auth import ADMIN_TOKEN
from .server import KubeEmulator

T = TypeVar("T")


class EmulatorThread:
    """``with EmulatorThread(pod_start_delay=0.1) as kube: kube.call(lambda e: ...)``."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.url = ""
        self._emulator: KubeEmulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="kube-emulator", daemon=True)

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise TimeoutError("the emulator thread did not start in 30 s")
        if self._error is not None:
            raise RuntimeError("the emulator thread failed to start") from self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported to __enter__ or kept for inspection
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with KubeEmulator(**self.options).serve() as kube:
            self._emulator = kube
            self.url = kube.server_url
            self._ready.set()
            await self._stop.wait()

    @property
    def internal_errors(self) -> list[BaseException]:
        return self.call(lambda kube: list(kube.internal_errors))

    def call(self, fn: Callable[[KubeEmulator], T], timeout: float = 30) -> T:
        """Run ``fn(emulator)`` on the emulator's loop and return its result."""

        async def wrapper(kube: KubeEmulator) -> T:
            return fn(kube)

        return self.run(wrapper, timeout)

    def run(self, fn: Callable[[KubeEmulator], Awaitable[T]], timeout: float = 30) -> T:
        """Await ``fn(emulator)`` on the emulator's loop (e.g. ``kube.wait_for(...)``)."""
        return self._submit(fn).result(timeout)

    async def arun(self, fn: Callable[[KubeEmulator], Awaitable[T]]) -> T:
        """The same as :meth:`run`, awaitable from another event loop."""
        return await asyncio.wrap_future(self._submit(fn))

    def _submit(self, fn: Callable[[KubeEmulator], Awaitable[T]]) -> concurrent.futures.Future[T]:
        if self._loop is None or self._emulator is None:
            raise RuntimeError("the emulator thread is not running")
        emulator = self._emulator

        async def invoke() -> T:
            return await fn(emulator)

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop)

    def write_kubeconfig(
        self, path: Path, *, namespace: str = "default", token: str = ADMIN_TOKEN
    ) -> Path:
        return self.call(lambda kube: kube.write_kubeconfig(path, namespace=namespace, token=token))
