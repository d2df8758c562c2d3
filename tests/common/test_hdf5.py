"""HDF5 files that would read other files are refused before a value is read."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from gesture_cache.common.hdf5 import IndirectionError, open_plain


def secret_file(folder):
    secret = folder / "credentials"
    secret.write_bytes(b"aws_secret_access_key = do-not-read-me\n" * 4)
    return secret


def plain(path):
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=np.zeros((4, 8), np.float16))
        f.create_group("segments").create_dataset("label", data=np.arange(3))
    return path


@pytest.mark.parametrize("kind", ["external storage", "virtual", "external link", "soft link"])
def test_indirection_of_every_kind_is_refused(kind, tmp_path):
    secret = secret_file(tmp_path)
    path = plain(tmp_path / "shard.h5")
    with h5py.File(path, "a") as f:
        del f["segments/label"]
        if kind == "external storage":
            size = secret.stat().st_size
            f.create_dataset("segments/label", (size,), np.uint8, external=[(str(secret), 0, size)])
        elif kind == "virtual":
            other = plain(tmp_path / "other.h5")
            layout = h5py.VirtualLayout((4, 8), np.float16)
            layout[:] = h5py.VirtualSource(str(other), "features", (4, 8))
            f.create_virtual_dataset("segments/label", layout)
        elif kind == "external link":
            f["segments/label"] = h5py.ExternalLink(str(plain(tmp_path / "o.h5")), "/features")
        else:
            f["segments/label"] = h5py.SoftLink("/features")
    with pytest.raises(IndirectionError, match="segments/label"):
        with open_plain(path):
            pass
    with open_plain(plain(tmp_path / "fine.h5")) as f:  # a plain file opens
        assert f["features"].shape == (4, 8)
