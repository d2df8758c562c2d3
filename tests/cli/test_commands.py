"""Commands end to end on small inputs: synth, check, extract then info and verify, exit
codes, merge."""

from __future__ import annotations

import json
import shutil

import pandas as pd

from gesture_cache import open_cache
from gesture_cache.cli.main import main
from gesture_cache.video.nvdec import nvdec_unavailable


def test_synth_writes_videos_and_csv(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--per-class", "1", "--seed", "3"]) == 0
    table = pd.read_csv(tmp_path / "meta.csv")
    assert list(table.columns) == ["file_path", "action"] and len(table) == 4
    assert all((tmp_path / p).stat().st_size > 0 for p in table["file_path"])


def test_check_reports_every_row_and_fails_on_bad_ones(tmp_path, synth_csv, capsys):
    assert main(["check", str(synth_csv)]) == 0
    assert "8 of 8 rows usable" in capsys.readouterr().out
    csv = tmp_path / "meta.csv"
    csv.write_text(
        f"file_path,action\n{synth_csv.parent}/Shake_Hand/shake_hand_000.avi,a\ngone.avi,b\n"
    )
    assert main(["check", str(csv)]) == 1
    out = capsys.readouterr().out
    assert "missing" in out and "1 of 2 rows usable, 1 not" in out


def test_check_shows_what_the_container_claims(tmp_path, shared_videos, capsys):
    csv = tmp_path / "meta.csv"
    csv.write_text("file_path,action\ntree.avi,tree\nMegamind.avi,face\n")
    assert main(["check", str(csv), "--video-root", str(shared_videos)]) == 0
    out = capsys.readouterr().out
    assert "claims 444 frames, 68 decode" in out


def test_extract_real_videos_then_info_and_verify(tmp_path, shared_videos, capsys):
    csv = tmp_path / "meta.csv"
    csv.write_text("file_path,action\ntree.avi,tree\nMegamind.avi,face\n")
    out = tmp_path / "cache"
    code = main(
        [
            "extract",
            str(csv),
            "--video-root",
            str(shared_videos),
            "--out",
            str(out),
            "--random-weights",
            "1",
            "--clip-stride",
            "64",
        ]
    )
    assert code == 0
    decoder = "opencv" if nvdec_unavailable() else "nvdec, opencv where it cannot"
    assert f"decoding: {'OpenCV on the CPU' if decoder == 'opencv' else 'NVDEC'}" in (
        capsys.readouterr().out
    )
    cache = open_cache(out)
    assert cache.manifest["shards"][0]["software"]["decoder"] == decoder
    assert sorted(cache.recordings["recording_id"]) == ["Megamind.avi", "tree.avi"]
    n_frames = dict(zip(cache.recordings["recording_id"], cache.recordings["n_frames"]))
    assert n_frames["tree.avi"] == 68  # what decodes, not the 444 the container claims
    clips = {
        rid: len(range(0, n - 16 + 1, 64)) + ((n - 16) % 64 > 0) for rid, n in n_frames.items()
    }
    assert cache.features.shape == (sum(clips.values()), 4096)
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["class_counts"] == {"face": 1, "tree": 1} and info["failures"] == []
    assert main(["info", str(out)]) == 0
    assert "RANDOM (seed 1)" in capsys.readouterr().out
    assert main(["verify", str(out)]) == 0
    assert "OK" in capsys.readouterr().out


def test_exit_codes(tmp_path, synth_csv, small_cache, capsys):
    only_bad = tmp_path / "bad.csv"
    only_bad.write_text("file_path,action\nnope.avi,x\n")
    assert (
        main(
            [
                "extract",
                str(only_bad),
                "--out",
                str(tmp_path / "c1"),
                "--random-weights",
                "0",
                "--clip-stride",
                "64",
            ]
        )
        == 1
    )
    assert "nothing could be cached" in capsys.readouterr().err

    mixed = tmp_path / "mixed.csv"
    mixed.write_text(
        f"file_path,action\nnope.avi,x\n{synth_csv.parent}/Shake_Hand/shake_hand_000.avi,y\n"
    )
    args = [
        "extract",
        str(mixed),
        "--out",
        str(tmp_path / "c2"),
        "--random-weights",
        "0",
        "--clip-stride",
        "64",
    ]
    assert main(args) == 0
    assert main([*args, "--strict"]) == 1  # resumes: nothing new, but a recorded failure

    assert main(["extract", str(mixed), "--out", str(tmp_path / "c3"), "--clip-stride", "64"]) == 2
    assert "--random-weights" in capsys.readouterr().err
    missing_columns = tmp_path / "cols.csv"
    missing_columns.write_text("video,label\na.avi,x\n")
    assert (
        main(
            [
                "extract",
                str(missing_columns),
                "--out",
                str(tmp_path / "c4"),
                "--random-weights",
                "0",
            ]
        )
        == 2
    )
    assert "found ['video', 'label']" in capsys.readouterr().err


def test_merge_refuses_different_fingerprints_and_tampered_sources(
    tmp_path, synth_csv, small_cache, capsys
):
    one = tmp_path / "one.csv"
    one.write_text(f"file_path,action\n{synth_csv.parent}/Shake_Hand/shake_hand_000.avi,x\n")
    other = tmp_path / "other"
    assert main(["extract", str(one), "--out", str(other), "--random-weights", "1",
                 "--clip-stride", "64"]) == 0  # fmt: skip
    assert main(["merge", str(small_cache), str(other), "--out", str(tmp_path / "m")]) == 2
    assert "another extractor" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()

    tampered = tmp_path / "tampered"
    shutil.copytree(small_cache, tampered)
    manifest = json.loads((tampered / "manifest.json").read_text())
    manifest["extractor"]["weights"] = {"sha256": "0" * 64}  # claims real weights
    (tampered / "manifest.json").write_text(json.dumps(manifest))
    assert main(["merge", str(small_cache), str(tampered), "--out", str(tmp_path / "m")]) == 2
    assert "fingerprint is not the sha256 of its extractor" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
