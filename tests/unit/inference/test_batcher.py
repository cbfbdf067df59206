"""DynamicBatcher: batch formation, admission control, errors and drain.

Predict functions here are plain callables; the ones that block wait on a
threading.Event so the tests control exactly when a batch finishes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from vigil_inference.batcher import Closed, DynamicBatcher, Overloaded


class Recorder:
    """predict that doubles its inputs, records batches, optionally blocks."""

    def __init__(self, block_first: int = 0, sleep_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.release = threading.Event()
        self.started = threading.Event()
        self._block_first = block_first
        self._sleep_s = sleep_s

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.get_ident())
        self.started.set()
        if len(self.batches) <= self._block_first:
            assert self.release.wait(10), "test never released the batch"
        if self._sleep_s:
            time.sleep(self._sleep_s)
        return [2 * x for x in items]


async def wait_for(cond: Callable[[], bool], limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


def make(predict: Callable[[list[int]], list[int]], **kw: object) -> DynamicBatcher[int, int]:
    b: DynamicBatcher[int, int] = DynamicBatcher(predict, **kw)  # type: ignore[arg-type]
    b.start()
    return b


async def test_batches_fill_up_to_max_while_model_busy() -> None:
    rec = Recorder(block_first=1)
    b = make(rec, max_batch_size=4, max_delay_s=0.01, max_queue=64)
    first = asyncio.create_task(b.submit(0))
    await asyncio.to_thread(rec.started.wait, 5)
    rest = [asyncio.create_task(b.submit(i)) for i in range(1, 10)]
    await wait_for(lambda: b.queued == 5)  # one full batch of 4 waits in the executor
    await asyncio.sleep(0.05)  # longer than the delay: nothing else may dispatch
    assert len(rec.batches) == 1
    rec.release.set()
    results = await asyncio.gather(first, *rest)
    assert results == [2 * i for i in range(10)]
    assert [len(x) for x in rec.batches] == [1, 4, 4, 1]
    assert [x for batch in rec.batches for x in batch] == list(range(10))  # FIFO
    assert dict(b.stats.batch_sizes) == {1: 2, 4: 2}
    await b.close()


async def test_lone_request_does_not_wait_for_delay() -> None:
    rec = Recorder()
    b = make(rec, max_batch_size=16, max_delay_s=5.0, max_queue=64)
    t0 = time.monotonic()
    assert await b.submit(1) == 2
    assert time.monotonic() - t0 < 1.0  # nothing else admitted: no reason to wait
    await b.close()


async def test_waits_for_admitted_requests_still_preparing() -> None:
    rec = Recorder()
    b = make(rec, max_batch_size=16, max_delay_s=2.0, max_queue=64)
    with b.admit() as preparing:
        first = asyncio.create_task(b.submit(1))
        await asyncio.sleep(0.05)
        assert rec.batches == []  # held for the request being prepared
        assert await preparing.submit(2) == 4
    assert await first == 2
    assert rec.batches == [[1, 2]]
    await b.close()


async def test_partial_batch_dispatches_after_delay() -> None:
    rec = Recorder()
    b = make(rec, max_batch_size=16, max_delay_s=0.05, max_queue=64)
    with b.admit():  # a request that stays in preparation past the delay
        t0 = time.monotonic()
        results = await asyncio.gather(*(b.submit(i) for i in range(3)))
        elapsed = time.monotonic() - t0
    assert results == [0, 2, 4]
    assert rec.batches == [[0, 1, 2]]
    assert 0.04 <= elapsed < 1.0
    await b.close()


async def test_giving_up_in_preparation_releases_waiting_batch() -> None:
    rec = Recorder()
    b = make(rec, max_batch_size=16, max_delay_s=5.0, max_queue=64)
    slot = b.admit()
    first = asyncio.create_task(b.submit(1))
    await asyncio.sleep(0.02)
    assert rec.batches == []
    t0 = time.monotonic()
    slot.release()  # e.g. its image failed to decode
    assert await first == 2
    assert time.monotonic() - t0 < 1.0
    await b.close()


async def test_full_batch_does_not_wait_for_delay() -> None:
    rec = Recorder()
    b = make(rec, max_batch_size=4, max_delay_s=5.0, max_queue=64)
    t0 = time.monotonic()
    assert await asyncio.gather(*(b.submit(i) for i in range(4))) == [0, 2, 4, 6]
    assert time.monotonic() - t0 < 1.0
    assert rec.batches == [[0, 1, 2, 3]]
    await b.close()


async def test_predict_runs_on_one_thread_off_the_loop() -> None:
    rec = Recorder()
    b = make(rec, max_batch_size=2, max_delay_s=0.0, max_queue=64)
    for i in range(5):
        await b.submit(i)
    assert len(rec.threads) == 1
    assert threading.get_ident() not in rec.threads
    await b.close()


async def test_overloaded_beyond_max_queue_while_admitted_complete() -> None:
    rec = Recorder(block_first=1)
    b = make(rec, max_batch_size=2, max_delay_s=0.0, max_queue=3)
    admitted = [asyncio.create_task(b.submit(i)) for i in range(3)]
    await wait_for(lambda: b.admitted == 3 and rec.started.is_set())
    with pytest.raises(Overloaded, match="limit"):
        await b.submit(99)
    with pytest.raises(Overloaded):
        b.admit()
    assert b.admitted == 3
    rec.release.set()
    assert await asyncio.gather(*admitted) == [0, 2, 4]
    assert b.admitted == 0
    assert await b.submit(5) == 10  # room again
    await b.close()


async def test_slot_counts_while_caller_prepares() -> None:
    rec = Recorder()
    b = make(rec, max_batch_size=4, max_delay_s=0.0, max_queue=1)
    with b.admit() as slot:
        assert b.admitted == 1
        with pytest.raises(Overloaded):
            b.admit()
        assert await slot.submit(3) == 6
        assert b.admitted == 1  # still held until the caller is done
    assert b.admitted == 0
    with b.admit():
        pass  # admitted, then gave up before submitting (e.g. a decode error)
    assert b.admitted == 0
    await b.close()


async def test_cancelled_request_frees_slot_and_is_not_scored() -> None:
    rec = Recorder(block_first=1)
    b = make(rec, max_batch_size=2, max_delay_s=0.0, max_queue=2)
    first = asyncio.create_task(b.submit(1))
    await asyncio.to_thread(rec.started.wait, 5)
    second = asyncio.create_task(b.submit(2))
    await wait_for(lambda: b.admitted == 2)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    rec.release.set()
    assert await first == 2
    await wait_for(lambda: b.admitted == 0)
    # The queued item was dropped, never reaching the model.
    assert rec.batches == [[1]]
    await b.close()


async def test_predict_exception_reaches_every_request() -> None:
    def boom(items: list[int]) -> list[int]:
        raise RuntimeError(f"model failed on {len(items)}")

    b = make(boom, max_batch_size=4, max_delay_s=0.02, max_queue=8)
    results = await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "model failed on 3" in str(r) for r in results)
    assert b.admitted == 0
    assert b.stats.batches == 1
    await b.close()


async def test_wrong_result_count_is_an_error() -> None:
    b = make(lambda items: items[:-1], max_batch_size=2, max_delay_s=0.0, max_queue=8)
    with pytest.raises(ValueError, match="1 results for 2 items"):
        await asyncio.gather(b.submit(1), b.submit(2))
    await b.close()


async def test_busy_time_and_batch_sizes_reported() -> None:
    seen: list[tuple[int, float]] = []
    rec = Recorder(sleep_s=0.05)
    b = make(
        rec,
        max_batch_size=8,
        max_delay_s=0.01,
        max_queue=8,
        on_batch=lambda n, busy: seen.append((n, busy)),
    )
    await asyncio.gather(*(b.submit(i) for i in range(3)))
    assert len(seen) == 1
    assert seen[0][0] == 3
    assert 0.05 <= seen[0][1] < 1.0
    assert b.stats.busy_seconds == pytest.approx(seen[0][1])
    await b.close()


async def test_close_stops_admission_and_drains() -> None:
    rec = Recorder(block_first=1)
    b = make(rec, max_batch_size=2, max_delay_s=0.0, max_queue=8)
    tasks = [asyncio.create_task(b.submit(i)) for i in range(5)]
    await wait_for(lambda: b.admitted == 5 and rec.started.is_set())
    closing = asyncio.create_task(b.close())
    await asyncio.sleep(0.02)
    assert not closing.done()
    with pytest.raises(Closed):
        b.admit()
    rec.release.set()
    await asyncio.wait_for(closing, 5)
    assert [t.result() for t in tasks] == [0, 2, 4, 6, 8]


async def test_close_waits_for_admitted_caller_still_preparing() -> None:
    rec = Recorder()
    b = make(rec, max_batch_size=4, max_delay_s=0.0, max_queue=8)
    slot = b.admit()
    closing = asyncio.create_task(b.close())
    await asyncio.sleep(0.02)
    assert not closing.done()
    with slot:
        assert await slot.submit(4) == 8  # admitted before close: still served
    await asyncio.wait_for(closing, 5)


def test_rejects_bad_limits() -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(lambda x: x, max_batch_size=0)
    with pytest.raises(ValueError):
        DynamicBatcher(lambda x: x, max_queue=0)
