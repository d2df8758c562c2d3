"""`export`: a trained run as a bundle in every installed format, each artifact checked in
its own runtime, and predict/detect from the bundle in a process without TensorFlow."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from gesture_cache.cli.main import main
from gesture_cache.common.errors import ConfigError, RunError
from gesture_cache.deploy import export as export_module
from gesture_cache.deploy.bundle import BundleBackbone, open_bundle
from gesture_cache.deploy.export import export_run, parse_formats
from tests.helpers import without_tensorflow, write_video


@pytest.fixture(scope="module")
def exported(detector, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    manifest = export_run(detector.run, out, random_weights=0)
    return out, manifest


@pytest.mark.slow
def test_every_installed_format_passes_its_parity_bound(exported):
    out, manifest = exported
    found = {(a["role"], a["format"]) for a in manifest["artifacts"]}
    assert found == {
        ("head", "onnx"), ("head", "openvino"), ("head", "litert"), ("head", "saved_model"),
        ("backbone", "onnx"), ("backbone", "openvino"),
    }  # fmt: skip
    for artifact in manifest["artifacts"]:
        parity = artifact["parity"]
        if artifact["role"] == "head":
            assert parity["max_abs_difference"] <= 1e-5 and parity["windows"] >= 4, artifact
        else:
            assert parity["max_relative_difference"] <= 1e-4, artifact
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["classes"] == ["NA", "no_gesture", "null"] and saved["detector"]
    assert saved["window"]["clips"] == 2 and saved["detection"]["on"] == 0.6
    open_bundle(out)  # every sha256 matches


@pytest.mark.slow
def test_the_onnx_head_has_exactly_features_and_mask_and_litert_no_flex_op(exported):
    from ai_edge_litert.interpreter import Interpreter

    out, _ = exported
    head = onnx.load(out / "head.onnx")
    assert [i.name for i in head.graph.input] == ["features", "mask"]
    operators = {op["op_name"] for op in Interpreter(str(out / "head.tflite"))._get_ops_details()}
    assert operators and not [op for op in operators if "flex" in op.lower()], operators


@pytest.mark.slow
def test_predict_and_detect_from_the_bundle_without_tensorflow(detector, exported, tmp_path):
    out, _ = exported
    video = write_video(tmp_path / "session.avi", 120)
    from_run = tmp_path / "from_run"
    command = ["detect", str(detector.run), str(video), "--out", str(from_run)]
    assert main([*command, "--random-weights", "0"]) == 0
    assert main(["predict", str(detector.run), str(video), "--random-weights", "0", "--json"]) == 0
    for runtime in ("onnxruntime", "openvino", "litert"):
        mine = tmp_path / runtime
        process = without_tensorflow(
            "detect", str(out), str(video), "--out", str(mine), "--runtime", runtime, cwd=tmp_path
        )
        assert process.returncode == 0, process.stderr[-3000:]
        a = np.load(from_run / "windows.npz")["recording_0_probabilities"]
        b = np.load(mine / "windows.npz")["recording_0_probabilities"]
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-4, runtime
        assert (mine / "events.csv").read_text() == (from_run / "events.csv").read_text()
        predicted = without_tensorflow(
            "predict", str(out), str(video), "--json", "--runtime", runtime, cwd=tmp_path
        )
        assert predicted.returncode == 0, predicted.stderr[-3000:]
        label = json.loads(predicted.stdout)[0]["label"]
        assert label == predict_label(detector.run, video), runtime


def predict_label(run: Path, video: Path) -> str:
    from gesture_cache.deploy.predict import predict_videos

    return predict_videos(run, [video], random_weights=0)[0]["label"]


@pytest.mark.slow
def test_detection_from_a_cache_gives_the_runs_events(detector, exported, tmp_path):
    out, _ = exported
    sources = [*detector.unseen]
    run_out, bundle_out = tmp_path / "run", tmp_path / "bundle"
    common = [*sources, "--cache", str(detector.cache), "--truth", str(detector.truth)]
    assert main(["detect", str(detector.run), *common, "--out", str(run_out)]) == 0
    process = without_tensorflow(
        "detect", str(out), *common, "--out", str(bundle_out), cwd=tmp_path
    )
    assert process.returncode == 0, process.stderr[-3000:]
    events = pd.read_csv(run_out / "events.csv", dtype=str, keep_default_na=False)
    assert len(events) and events.equals(
        pd.read_csv(bundle_out / "events.csv", dtype=str, keep_default_na=False)
    )


@pytest.mark.slow
def test_quantized_heads_agree_on_the_top_class(detector, tmp_path):
    manifest = export_run(
        detector.run, tmp_path / "q", ["onnx", "litert"], "int8", random_weights=0
    )
    heads = [a for a in manifest["artifacts"] if a["role"] == "head"]
    assert {a["precision"] for a in heads} == {"int8"}
    for head in heads:
        assert head["parity"]["top_class_agreement"] >= 0.98
    manifest = export_run(detector.run, tmp_path / "h", ["litert"], "float16", random_weights=0)
    assert [a["precision"] for a in manifest["artifacts"]] == ["float16"]


def test_a_bundle_that_does_not_match_its_manifest_is_refused_before_work(
    exported, tmp_path, capsys
):
    out, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "head.onnx", "ab") as f:
        f.write(b"\0")
    video = write_video(tmp_path / "v.avi", 40)
    assert main(["predict", str(copy), str(video)]) == 2
    assert "head.onnx does not match its sha256" in capsys.readouterr().err


def test_a_truth_file_with_other_classes_is_refused_before_work(
    detector, exported, tmp_path, capsys
):
    out, _ = exported
    truth = tmp_path / "truth.csv"
    truth.write_text(f"file_path,action,start_frame,end_frame\n{detector.unseen[0]},jump,0,9\n")
    target = tmp_path / "d"
    command = ["detect", str(out), detector.unseen[0], "--cache", str(detector.cache)]
    assert main([*command, "--out", str(target), "--truth", str(truth)]) == 2
    assert "label 'jump' is not one the run knows" in capsys.readouterr().err
    assert not target.exists()


def edited_bundle(exported, tmp_path: Path, edit) -> Path:
    out, _ = exported
    copy = tmp_path / "edited"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def pointing_outside(manifest: dict, name: str) -> None:
    """The ONNX head's file named `name`, hashed as the manifest says its own file is."""
    head = next(a for a in manifest["artifacts"] if a["format"] == "onnx")
    head["files"] = {name: head["files"]["head.onnx"]}
    head["main"] = name


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda m: next(a for a in m["artifacts"] if a["format"] == "onnx").update(
                main="/etc/passwd"
            ),
            "is not among its hashed files",
        ),  # fmt: skip
        (lambda m: pointing_outside(m, "../bundle/head.onnx"), "leaves the folder"),
        (lambda m: pointing_outside(m, "/etc/passwd"), "leaves the folder"),
        (lambda m: m.pop("artifacts"), "field 'artifacts' is missing"),
        (lambda m: m.pop("classes"), "field 'classes' is missing"),
        (lambda m: m["artifacts"][0].pop("files"), "artifacts[0]: field 'files' is missing"),
        (lambda m: m["window"].update(clips=0), "field 'window' cannot be used: window clips 0"),
    ],
)
def test_a_bundle_manifest_is_checked_before_anything_is_loaded(
    exported, tmp_path, capsys, edit, message
):
    """Every name a runtime would load comes from the manifest: one outside the bundle or
    not among its hashed files is refused, and so is a manifest that lacks a field."""
    copy = edited_bundle(exported, tmp_path, edit)
    video = write_video(tmp_path / "v.avi", 40)
    assert main(["predict", str(copy), str(video)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


@pytest.mark.slow
def test_a_bundle_manifest_that_is_not_json_is_named(exported, tmp_path, capsys):
    copy = edited_bundle(exported, tmp_path, lambda m: None)
    (copy / "manifest.json").write_text('{"format": "gesture-cache-bundle", ')
    video = write_video(tmp_path / "v.avi", 40)
    assert main(["predict", str(copy), str(video)]) == 2
    assert "bundle manifest" in (err := capsys.readouterr().err) and "not valid JSON" in err


def test_a_quantization_a_format_does_not_get_is_refused(detector, tmp_path):
    with pytest.raises(ConfigError, match="applies to the litert heads, not to onnx"):
        export_run(detector.run, tmp_path / "q", ["onnx"], "float16", random_weights=0)
    with pytest.raises(ConfigError, match="not to openvino"):
        parse_formats("onnx,openvino", "int8")
    assert parse_formats(None, "int8") == ["litert", "onnx"]  # those it applies to
    assert not (tmp_path / "q").exists()


def test_a_bundle_is_never_written_inside_the_cache_it_reads(detector, tmp_path):
    with pytest.raises(ConfigError, match="is read as input"):
        export_run(detector.run, detector.cache / "bundle", ["onnx"], random_weights=0)
    assert not (detector.cache / "bundle").exists()


@pytest.mark.slow
def test_frames_of_another_layout_are_refused(exported):
    out, _ = exported
    backbone = BundleBackbone(open_bundle(out), "onnxruntime")
    with pytest.raises(ConfigError, match="uint8 frames"):
        backbone.forward(np.zeros((1, 16, 112, 112, 3), np.uint8))  # cropped: not the layout
    with pytest.raises(ConfigError, match="uint8 frames"):
        backbone.forward(np.zeros((1, 16, 128, 171, 3), np.float32))


def test_weights_flags_with_a_bundle_and_runtimes_with_a_run_are_refused(
    detector, exported, tmp_path, capsys
):
    out, _ = exported
    video = str(write_video(tmp_path / "v.avi", 40))
    assert main(["predict", str(out), video, "--random-weights", "0"]) == 2
    assert "carries its own backbone" in capsys.readouterr().err
    assert main(["predict", str(detector.run), video, "--runtime", "onnxruntime"]) == 2
    assert "runs an exported bundle" in capsys.readouterr().err


def test_an_existing_out_an_unfinished_run_and_a_damaged_model_are_refused(
    detector, tmp_path, capsys
):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    command = ["export", str(detector.run), "--random-weights", "0", "--format", "onnx"]
    assert main([*command, "--out", str(tmp_path / "taken")]) == 2
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep"
    run = tmp_path / "run"
    shutil.copytree(detector.run, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "status": "running"}))
    export = ["export", str(run), "--random-weights", "0", "--out", str(tmp_path / "b")]
    assert main(export) == 2
    assert "not finished" in capsys.readouterr().err
    (run / "config.json").write_text(json.dumps(config))
    (run / "model.keras").write_bytes((run / "model.keras").read_bytes()[:1000])
    assert main(export) == 2
    assert "model.keras cannot be loaded" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_a_missing_runtime_is_named(monkeypatch):
    monkeypatch.setattr(export_module, "installed_formats", lambda: ["onnx", "saved_model"])
    with pytest.raises(ConfigError, match="pip install openvino"):
        parse_formats("openvino")
    with pytest.raises(ConfigError, match="choose from"):
        parse_formats("tensorrt")


@pytest.mark.slow
def test_a_full_disk_during_export_leaves_nothing(detector, tmp_path):
    """A file-size limit below the backbone's size: the export fails with a message and
    leaves neither the bundle, its staging folder, nor the parent folders it created."""
    out = tmp_path / "a" / "b" / "c"
    script = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (50_000_000, "
        "50_000_000)); from gesture_cache.cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    command = [sys.executable, "-c", script, "export", str(detector.run), "--out", str(out)]
    process = subprocess.run(
        [*command, "--random-weights", "0", "--format", "onnx"],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)),
    )
    assert process.returncode == 2, process.stderr[-2000:]
    assert "cannot write the bundle" in process.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_incomplete_run_is_refused_by_name(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(RunError, match="no config.json"):
        export_run(tmp_path / "run", tmp_path / "b", random_weights=0)


@pytest.mark.slow
def test_ctrl_c_during_export_leaves_nothing(detector, tmp_path):
    import signal
    import time

    out = tmp_path / "b"
    command = [sys.executable, "-m", "gesture_cache.cli", "export", str(detector.run)]
    command += ["--out", str(out), "--random-weights", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(1200):  # until the bundle is being built
        if list(tmp_path.glob(".b.building-*")):
            break
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == []
