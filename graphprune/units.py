"""Numbers for people: counts with K/M/G suffixes, sizes such as ``2GB`` read back as bytes."""

from __future__ import annotations

import re

from .errors import InputError


def short(n: float, digits: str = ".2f") -> str:
    """``1.23M``-style count (params, MACs) with the given format for the mantissa."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:{digits}}{unit}"
    return f"{n:.0f}"


SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str, option: str = "--shard-size") -> int:
    """``2GB``, ``500MB``, ``1.5GiB`` or a byte count, as bytes (InputError on anything else)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text or "")
    unit = match.group(2).upper() if match else None
    if match is None or unit not in SIZE_UNITS or float(match.group(1)) <= 0:
        raise InputError(f"{option} {text!r}: give a positive size such as 2GB, 500MB or 1GiB")
    return int(float(match.group(1)) * SIZE_UNITS[unit])
