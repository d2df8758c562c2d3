"""gesture_cache: extract C3D features once into a verifiable cache, then train fast."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # broken files get our message, not FFmpeg's

__version__ = "0.1.0"

from gesture_cache.cache import Cache, open_cache  # noqa: E402
from gesture_cache.errors import CacheError, GestureCacheError  # noqa: E402

__all__ = ["Cache", "CacheError", "GestureCacheError", "open_cache", "__version__"]
