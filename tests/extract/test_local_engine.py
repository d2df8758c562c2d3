"""The local engine: a decode worker that dies ends the extraction, never a hang; the batch
slots the workers stack clips into hand each batch over whole, once."""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest

from gesture_cache.extract import local_engine
from gesture_cache.extract.local_engine import BATCHES, BatchSlots
from tests.helpers import run_with_timeout


def test_a_decode_worker_that_dies_ends_the_extraction(monkeypatch):
    def broken(job, extractor, stack):
        raise RuntimeError("decoder bug")
        yield  # a generator, as job_events is

    monkeypatch.setattr(local_engine, "job_events", broken)
    workers = local_engine.DecodeWorkers([object(), object()], None, workers=2, capacity=4)
    result = run_with_timeout(lambda: list(workers))
    workers.close()
    assert isinstance(result.get("error"), RuntimeError), result


def frames_of(value: int) -> list[np.ndarray]:
    return [np.full((2, 2), value, np.uint8)] * 3  # a 3-frame clip of 2x2 frames


def test_clips_from_many_threads_land_in_their_slots_and_a_batch_is_ready_when_whole():
    slots = BatchSlots(4, (3, 2, 2), "uint8", threading.Event())
    placed = {}

    def stack(value: int) -> None:
        placed[value] = slots.stack(frames_of(value))

    threads = [threading.Thread(target=stack, args=(v,)) for v in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = Counter(batch for batch, _ in placed.values())
    (full, _), (open_batch, _) = counts.most_common()  # 4 clips in one batch, 2 in the next
    assert slots.ready(full, delivered=4) and not slots.ready(full, delivered=3)
    assert not slots.ready(open_batch, delivered=2)  # still open: more clips may come
    for value, (batch, slot) in placed.items():
        assert (slots.arrays[batch][slot] == value).all()
    slots.free(full)
    assert not slots.ready(full, delivered=0)


def test_a_clip_that_cannot_be_stacked_leaves_its_slot_out():
    slots = BatchSlots(2, (3, 2, 2), "uint8", threading.Event())
    with pytest.raises(ValueError):
        slots.stack([np.zeros((5, 5), np.uint8)] * 3)  # not the batch's frame size
    batch, _ = slots.stack(frames_of(1))
    slots.stack(frames_of(2))  # the next batch: this one is closed
    assert slots.ready(batch, delivered=1)


def test_a_worker_waiting_for_a_free_batch_does_not_hold_up_the_main_thread():
    slots = BatchSlots(1, (3, 2, 2), "uint8", threading.Event())
    for value in range(BATCHES):  # every batch full, none run
        slots.stack(frames_of(value))
    placed = []
    waiting = threading.Thread(target=lambda: placed.append(slots.stack(frames_of(9))))
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive() and not placed  # it waits for a batch to be run
    assert run_with_timeout(lambda: slots.ready(0, delivered=1), seconds=5)["value"]
    slots.free(0)
    waiting.join(5)
    assert placed == [(0, 0)] and (slots.arrays[0][0] == 9).all()


def test_a_worker_waiting_for_a_free_batch_ends_when_the_pipeline_stops():
    stop = threading.Event()
    slots = BatchSlots(1, (3, 2, 2), "uint8", stop)
    for value in range(BATCHES):
        slots.stack(frames_of(value))
    stop.set()
    result = run_with_timeout(lambda: slots.stack(frames_of(9)))
    assert isinstance(result.get("error"), InterruptedError), result


def test_the_store_thread_runs_every_task_in_order_off_the_main_thread_before_it_closes():
    stores = local_engine.StoreThread(capacity=2)
    ran = []

    def record(value: int) -> None:
        if value == 4:
            time.sleep(0.3)  # a shard being written as the extraction ends
        ran.append((value, threading.current_thread().name))

    for value in range(6):
        stores.submit(lambda value=value: record(value))
    stores.close()
    assert ran == [(value, "store") for value in range(6)]


def test_a_failed_store_stops_the_rest_and_is_raised_on_the_main_thread_once():
    stores = local_engine.StoreThread(capacity=1)
    ran = []

    def disk_full() -> None:
        raise OSError("No space left on device")

    stores.submit(disk_full)
    stores.thread.join(0.5)  # the error is seen by the next submit, or by close
    with pytest.raises(OSError, match="No space"):
        stores.submit(lambda: ran.append("after"))
    stores.close()  # said once: the caller already has it
    assert ran == []
