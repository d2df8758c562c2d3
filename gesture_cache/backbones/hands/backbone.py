"""MediaPipe hand landmarks as a backbone: one feature vector a frame (a "clip" is one frame),
`max_hands` slots of `features.slot_size(layout)` values each (the layout, value by value, is
in `features`). With two slots, a right hand goes to slot 0 and a left one to slot 1 (when
both hands claim one side, the surer keeps it). The models run where each recording is
decoded (`stream`), since tracking follows a recording frame by frame, and the motion values
compare each frame with the one before; `forward` only gathers the frame vectors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from gesture_cache.backbones.hands.features import frame_vector, hand_place, slot_size
from gesture_cache.backbones.hands.models import TASK_FILES, HandModels, load_hand_models
from gesture_cache.backbones.hands.options import Options
from gesture_cache.backbones.hands.tracker import Hand, HandTracker, Models
from gesture_cache.backbones.keras_backends import CPU_BATCH_CLIPS
from gesture_cache.common.errors import ConfigError
from gesture_cache.video.decode import Preprocessing

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
        self.layout = options.hands_layout
        self.last_hands: list[Hand] = []
        self.files = models or load_hand_models(options.hands_model)
        self.models = Models(self.files)
        self.feature_dim = slot_size(self.layout) * self.max_hands
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
            # layout 1's caches (gesture_cache 0.1) named none, and keep their fingerprint
            **({"layout": self.layout} if self.layout != 1 else {}),
        }

    def tracker(self) -> HandTracker:
        return HandTracker(self.models, self.max_hands, self.mirrored, self.static)

    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """One recording's BGR frames -> its per-frame feature vectors (feature_dim,)."""
        track = self.tracker()
        before = [None] * self.max_hands
        for frame in frames:
            hands = track(frame)
            self.last_hands = hands  # what `serve` draws over the frame just yielded
            height, width = frame.shape[:2]
            slots = slot_order(hands, self.max_hands)
            if self.layout == 2:
                slots = kept_slots(hands, slots, before, width, height)
            vector, before = frame_vector(
                hands, slots, width, height, self.max_hands, self.layout, before
            )
            yield vector

    def forward(self, clips: np.ndarray) -> np.ndarray:
        return np.asarray(clips, np.float32).reshape(len(clips), self.feature_dim)

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


def kept_slots(
    hands: list[Hand], slots: list[int | None], before: list, width: int, height: int
) -> list[int | None]:
    """Layout 2: a hand that was in a slot in the previous frame (its palm within a third of
    the frame's height of where it was) stays in that slot. MediaPipe's handedness wavers
    from frame to frame on a hand seen edge-on or from the back, and a hand that jumped
    slots mid-gesture would break its own trajectory; a new hand goes where `slot_order`
    puts it, unless a kept hand holds that slot."""
    kept: list[int | None] = [None] * len(hands)
    for i, hand in enumerate(hands):
        palm = hand_place(hand.landmarks, width, height).palm
        near = [
            (float(np.linalg.norm(palm - place.palm)), slot)
            for slot, place in enumerate(before)
            if place is not None and slot not in kept
        ]
        if near and min(near)[0] < 1 / 3:
            kept[i] = min(near)[1]
    taken = {slot for slot in kept if slot is not None}
    free = [slot for slot in range(len(before)) if slot not in taken]
    for i, slot in enumerate(slots):
        if kept[i] is None and free:
            kept[i] = slot if slot in free else free[0]
            free.remove(kept[i])
    return kept


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
    return Options(
        hands_model, spec["max_hands"], spec["mirrored"], spec["static"], spec.get("layout", 1)
    )


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
