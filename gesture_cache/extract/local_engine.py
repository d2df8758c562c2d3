"""The local engine of `extract`: decode workers (threads: OpenCV releases the GIL while it
decodes and resizes) stream each recording's clips into one bounded queue; the main thread
runs the backbone on batches drawn from whatever recordings are in flight, and hands a
recording to the writer once all its clips have features. Memory stays bounded whatever the
length: frames pass through a ring buffer and at most a queue's worth of clips waits.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from gesture_cache.cache.writer import CacheWriter
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extractor import Extractor
from gesture_cache.extract.job import ExtractSummary, InFlight, Job, fail, job_events, store


class DecodeWorkers:
    """Threads that stream the jobs' clips into one bounded queue: ("clip", index, start,
    clip, valid), then ("done", index, Decoded) or ("failed", index, VideoError)."""

    def __init__(self, jobs: list[Job], extractor: Extractor, workers: int, capacity: int):
        self.jobs, self.extractor = jobs, extractor
        self.items: queue.Queue = queue.Queue(maxsize=capacity)
        self.stop = threading.Event()
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
        for kind, *rest in job_events(self.jobs[index], self.extractor):
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


def extract_locally(
    jobs: list[Job],
    extractor: Extractor,
    writer: CacheWriter,
    config: ExtractConfig,
    summary: ExtractSummary,
    progress: Callable[[int], None],
) -> None:
    in_flight: dict[int, InFlight] = {}
    batch: list[tuple[int, np.ndarray]] = []

    def run_batch() -> None:
        started, built = time.perf_counter(), getattr(extractor.backbone, "build_seconds", 0.0)
        outputs = extractor.backbone.forward(np.stack([clip for _, clip in batch]))
        building = getattr(extractor.backbone, "build_seconds", 0.0) - built  # the first call
        summary.model_seconds += time.perf_counter() - started - building
        for (index, _), output in zip(batch, outputs):
            in_flight[index].features.append(output)
            in_flight[index].waiting -= 1
        touched = {index for index, _ in batch}
        batch.clear()
        for index in touched:
            finish(index)

    def finish(index: int) -> None:
        recording = in_flight[index]
        if recording.failed and not recording.waiting:
            del in_flight[index]
        elif recording.decoded is not None and not recording.waiting:
            store(recording, writer, config, summary)
            progress(len(recording.clip_start))
            del in_flight[index]

    workers = DecodeWorkers(jobs, extractor, config.decode_workers, 2 * extractor.batch_clips + 16)
    try:
        for kind, index, *rest in workers:
            recording = in_flight.setdefault(index, InFlight(jobs[index]))
            if kind == "clip":
                start, clip, valid = rest
                recording.clip_start.append(start)
                recording.clip_valid.append(valid)
                recording.waiting += 1
                batch.append((index, clip))
                if len(batch) >= extractor.batch_clips:
                    run_batch()
            elif kind == "done":
                recording.decoded = rest[0]
                finish(index)
            else:
                error = rest[0]
                recording.failed = True
                fail(writer, summary, recording.job.rows[0], error.reason, str(error))
                progress(0)
                finish(index)
        if batch:
            run_batch()
    finally:
        workers.close()
