"""Small builders shared by the tests: videos of every awkward kind and Keras-2 weights files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import keras
import numpy as np

from gesture_cache.cache.manifest import ExtractorRecord, read_failures
from gesture_cache.cache.reader import open_cache

ROOT = Path(__file__).resolve().parents[1]  # the checkout
SHARED = ROOT.parent / "shared"  # ../shared: fixtures beside the checkout, when it is there
HANDS = SHARED / "fixtures" / "hands"
VIDEOS = SHARED / "fixtures" / "videos"
FIXTURES = Path(__file__).resolve().parent / "fixtures"  # stored reference outputs

# The command in a subprocess (`python -c WITH_TOY ARGS...`), the toy backbone registered.
# Runs the command line in a process where TensorFlow and Keras cannot be imported.
WITHOUT_TENSORFLOW = (
    "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
    "from gesture_cache.cli.main import main; sys.exit(main(sys.argv[1:]))"
)

WITH_TOY = (
    "import sys, tests.toy_backbone as toy; toy.register(); "
    "from gesture_cache.cli.main import main; sys.exit(main(sys.argv[1:]))"
)


def write_video(
    path: Path,
    n_frames: int,
    width: int = 64,
    height: int = 48,
    fps: float = 25,
    grey: bool = False,
    seed: int = 0,
) -> Path:
    """An MJPG video of a bright square moving over noise."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height), isColor=not grey
    )
    for i in range(n_frames):
        frame = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        x = int((width - 1) * i / max(n_frames - 1, 1))
        frame[:, max(0, x - 2) : x + 3] = 230
        writer.write(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if grey else frame)
    writer.release()
    assert path.stat().st_size > 0, f"OpenCV wrote nothing to {path}"
    return path


def save_keras2_weights(model: keras.Model, path: Path) -> Path:
    """Write `model`'s weights in the layout Keras 2.2.4's `save_weights` used: root attributes
    layer_names/backend/keras_version, one group per layer with weight_names."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0" for w in layer.weights]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, weight in zip(names, layer.weights):
                group.create_dataset(name, data=np.asarray(weight.numpy()))
    return path


def clip_span(cache, recording_id: str) -> slice:
    """Where one recording's clips lie in a loaded cache's clip arrays."""
    i = list(cache.recordings["recording_id"]).index(recording_id)
    offset, count = cache.recordings["clip_offset"][i], cache.recordings["clip_count"][i]
    return slice(offset, offset + count)


def clips_of(cache, recording_id: str) -> np.ndarray:
    """One recording's clip features from a loaded cache, as float32."""
    return cache.features[clip_span(cache, recording_id)].astype(np.float32)


def unlist_last_shard(folder: Path, delete: bool = False) -> dict:
    """The manifest as it was before its last shard was listed (a writer killed between the
    shard's rename and the manifest's); the shard file stays unless `delete`."""
    import json

    from gesture_cache.cache.manifest import read_manifest
    from gesture_cache.cache.shard import read_shard

    manifest = read_manifest(folder)
    last = manifest["shards"].pop()
    content = read_shard(folder / last["file"], 2)
    manifest["recordings"] -= last["recordings"]
    manifest["clips"] -= last["clips"]
    manifest["segments"] -= last["segments"]
    for label in content.segments["label"]:
        manifest["class_counts"][label] -= 1
    manifest["class_counts"] = {k: v for k, v in manifest["class_counts"].items() if v}
    manifest["classes"] = sorted(manifest["class_counts"])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    if delete:
        (folder / last["file"]).unlink()
    return last


