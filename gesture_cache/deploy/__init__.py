"""A trained run in use: reading a run folder or a bundle (`trained`), predict, and export to
bundles (LiteRT, ONNX, OpenVINO, SavedModel) with their parity checks. Never imports
training (`train.fit`, `prepare`, `tune`, ...) or `cli`."""
