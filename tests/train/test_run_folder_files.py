"""A run folder's model whose weights name another file is refused before Keras reads it."""

from __future__ import annotations

import io
import zipfile

import h5py
import keras
import numpy as np
import pytest

from gesture_cache.common.hdf5 import IndirectionError
from gesture_cache.train.run_folder import load_best_model


def test_a_model_whose_weights_live_in_another_file_is_refused(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="classes")])
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    assert load_best_model(run).count_params() == 8  # as saved, it loads
    secret = tmp_path / "credentials"
    secret.write_bytes(b"secret-bytes" * 10)
    with zipfile.ZipFile(run / "model.keras") as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    weights = io.BytesIO(files["model.weights.h5"])
    with h5py.File(weights, "a") as f:
        paths = []
        f.visititems(lambda p, o: paths.append(p) if isinstance(o, h5py.Dataset) else None)
        kernel = paths[0]
        shape, dtype = f[kernel].shape, f[kernel].dtype
        del f[kernel]
        size = int(np.prod(shape)) * dtype.itemsize
        f.create_dataset(kernel, shape, dtype, external=[(str(secret), 0, size)])
    files["model.weights.h5"] = weights.getvalue()
    with zipfile.ZipFile(run / "model.keras", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    with pytest.raises(IndirectionError, match="another file"):
        load_best_model(run)
