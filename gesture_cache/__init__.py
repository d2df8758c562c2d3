"""gesture_cache: extract features of gesture videos once into a verifiable cache, then train fast.

The subpackages follow the pipeline, each importing only those before it:
common -> video -> sources -> backbones -> cache -> extract -> data -> train -> deploy ->
detect -> cli (see docs/architecture.md).
"""

import os

__version__ = "0.2.0"  # the one place it is written: pyproject.toml reads it from here

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # broken files get our message, not FFmpeg's

from gesture_cache.cache.reader import Cache, open_cache  # noqa: E402
from gesture_cache.common.errors import CacheError, GestureCacheError  # noqa: E402

__all__ = ["Cache", "CacheError", "GestureCacheError", "open_cache", "__version__"]
