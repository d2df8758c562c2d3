"""The local engine's decode workers: a worker that dies ends the extraction, never a hang."""

from __future__ import annotations

from gesture_cache.extract import local_engine
from tests.helpers import run_with_timeout


def test_a_decode_worker_that_dies_ends_the_extraction(monkeypatch):
    def broken(job, extractor):
        raise RuntimeError("decoder bug")
        yield  # a generator, as job_events is

    monkeypatch.setattr(local_engine, "job_events", broken)
    workers = local_engine.DecodeWorkers([object(), object()], None, workers=2, capacity=4)
    result = run_with_timeout(lambda: list(workers))
    workers.close()
    assert isinstance(result.get("error"), RuntimeError), result
