"""Durations as operators write them, and as maint prints them."""

from datetime import timedelta

import pytest

from maint.durations import format_bytes, format_duration, parse_duration


@pytest.mark.parametrize("text, expected", [
    ("500ms", timedelta(milliseconds=500)),
    ("90s", timedelta(seconds=90)),
    ("5m", timedelta(minutes=5)),
    ("26h", timedelta(hours=26)),
    ("7d", timedelta(days=7)),
    ("2w", timedelta(weeks=2)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
    ("1.5h", timedelta(minutes=90)),
    (" 5m ", timedelta(minutes=5)),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "5", "5 minutes", "-5m", "m", "5x", "5m-", "1h30", "ms5"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value) == "must be a duration like '500ms', '90s', '5m', '26h' or '7d'"


@pytest.mark.parametrize("value", [5, 5.0, None, timedelta(minutes=5)])
def test_parse_duration_rejects_non_strings(value):
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert str(caught.value) == "must be a duration string like '500ms', '90s', '5m', '26h' or '7d'"


@pytest.mark.parametrize("delta, expected", [
    (timedelta(0), "0ms"),
    (timedelta(milliseconds=850), "850ms"),
    (timedelta(seconds=1.5), "1.5s"),
    (timedelta(seconds=12.5), "12s"),
    (timedelta(seconds=45), "45s"),
    (timedelta(seconds=90), "1m30s"),
    (timedelta(hours=1), "1h"),
    (timedelta(days=2, hours=4), "2d4h"),
    (timedelta(days=2, hours=4, minutes=5), "2d4h"),  # two units at most
    (timedelta(days=1, minutes=5), "1d5m"),
    (timedelta(seconds=-90), "-1m30s"),
])
def test_format_duration(delta, expected):
    assert format_duration(delta) == expected


@pytest.mark.parametrize("text", ["850ms", "45s", "1m30s", "2d4h", "1h"])
def test_format_duration_reads_back(text):
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize("size, expected", [
    (0, "0 B"),
    (1023, "1023 B"),
    (1024, "1.0 KiB"),
    (1536, "1.5 KiB"),
    (10 * 1024 ** 2, "10.0 MiB"),
    (5 * 1024 ** 3, "5.0 GiB"),
    (1024 ** 4, "1.0 TiB"),
    (1024 ** 5, "1024.0 TiB"),
    (-2048, "-2.0 KiB"),
])
def test_format_bytes(size, expected):
    assert format_bytes(size) == expected
