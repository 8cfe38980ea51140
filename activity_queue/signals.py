"""Signals other apps can listen to. Each is sent after the outcome is committed.

Receivers get ``outcome`` (an :class:`activity_queue.jobs.Outcome`); a drop sends
``activity`` (the payload) and ``inbox`` and ``reason``.
"""

from django.dispatch import Signal

activity_delivered = Signal()
activity_failed = Signal()
activity_dropped = Signal()
