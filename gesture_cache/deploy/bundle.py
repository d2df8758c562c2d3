"""An exported bundle, read and run without TensorFlow: numpy, OpenCV and one runtime
(ONNX Runtime by default, OpenVINO or LiteRT).

    BUNDLE/manifest.json      classes, window, clip layout, preprocessing, detection settings,
                              the extractor fingerprint, every file's sha256 and parity figures
    BUNDLE/backbone.onnx      uint8 BGR frames (N, 16, H, W, 3), resized to the cache's size
                              (OpenCV, `frame_size` and `resize_interpolation`) -> features
    BUNDLE/backbone.xml/.bin  the same for OpenVINO
    BUNDLE/hand_detector.tflite, hand_landmarks_detector.tflite
                              instead of those for the hands backbone: MediaPipe's models,
                              run on LiteRT from whole decoded frames
    BUNDLE/head.onnx, head.tflite, head.xml/.bin, head_saved_model/
                              features (N, T, D) float32 and mask (N, T) bool -> probabilities

Every file is checked against its sha256 before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gesture_cache.backbones.keras_backends import CPU_BATCH_CLIPS
from gesture_cache.common.errors import ConfigError, GestureCacheError, RunError
from gesture_cache.common.files import file_sha256, inside, read_json
from gesture_cache.data.windows import Window
from gesture_cache.extract.extractor import LAYOUT_FIELDS
from gesture_cache.video.clips import Layout
from gesture_cache.video.decode import Preprocessing

log = logging.getLogger(__name__)


FORMAT = "gesture-cache-bundle"


CACHE_FORMAT = "gesture-cache"  # a cache's manifest.json, not a bundle's


VERSION = 1


MANIFEST = "manifest.json"


RUNTIMES = ("onnxruntime", "openvino", "litert")


# the head's file for each runtime; the backbone runs in ONNX Runtime where its runtime has
# no backbone (LiteRT lacks 3-D max pooling)
HEAD_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino", "litert": "litert"}


BACKBONE_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino", "litert": "onnx"}


PACKAGES = {"onnx": "onnxruntime", "openvino": "openvino", "litert": "ai-edge-litert"}


def is_bundle(folder: str | Path) -> bool:
    """A folder that holds a bundle's manifest, or a manifest.json that is neither a cache's
    nor readable (so that a damaged bundle is reported as one). A run folder has config.json."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file() or (folder / "config.json").exists():
        return False
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT


