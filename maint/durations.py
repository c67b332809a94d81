"""Durations as operators write them: "500ms", "90s", "5m", "26h", "7d", or combined ("1h30m")."""

import re
from datetime import timedelta

_UNITS = {"ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "m": timedelta(minutes=1),
          "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")


def parse_duration(text: str) -> timedelta:
    """Parse a duration string; raise ValueError with the accepted forms otherwise."""
    if not isinstance(text, str):
        raise ValueError("must be a duration string like '500ms', '90s', '5m', '26h' or '7d'")
    compact = text.strip().replace(" ", "")
    if not compact or not _WHOLE.fullmatch(compact):
        raise ValueError("must be a duration like '500ms', '90s', '5m', '26h' or '7d'")
    return sum((float(n) * _UNITS[unit] for n, unit in _PART.findall(compact)), timedelta())


def format_duration(delta: timedelta) -> str:
    """A short rendering, at most two units: 1d7h, 2d4h, 1m30s, 4.2s, 850ms."""
    total_ms = int(round(delta.total_seconds() * 1000))
    if total_ms < 0:
        return "-" + format_duration(-delta)
    if total_ms < 1000:
        return f"{total_ms}ms"
    seconds = total_ms // 1000
    if seconds < 60:
        tenths = (total_ms % 1000) // 100
        return f"{seconds}.{tenths}s" if tenths and seconds < 10 else f"{seconds}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts[:2])


def format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
