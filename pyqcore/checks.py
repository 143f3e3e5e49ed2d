"""Checks of arguments that are numbers of seconds, shared by the settings, the script calls
and backoff: a bad value (inf, nan, negative, past its bound) is a ConfigurationError before
anything is sent, never an OverflowError or a script's refusal."""

from __future__ import annotations

import math

from pyqcore.errors import ConfigurationError

MAX_DELAY = 10 * 365 * 24 * 3600.0  # longest delay or backoff: ten years
MAX_LOCK_TTL = 7 * 24 * 3600.0  # longest item-lock lease


def check_seconds(what: str, value: object, *, high: float, zero: bool = False) -> float:
    """``value`` if it is a number of seconds in (0, high] (or [0, high] with ``zero``);
    ConfigurationError otherwise (inf and nan included), before anything is sent."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) \
            or not (value >= 0 if zero else value > 0) or value > high:
        low = ">= 0" if zero else "> 0"
        raise ConfigurationError(f"{what} must be a number of seconds {low} and <= {high:g}, "
                                 f"got {value!r}")
    return float(value)