def folder_sha256(folder: Path) -> str:
    """sha256 over a folder's files, names and contents, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def entry_sha256(path: Path) -> str:
    return folder_sha256(path) if path.is_dir() else file_sha256(path)


@dataclass
class Bundle:
    folder: Path
    manifest: dict

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    @property
    def window(self) -> Window:
        return Window(**self.manifest["window"])

    @property
    def layout(self) -> Layout:
        from gesture_cache.extract.extractor import layout_from_spec

        return layout_from_spec(self.manifest["extractor"])

    def session(self, role: str, fmt: str) -> Session:
        return Session(self.folder / self.artifact(role, fmt)["main"], fmt, role)

    def artifact(self, role: str, fmt: str) -> dict:
        for artifact in self.manifest["artifacts"]:
            if artifact["role"] == role and artifact["format"] == fmt:
                return artifact
        have = sorted(a["format"] for a in self.manifest["artifacts"] if a["role"] == role)
        raise ConfigError(
            f"bundle {self.folder} has no {fmt} {role} (it has: {', '.join(have) or 'none'}); "
            f"export it with --format {fmt}, or choose another --runtime"
        )


# The fields a reader uses, each with its type: every name a runtime loads comes from
# `artifacts`, so each is checked to be a plain file name of this folder and among the hashed
# files before anything is opened.
MANIFEST_FIELDS = {
    "classes": list,
    "window": dict,
    "clip_len": int,
    "clip_stride": int,
    "feature_dim": int,
    "feature_dtype": str,
    "extractor": dict,
    "fingerprint": str,
    "artifacts": list,
}


ARTIFACT_FIELDS = {"role": str, "format": str, "precision": str, "main": str, "files": dict}


ROLES = ("head", "backbone")


ARTIFACT_FORMATS = ("onnx", "openvino", "litert", "saved_model", "models")


def open_bundle(folder: str | Path) -> Bundle:
    """A bundle whose manifest has every field it needs and whose every file matches its
    sha256 (checked here, before any work); a name that leaves the folder, a file that is
    missing, changed or a link out of the folder is refused."""
    folder = Path(folder)
    try:
        manifest = read_json(inside(folder, MANIFEST), "bundle manifest")
    except GestureCacheError as error:
        raise RunError(str(error)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RunError(f"{folder} is not a gesture-cache bundle (its {MANIFEST} says otherwise)")
    if manifest.get("version") != VERSION:
        raise RunError(
            f"bundle {folder} is version {manifest.get('version')}; this tool reads {VERSION}"
        )
    where = folder / MANIFEST
    for name, kind in MANIFEST_FIELDS.items():
        expect_field(manifest, name, kind, where)
    if not manifest["classes"] or not all(isinstance(c, str) for c in manifest["classes"]):
        raise RunError(f"{where}: field 'classes' must be a list of class names")
    background = manifest.get("background_label")
    if background is not None and not isinstance(background, str):
        raise RunError(f"{where}: field 'background_label' is {background!r}, not a name")
    for i, artifact in enumerate(manifest["artifacts"]):
        check_artifact(folder, artifact, f"{where}: artifacts[{i}]")
    found = Bundle(folder, manifest)
    for name in ("window", "layout"):  # built now, so that a bad one is named before any work
        try:
            getattr(found, name)
        except (GestureCacheError, KeyError, TypeError) as error:
            field = "window" if name == "window" else "extractor"
            raise RunError(f"{where}: field {field!r} cannot be used: {error}") from None
    return found


def expect_field(table: dict, name: str, kind: type, where: object) -> None:
    """`table[name]` present and of type `kind`, else a RunError naming the field."""
    if name not in table:
        raise RunError(f"{where}: field {name!r} is missing")
    value = table[name]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise RunError(f"{where}: field {name!r} is {value!r}, expected a {kind.__name__}")


def check_artifact(folder: Path, artifact: object, where: str) -> None:
    """One artifact entry: its fields, its file names (plain names inside the bundle, `main`
    among them) and every file's sha256."""
    if not isinstance(artifact, dict):
        raise RunError(f"{where} is {artifact!r}, expected an object")
    for name, kind in ARTIFACT_FIELDS.items():
        expect_field(artifact, name, kind, where)
    if artifact["role"] not in ROLES or artifact["format"] not in ARTIFACT_FORMATS:
        raise RunError(f"{where}: a {artifact['format']!r} {artifact['role']!r} is not one I run")
    files = artifact["files"]
    if artifact["main"] not in files:
        raise RunError(
            f"{where}: main {artifact['main']!r} is not among its hashed files {sorted(files)}"
        )
    for name, expected in files.items():
        try:
            path = inside(folder, name)
        except GestureCacheError as error:
            raise RunError(f"{where}: {error}") from None
        if not isinstance(expected, str):
            raise RunError(f"{where}: the sha256 of {name} is {expected!r}, not a hash")
        if not path.exists():
            raise RunError(f"bundle {folder}: {name} is missing")
        if entry_sha256(path) != expected:
            raise RunError(
                f"bundle {folder}: {name} does not match its sha256 in manifest.json "
                "(changed or damaged since export)"
            )


