"""MediaPipe hand landmarks as a backbone: one feature vector a frame (a "clip" is one frame).

Each of `max_hands` slots holds 128 values (README "Hand landmark features"):

    [0]        presence: 1 when a hand is in the slot, else the slot is all zeros
    [1]        the probability that it is the person's right hand
    [2:65]     the 21 landmarks (x, y, z) in pixels, minus the wrist's, divided by the
               wrist -> middle-finger-base distance: where the hand is and how large it is
               in the frame drop out, its shape and turn stay
    [65:128]   the 21 world landmarks (metres, origin at the hand's centre)

With two slots, a right hand goes to slot 0 and a left one to slot 1 (when both hands claim
one side, the surer keeps it), so a gesture made with either hand lands in the same values
every time. The models run where each recording is decoded (`stream`), since tracking
follows a recording frame by frame; `forward` only gathers the frame vectors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from gesture_cache.backbones.hands.models import TASK_FILES, HandModels, load_hand_models
from gesture_cache.backbones.hands.options import Options
from gesture_cache.backbones.hands.tracker import Hand, HandTracker, Models
from gesture_cache.backbones.keras_backends import CPU_BATCH_CLIPS
from gesture_cache.common.errors import ConfigError
from gesture_cache.video.decode import Preprocessing

SLOT = 128  # values per hand slot
PREPROCESSING = Preprocessing(
    name="mediapipe", resize=None, interpolation="bilinear", crop=None, scale=1 / 255,
    mean_bgr=None,
)  # fmt: skip  # frames stay whole: MediaPipe crops each hand from the full frame


class Hands:
    name = "MediaPipe Hands (LiteRT)"
    clip_len = 1
    clip_dtype = "float32"
    preprocessing = PREPROCESSING
    network_in_stream = True  # the models follow each recording's hands where it is decoded

    batch_clips = CPU_BATCH_CLIPS  # `forward` only gathers vectors: any batch will do

    def __init__(self, options: Options, models: HandModels | None = None):
        """`models`: the two models' bytes, when they come from elsewhere than
        `options.hands_model` (a bundle)."""
        self.options = options
        self.max_hands, self.mirrored = options.max_hands, options.mirrored
        self.static = options.hands_static
        self.files = models or load_hand_models(options.hands_model)
        self.models = Models(self.files)
        self.feature_dim = SLOT * self.max_hands
        self.clip_shape = (1, self.feature_dim)

    def fingerprint_fields(self) -> dict:
        return {
            "model": self.name,
            "weights": {"sha256": self.files.sha256},
            "preprocessing": self.preprocessing.record(),
            "max_hands": self.max_hands,
            "mirrored": self.mirrored,
            "static": self.static,
            "precision": "float32",
        }

    def tracker(self) -> HandTracker:
        return HandTracker(self.models, self.max_hands, self.mirrored, self.static)

    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """One recording's BGR frames -> its per-frame feature vectors (feature_dim,)."""
        track = self.tracker()
        for frame in frames:
            yield self.vector(track(frame), frame.shape[1], frame.shape[0])

    def forward(self, clips: np.ndarray) -> np.ndarray:
        return np.asarray(clips, np.float32).reshape(len(clips), self.feature_dim)

    def vector(self, hands: list[Hand], width: int, height: int) -> np.ndarray:
        slots = np.zeros((self.max_hands, SLOT), np.float32)
        for slot, hand in zip(slot_order(hands, self.max_hands), hands):
            if slot is not None:
                slots[slot] = hand_values(hand, width, height)
        return slots.ravel()

    def model_files(self) -> dict[str, bytes]:
        """What a bundle carries to run it: the two models, named as in a .task."""
        return dict(zip(TASK_FILES, (self.files.palm, self.files.landmarks)))

    def onnx_export(self, frames: np.ndarray):
        raise ConfigError("the hands backbone has no ONNX graph: its bundle carries the models")


def slot_order(hands: list[Hand], max_hands: int) -> list[int | None]:
    """The slot of each hand: right hands to 0 and left ones to 1 when there are two slots."""
    if max_hands == 1:
        return [0] + [None] * (len(hands) - 1)
    slots: list[int | None] = [None] * len(hands)
    free = list(range(max_hands))
    by_sureness = sorted(range(len(hands)), key=lambda i: -abs(hands[i].right - 0.5))
    for i in by_sureness:
        wanted = 0 if hands[i].right >= 0.5 else 1
        slot = wanted if wanted in free else (free[0] if free else None)
        if slot is not None:
            free.remove(slot)
        slots[i] = slot
    return slots


def hand_values(hand: Hand, width: int, height: int) -> np.ndarray:
    pixels = hand.landmarks * np.array([width, height, width], np.float32)
    relative = pixels - pixels[0]
    palm = float(np.linalg.norm(relative[9, :2])) or 1.0
    return np.concatenate(
        [[1.0, hand.right], (relative / palm).ravel(), hand.world.ravel()]
    ).astype(np.float32)


def from_options(
    options: Options, *, weights: str | None, random_seed: int | None, backend: str,
    batch_clips: int | None,
) -> Hands:  # fmt: skip
    if weights or random_seed is not None:
        raise ConfigError("--backbone hands takes its models from --hands-model, not --weights")
    return Hands(options)


def from_bundle(spec: dict, files: dict[str, bytes], source: str) -> Hands:
    """The backbone of a bundle from the model files it carries (`model_files`)."""
    models = HandModels(*(files[name] for name in TASK_FILES), source)
    if models.sha256 != spec["weights"]["sha256"]:
        raise ConfigError(f"{source}: its hand models are not the ones its cache was built with")
    return Hands(recorded_options(spec), models)


def recorded_options(spec: dict, hands_model: str = "full") -> Options:
    return Options(hands_model, spec["max_hands"], spec["mirrored"], spec["static"])


def from_spec(
    spec: dict, *, weights: str | None, random_seed: int | None, files: dict, backend: str,
    batch_clips: int | None,
) -> Hands:  # fmt: skip
    """The hands backbone a cache recorded: the models are the installed pair (or the
    `--weights` file or folder) whose sha256 the cache names."""
    recorded = spec["weights"]["sha256"]
    for model in [weights] if weights else ["full", "lite"]:
        try:
            hands = Hands(recorded_options(spec, model))
        except ConfigError:
            if weights:
                raise
            continue
        if hands.files.sha256 == recorded:
            return hands
    raise ConfigError(
        "the cache's hand models (sha256 "
        f"{recorded['palm_detection'][:12]}..., {recorded['hand_landmarks'][:12]}...) are not "
        "the installed ones: give the models it was extracted with (--weights FILE.task or "
        "a folder)"
    )
