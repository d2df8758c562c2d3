"""A backbone for the registry's tests: per-channel means and spreads of a clip, no network."""
