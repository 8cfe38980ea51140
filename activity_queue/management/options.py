"""Argument types and a progress line shared by the operator commands.

The parsers raise ``argparse.ArgumentTypeError`` so that a bad value is a
usage error: exit status 2 with the usage line from the shell, a
``CommandError`` from ``call_command``.
"""

from __future__ import annotations

import argparse
import re
from datetime import date, datetime, timedelta

from django.core.management.base import OutputWrapper
from django.utils import timezone

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
WHEN_HELP = ("an ISO date (2024-05-01), an ISO datetime (2024-05-01T13:30, with an optional "
             "offset; naive ones are in the site's time zone) or an age such as 90m, 2h, 3d, 1w")


def parse_duration(value: str) -> float:
    """Seconds, from ``300``, ``300s``, ``5m``, ``2h``, ``1d`` or ``1w``."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        match = _RELATIVE.match(text)
        if not match:
            raise argparse.ArgumentTypeError(
                f"{value!r} is not a duration; use seconds or a number with s, m, h, d or w "
                "(e.g. 300, 5m, 2h)") from None
        seconds = float(match[1]) * UNITS[match[2].lower()]
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: a duration cannot be negative")
    return seconds


def parse_when(value: str, *, now: datetime | None = None) -> datetime:
    """An aware datetime from an ISO date/datetime or an age counted back from now."""
    text = value.strip()
    match = _RELATIVE.match(text)
    if match:
        now = now or timezone.now()
        return now - timedelta(seconds=float(match[1]) * UNITS[match[2].lower()])
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        else:
            parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date or an age; use {WHEN_HELP}") \
            from None
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed)
    return parsed


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return number


class Progress:
    """A progress line on stderr for runs over ``threshold`` items.

    On a terminal it redraws one line; elsewhere (logs, CI) it writes a line
    every tenth of the way, so a long replay shows it is alive without
    flooding a log.
    """

    def __init__(self, stream: OutputWrapper, total: int, label: str,
                 threshold: int = 1000) -> None:
        self.stream, self.total, self.label = stream, total, label
        self.enabled = total >= threshold
        self.tty = stream.isatty()
        self._last_tenth = 0

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        share = done / self.total if self.total else 1.0
        if self.tty:
            bar = "#" * int(share * 30)
            self.stream.write(f"\r{self.label} [{bar:<30}] {done}/{self.total} "
                              f"({share:.0%})", ending="")
            self.stream.flush()
        elif int(share * 10) > self._last_tenth:
            self._last_tenth = int(share * 10)
            self.stream.write(f"{self.label}: {done}/{self.total} ({share:.0%})")

    def finish(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("")
