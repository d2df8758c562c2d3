"""Training settings: `--reduce` takes ASCII digits only."""

from __future__ import annotations

import pytest

from gesture_cache.common.errors import ConfigError
from gesture_cache.train.config import TrainConfig


@pytest.mark.parametrize("text", ["pca:²", "pca:٣", "pca:3.0", "pca:-1"])
def test_reduce_takes_ascii_digits_only(text):
    with pytest.raises(ConfigError, match="use pca:N"):
        TrainConfig(reduce=text)
