"""A backbone for the tests whose subject is not a network: cheap features of real video
frames (no network), registered as `toy` by `register()` (conftest does it for the session;
a test's subprocess does it with `-c "import tests.toy_backbone as t; t.register(); ..."`)."""

from __future__ import annotations

MODEL = "toy colour statistics"


def register() -> None:
    from gesture_cache.backbones import base

    base.register(
        "toy",
        MODEL,
        "tests.toy_backbone",
        "toy: bright shape and colour, no network",
        clip_stride=8,
    )


def extract_config(**settings):
    """`extract`'s settings for the toy backbone (registered first)."""
    from gesture_cache.extract.config import ExtractConfig

    register()
    return ExtractConfig(backbone="toy", random_weights=0, **settings)