class Session:
    """One graph in one runtime: `run(inputs)` -> its single output."""

    def __init__(self, path: Path, fmt: str, role: str):
        try:
            if fmt == "onnx":
                import onnxruntime

                refuse_external_data(path)
                self._session = onnxruntime.InferenceSession(
                    str(path), providers=["CPUExecutionProvider"]
                )
                self.run = self._run_onnx
            elif fmt == "openvino":
                import openvino

                self._core, self._path = openvino.Core(), str(path)
                self._compiled: dict = {}
                self.run = self._run_openvino
            elif fmt == "litert":
                from ai_edge_litert.interpreter import Interpreter

                self._interpreter = Interpreter(model_path=str(path))
                self._runner = self._interpreter.get_signature_runner()
                self.run = self._run_litert
            else:
                raise ConfigError(f"no runtime for the {fmt} format")
        except ModuleNotFoundError as error:
            raise ConfigError(
                f"the {fmt} {role} needs {error.name}: pip install {PACKAGES[fmt]}"
            ) from None

    def _run_onnx(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run(None, inputs)[0]

    def _run_openvino(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Compiled once per input shape: OpenVINO 2026.4 ignores an LSTM's sequence_lens
        when the batch is dynamic (measured), and is exact with static shapes. f32
        throughout: on CPUs with bf16 units it would otherwise infer in bf16 (6e-3 relative
        error in the features)."""
        shapes = tuple((name, value.shape) for name, value in inputs.items())
        if shapes not in self._compiled:
            model = self._core.read_model(self._path)
            model.reshape({name: list(shape) for name, shape in shapes})
            self._compiled[shapes] = self._core.compile_model(
                model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
            )
        return self._compiled[shapes](inputs)[0]

    def _run_litert(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return next(iter(self._runner(**inputs).values()))


def refuse_external_data(path: Path) -> None:
    """An ONNX graph of a bundle holds its weights itself (export never writes external
    data): one whose tensors name other files is refused before a runtime reads them. Without
    the `onnx` package, only the runtime's own check of such paths applies."""
    try:
        import onnx
    except ModuleNotFoundError:
        return
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - protobuf's own errors for a damaged file
        raise RunError(f"{path} is not an ONNX graph ({type(error).__name__})") from None
    tensors = [*graph.graph.initializer]
    tensors += [a.t for node in graph.graph.node for a in node.attribute if a.HasField("t")]
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise RunError(
                f"{path}: tensor {tensor.name!r} keeps its values in another file; a bundle's "
                "graphs hold their own weights, refusing to load it"
            )


def graph_input(preprocessing: Preprocessing) -> Preprocessing:
    """How frames are prepared for a bundle's backbone graph: resized as the cache's were but
    not cropped (the crop is inside), or whole for a resize that follows the frame (I3D)."""
    if preprocessing.resize is None:
        return preprocessing
    width, height = preprocessing.resize
    return replace(preprocessing, crop=(0, height, 0, width))


class BundleBackbone:
    """The bundle's backbone as the extractor's `Backbone`: frames are only resized (the
    crop and the mean are inside the graph); a backbone whose resize follows each frame's
    aspect (I3D) gets them resized and cropped by OpenCV."""

    def __init__(self, bundle: Bundle, runtime: str):
        spec = bundle.manifest["extractor"]
        cached = Preprocessing.from_record(spec["preprocessing"])
        self.preprocessing: Preprocessing = graph_input(cached)
        height = width = cached.center_crop
        if cached.resize is not None:
            width, height = cached.resize
        self.name, self.clip_len = spec["model"], spec["clip_len"]
        self.feature_dim = bundle.manifest["feature_dim"]
        self.frame_shape = (self.clip_len, height, width, 3)
        self.clip_shape, self.clip_dtype = self.frame_shape, "uint8"
        self.network_in_stream, self.batch_clips = False, CPU_BATCH_CLIPS  # a CPU runtime
        self.spec = spec
        self.session = bundle.session("backbone", BACKBONE_FORMAT[runtime])

    def fingerprint_fields(self) -> dict:
        """The backbone's part of the spec: all but the layout, the version and a Keras
        backend (the bundle's graph computes in float32 in its own runtime)."""
        return {k: v for k, v in self.spec.items() if k not in (*LAYOUT_FIELDS, "backend")}

    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        return iter(frames)

    def forward(self, clips: np.ndarray) -> np.ndarray:
        """uint8 clips (n, 16, height, width, 3) resized as the cache was -> (n, D)."""
        if clips.dtype != np.uint8 or tuple(clips.shape[1:]) != self.frame_shape:
            raise ConfigError(
                f"the bundle's backbone takes uint8 frames {self.frame_shape}, not "
                f"{clips.dtype} {tuple(clips.shape[1:])}"
            )
        return np.asarray(self.session.run({"frames": clips}), np.float32)


class BundleClassifier:
    """The bundle's head: windows of features and their masks -> class probabilities."""

    def __init__(self, bundle: Bundle, runtime: str, batch_size: int = 64):
        self.session = bundle.session("head", HEAD_FORMAT[runtime])
        self.batch_size = batch_size
        self.clips = bundle.manifest["window"]["clips"]

    def __call__(self, features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        outputs = []
        for start in range(0, len(features), self.batch_size):
            part = slice(start, start + self.batch_size)
            inputs = {
                "features": np.ascontiguousarray(features[part], np.float32),
                "mask": np.ascontiguousarray(mask[part], bool),
            }
            outputs.append(np.asarray(self.session.run(inputs), np.float32))
        return np.concatenate(outputs)


def bundle_extractor(bundle: Bundle, runtime: str):
    from gesture_cache.extract.extractor import Extractor

    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    models = [a for a in bundle.manifest["artifacts"] if a["format"] == "models"]
    if models:  # the backbone's own model files (hands), run by its module on LiteRT
        from gesture_cache.backbones.base import spec_backbone

        spec = bundle.manifest["extractor"]
        files = {name: (bundle.folder / name).read_bytes() for name in models[0]["files"]}
        backbone = spec_backbone(spec).module().from_bundle(spec, files, f"bundle {bundle.folder}")
        return Extractor(backbone, bundle.layout)
    if runtime == "litert":
        log.info("LiteRT has no 3-D max pooling: the backbone runs in ONNX Runtime")
    return Extractor(BundleBackbone(bundle, runtime), bundle.layout)
