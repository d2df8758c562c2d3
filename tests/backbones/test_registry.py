"""The registry: the toy backbone (tests/toy_backbone: a package with its options, registered
by conftest with one `register` line) goes through extract, train and predict; its flags are
its own and every other backbone's are refused."""

from __future__ import annotations

import numpy as np
import pytest

from gesture_cache.backbones import base
from gesture_cache.cache.reader import open_cache
from gesture_cache.cli.main import main
from gesture_cache.common.errors import ConfigError
from gesture_cache.deploy.predict import predict_videos
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from gesture_cache.train.config import TrainConfig
from gesture_cache.train.fit import train
from tests.toy_backbone import register
from tests.toy_backbone.backbone import Toy
from tests.toy_backbone.options import Options


@pytest.fixture
def toy_registered():
    """The toy backbone, registered again after a test that takes it out."""
    assert "toy" in base.BACKBONES  # conftest registers it for the session
    yield
    register()


def test_a_registered_backbone_extracts_trains_and_predicts(toy_registered, synth_csv, tmp_path):
    config = ExtractConfig(backbone="toy", random_weights=0, clip_stride=4)
    summary = build_cache(synth_csv, tmp_path / "cache", config)
    assert summary.recordings_in_cache > 0
    cache = open_cache(tmp_path / "cache")
    assert cache.features.shape[1] == Toy(Options(), 0).feature_dim
    assert cache.manifest["extractor"]["model"] == Toy.name
    assert cache.manifest["extractor"]["clip_len"] == Toy.clip_len
    first = cache.recordings["recording_id"][0]
    assert np.isfinite(cache.features).all() and cache.features.std() > 0, first

    config = TrainConfig(epochs=2, units=(4,), dense=0, window_clips=2)
    result = train(tmp_path / "cache", tmp_path / "run", config)
    assert set(result.metrics) >= {"accuracy"}
    video = sorted(synth_csv.parent.rglob("*.avi"))[0]
    [predicted] = predict_videos(tmp_path / "run", [str(video)], random_weights=0)
    assert predicted["label"] in open_cache(tmp_path / "cache").manifest["classes"]


def test_an_unknown_backbone_is_named(synth_csv, tmp_path):
    with pytest.raises(ConfigError, match="unknown --backbone 'x3d': use one of c3d"):
        build_cache(synth_csv, tmp_path / "cache", ExtractConfig(backbone="x3d", random_weights=0))
    assert not (tmp_path / "cache").exists()


def test_a_cache_of_a_backbone_not_installed_is_named(toy_registered, synth_csv, tmp_path):
    build_cache(synth_csv, tmp_path / "cache", ExtractConfig(backbone="toy", random_weights=0))
    spec = open_cache(tmp_path / "cache").manifest["extractor"]
    base.BACKBONES.pop("toy")
    with pytest.raises(ConfigError, match="toy colour statistics.*does not have"):
        base.spec_backbone(spec)


def test_a_backbones_options_are_its_flags_and_no_one_elses(toy_registered, synth_csv, tmp_path,
                                                              capsys):  # fmt: skip
    out = tmp_path / "cache"
    assert main(["extract", str(synth_csv), "--out", str(out), "--backbone", "toy",
                 "--random-weights", "0", "--size", "8", "--clip-stride", "8"]) == 0  # fmt: skip
    cache = open_cache(out)
    assert cache.manifest["extractor"]["preprocessing"]["resize"] == [8, 8]
    assert cache.features.shape[1] == Toy(Options(), 0).feature_dim
    for backbone, foreign, owner in (("toy", "--max-hands", "hands"), ("c3d", "--size", "toy"),
                                     ("hands", "--layer", "c3d")):  # fmt: skip
        value = [] if foreign in ("--mirrored",) else ["1" if foreign != "--layer" else "fc6"]
        code = main(["extract", str(synth_csv), "--out", str(tmp_path / backbone), "--backbone",
                     backbone, foreign, *value])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and f"{foreign} is an option of --backbone {owner}" in err, err
        assert not (tmp_path / backbone).exists()
