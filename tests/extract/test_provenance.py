"""What a cache says about how it was made: fingerprint, recipe, files, versions, shortfalls."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from gesture_cache import open_cache
from gesture_cache.backbones.c3d.backbone import check_mean_file
from gesture_cache.cache.manifest import fingerprint_of, read_failures
from gesture_cache.cli.main import main
from gesture_cache.common.errors import CacheError, ConfigError
from gesture_cache.extract.config import ExtractConfig
from gesture_cache.extract.extraction import build_cache
from gesture_cache.extract.extractor import FEATURES_VERSION, extractor_from_config
from gesture_cache.video.decode import Preprocessing
from tests.helpers import write_video

FAST = {"random_weights": 0, "clip_stride": 64}


def test_renaming_the_weights_file_keeps_the_fingerprint(tmp_path, weights_file):
    renamed = tmp_path / "C3D_Sport1M_weights_keras_2.2.4.h5"
    os.link(weights_file, renamed)
    original = extractor_from_config(ExtractConfig(weights=str(weights_file))).spec
    moved = extractor_from_config(ExtractConfig(weights=str(renamed))).spec
    assert fingerprint_of(original) == fingerprint_of(moved)
    assert "C3D_Sport1M" not in str(moved)  # names are metadata, not content
    assert ExtractConfig(weights=str(renamed)).files() == {"weights": renamed.name}


def test_a_new_features_version_refuses_to_resume_an_old_cache(tmp_path, monkeypatch):
    write_video(tmp_path / "v.avi", 10)
    (tmp_path / "meta.csv").write_text("file_path,action\nv.avi,wave\n")
    build_cache(tmp_path / "meta.csv", tmp_path / "c", ExtractConfig(**FAST))
    monkeypatch.setattr("gesture_cache.extract.extractor.FEATURES_VERSION", 99)
    with pytest.raises(CacheError, match="differs in: features_version"):
        build_cache(tmp_path / "meta.csv", tmp_path / "c", ExtractConfig(**FAST))


def test_info_shows_the_libraries_that_wrote_each_shard(small_cache, capsys):
    assert main(["info", str(small_cache)]) == 0
    out = capsys.readouterr().out
    for library in ("opencv", "tensorflow", "keras", "h5py", "numpy"):
        assert library in out
    assert f"features version {FEATURES_VERSION}" in out


def test_the_seed_recipe_and_its_conflicts():
    seed = ExtractConfig(random_weights=0, recipe="seed")
    c3d = seed.backbone_options
    assert (c3d.preprocess, seed.pad, c3d.pool5_pad) == ("reference", "zero", "symmetric")
    default = ExtractConfig(random_weights=0)
    c3d = default.backbone_options
    assert (c3d.preprocess, default.pad, c3d.pool5_pad) == ("c3d", "edge", "caffe")
    with pytest.raises(ConfigError, match="--recipe seed sets --preprocess reference"):
        ExtractConfig(random_weights=0, recipe="seed", options={"preprocess": "c3d"})
    assert ExtractConfig(random_weights=0, recipe="seed", pad="zero").pad == "zero"
    with pytest.raises(ConfigError, match="unknown --recipe"):
        ExtractConfig(random_weights=0, recipe="blog")


@pytest.mark.slow
def test_the_seed_recipe_from_the_command_line(tmp_path, capsys):
    write_video(tmp_path / "v.avi", 10)
    (tmp_path / "meta.csv").write_text("file_path,action\nv.avi,wave\n")
    out = tmp_path / "c"
    common = ["extract", str(tmp_path / "meta.csv"), "--out", str(out), "--random-weights", "0"]
    assert main([*common, "--recipe", "seed", "--pool5-pad", "caffe"]) == 2
    assert "drop --pool5-pad caffe" in capsys.readouterr().err
    assert main([*common, "--recipe", "seed"]) == 0
    extractor = open_cache(out).manifest["extractor"]
    assert extractor["preprocessing"]["name"] == "reference" and extractor["pad"] == "zero"
    assert extractor["pool5_pad"] == "symmetric"


def test_mean_cube_must_be_the_one_the_cache_used(tmp_path):
    right, wrong = tmp_path / "right.npy", tmp_path / "wrong.npy"
    np.save(right, np.ones((3, 16, 128, 171), np.float32))
    np.save(wrong, np.zeros((3, 16, 128, 171), np.float32))
    config = ExtractConfig(random_weights=0, options={"mean_file": str(right)})
    recorded = Preprocessing.from_record(extractor_from_config(config).spec["preprocessing"])
    check_mean_file(recorded, str(right))
    with pytest.raises(ConfigError, match="not the cube the cache was built with"):
        check_mean_file(recorded, str(wrong))
    with pytest.raises(ConfigError, match="give --mean-file"):
        check_mean_file(recorded, None)
    plain = extractor_from_config(ExtractConfig(random_weights=0)).spec["preprocessing"]
    with pytest.raises(ConfigError, match="per-channel mean"):
        check_mean_file(Preprocessing.from_record(plain), str(right))


@pytest.mark.slow
def test_frame_shortfall_is_cached_recorded_and_strict_fails_it(tmp_path, shared_videos, capsys):
    csv = tmp_path / "meta.csv"
    csv.write_text("file_path,action\ntree.avi,tree\n")
    common = ["extract", str(csv), "--video-root", str(shared_videos), "--random-weights", "0"]
    assert main([*common, "--out", str(tmp_path / "c"), "--clip-stride", "64"]) == 0
    assert main(["info", str(tmp_path / "c")]) == 0
    assert "tree.avi: claims 444, 68 decode" in capsys.readouterr().out
    code = main([*common, "--out", str(tmp_path / "strict"), "--clip-stride", "64", "--strict"])
    assert code == 1
    assert read_failures(tmp_path / "strict")["tree.avi"]["reason"] == "frame_shortfall"


def test_light_commands_do_not_import_heavy_libraries(small_cache):
    probe = (
        "import sys; from gesture_cache.cli.main import main;"
        f"assert main(['info', {str(small_cache)!r}]) == 0;"
        f"assert main(['verify', {str(small_cache)!r}]) == 0;"
        "heavy = [m for m in ('tensorflow', 'keras', 'matplotlib', 'sklearn', 'cv2', 'optuna')"
        " if m in sys.modules]; assert not heavy, heavy"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_verbose_prints_the_traceback_of_our_errors(tmp_path):
    command = [sys.executable, "-m", "gesture_cache.cli"]
    quiet = subprocess.run([*command, "info", str(tmp_path)], capture_output=True, text=True)
    loud = subprocess.run([*command, "-v", "info", str(tmp_path)], capture_output=True, text=True)
    assert quiet.returncode == loud.returncode == 2
    assert "Traceback" not in quiet.stderr and "no manifest.json" in quiet.stderr
    assert "Traceback" in loud.stderr
