"""Hand motions on real hands never seen in training: accuracy of each feature choice.

Videos: the three real photos of hands in ../shared/fixtures/hands and the first frame of
the real recording (a thumbs-up), each moved across a frame of its own (swipes left, right,
up, down, zooms in and out; `gesture_cache.sources.hand_motions`), `--takes` videos of each
motion and hand. For each hand in turn, a classifier is trained on the other three (one
take of each of their motions held out for validation) and scored on that hand: on its
videos as made (a right hand... as MediaPipe sees it) and on their mirror images (the
same hand, left). Every row is one `gesture-cache train` setting on one cache:

    pose, pose+trajectory, trajectory   --features
    + mirror                            --mirror swipe_left=swipe_right (others to themselves)
    + group dropout                     --group-dropout 0.5
    i3d                                 the same videos through --backbone i3d (--i3d)

    python benchmarks/hand_motion.py [--takes 4] [--i3d] [--quick] [--keep DIR]

The last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
HANDS = ROOT.parent / "shared" / "fixtures" / "hands"
sys.path.insert(0, str(ROOT))

from gesture_cache.extract.config import ExtractConfig  # noqa: E402
from gesture_cache.extract.extraction import build_cache  # noqa: E402
from gesture_cache.sources.hand_motions import MIRRORED, make_motions  # noqa: E402
from gesture_cache.train.config import TrainConfig  # noqa: E402
from gesture_cache.train.fit import train  # noqa: E402
from gesture_cache.train.metrics import evaluate_run  # noqa: E402
from gesture_cache.train.prepare import training_data  # noqa: E402

SETTINGS = {  # name -> (backbone, TrainConfig settings)
    "pose": ("hands", {"features": ("pose",)}),
    "pose+trajectory": ("hands", {"features": ("pose", "trajectory")}),
    "i3d": ("i3d", {}),
    "trajectory": ("hands", {"features": ("trajectory",)}),
    "pose + mirror": ("hands", {"features": ("pose",), "mirror": MIRRORED}),
    "pose+trajectory + mirror": ("hands", {"features": ("pose", "trajectory"), "mirror": MIRRORED}),
    "trajectory + mirror": ("hands", {"features": ("trajectory",), "mirror": MIRRORED}),
    "pose+trajectory + group dropout": ("hands", {"group_dropout": 0.5}),
    "pose+trajectory + mirror + group dropout": (
        "hands",
        {"mirror": MIRRORED, "group_dropout": 0.5},
    ),  # fmt: skip
}
WINDOW = {"hands": 16, "i3d": 2}  # frames; I3D: 16-frame clips every 4 frames of 20


def real_hands() -> dict[str, np.ndarray]:
    names = ("fullcurl", "halfcurl", "nocurl")
    photos = {name: cv2.imread(str(HANDS / f"{name}.jpg")) for name in names}
    ok, first = cv2.VideoCapture(str(HANDS / "fingers-lq.gif")).read()
    assert ok, "the real recording does not decode"
    return {**photos, "thumbs_up": first}


def extract(csv: Path, out: Path, backbone: str) -> Path:
    options = {"clip_stride": 4} if backbone == "i3d" else {}
    build_cache(csv, out, ExtractConfig(backbone=backbone, **options))
    return out


def fold_split(cache: Path, folder: Path, test_hand: str) -> Path:
    """A split.csv (what --split-from reads): the test hand's videos are the test set, take 0
    of each other video's motion the validation set."""
    samples = training_data(cache, TrainConfig()).samples
    rows = []
    for sample_id in samples.ids:
        hand, take = sample_id.split("/")[-2], sample_id.split("_")[-1].split(".")[0]
        rows.append((sample_id, "test" if hand == test_hand else "val" if take == "0" else "train"))
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["sample_id", "split"]).to_csv(folder / "split.csv", index=False)
    return folder


def score(caches: dict, name: str, hand: str, work: Path, epochs: int) -> tuple[float, float]:
    """(accuracy on the unseen hand, on its mirror image) of one setting."""
    backbone, settings = SETTINGS[name]
    split = fold_split(caches[backbone], work / "splits" / backbone / hand, hand)
    config = TrainConfig(
        window_clips=WINDOW[backbone], epochs=epochs, patience=20, seed=0, **settings
    )
    run = work / "runs" / name.replace(" ", "") / hand
    result = train(caches[backbone], run, config, split_from=split)
    mirrored = evaluate_run(run, caches[f"{backbone} mirrored {hand}"])
    return result.metrics["accuracy"], mirrored["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--takes", type=int, default=4, help="videos of each motion and hand")
    parser.add_argument("--i3d", action="store_true", help="I3D too (about 2 minutes a cache here)")
    parser.add_argument("--quick", action="store_true", help="two held-out hands, fewer rows")
    parser.add_argument("--keep", help="a folder to keep the videos, caches and runs in")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    keras.utils.disable_interactive_logging()  # no epoch lines
    hands = real_hands()
    names = [n for n in SETTINGS if args.i3d or SETTINGS[n][0] != "i3d"]
    if args.quick:
        names = [n for n in names if "group dropout" not in n or "mirror" in n]
    held_out = list(hands)[-2:] if args.quick else list(hands)
    with contextlib.ExitStack() as stack:
        work = Path(args.keep or stack.enter_context(tempfile.TemporaryDirectory()))
        started = time.perf_counter()
        made = make_motions(hands, work / "videos", per_motion=args.takes, frames=20)
        caches = {"hands": extract(made, work / "hands", "hands")}
        for hand in held_out:  # its mirror images: the same person's left hand
            one = {hand: hands[hand]}
            csv = make_motions(
                one, work / f"mirrored-{hand}", per_motion=args.takes, mirror=True, seed=1
            )
            caches[f"hands mirrored {hand}"] = extract(
                csv, work / f"hands-mirrored-{hand}", "hands"
            )
            if args.i3d:
                caches[f"i3d mirrored {hand}"] = extract(csv, work / f"i3d-mirrored-{hand}", "i3d")
        if args.i3d:
            caches["i3d"] = extract(made, work / "i3d", "i3d")
        print(f"videos and caches made in {time.perf_counter() - started:.0f} s", flush=True)
        results = {}
        print(f"{'setting':42s} {'unseen hand':>12s} {'mirrored':>9s}   per hand (unseen)")
        for name in names:
            scores = [score(caches, name, hand, work, epochs=80) for hand in held_out]
            unseen, mirrored = (float(np.mean(s)) for s in zip(*scores))
            per_hand = {hand: round(s[0], 2) for hand, s in zip(held_out, scores)}
            results[name] = {
                "unseen": round(unseen, 3),
                "mirrored": round(mirrored, 3),
                "per_hand": per_hand,
            }
            print(f"{name:42s} {unseen:12.2f} {mirrored:9.2f}   {per_hand}", flush=True)
    summary = {"machine": platform.processor() or platform.machine(), "takes": args.takes,
               "held_out": held_out, "results": results}  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
