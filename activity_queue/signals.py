"""Signals other apps can listen to. Each is sent after the outcome is committed.

- ``activity_delivered`` and ``activity_failed`` (final failure): receivers get
  ``outcome`` (an :class:`activity_queue.sending.jobs.Outcome`: ``job``, ``state``,
  ``status_code``, ``error``, ``duration_ms``…).
- ``outcomes_written``: a worker committed a batch of outcomes, of every kind (sent,
  retrying, failed, handed back unattempted); receivers get ``outcomes``, a list of
  :class:`~activity_queue.sending.jobs.Outcome`. Sent once per batch, for counting
  (the metrics do).
- ``activity_dropped`` (left the queue as redundant): ``activity`` (the payload),
  ``inbox`` and ``reason``.
- ``activity_discarded`` (an operator took scheduled rows out of the queue):
  ``activities`` (the new ``Activity`` log rows, status ``discarded``) and ``by``
  (who, as text). A discard is a decision, not redundancy, so it is not a drop.
- ``host_unavailable`` (a host failed for longer than ``UNAVAILABLE_AFTER``): ``host``,
  ``failing_since``, and ``failed``, how many queued deliveries ended with it. Those
  deliveries do not send ``activity_failed`` one by one.
"""

from django.dispatch import Signal

activity_delivered = Signal()
activity_failed = Signal()
outcomes_written = Signal()
activity_dropped = Signal()
activity_discarded = Signal()
host_unavailable = Signal()
