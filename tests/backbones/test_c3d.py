"""C3D: the network's layout and parameters, Keras-2 weights loaded by layer name, the mean
cube, and features against a reference computation."""

from __future__ import annotations

import cv2
import h5py
import keras
import numpy as np
import pytest

from gesture_cache.backbones.c3d.network import WeightsError, build_c3d, load_keras2_weights
from gesture_cache.common.errors import ConfigError
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extractor import extractor_from_config
from tests.helpers import write_video

REFERENCE_LAYERS = [
    "conv1",
    "pool1",
    "conv2",
    "pool2",
    "conv3a",
    "conv3b",
    "pool3",
    "conv4a",
    "conv4b",
    "pool4",
    "conv5a",
    "conv5b",
    "zeropad5",
    "pool5",
    "flatten",
    "fc6",
    "dropout_1",
    "fc7",
    "dropout_2",
    "fc8",
]


def count_to(model: keras.Model, last: str) -> int:
    total = 0
    for layer in model.layers:
        total += sum(int(np.prod(w.shape)) for w in layer.weights)
        if layer.name == last:
            return total
    raise AssertionError(last)


def test_architecture_and_parameter_count():
    model = build_c3d()
    assert [layer.name for layer in model.layers] == REFERENCE_LAYERS
    assert count_to(model, "fc7") == 77_995_776
    assert model.compute_output_shape((1, 16, 112, 112, 3)) == (1, 487)
    assert model.get_layer("zeropad5").padding == ((0, 0), (0, 1), (0, 1))
    assert build_c3d("symmetric").get_layer("zeropad5").padding == ((0, 0), (1, 1), (1, 1))


def test_keras2_file_loads_the_same_as_keras3s_own_legacy_loader(weights_file):
    ours, theirs = build_c3d(), build_c3d()
    load_keras2_weights(ours, weights_file)
    theirs.load_weights(weights_file)  # Keras 3's loader for the legacy HDF5 layout
    for a, b in zip(ours.weights, theirs.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with h5py.File(weights_file) as f:
        np.testing.assert_array_equal(
            ours.get_layer("fc7").kernel.numpy(), f["fc7/fc7/kernel:0"][()]
        )


def test_features_match_an_independent_preprocessing(tmp_path, weights_file):
    """Decode, resize, mean-subtract and crop by hand (the Caffe recipe), run the plain network
    to fc7, and compare with what the extractor computes from the file."""
    video = write_video(tmp_path / "v.avi", 16, 200, 150, seed=3)
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.resize(frame, (171, 128)).astype(np.float32))
    clip = np.stack(frames) - np.array([90.25, 97.66, 101.41], np.float32)
    clip = clip[:, 8:120, 29:141, :][None]
    network = build_c3d()
    network.load_weights(weights_file)
    fc7 = keras.Model(network.inputs, network.get_layer("fc7").output)
    expected = fc7.predict(clip, verbose=0)[0]

    extractor = extractor_from_config(ExtractConfig(weights=str(weights_file)))
    clips = extractor.features(video)
    actual = clips.features[0]
    assert clips.clip_valid.tolist() == [True] and clips.clip_start.tolist() == [0]
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def read_frames(video, size=(171, 128)) -> np.ndarray:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return np.stack(frames)
        frames.append(cv2.resize(frame, size).astype(np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["channels_first_batched", "channels_last"])
def test_a_random_mean_cube_is_subtracted_before_the_crop(tmp_path, weights_file, layout):
    """c3d-keras ships its cube as (1, 3, 16, 128, 171): subtract it whole, crop afterwards."""
    rng = np.random.default_rng(5)
    cube = rng.uniform(0, 255, (16, 128, 171, 3)).astype(np.float32)  # channels last, BGR
    stored = cube if layout == "channels_last" else np.moveaxis(cube, -1, 0)[None]
    np.save(tmp_path / "mean.npy", stored)
    video = write_video(tmp_path / "v.avi", 16, 200, 150, seed=4)
    clip = (read_frames(video) - cube)[:, 8:120, 29:141, :][None]
    network = build_c3d()
    network.load_weights(weights_file)
    expected = keras.Model(network.inputs, network.get_layer("fc7").output).predict(
        clip, verbose=0
    )[0]

    config = ExtractConfig(
        weights=str(weights_file), options={"mean_file": str(tmp_path / "mean.npy")}
    )
    extractor = extractor_from_config(config)
    actual = extractor.features(video).features[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
    plain = extractor_from_config(ExtractConfig(weights=str(weights_file)))
    assert (
        extractor.spec["preprocessing"]["mean_sha256"]
        and not plain.spec["preprocessing"]["mean_sha256"]
    )


def test_a_mean_cube_of_another_shape_is_refused(tmp_path, weights_file):
    np.save(tmp_path / "mean.npy", np.zeros((16, 112, 112, 3), np.float32))
    config = ExtractConfig(
        weights=str(weights_file), options={"mean_file": str(tmp_path / "mean.npy")}
    )
    with pytest.raises(ConfigError, match=r"\(16, 112, 112, 3\).*\(3, 16, 128, 171\)"):
        extractor_from_config(config)


def test_weights_errors_name_the_problem(tmp_path, weights_file):
    model = build_c3d()
    not_hdf5 = tmp_path / "weights.h5"
    not_hdf5.write_text("hello")
    with pytest.raises(WeightsError, match="not an HDF5 file"):
        load_keras2_weights(model, not_hdf5)

    missing_layer = tmp_path / "missing.h5"
    with h5py.File(weights_file) as src, h5py.File(missing_layer, "w") as dst:
        for name in src:
            if name != "conv3b":
                src.copy(name, dst)
    with pytest.raises(WeightsError, match="no layer 'conv3b'"):
        load_keras2_weights(model, missing_layer)

    wrong_shape = tmp_path / "wrong.h5"
    with h5py.File(weights_file) as src, h5py.File(wrong_shape, "w") as dst:
        for name in src:
            src.copy(name, dst)
        del dst["fc6/fc6/kernel:0"]
        dst["fc6/fc6/kernel:0"] = np.zeros((100, 4096), np.float32)
    with pytest.raises(WeightsError, match=r"'fc6'.*\(100, 4096\).*\(8192, 4096\)"):
        load_keras2_weights(model, wrong_shape)
