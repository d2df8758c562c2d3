"""Gestures in continuous video: events from window probabilities, the detector over
recordings, cached clips and live sources, the outputs of `detect`, scores and timelines.
Imports `deploy` and the stages below it, never training or `cli`."""
