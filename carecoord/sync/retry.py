"""Waiting between attempts: ``Retry-After`` (seconds or an HTTP date) and exponential backoff."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime

__all__ = ["backoff", "parse_retry_after"]


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (``120`` or an HTTP date); None if absent or
    unreadable. A date in the past means 0."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now)


def backoff(attempt: int, *, base: float, rng: random.Random, cap: float = 60.0) -> float:
    """Delay before retry ``attempt`` (0-based): ``base * 2**attempt`` capped, with equal jitter
    (between half and all of it), so that parallel clients spread out but never retry at once."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 32))
    return ceiling / 2 + rng.uniform(0.0, ceiling / 2)