def write_v1_cache(folder: Path, labels: list[str], clips: int = 2, seed: int = 0) -> Path:
    """A schema-1 cache as the first version of this tool wrote it: one (T, D) feature
    sequence and one label per video, random features."""
    import json

    from gesture_cache.cache.manifest import fingerprint_of
    from gesture_cache.common.files import file_sha256

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    n = len(labels)
    extractor = {
        "model": "C3D Sports-1M (Keras)",
        "layer": "fc7",
        "weights": {"random_seed": 0},
        "preprocessing": {
            "name": "c3d",
            "resize": [171, 128],
            "interpolation": "bilinear",
            "crop": [8, 120, 29, 141],
            "scale": 1.0,
            "mean_bgr": [90.25, 97.66, 101.41],
            "mean_file": None,
            "mean_sha256": None,
        },
        "frames": 16 * clips,
        "clip_len": 16,
        "clip_stride": 16,
        "sampling": "pad",
        "pad": "edge",
        "pool5_pad": "caffe",
        "precision": "float32",
    }
    fingerprint = fingerprint_of(extractor)
    strings = h5py.string_dtype("utf-8")
    features = rng.random((n, clips, 4096)).astype(np.float16)
    for i, label in enumerate(labels):  # something to learn: a class-dependent offset
        features[i, :, :64] += sorted(set(labels)).index(label)
    with h5py.File(folder / "part-00000.h5", "w") as f:
        f.attrs["format"], f.attrs["schema_version"] = "gesture-cache", 1
        f.attrs["fingerprint"] = fingerprint
        f.create_dataset("features", data=features, chunks=(1, clips, 4096), compression="gzip")
        f.create_dataset("mask", data=np.ones((n, clips), bool))
        f.create_dataset("label", data=labels, dtype=strings)
        f.create_dataset("video_id", data=[f"v{i:03d}.avi" for i in range(n)], dtype=strings)
        f.create_dataset("video_sha256", data=[f"{i:064x}" for i in range(n)], dtype=strings)
        f.create_dataset("group", data=[""] * n, dtype=strings)
        for column, value in (("n_frames", 32), ("fps", 25.0), ("height", 48), ("width", 64)):
            f.create_dataset(column, data=np.full(n, value))
    counts = {c: labels.count(c) for c in sorted(set(labels))}
    manifest = {
        "format": "gesture-cache",
        "schema_version": 1,
        "created_by": "gesture_cache 0.1.0",
        "extractor": extractor,
        "fingerprint": fingerprint,
        "feature_shape": [clips, 4096],
        "dtype": "float16",
        "classes": sorted(counts),
        "class_counts": counts,
        "shards": [
            {"file": "part-00000.h5", "videos": n, "sha256": file_sha256(folder / "part-00000.h5")}
        ],
        "videos": n,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def write_continuous_cache(
    folder: Path,
    extractor: dict,
    recordings: list[str],
    gestures: tuple[str, ...] = ("NA", "null"),
    clips: int = 24,
    seed: int = 0,
    shard_size: int = 4,
) -> Path:
    """A cache of continuous recordings, written by the real writer with synthetic features
    (no C3D): each recording holds every gesture once, `clips // (2 * len(gestures))` clips
    long, between stretches of background. A gesture's features carry a strong offset in
    dimensions of its own, so a small model learns them in a few epochs. The default
    labels are ones pandas would read as missing values."""
    from gesture_cache.cache.manifest import CachedRecording, Segment
    from gesture_cache.cache.writer import CacheWriter

    rng = np.random.default_rng(seed)
    stride, length = extractor["clip_stride"], extractor["clip_len"]
    n_frames = (clips - 1) * stride + length
    piece = clips // (2 * len(gestures))
    record = ExtractorRecord(extractor, 4096)
    with CacheWriter(folder, record, dtype="float16", shard_size=shard_size) as writer:
        for r, recording_id in enumerate(recordings):
            features = rng.normal(0, 0.1, (clips, 4096)).astype(np.float32)
            segments = []
            for g, label in enumerate(gestures):
                first = (2 * g + 1) * piece
                features[first : first + piece, 64 * g : 64 * (g + 1)] += 3.0
                start, end = first * stride, (first + piece - 1) * stride + length
                segments.append(Segment(label, start, end, group=f"g{r}", row=r * 10 + g + 1))
            writer.add(
                CachedRecording(
                    recording_id=recording_id,
                    sha256=f"{seed:032x}{r:032x}",
                    features=features,
                    clip_start=np.arange(clips) * stride,
                    clip_valid=np.ones(clips, bool),
                    segments=segments,
                    n_frames=n_frames,
                    fps=25.0,
                    height=48,
                    width=64,
                )
            )
    return folder


def numpy_c3d(clips: np.ndarray, weights: Path, layer: str = "fc7") -> np.ndarray:
    """C3D to fc6 or fc7 in float64 numpy, from a Keras-2 weights file: an independent
    computation to hold every backend's features against. `clips` (n, 16, 112, 112, 3) are
    already preprocessed (mean subtracted, cropped). Pool5 uses Caffe's (0, 1) padding."""

    def weights_of(f: h5py.File, name: str) -> tuple[np.ndarray, np.ndarray]:
        group = f[name]
        kernel, bias = (
            group[n if isinstance(n, str) else n.decode()][()] for n in group.attrs["weight_names"]
        )
        return kernel.astype(np.float64), bias.astype(np.float64)

    def conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
        t, h, w, _ = x.shape
        padded = np.pad(x, ((1, 1), (1, 1), (1, 1), (0, 0)))
        out = np.zeros((t, h, w, kernel.shape[-1]))
        for dt in range(3):
            for dy in range(3):
                for dx in range(3):
                    out += padded[dt : dt + t, dy : dy + h, dx : dx + w] @ kernel[dt, dy, dx]
        return np.maximum(out + bias, 0)

    def pool(x: np.ndarray, st: int) -> np.ndarray:
        t, h, w, c = x.shape
        return x.reshape(t // st, st, h // 2, 2, w // 2, 2, c).max(axis=(1, 3, 5))

    features = []
    with h5py.File(weights, "r") as f:
        for clip in clips.astype(np.float64):
            x = pool(conv(clip, *weights_of(f, "conv1")), 1)
            x = pool(conv(x, *weights_of(f, "conv2")), 2)
            for block in ("3", "4", "5"):
                x = conv(conv(x, *weights_of(f, f"conv{block}a")), *weights_of(f, f"conv{block}b"))
                if block == "5":
                    x = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
                x = pool(x, 2)
            x = x.reshape(-1)
            for name in ("fc6", "fc7"):
                kernel, bias = weights_of(f, name)
                x = np.maximum(x @ kernel + bias, 0)
                if name == layer:
                    break
            features.append(x)
    return np.stack(features)


SYNTHETIC_EXTRACTOR = {
    "model": "synthetic (tests)",
    "layer": "none",
    "weights": {"random_seed": 0},
    "preprocessing": {
        "name": "none",
        "resize": None,
        "interpolation": "bilinear",
        "crop": None,
        "scale": 1.0,
        "mean_bgr": None,
    },
    "clip_len": 16,
    "clip_stride": 8,
    "sampling": "dense",
    "pad": "edge",
    "precision": "float32",
}


def write_cache(
    folder: Path,
    rows: list[tuple[str, str, str, str]],
    clips: int = 4,
    dim: int = 32,
    shard_size: int = 256,
    extractor: dict | None = None,
) -> Path:
    """A cache of whole recordings written by the real writer with synthetic features (no
    C3D): (recording id, label, split cell or "", file sha256 or "") per row; a label's
    features carry an offset of their own. Identical sha256s make byte-identical copies."""
    from gesture_cache.cache.manifest import CachedRecording, Segment
    from gesture_cache.cache.writer import CacheWriter

    labels = sorted({label for _, label, _, _ in rows})
    rng = np.random.default_rng(0)
    n_frames = (clips - 1) * 8 + 16
    extractor = extractor or SYNTHETIC_EXTRACTOR
    record = ExtractorRecord(extractor, dim)
    with CacheWriter(folder, record, dtype="float16", shard_size=shard_size) as writer:
        for i, (recording_id, label, split, sha256) in enumerate(rows):
            features = rng.normal(0, 0.1, (clips, dim)).astype(np.float32)
            features[:, labels.index(label)] += 3.0
            extra = {"split": split} if split else {}
            writer.add(
                CachedRecording(
                    recording_id=recording_id,
                    sha256=sha256 or f"{i:064x}",
                    features=features,
                    clip_start=np.arange(clips) * 8,
                    clip_valid=np.ones(clips, bool),
                    segments=[Segment(label, 0, n_frames, row=i + 1, extra=extra)],
                    n_frames=n_frames,
                    fps=25.0,
                    height=48,
                    width=64,
                )
            )
    return folder


def one_video_csv(tmp_path: Path, n: int = 1, label: str = "wave") -> Path:
    """A meta CSV of `n` short MJPG videos labelled `label`."""
    lines = ["file_path,action"]
    for i in range(n):
        write_video(tmp_path / f"v{i}.avi", 10, seed=i)
        lines.append(f"v{i}.avi,{label}")
    csv = tmp_path / "meta.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def detect_args(detector, out: Path, *extra: str) -> list[str]:
    """`gesture-cache detect` on the detector fixture's unseen recordings (ids of its cache)."""
    return ["detect", str(detector.run), *detector.unseen, "--out", str(out), *extra]


def run_with_timeout(function, seconds: float = 60):
    """Call `function` in a thread; fail the test (not hang it) if it does not return."""
    import threading

    result = {}

    def call():
        try:
            result["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            result["error"] = error

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "it hung"
    return result


def without_tensorflow(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_same_cache(ray_cache: Path, local_cache: Path, failures: int = 2) -> None:
    """Same fingerprint, recordings (each once), clips, segments and failures; features equal
    up to float rounding (batches differ)."""
    mine, theirs = open_cache(ray_cache), open_cache(local_cache)
    assert mine.fingerprint == theirs.fingerprint
    ids = list(mine.recordings["recording_id"])
    assert sorted(ids) == sorted(theirs.recordings["recording_id"]) and len(set(ids)) == len(ids)
    for recording_id in ids:
        np.testing.assert_allclose(
            clips_of(mine, recording_id), clips_of(theirs, recording_id), rtol=2e-3, atol=2e-3
        )
        a, b = clip_span(mine, recording_id), clip_span(theirs, recording_id)
        assert mine.clip_start[a].tolist() == theirs.clip_start[b].tolist()
        assert mine.clip_valid[a].tolist() == theirs.clip_valid[b].tolist()
    segments = lambda c: sorted(zip(c.segments["recording_id"], c.segments["label"]))  # noqa: E731
    assert segments(mine) == segments(theirs)
    reasons = lambda p: {r["recording_id"]: r["reason"] for r in read_failures(p).values()}  # noqa: E731
    assert reasons(ray_cache) == reasons(local_cache) and len(reasons(ray_cache)) == failures


# The real recording's gestures, its first 25 frames for training and the other 18 for
# testing (the `hands_run` fixture).
HANDS_SEGMENTS = """file_path,action,start_frame,end_frame,split
first,victory,3,8,train
first,victory,8,13,train
first,thumbs_up,14,19,train
first,thumbs_up,19,24,train
second,victory,0,5,test
second,victory,5,11,test
second,thumbs_up,12,15,test
second,thumbs_up,15,18,test
"""


def make_hands_run(folder: Path, epochs: int = 60) -> Path:
    """The real recording cut in two (as lossless PNG frames), hand landmarks extracted (one
    hand: the emoji in the corner shows the gesture's name and must not be learnt) and a
    detector trained on the first 25 frames; `folder`, holding meta.csv, cache and run."""
    from gesture_cache.cli.main import main
    from tests.fixtures.hands.make_reference import frames_of

    for i, frame in enumerate(frames_of(HANDS / "fingers-lq.gif")):
        part = folder / ("first" if i < 25 else "second")
        part.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(part / f"{i % 25:03d}.png"), frame)
    (folder / "meta.csv").write_text(HANDS_SEGMENTS)
    assert main(["extract", str(folder / "meta.csv"), "--out", str(folder / "cache"),
                 "--backbone", "hands", "--max-hands", "1", "--mirrored"]) == 0  # fmt: skip
    assert main(["train", str(folder / "cache"), "--out", str(folder / "run"), "--background",
                 "--window-clips", "4", "--window-step", "1", "--epochs", str(epochs),
                 "--patience", str(epochs)]) == 0  # fmt: skip
    return folder
