"""Exceptions raised by activity_queue."""


class ActivityQueueError(Exception):
    """Base class of every error this app raises on purpose."""


class InvalidActivity(ActivityQueueError, ValueError):
    """An activity or inbox given to ``enqueue`` cannot be delivered as it is."""


class UnsafeDestination(ActivityQueueError):
    """The inbox URL is not http(s), or resolves to an address the settings forbid."""


class DeliveryFailed(ActivityQueueError):
    """A delivery attempt did not succeed; the policy says whether it is retried."""
