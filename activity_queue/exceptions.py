"""Exceptions raised by activity_queue."""


class ActivityQueueError(Exception):
    """Base class of every error this app raises on purpose."""


class InvalidActivity(ActivityQueueError, ValueError):
    """An activity cannot be taken as it is: given to ``enqueue`` (or with a bad inbox),
    or received at the inbox (malformed, or refused by ``receive.apply_activity``)."""


class WrongType(InvalidActivity, TypeError):
    """A value given to ``enqueue`` is of the wrong kind (bytes for a URL, a number for an
    ``id``…): a ``TypeError`` as Python would raise, and still an ``InvalidActivity``."""


class UnsafeDestination(ActivityQueueError):
    """The inbox URL is not http(s), or resolves to an address the settings forbid."""


class DeliveryFailed(ActivityQueueError):
    """A delivery attempt did not succeed; the policy says whether it is retried."""
