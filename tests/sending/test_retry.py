"""The delivery policy as a table: which answers are retried, how long to wait."""

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from activity_queue.lifecycle import State
from activity_queue.sending.retry import (
    backoff,
    classify_status,
    is_final,
    parse_retry_after,
    retry_delay,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("status", "verdict"), [
    (200, State.SENT), (201, State.SENT), (202, State.SENT), (204, State.SENT),
    (299, State.SENT),
    # A 3xx reaches the policy only when the redirect could not be followed.
    (300, State.FAILED), (301, State.FAILED), (304, State.FAILED),
    (307, State.FAILED), (308, State.FAILED),
    (400, State.FAILED), (401, State.FAILED), (403, State.FAILED),
    (404, State.FAILED), (405, State.FAILED), (410, State.FAILED),
    (413, State.FAILED), (422, State.FAILED),
    (408, State.RETRYING), (425, State.RETRYING), (429, State.RETRYING),
    (500, State.RETRYING), (502, State.RETRYING), (503, State.RETRYING),
    (504, State.RETRYING), (599, State.RETRYING),
    (100, State.FAILED), (600, State.FAILED),
])
def test_classify_status(status, verdict):
    assert classify_status(status) is verdict


@pytest.mark.parametrize(("verdict", "made", "maximum", "final"), [
    (State.FAILED, 1, 12, True),
    (State.RETRYING, 1, 12, False),
    (State.RETRYING, 11, 12, False),
    (State.RETRYING, 12, 12, True),
    (State.RETRYING, 1, 1, True),
    (State.SENT, 12, 12, False),
])
def test_is_final(verdict, made, maximum, final):
    assert is_final(verdict, made, maximum) is final


@pytest.mark.parametrize(("attempt", "expected"), [
    (1, 30), (2, 60), (3, 120), (4, 240), (5, 480), (6, 960), (7, 1000), (50, 1000),
    (10_000, 1000),
])
def test_backoff_doubles_then_caps(attempt, expected):
    assert backoff(attempt, 30, 1000, jitter=0) == expected


@pytest.mark.parametrize("attempt", [1, 2, 3, 6, 7, 40])
def test_backoff_jitter_stays_within_a_quarter_and_under_the_cap(attempt):
    rng = random.Random(attempt)
    base = backoff(attempt, 30, 1000, jitter=0)
    samples = [backoff(attempt, 30, 1000, rng=rng) for _ in range(500)]
    assert all(0.75 * base <= s <= min(1000, 1.25 * base) for s in samples)
    assert len(set(samples)) > 1, "jitter spreads the retries of one burst"


def test_backoff_rejects_attempt_zero():
    with pytest.raises(ValueError, match="1-based"):
        backoff(0, 30, 1000)


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    factor=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    cap=st.floats(min_value=0, max_value=1e7, allow_nan=False),
    jitter=st.floats(min_value=0, max_value=2, allow_nan=False),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_properties(attempt, factor, cap, jitter, seed):
    delay = backoff(attempt, factor, cap, jitter=jitter, rng=random.Random(seed))
    assert 0 <= delay <= cap
    assert backoff(attempt, factor, cap, jitter=0) <= backoff(attempt + 1, factor, cap, jitter=0)


@pytest.mark.parametrize(("header", "expected"), [
    ("120", 120.0),
    ("  7 ", 7.0),
    ("0", 0.0),
    (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
    ("Sun, 01 Mar 2026 12:05:00 GMT", 300.0),
    # An HTTP date already past means "now", never a negative wait.
    (format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),
    (None, None), ("", None), ("soon", None), ("-5", None), ("1.5", None),
    ("Mon, 99 Foo 2026 25:61:00 GMT", None), ("²", None),
])
def test_parse_retry_after(header, expected):
    assert parse_retry_after(header, now=NOW) == expected


@given(st.text(max_size=40))
def test_parse_retry_after_never_raises_nor_goes_negative(header):
    value = parse_retry_after(header, now=NOW)
    assert value is None or value >= 0


@pytest.mark.parametrize(("retry_after", "expected"), [
    (120.0, 120.0),
    (0.0, 0.0),
    (10**9, 3600.0),  # capped by RETRY_AFTER_MAX
])
def test_retry_delay_honours_retry_after_within_its_cap(retry_after, expected):
    assert retry_delay(3, factor=30, cap=1000, retry_after=retry_after,
                       retry_after_cap=3600) == expected


def test_retry_delay_without_retry_after_is_the_backoff():
    delays = [retry_delay(3, factor=30, cap=1000, retry_after=None, retry_after_cap=3600)
              for _ in range(50)]
    assert all(90 <= d <= 150 for d in delays)
