"""Exponential backoff with full jitter, shared by event and delivery retries."""

from __future__ import annotations

import datetime as dt
import random


def backoff_delay(
    attempt: int,
    *,
    base: float = 5.0,
    cap: float = 3600.0,
    rng: random.Random | None = None,
) -> dt.timedelta:
    """How long to wait before retry number ``attempt`` (1 = the first retry).

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): a uniform draw in
    ``[base * 2**(attempt-1) / 2, base * 2**(attempt-1)]``, capped at ``cap`` seconds, so retries
    of many failed deliveries spread out instead of hitting a recovering server together. The
    lower half is kept so a retry never comes almost immediately after a failure.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    ceiling = min(cap, base * 2 ** min(attempt - 1, 32))
    draw = (rng or random).uniform(ceiling / 2, ceiling)
    return dt.timedelta(seconds=draw)
