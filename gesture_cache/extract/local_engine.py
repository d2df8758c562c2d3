"""The local engine of `extract`: decode workers (threads: OpenCV releases the GIL while it
decodes and resizes) stack each clip's frames straight into a slot of the batch the backbone
will run (`BatchSlots`: a clip's frames are copied once) and tell the main thread through one
queue; the main thread runs the backbone on each batch once every slot of it is filled,
whatever recordings they came from, and hands a recording to the store thread once all its
clips have features (`StoreThread`: the cache writer's own thread, so that no shard write
holds up the model). Memory stays bounded whatever the length: frames pass through a ring
buffer, at most `BATCHES` batches of clips wait, and at most a shard of finished recordings
waits for the writer.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np

from gesture_cache.cache.writer import CacheWriter
from gesture_cache.common.interrupts import acted_on
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extractor import Extractor
from gesture_cache.extract.job import ExtractSummary, InFlight, Job, fail, job_events, store
from gesture_cache.video.decode import VideoError

BATCHES = 3  # batch arrays: one the backbone runs, the next ones the workers fill


class BatchSlots:
    """Batch arrays the decode workers stack clips into, slot after slot; `stack(frames)`
    returns the clip's (batch, slot). A batch is ready once all its slots are taken and every
    clip stacked into it reached the main thread, which runs it and `free`s it (a clip whose
    stacking failed leaves its slot out). Workers wait for a free batch without holding the
    lock the main thread asks `ready` under."""

    def __init__(self, batch_clips: int, clip_shape: tuple, dtype: str, stop: threading.Event):
        self.arrays = [np.empty((batch_clips, *clip_shape), dtype) for _ in range(BATCHES)]
        self.size, self.stop = batch_clips, stop
        self.lock = threading.Lock()  # the counts below; never held while waiting
        self.switching = threading.Lock()  # one worker waits for the next idle batch
        self.idle: queue.Queue[int] = queue.Queue()
        for batch in range(BATCHES):
            self.idle.put(batch)
        self.batch, self.reserved = self.idle.get(), 0
        self.stacking = [0] * BATCHES  # slots being filled now
        self.filled = [0] * BATCHES
        self.closed = [False] * BATCHES  # every slot reserved

    def stack(self, frames: Sequence[np.ndarray]) -> tuple[int, int]:
        batch, slot = self._reserve()
        filled = False
        try:
            np.stack(frames, out=self.arrays[batch][slot])
            filled = True
        finally:
            with self.lock:  # both at once: `ready` never sees the slot done but not counted
                self.stacking[batch] -= 1
                self.filled[batch] += filled
        return batch, slot

    def _reserve(self) -> tuple[int, int]:
        while True:
            with self.lock:
                if self.reserved < self.size:
                    batch, slot = self.batch, self.reserved
                    self.reserved += 1
                    self.stacking[batch] += 1
                    self.closed[batch] = self.reserved == self.size
                    return batch, slot
            with self.switching:
                with self.lock:
                    if self.reserved < self.size:
                        continue  # another worker took the next batch meanwhile
                batch = self._next_idle()
                with self.lock:
                    self.batch, self.reserved = batch, 0

    def _next_idle(self) -> int:
        while not self.stop.is_set():
            try:
                return self.idle.get(timeout=0.1)
            except queue.Empty:
                continue
        raise InterruptedError("the pipeline stopped")

    def ready(self, batch: int, delivered: int) -> bool:
        """Whether a batch of which `delivered` clips reached the main thread can run."""
        with self.lock:
            done = self.closed[batch] and not self.stacking[batch]
            return done and delivered == self.filled[batch]

    def free(self, batch: int) -> None:
        with self.lock:
            self.filled[batch], self.closed[batch] = 0, False
        self.idle.put(batch)


class DecodeWorkers:
    """Threads that stream the jobs' clips into one bounded queue: ("clip", index, start,
    clip, valid), then ("done", index, Decoded) or ("failed", index, VideoError). `stack`
    makes a clip of its frames (`stream_clips`); `stop`, set by `close`, ends them."""

    def __init__(
        self,
        jobs: list[Job],
        extractor: Extractor,
        workers: int,
        capacity: int,
        stack: Callable[[Sequence[np.ndarray]], Any] = np.stack,
        stop: threading.Event | None = None,
    ):
        self.jobs, self.extractor, self.stack = jobs, extractor, stack
        self.items: queue.Queue = queue.Queue(maxsize=capacity)
        self.stop = stop or threading.Event()
        self._next = iter(range(len(jobs)))
        self._take = threading.Lock()
        self.threads = [
            threading.Thread(target=self._work, daemon=True, name=f"decode-{i}")
            for i in range(min(workers, max(len(jobs), 1)))
        ]
        for thread in self.threads:
            thread.start()

    def __iter__(self) -> Iterator[tuple]:
        running = len(self.threads)
        while running:
            item = self.items.get()
            if item[0] == "exit":
                running -= 1
            elif item[0] == "crashed":  # a fault outside any one recording: ends the job
                raise item[1]
            else:
                yield item

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)

    def _work(self) -> None:
        """Decode jobs until none is left; whatever escapes a job ends the extraction with
        its message (never a wait for a worker that died)."""
        try:
            while not self.stop.is_set():
                with self._take:
                    index = next(self._next, None)
                if index is None:
                    break
                self._decode(index)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            self._put(("crashed", error))
        finally:
            self._put(("exit",))

    def _decode(self, index: int) -> None:
        for kind, *rest in job_events(self.jobs[index], self.extractor, self.stack):
            if not self._put((kind, index, *rest)):
                return

    def _put(self, item: tuple) -> bool:
        """Queue an item, giving up (False) once the pipeline stops."""
        while not self.stop.is_set():
            try:
                self.items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


class StoreThread:
    """The cache writer's own thread: finished recordings and failures reach the writer in
    the order they are handed over (`submit`), while the model's thread goes on to its next
    batch. A shard's gzip costs about 0.2 ms a clip of 4096 float16 values, a third to half
    of what a GPU takes to compute the clip; h5py releases the GIL while it compresses.
    The first error of a task stops the others and is raised on the main thread, by the
    next `submit` or by `close`."""

    def __init__(self, capacity: int):
        self.tasks: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=capacity)
        self.error: BaseException | None = None
        self.raised = False
        self.thread = threading.Thread(target=self._run, daemon=True, name="store")
        self.thread.start()

    def submit(self, task: Callable[[], None]) -> None:
        self._raise_error()
        self.tasks.put(task)

    def close(self) -> None:
        """Run every task handed over (what finished is kept, on an error or a Ctrl-C too),
        then end the thread."""
        self.tasks.put(None)
        self.thread.join()
        self._raise_error()

    def _run(self) -> None:
        while (task := self.tasks.get()) is not None:
            if self.error is None:
                try:
                    task()
                except BaseException as error:  # noqa: BLE001 - raised on the main thread
                    self.error = error

    def _raise_error(self) -> None:
        if self.error is not None and not self.raised:
            self.raised = True
            raise self.error


def extract_locally(
    jobs: list[Job],
    extractor: Extractor,
    writer: CacheWriter,
    config: ExtractConfig,
    summary: ExtractSummary,
    progress: Callable[[int], None],
) -> None:
    in_flight: dict[int, InFlight] = {}
    waiting: dict[int, list[tuple[int, int]]] = {}  # batch -> (slot, recording) delivered
    backbone = extractor.backbone

    def run_batch(batch: int) -> None:
        delivered = sorted(waiting.pop(batch))
        started, built = time.perf_counter(), getattr(backbone, "build_seconds", 0.0)
        clips = slots.arrays[batch][: delivered[-1][0] + 1]
        outputs = backbone.forward(clips)
        if np.may_share_memory(outputs, clips):  # a backbone that reshapes its input (hands)
            outputs = outputs.copy()
        building = getattr(backbone, "build_seconds", 0.0) - built  # the first call
        summary.model_seconds += time.perf_counter() - started - building
        slots.free(batch)
        for slot, index in delivered:
            in_flight[index].features.append(outputs[slot])
            in_flight[index].waiting -= 1
        for index in {index for _, index in delivered}:
            finish(index)

    def run_ready() -> None:
        for batch in [b for b, clips in waiting.items() if slots.ready(b, len(clips))]:
            run_batch(batch)

    def finish(index: int) -> None:
        recording = in_flight[index]
        if recording.failed and not recording.waiting:
            del in_flight[index]
        elif recording.decoded is not None and not recording.waiting:
            stores.submit(partial(stored, recording))
            del in_flight[index]

    def stored(recording: InFlight) -> None:
        store(recording, writer, config, summary)
        progress(len(recording.clip_start))

    def failed(recording: InFlight, error: VideoError) -> None:
        fail(writer, summary, recording.job.rows[0], error.reason, str(error))
        progress(0)

    stop = threading.Event()
    slots = BatchSlots(extractor.batch_clips, backbone.clip_shape, backbone.clip_dtype, stop)
    workers = DecodeWorkers(
        jobs, extractor, config.decode_workers, 4 * extractor.batch_clips, slots.stack, stop
    )
    stores = StoreThread(capacity=config.shard_size)
    try:
        for kind, index, *rest in workers:
            recording = in_flight.setdefault(index, InFlight(jobs[index]))
            if kind == "clip":
                start, (batch, slot), valid = rest
                recording.clip_start.append(start)
                recording.clip_valid.append(valid)
                recording.waiting += 1
                waiting.setdefault(batch, []).append((slot, index))
            elif kind == "done":
                recording.decoded = rest[0]
                finish(index)
            else:
                recording.failed = True
                stores.submit(partial(failed, recording, rest[0]))
                finish(index)
            run_ready()
        for batch in list(waiting):  # the last batch, not full
            run_batch(batch)
    except BaseException as error:
        acted_on(error)  # a Ctrl-C: no repeat of it cuts short what is being stored
        raise
    finally:
        workers.close()
        stores.close()
