"""A stacked bar chart of deliveries and failures per hour, as inline SVG.

Drawn on the server so the dashboard needs no script and no network: the
page works offline and in any browser that shows SVG.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from .stats import HourBucket

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 28, 36
SENT_COLOUR, FAILED_COLOUR = "#2e7d32", "#c62828"


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 × 10^k that is >= value (at least 1): a readable axis top."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def y_ticks(top: int) -> list[int]:
    """Whole numbers from 0 to ``top`` (a :func:`nice_ceiling`) for the y axis: its middle
    when that is whole (0/1/2, 0/5/10…), else every unit (0…5)."""
    if top <= 1:
        return [0, 1]
    if top % 2 == 0:
        return [0, top // 2, top]
    return list(range(top + 1))


def outcomes_svg(buckets: Sequence[HourBucket]) -> SafeString:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = nice_ceiling(max((b.sent + b.failed for b in buckets), default=0))
    slot = plot_w / max(len(buckets), 1)
    bar = max(slot * 0.7, 1.0)
    width = f"{bar:.1f}"

    def y(value: float) -> str:
        return f"{TOP + plot_h - plot_h * value / top:.1f}"

    def h(low: float, high: float) -> str:
        return f"{plot_h * (high - low) / top:.1f}"

    grid = format_html_join("", (
        '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#ddd"/>'
        '<text x="{}" y="{}" text-anchor="end" font-size="11" fill="#555">{}</text>'
    ), ((LEFT, y(v), WIDTH - RIGHT, y(v), LEFT - 6, f"{float(y(v)) + 4:.1f}", v)
        for v in y_ticks(top)))
    bars = []
    labels = []
    for i, b in enumerate(buckets):
        x = f"{LEFT + i * slot + (slot - bar) / 2:.1f}"
        local = timezone.localtime(b.start)
        tip = f"{local:%Y-%m-%d %H:00}: {b.sent} delivered, {b.failed} failed"
        if b.sent:
            bars.append((x, y(b.sent), width, h(0, b.sent), SENT_COLOUR, tip))
        if b.failed:
            bars.append((x, y(b.sent + b.failed), width, h(b.sent, b.sent + b.failed),
                         FAILED_COLOUR, tip))
        if i % 3 == 0:
            labels.append((f"{float(x) + bar / 2:.1f}", HEIGHT - BOTTOM + 16, f"{local:%H:%M}"))
    rects = format_html_join("", (
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
        '<title>{}</title></rect>'
    ), bars)
    ticks = format_html_join("", (
        '<text x="{}" y="{}" text-anchor="middle" font-size="11" fill="#555">{}</text>'
    ), labels)
    legend = format_html(
        '<rect x="{}" y="8" width="10" height="10" fill="{}"/>'
        '<text x="{}" y="17" font-size="12">delivered</text>'
        '<rect x="{}" y="8" width="10" height="10" fill="{}"/>'
        '<text x="{}" y="17" font-size="12">failed (final)</text>',
        LEFT, SENT_COLOUR, LEFT + 14, LEFT + 90, FAILED_COLOUR, LEFT + 104,
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="{}" height="{}" '
        'role="img" aria-label="Deliveries and final failures per hour, last {} hours" '
        'font-family="sans-serif">{}{}{}{}'
        '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#888"/></svg>',
        WIDTH, HEIGHT, WIDTH, HEIGHT, len(buckets), legend, grid, rects, ticks,
        LEFT, y(0), WIDTH - RIGHT, y(0),
    )
