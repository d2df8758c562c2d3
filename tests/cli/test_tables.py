"""Tables for people: labels that would read ambiguously are quoted."""

from __future__ import annotations

from gesture_cache.cli.tables import shown


def test_info_quotes_labels_that_would_read_ambiguously():
    assert shown("wave") == "wave" and shown("Swiping Left") == "Swiping Left"
    assert shown("a, b") == '"a, b"' and shown("two\nlines") == '"two\\nlines"'
    assert shown(" padded") == '" padded"' and shown("") == '""'
