"""Keras backends: C3D on TensorFlow, JAX and PyTorch gives the same features, runs without
TensorFlow, and a reduced-precision cache stays on its backend; the backend's variable."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest

from gesture_cache.backbones import keras_backends
from gesture_cache.backbones.c3d.backbone import C3D
from gesture_cache.backbones.c3d.options import Options
from gesture_cache.cache.manifest import read_manifest
from gesture_cache.cache.reader import open_cache
from gesture_cache.cli.main import main
from gesture_cache.common.errors import ConfigError
from tests.helpers import numpy_c3d, write_video

OTHER_BACKENDS = [b for b in ("jax", "torch") if keras_backends.installed(b)]


EVERY_BACKEND = ["tensorflow", *OTHER_BACKENDS]


CLI = "import sys; from gesture_cache.cli.main import main; sys.exit(main(sys.argv[1:]))"


# the command line in a process where TensorFlow cannot be imported, as if not installed
# (not `sys.modules["tensorflow"] = None`: Keras reads a name there as TensorFlow loaded)
WITHOUT_TENSORFLOW = """
import sys

class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoTensorFlow())
from gesture_cache.cli.main import main
code = main(sys.argv[1:])
assert not any(m.split(".")[0] == "tensorflow" for m in sys.modules), "TensorFlow loaded"
sys.exit(code)
"""


def gesture_cache(*args: str, program: str = CLI, backend: str | None = None):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    if backend:
        env["KERAS_BACKEND"] = backend
    command = [sys.executable, "-c", program, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_only_reduced_precision_features_are_tied_to_their_backend():
    fields = {
        (precision, backend): C3D(
            Options(precision=precision), random_seed=0, backend=backend, batch_clips=16
        ).fingerprint_fields()
        for precision in ("float32", "mixed_bfloat16")
        for backend in ("tensorflow", "jax")
    }
    assert fields["float32", "tensorflow"] == fields["float32", "jax"]
    assert "backend" not in fields["float32", "jax"]
    assert fields["mixed_bfloat16", "jax"]["backend"] == "jax"
    assert fields["mixed_bfloat16", "tensorflow"] != fields["mixed_bfloat16", "jax"]


def test_a_backend_that_cannot_run_is_one_line(monkeypatch, tmp_path, capsys):
    assert main(["extract", "meta.csv", "--out", str(tmp_path / "c"), "--backend", "mxnet"]) == 2
    assert "--backend" in capsys.readouterr().err
    monkeypatch.setattr(keras_backends, "installed", lambda name: name != "torch")
    with pytest.raises(ConfigError, match=r"gesture_cache\[torch\]"):
        keras_backends.use_backend("torch")
    monkeypatch.undo()
    import keras  # noqa: F401  (this process runs Keras on TensorFlow)

    for other in OTHER_BACKENDS:
        with pytest.raises(ConfigError, match="new process"):
            keras_backends.use_backend(other)


def test_training_without_tensorflow_says_what_to_install(monkeypatch):
    monkeypatch.setattr(keras_backends, "installed", lambda name: name != "tensorflow")
    with pytest.raises(ConfigError, match=r"train needs TensorFlow.*gesture_cache\[cpu\]"):
        keras_backends.use_training_backend("train")


def preprocessed_clip(video: Path) -> np.ndarray:
    """The Caffe recipe by hand: resize to 171x128, subtract the BGR mean, crop 112x112."""
    capture = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < 16:
        ok, frame = capture.read()
        assert ok
        frames.append(cv2.resize(frame, (171, 128)).astype(np.float32))
    clip = np.stack(frames) - np.array([90.25, 97.66, 101.41], np.float32)
    return clip[None, :, 8:120, 29:141, :]


def features_of(folder: Path) -> dict[str, np.ndarray]:
    cache = open_cache(folder)
    ids = list(cache.recordings["recording_id"])
    offsets, counts = cache.recordings["clip_offset"], cache.recordings["clip_count"]
    return {
        r: cache.features[o : o + c].astype(np.float64) for r, o, c in zip(ids, offsets, counts)
    }


@pytest.mark.slow
@pytest.mark.skipif(not OTHER_BACKENDS, reason="neither JAX nor PyTorch is installed")
def test_every_backend_extracts_the_same_features(tmp_path, weights_file):
    """One 16-frame video through `extract --backend B` in float32, on every installed
    backend: fc7 within 1e-5 (relative to the largest value) of each other and of numpy;
    each shard names its backend; a float32 cache resumes on another backend."""
    first = write_video(tmp_path / "first.avi", 16, 200, 150, seed=3)
    second = write_video(tmp_path / "second.avi", 16, 200, 150, seed=4)
    pd.DataFrame({"file_path": [first], "action": ["a"]}).to_csv(tmp_path / "one.csv")
    pd.DataFrame({"file_path": [first, second], "action": ["a", "b"]}).to_csv(tmp_path / "two.csv")
    expected = numpy_c3d(preprocessed_clip(first), weights_file)
    scale = np.abs(expected).max()
    assert scale > 0
    flags = ["--weights", weights_file, "--dtype", "float32"]
    for backend in EVERY_BACKEND:
        out = tmp_path / backend
        done = gesture_cache("extract", tmp_path / "one.csv", "--out", out, *flags,
                             "--backend", backend)  # fmt: skip
        assert done.returncode == 0, done.stderr
        (features,) = features_of(out).values()
        assert features.shape == (1, 4096)
        assert np.abs(features - expected).max() / scale < 1e-5, backend
        for shard in out.glob("*.h5"):
            with h5py.File(shard) as f:
                software = json.loads(f.attrs["software"])
            assert software["backend"] == backend and software[backend]
        assert read_manifest(out)["created_by"]["backend"] == backend
        info = gesture_cache("info", out)
        assert re.search(rf"backend +{backend}\n", info.stdout), info.stdout

    # resume the TensorFlow cache on another backend: float32 features are interchangeable
    other = OTHER_BACKENDS[0]
    before = features_of(tmp_path / "tensorflow")
    resumed = gesture_cache("extract", tmp_path / "two.csv", "--out", tmp_path / "tensorflow",
                            *flags, "--backend", other)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "1 cached, 1 skipped" in resumed.stdout
    after = features_of(tmp_path / "tensorflow")
    assert len(after) == 2
    np.testing.assert_array_equal(after[str(first.resolve())], before[str(first.resolve())])
    second_expected = numpy_c3d(preprocessed_clip(second), weights_file)
    second_scale = np.abs(second_expected).max()
    assert np.abs(after[str(second.resolve())] - second_expected).max() / second_scale < 1e-5


@pytest.mark.slow
@pytest.mark.skipif("jax" not in OTHER_BACKENDS, reason="JAX is not installed")
def test_a_reduced_precision_cache_resumes_only_on_its_backend(tmp_path):
    """A bf16 JAX cache (one broken video, so no C3D runs) refuses PyTorch or TensorFlow
    with the reason, and resumes on JAX."""
    (tmp_path / "broken.avi").write_bytes(b"not a video")
    pd.DataFrame({"file_path": ["broken.avi"], "action": ["a"]}).to_csv(tmp_path / "m.csv")
    flags = ["--video-root", tmp_path, "--random-weights", "0", "--precision", "mixed_bfloat16"]
    out = tmp_path / "cache"
    made = gesture_cache("extract", tmp_path / "m.csv", "--out", out, *flags, "--backend", "jax")
    assert "nothing could be cached" in made.stderr, made.stderr
    assert read_manifest(out)["extractor"]["backend"] == "jax"
    refused = gesture_cache("extract", tmp_path / "m.csv", "--out", out, *flags,
                            "--backend", "tensorflow")  # fmt: skip
    assert refused.returncode == 2
    assert "differs in: backend" in refused.stderr and "differ between backends" in refused.stderr
    again = gesture_cache("extract", tmp_path / "m.csv", "--out", out, *flags, "--backend", "jax")
    assert "0 failed" in again.stdout and "1 skipped" in again.stdout, again.stdout


@pytest.mark.slow
@pytest.mark.skipif(not OTHER_BACKENDS, reason="neither JAX nor PyTorch is installed")
def test_extraction_and_prediction_run_without_tensorflow(tmp_path, detector, synth_csv):
    """In a process where TensorFlow cannot be imported, the default backend is the next
    installed one; check, extract, info, verify and predict work; train says what to
    install."""
    video = synth_csv.parent / pd.read_csv(synth_csv)["file_path"][0]
    pd.DataFrame({"file_path": [video], "action": ["x"]}).to_csv(tmp_path / "m.csv")

    def run(*args):
        return gesture_cache(*args, program=WITHOUT_TENSORFLOW)

    checked = run("check", tmp_path / "m.csv")
    assert checked.returncode == 0, checked.stderr
    cache = tmp_path / "cache"
    extracted = run("extract", tmp_path / "m.csv", "--out", cache, "--random-weights", "0",
                    "--clip-stride", "32")  # fmt: skip
    assert extracted.returncode == 0, extracted.stderr
    assert read_manifest(cache)["created_by"]["backend"] == OTHER_BACKENDS[0]
    assert re.search(rf"backend +{OTHER_BACKENDS[0]}\n", run("info", cache).stdout)
    verified = run("verify", cache)
    assert verified.returncode == 0 and verified.stdout.startswith("OK"), verified.stdout
    predicted = run("predict", detector.run, video, "--random-weights", "0", "--json")
    assert predicted.returncode == 0, predicted.stderr
    (result,) = json.loads(predicted.stdout)
    assert result["label"] in json.loads((detector.run / "config.json").read_text())["classes"]
    trained = run("train", cache, "--out", tmp_path / "run")
    assert trained.returncode == 2
    assert "needs TensorFlow" in trained.stderr and "gesture_cache[cpu]" in trained.stderr
    assert not (tmp_path / "run").exists()


def test_a_keras_backend_variable_is_named_as_the_variable(monkeypatch):
    from gesture_cache.backbones.keras_backends import use_backend

    monkeypatch.setenv("KERAS_BACKEND", "mxnet")
    with pytest.raises(ConfigError, match="KERAS_BACKEND=mxnet is not a backend"):
        use_backend(None)
    with pytest.raises(ConfigError, match="--backend 'mxnet'"):
        use_backend("mxnet")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_float32_network_turns_tf32_off_on_its_framework(backend):
    """What makes GPU float32 features agree with the CPU's: each framework's TF32 switch,
    set in a fresh process when a float32 C3D is built there (the CPU cannot show TF32's
    effect; a GPU run of benchmarks/gpu.sh measures the features' agreement)."""
    pytest.importorskip(backend)
    probe = {
        "torch": "import torch; print(torch.backends.cudnn.conv.fp32_precision, "
        "torch.backends.cuda.matmul.fp32_precision)",
        "jax": "import jax; print(jax.config.jax_default_matmul_precision)",
    }[backend]
    script = (
        "from gesture_cache.backbones.c3d.backbone import C3D; "
        "from gesture_cache.backbones.c3d.options import Options; import numpy as np; "
        f"{probe}; "
        f"C3D(Options(), random_seed=0, backend={backend!r}, batch_clips=1).forward("
        "np.zeros((1, *C3D.clip_shape), np.uint8)); "
        f"{probe}"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = done.stdout.split("\n")[-3:-1]
    assert after == {"torch": "ieee ieee", "jax": "highest"}[backend], (before, after)
    assert before != after  # the defaults allow TF32: the network's build changed them


def test_a_short_batch_is_padded_to_one_of_few_compiled_shapes():
    counts = (1, 3, 100, 128, 200, 256)
    padded = {count: keras_backends.padded_batch(count, 256) for count in counts}
    assert padded == {1: 1, 3: 4, 100: 128, 128: 256, 200: 256, 256: 256}
    shapes = {keras_backends.padded_batch(count, 256) for count in range(1, 257)}
    assert len(shapes) == 9  # log2(256) + 1: what JAX and torch.compile ever compile
