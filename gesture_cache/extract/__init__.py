"""Extraction: the settings, the extractor (a backbone plus a clip layout), the per-recording
job, and its two engines (local decode workers, Ray). Imports the stages below it."""
