"""Bad input to `extract` never stops the job: missing files fail fast, bad rows fail alone,
changed files are reported, unchanged ones are not hashed again."""

from __future__ import annotations

from pathlib import Path

from gesture_cache.cache.manifest import read_failures
from gesture_cache.cli.main import main
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from tests.helpers import one_video_csv

FAST = {"random_weights": 0, "clip_stride": 64}


def failure_of(cache: Path, recording_id: str) -> dict:
    (record,) = [r for r in read_failures(cache).values() if r["recording_id"] == recording_id]
    return record


def test_tqdm_disabled_extraction_works(tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    summary = build_cache(one_video_csv(tmp_path), tmp_path / "c", ExtractConfig(**FAST))
    assert summary.cached == 1


def test_many_missing_files_fail_fast_without_building_c3d(tmp_path, monkeypatch):
    rows = "".join(f"gone_{i}.avi,wave\n" for i in range(500))
    (tmp_path / "meta.csv").write_text("file_path,action\n" + rows)

    def no_model(*args, **kwargs):
        raise AssertionError("C3D was built although no video decodes")

    monkeypatch.setattr("gesture_cache.backbones.c3d.backbone.build_c3d", no_model)
    summary = build_cache(tmp_path / "meta.csv", tmp_path / "c", ExtractConfig(**FAST))
    assert summary.failed["missing"] == 500 and not summary.ok
    assert len(read_failures(tmp_path / "c")) == 500
    assert len((tmp_path / "c" / "failures.jsonl").read_text().splitlines()) == 500


def test_a_nul_byte_fails_its_row_only(tmp_path):
    csv = one_video_csv(tmp_path, n=2)
    csv.write_text(csv.read_text().replace("v1.avi,wave", "v1.avi,wa\0ve"))
    out = tmp_path / "c"
    summary = build_cache(csv, out, ExtractConfig(**FAST))
    assert summary.cached == 1 and failure_of(out, "v1.avi")["reason"] == "bad_row"
    assert "NUL" in failure_of(out, "v1.avi")["message"]
    assert build_cache(csv, out, ExtractConfig(**FAST)).skipped == 2


def test_a_column_name_with_a_slash_is_refused_up_front(tmp_path, capsys):
    csv = one_video_csv(tmp_path)
    csv.write_text(csv.read_text().replace("file_path,action", "file_path,action,a/b", 1))
    code = main(["extract", str(csv), "--out", str(tmp_path / "c"), "--random-weights", "0"])
    assert code == 2 and "column name 'a/b'" in capsys.readouterr().err


def test_a_label_fixed_in_the_csv_is_reported(tmp_path, caplog):
    csv = one_video_csv(tmp_path)
    build_cache(csv, tmp_path / "c", ExtractConfig(**FAST))
    csv.write_text(csv.read_text().replace(",wave", ",click"))
    again = build_cache(csv, tmp_path / "c", ExtractConfig(**FAST))
    assert again.relabelled == 1 and "'click' [0, 10] is not in the cache" in caplog.text


def test_a_file_replaced_while_decoded_is_a_failure(tmp_path, monkeypatch):
    from gesture_cache.extract.extractor import Extractor

    real_clips = Extractor.clips

    def clips_then_replace(self, frames, stack):
        yield from real_clips(self, frames, stack)
        with open(frames.path, "ab") as f:
            f.write(b"appended while decoding")

    monkeypatch.setattr(Extractor, "clips", clips_then_replace)
    out = tmp_path / "c"
    summary = build_cache(one_video_csv(tmp_path), out, ExtractConfig(**FAST))
    assert summary.cached == 0
    assert failure_of(out, "v0.avi")["reason"] == "changed_while_reading"


def test_trailing_commas_do_not_shift_columns(tmp_path):
    csv = one_video_csv(tmp_path, n=2)
    csv.write_text(csv.read_text().replace("wave\n", "wave,\n"))
    assert build_cache(csv, tmp_path / "c", ExtractConfig(**FAST)).cached == 2


def test_a_rerun_does_not_rehash_unchanged_files(tmp_path, monkeypatch):
    csv = one_video_csv(tmp_path, n=2)
    build_cache(csv, tmp_path / "c", ExtractConfig(**FAST))

    def no_hashing(path):
        raise AssertionError(f"{path} was hashed although its size and time are unchanged")

    monkeypatch.setattr("gesture_cache.extract.extraction.source_sha256", no_hashing)
    assert build_cache(csv, tmp_path / "c", ExtractConfig(**FAST)).skipped == 2
