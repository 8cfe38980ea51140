"""Failure classification and the backoff schedule: pure functions, no I/O."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from ..lifecycle import State

#: Statuses worth another try: the server is busy, overloaded or broken right now.
RETRYABLE_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))


def classify_status(status: int) -> State:
    """2xx is delivered; 408/425/429/5xx are retried; any other code is final.

    3xx only reaches here when a redirect could not be followed.
    """
    if 200 <= status < 300:
        return State.SENT
    if status in RETRYABLE_STATUSES:
        return State.RETRYING
    return State.FAILED


def backoff(attempt: int, factor: float, cap: float, *, jitter: float = 0.25,
            rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    ``factor * 2**(attempt-1)``, capped, then spread by ±``jitter`` so that the
    retries of one burst do not all land together; never above the cap.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    base = min(cap, factor * 2 ** min(attempt - 1, 64))
    spread = (rng or random).uniform(1 - jitter, 1 + jitter)
    return max(0.0, min(cap, base * spread))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also accepts '²', '٣'…
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retry_delay(attempt: int, *, factor: float, cap: float, retry_after: float | None,
                retry_after_cap: float) -> float:
    """The wait before the next attempt: the server's word when it gave one, else backoff."""
    if retry_after is not None:
        return min(retry_after, retry_after_cap)
    return backoff(attempt, factor, cap)


def is_final(state: State, attempts_made: int, max_attempts: int) -> bool:
    """A retryable failure becomes final once the attempts are used up."""
    return state is State.FAILED or (
        state is State.RETRYING and attempts_made >= max_attempts
    )
