"""The extractor: a backbone plus the temporal layout, turning a recording into clip features.

`extract` (the cache), `predict` and `detect` share it. Its `spec` is what the cache's
fingerprint hashes: the backbone's fields, the layout, and FEATURES_VERSION.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gesture_cache.backbones.base import Backbone, registered, spec_backbone
from gesture_cache.backbones.keras_backends import use_backend
from gesture_cache.common.errors import ConfigError
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.video.clips import Layout, fixed_clips, stream_clips
from gesture_cache.video.decode import Frames, Probe
from gesture_cache.video.nvdec import CPU_DECODING, Nvdec, chosen_decoder

# Bump whenever decoding, the clips or a backbone change what features come out for the same
# settings: it is part of the fingerprint, so an old cache is never resumed with new code.
FEATURES_VERSION = 4  # 4: 16-bit frames scaled by a fixed rule


# The spec's fields that the extractor adds to the backbone's: the version and the layout.
LAYOUT_FIELDS = ("features_version", "clip_len", "sampling", "clip_stride", "pad", "frames")


@dataclass
class ClipFeatures:
    """One recording's clips: start frames (K,), features (K, D), validity (K,)."""

    clip_start: np.ndarray
    features: np.ndarray
    clip_valid: np.ndarray
    probe: Probe


class Extractor:
    """`nvdec`: decode video files on the GPU's video engine where it can (video/nvdec.py);
    `decoding` says in words which decoder runs."""

    def __init__(
        self,
        backbone: Backbone,
        layout: Layout,
        nvdec: Nvdec | None = None,
        decoding: str = CPU_DECODING,
    ):
        self.backbone, self.layout = backbone, layout
        self.nvdec, self.decoding = nvdec, decoding

    @property
    def spec(self) -> dict:
        layout = {
            "clip_len": self.backbone.clip_len,
            "sampling": self.layout.sampling,
            "clip_stride": self.layout.clip_stride,
            "pad": self.layout.pad,
        }
        if self.layout.frames is not None:
            layout["frames"] = self.layout.frames
        return {
            **self.backbone.fingerprint_fields(),
            "features_version": FEATURES_VERSION,
            **layout,
        }

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    @property
    def batch_clips(self) -> int:
        return self.backbone.batch_clips

    @property
    def backbone_build_seconds(self) -> float:
        """Seconds spent building the network and compiling it, once (kept apart from the
        pipeline's time)."""
        return getattr(self.backbone, "build_seconds", 0.0)

    def frames(self, path: str | Path, fps: float | None = None) -> Frames:
        return Frames(path, self.backbone.preprocessing, fps, self.nvdec)

    def clips(
        self, frames: Frames, stack: Callable[[Sequence[np.ndarray]], Any] = np.stack
    ) -> Iterator[tuple[int, Any, bool]]:
        """(start frame, clip, valid) in order; dense layouts stream. `stack` makes a clip of
        its frames (`stream_clips`)."""
        stream = self.backbone.stream(frames)
        layout = self.layout
        if layout.streams:
            for start, clip in stream_clips(
                stream, layout.clip_stride, layout.pad, layout.clip_len, stack
            ):
                yield start, clip, True
            return
        starts, clips, valid = fixed_clips(np.stack(list(stream)), layout)
        for start, clip, is_valid in zip(starts.tolist(), clips, valid.tolist()):
            yield start, stack(clip), is_valid

    def features(self, path: str | Path, fps: float | None = None) -> ClipFeatures:
        """Every clip of one recording through the backbone, `batch_clips` at a time."""
        frames = self.frames(path, fps)
        starts, valid, outputs, batch = [], [], [], []
        for start, clip, is_valid in self.clips(frames):
            starts.append(start)
            valid.append(is_valid)
            batch.append(clip)
            if len(batch) == self.batch_clips:
                outputs.append(self.backbone.forward(np.stack(batch)))
                batch = []
        if batch:
            outputs.append(self.backbone.forward(np.stack(batch)))
        return ClipFeatures(
            np.array(starts, np.int64), np.concatenate(outputs), np.array(valid), frames.probe
        )


def extractor_from_config(config: ExtractConfig) -> Extractor:
    """The extractor of `extract`; `config.backend` must be resolved (see `resolved`). The
    decoder is chosen first: a `--decoder nvdec` that cannot run is refused before the
    network is built."""
    if config.engine == "local":
        nvdec, decoding = chosen_decoder(config.decoder)
    else:
        nvdec, decoding = None, f"{CPU_DECODING} (Ray's decode tasks)"
    backbone = (
        registered(config.backbone)
        .module()
        .from_options(
            config.backbone_options,
            weights=config.weights,
            random_seed=config.random_weights,
            backend=use_backend(config.backend),
            batch_clips=config.batch_clips,
        )
    )
    layout = Layout(
        config.sampling, config.clip_stride, config.frames, config.pad, backbone.clip_len
    )
    return Extractor(backbone, layout, nvdec, decoding)


def extractor_from_spec(
    spec: dict,
    *,
    weights: str | None = None,
    random_seed: int | None = None,
    files: dict | None = None,
    backend: str | None = None,
    batch_clips: int | None = None,
) -> Extractor:
    """The extractor a cache (or a run's cache) recorded, with the user's weights and other
    files (`files`: a backbone's file options by name, e.g. C3D's mean cube), on `backend`,
    `batch_clips` clips a call (None: decided for the device); version-1 specs (fixed
    frames per video) work too. A reduced-precision cache names its backend: another one
    would compute other features."""
    recorded = spec.get("backend")
    if recorded and backend and backend != recorded:
        raise ConfigError(
            f"the cache holds {spec['precision']} features computed on {recorded}; "
            f"reduced-precision features differ between backends: use --backend {recorded}"
        )
    backbone = (
        spec_backbone(spec)
        .module()
        .from_spec(
            spec,
            weights=weights,
            random_seed=random_seed,
            files={name: path for name, path in (files or {}).items() if path},
            backend=use_backend(recorded or backend),
            batch_clips=batch_clips,
        )
    )
    return Extractor(backbone, layout_from_spec(spec))


def layout_from_spec(spec: dict) -> Layout:
    sampling = spec["sampling"]
    frames = spec.get("frames") if sampling != "dense" else None
    return Layout(sampling, spec["clip_stride"], frames, spec["pad"], spec.get("clip_len", 16))


def resolved(config: ExtractConfig) -> ExtractConfig:
    """The config with its backend chosen (and set for Keras)."""
    return replace(config, backend=use_backend(config.backend))
