"""Dynamic batching for one model executor, with bounded admission.

A model scores a batch of N images in far less than N times the cost of one,
so concurrent requests are grouped: a batch closes when it is full or
`max_delay_s` after its first item arrived, and at once when no other
admitted request is still being prepared (waiting could only add latency:
nothing else is on its way). `predict` runs on a dedicated
single thread (the event loop never blocks and the model sees one caller).
While a batch runs, requests keep queueing; a full batch is handed to the
executor at once so the model never waits on the event loop, and at most one
batch waits there beyond the running one.

Admission is two-phase so that callers can hold a slot while they decode:
`admit()` takes a slot or raises `Overloaded` at once, and the slot is given
back only when its item has left the batcher *and* the caller is done with it.
The number of slots bounds memory, whatever the request rate.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

BatchCallback = Callable[[int, float], None]
"""Called on the event loop after each batch: (batch size, seconds predict ran)."""


class Overloaded(Exception):
    """Every admission slot is taken; the caller should retry with backoff."""


class Closed(Exception):
    """The batcher is shutting down and admits nothing new."""


@dataclass
class _Item(Generic[T, R]):
    value: T
    future: asyncio.Future[R]
    slot: Slot[T, R]
    enqueued_at: float


@dataclass(frozen=True)
class _Outcome(Generic[R]):
    results: Sequence[R]
    error: BaseException | None
    busy_seconds: float


@dataclass
class BatcherStats:
    """Totals since start, for tests and benchmarks (metrics get the callback)."""

    batches: int = 0
    items: int = 0
    busy_seconds: float = 0.0
    batch_sizes: collections.Counter[int] = field(default_factory=collections.Counter)


class Slot(Generic[T, R]):
    """One admitted request. Use as a context manager around all its work."""

    def __init__(self, batcher: DynamicBatcher[T, R]) -> None:
        self._batcher = batcher
        self._with_caller = True
        self._in_batcher = False
        self._submitted = False

    def __enter__(self) -> Slot[T, R]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def submit(self, value: T) -> R:
        """Queue `value` for the next batch and wait for its result."""
        if self._submitted:
            raise RuntimeError("a slot carries one item")
        if not self._with_caller:
            raise RuntimeError("slot already released")
        self._submitted = True
        self._in_batcher = True
        self._batcher._preparing -= 1
        return await self._batcher._enqueue(value, self)

    def release(self) -> None:
        """Caller is done; the slot frees once the batcher is done too."""
        if self._with_caller:
            self._with_caller = False
            if not self._submitted:  # gave up before submitting: one less to wait for
                self._batcher._preparing -= 1
                self._batcher._wake()
            self._maybe_free()

    def _left_batcher(self) -> None:
        if self._in_batcher:
            self._in_batcher = False
            self._maybe_free()

    def _maybe_free(self) -> None:
        if not self._with_caller and not self._in_batcher:
            self._batcher._free_slot()


class DynamicBatcher(Generic[T, R]):
    """Groups submitted items into batches for `predict(list) -> results`.

    `predict` must return one result per item, in order; if it raises, every
    item of that batch gets the exception.
    """

    def __init__(
        self,
        predict: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int = 16,
        max_delay_s: float = 0.005,
        max_queue: int = 64,
        on_batch: BatchCallback | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if max_delay_s < 0:
            raise ValueError("max_delay_s must not be negative")
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self._on_batch = on_batch
        self.stats = BatcherStats()
        self._pending: collections.deque[_Item[T, R]] = collections.deque()
        self._admitted = 0
        self._preparing = 0  # admitted, not yet submitted
        self._running_batches = 0
        self._closing = False
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def admitted(self) -> int:
        """Slots in use: requests being prepared, queued or in a running batch."""
        return self._admitted

    @property
    def queued(self) -> int:
        """Items waiting for a batch."""
        return len(self._pending)

    def start(self) -> None:
        """Start the batching task on the running loop (idempotent)."""
        if self._task is not None:
            return
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vigil-predict")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vigil-batcher")

    def admit(self) -> Slot[T, R]:
        """Take a slot or fail at once: `Overloaded` when all are taken."""
        if self._closing or self._task is None:
            raise Closed("the model is not accepting requests (shutting down or not started)")
        if self._admitted >= self.max_queue:
            raise Overloaded(
                f"{self._admitted} requests in progress, the limit of this unit; retry later"
            )
        self._admitted += 1
        self._preparing += 1
        return Slot(self)

    async def submit(self, value: T) -> R:
        """Admit and score one item (admission and wait in one call)."""
        with self.admit() as slot:
            return await slot.submit(value)

    async def close(self) -> None:
        """Admit nothing new; finish every admitted request, then stop."""
        self._closing = True
        if self._task is None:
            return
        self._wake()
        try:
            await asyncio.shield(self._task)
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=False)

    # Internals -----------------------------------------------------------

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _free_slot(self) -> None:
        self._admitted -= 1
        if self._closing:
            self._wake()

    async def _enqueue(self, value: T, slot: Slot[T, R]) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append(_Item(value, future, slot, loop.time()))
        self._wake()
        return await future

    def _take_batch(self) -> list[_Item[T, R]]:
        batch: list[_Item[T, R]] = []
        while self._pending and len(batch) < self.max_batch_size:
            item = self._pending.popleft()
            if item.future.done():  # caller gave up (cancelled): drop the work
                item.slot._left_batcher()
            else:
                batch.append(item)
        return batch

    def _drop_cancelled_head(self) -> None:
        while self._pending and self._pending[0].future.done():
            self._pending.popleft().slot._left_batcher()

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            self._drop_cancelled_head()
            idle = self._running_batches == 0
            if self._closing and idle and not self._pending and self._admitted == 0:
                return
            timeout: float | None = None  # None: wait for the next event
            if self._pending and self._running_batches < 2:
                if len(self._pending) >= self.max_batch_size:  # full: run or queue it now
                    self._dispatch(self._take_batch())
                    continue
                if idle:
                    timeout = self._pending[0].enqueued_at + self.max_delay_s - loop.time()
                    if timeout <= 0 or self._closing or self._preparing == 0:
                        self._dispatch(self._take_batch())
                        continue
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _dispatch(self, batch: list[_Item[T, R]]) -> None:
        if not batch:
            return
        assert self._executor is not None
        self._running_batches += 1
        values = [item.value for item in batch]
        done = asyncio.get_running_loop().run_in_executor(self._executor, self._timed, values)
        done.add_done_callback(lambda f: self._resolve(batch, f))

    def _timed(self, values: list[T]) -> _Outcome[R]:
        """Runs on the executor thread; the duration is the model's busy time."""
        start = time.perf_counter()
        try:
            results = self._predict(values)
            if len(results) != len(values):
                raise ValueError(f"predict returned {len(results)} results for {len(values)} items")
        except Exception as exc:
            return _Outcome((), exc, time.perf_counter() - start)
        return _Outcome(results, None, time.perf_counter() - start)

    def _resolve(self, batch: list[_Item[T, R]], done: asyncio.Future[_Outcome[R]]) -> None:
        self._running_batches -= 1
        if done.cancelled():  # only if the loop is torn down under us
            outcome: _Outcome[R] = _Outcome((), asyncio.CancelledError(), 0.0)
        elif (exc := done.exception()) is not None:
            outcome = _Outcome((), exc, 0.0)
        else:
            outcome = done.result()
        for i, item in enumerate(batch):
            if not item.future.done():
                if outcome.error is not None:
                    item.future.set_exception(outcome.error)
                else:
                    item.future.set_result(outcome.results[i])
            item.slot._left_batcher()
        self.stats.batches += 1
        self.stats.items += len(batch)
        self.stats.busy_seconds += outcome.busy_seconds
        self.stats.batch_sizes[len(batch)] += 1
        if self._on_batch is not None:
            self._on_batch(len(batch), outcome.busy_seconds)
        self._wake()
