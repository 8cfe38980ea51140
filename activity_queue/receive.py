"""Applying a received (inbound) activity to the local linked-data models.

The inbox view validates and records an activity, then calls
:func:`apply_activity`. Backlink application lives here.
"""

from __future__ import annotations

from typing import Any


def apply_activity(activity: dict[str, Any]) -> None:
    """Apply a validated inbound activity to local models (no-op until backlinks exist).

    Raises :class:`activity_queue.exceptions.InvalidActivity` when the activity
    is well-formed but cannot be applied (the inbox answers 400 with the reason).
    """
    return None
