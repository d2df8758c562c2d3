"""The backbone of a bundle (ONNX, OpenVINO), checked against Keras on the frames of a
synthetic gesture video, decoded and resized as the cache's were."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gesture_cache.common.errors import RunError
from gesture_cache.deploy import bundle
from gesture_cache.deploy.parity import BACKBONE_BOUND, artifact_entry

log = logging.getLogger(__name__)


def backbone_of(spec: dict, weights: str | None, random_weights: int | None, files: dict):
    """The backbone a run's cache recorded, with the user's weights and files."""
    from gesture_cache.extract.extractor import extractor_from_spec

    return extractor_from_spec(
        spec, weights=weights, random_seed=random_weights, files=files
    ).backbone


def parity_clips(backbone) -> np.ndarray:
    """Two clips of a synthetic gesture video, decoded and resized as the cache's frames were
    (not cropped: the crop is inside the bundle's graph)."""
    from gesture_cache.deploy.bundle import graph_input
    from gesture_cache.sources import synth
    from gesture_cache.video.clips import stream_clips
    from gesture_cache.video.decode import Frames

    with tempfile.TemporaryDirectory() as scratch:
        video = Path(scratch) / "gesture.avi"
        synth.write_video(video, "Shake_Hand", np.random.default_rng(0))
        frames = Frames(video, graph_input(backbone.preprocessing))
        clips = [clip for _, clip in stream_clips(frames, 8)][:2]
    return np.stack(clips)


def export_backbones(backbone, folder: Path, formats, step: Callable) -> list:
    import onnx

    if hasattr(backbone, "model_files"):  # models that run as they are (hands: LiteRT)
        return [bundled_models(backbone.model_files(), folder)]
    if not {"onnx", "openvino"} & set(formats):
        return []
    clips = parity_clips(backbone)
    graph, reference = backbone.onnx_export(clips)
    artifacts = []
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = Path(scratch) / "backbone.onnx"
        onnx.save(graph, onnx_path)
        del graph
        if "onnx" in formats:
            shutil.copyfile(onnx_path, folder / "backbone.onnx")
            artifacts.append(checked_backbone(folder, "onnx", "backbone.onnx", clips, reference))
            step()
        if "openvino" in formats:
            import openvino

            converted = openvino.convert_model(str(onnx_path))
            openvino.save_model(converted, str(folder / "backbone.xml"), compress_to_fp16=False)
            artifacts.append(checked_backbone(folder, "openvino", "backbone.xml", clips, reference))
            step()
    return artifacts


def bundled_models(files: dict[str, bytes], folder: Path) -> dict:
    """The backbone's model files copied into the bundle, every one hashed; they are the
    files the cache was extracted with (the fingerprint names their sha256), so the features
    are the same by construction."""
    for name, data in files.items():
        (folder / name).write_bytes(data)
    names = list(files)
    entry = artifact_entry(folder, "backbone", "models", names[0], "float32", {"same_files": True})
    entry["files"] = {n: bundle.entry_sha256(folder / n) for n in names}
    return entry


def checked_backbone(folder: Path, fmt: str, name: str, clips, reference) -> dict:
    session = bundle.Session(folder / name, fmt, "backbone")
    singles = np.concatenate([session.run({"frames": clips[i : i + 1]}) for i in range(len(clips))])
    batched = session.run({"frames": clips})
    scale = float(np.abs(reference).max()) or 1.0
    difference = float(max(np.abs(singles - reference).max(), np.abs(batched - reference).max()))
    relative = difference / scale
    parity = {"clips": len(clips), "max_relative_difference": relative, "bound": BACKBONE_BOUND}
    if relative > BACKBONE_BOUND:
        raise RunError(
            f"the {fmt} backbone misses its parity bound on {len(clips)} clips: max difference "
            f"{relative:.3g} of the largest feature (bound {BACKBONE_BOUND})"
        )
    log.info("backbone %s: max relative difference %.2g", fmt, relative)
    return artifact_entry(folder, "backbone", fmt, name, "float32", parity)
