"""Recordings as frames: decoding files and folders of frames (OpenCV), preprocessing, the
probe, and the clip layouts (dense clips through a ring buffer). Imports `common`."""
