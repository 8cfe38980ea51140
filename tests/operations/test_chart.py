from datetime import UTC, datetime, timedelta

import pytest

from activity_queue.operations.chart import (
    FAILED_COLOUR,
    SENT_COLOUR,
    nice_ceiling,
    outcomes_svg,
    y_ticks,
)
from activity_queue.operations.stats import HourBucket


@pytest.mark.parametrize(("value", "top"), [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (10, 10),
                                            (11, 20), (180, 200), (201, 500), (999, 1000)])
def test_nice_ceiling(value, top):
    assert nice_ceiling(value) == top


def test_bars_are_stacked_and_scaled():
    start = datetime(2024, 5, 1, tzinfo=UTC)
    buckets = [HourBucket(start + timedelta(hours=i), sent, failed)
               for i, (sent, failed) in enumerate([(0, 0), (80, 20), (40, 0), (0, 10)])]
    svg = str(outcomes_svg(buckets))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count(f'fill="{SENT_COLOUR}"><title>') == 2
    assert svg.count(f'fill="{FAILED_COLOUR}"><title>') == 2
    # The plot is 176 px high for a top of 100: 80 sent are 140.8 px, 20 failed 35.2 px on top.
    assert 'height="140.8" fill="#2e7d32"' in svg and 'y="28.0" width' in svg
    assert 'height="35.2" fill="#c62828"' in svg
    assert ">100</text>" in svg and ">50</text>" in svg


def test_an_empty_day_still_draws_axes():
    start = datetime(2024, 5, 1, tzinfo=UTC)
    svg = str(outcomes_svg([HourBucket(start + timedelta(hours=i)) for i in range(24)]))
    assert "<rect x" not in svg.split("</text>", 2)[-1]  # only legend swatches are rects
    assert svg.count('text-anchor="middle"') == 8  # a time label every three hours



@pytest.mark.parametrize(("top", "ticks"), [(1, [0, 1]), (2, [0, 1, 2]), (5, [0, 1, 2, 3, 4, 5]),
                                            (10, [0, 5, 10]), (50, [0, 25, 50])])
def test_y_ticks_are_whole_numbers(top, ticks):
    assert y_ticks(top) == ticks


def test_a_small_day_has_whole_ticks():
    start = datetime(2024, 5, 1, tzinfo=UTC)
    svg = str(outcomes_svg([HourBucket(start, 3, 1)]))
    labels = [part.rsplit(">", 1)[-1] for part in svg.split("</text>")
              if 'text-anchor="end"' in part]
    assert labels == ["0", "1", "2", "3", "4", "5"]
