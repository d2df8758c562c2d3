"""The frozen networks that turn clips into features, found by name in `base.BACKBONES`, and
the Keras backend each runs on. Imports `common`, `video`. A new backbone is one module here
and one `register` line in `base.py`."""
