"""``path("", include("activity_queue.urls"))`` serves the inbox at ``inbox/``, the
instance actor at ``activity-queue/actor/`` (owner of the site key, whose default ``keyId``
is ``SITE_URL/activity-queue/actor/#main-key``) and, when ``SIGNING_KEY`` is set, a key
document at ``activity-queue/key/``, and WebFinger for the instance actor at
``.well-known/webfinger`` (so include these URLs at the root)."""

from django.urls import path

from .inbox.actor import actor_view, outbox_view, webfinger_view
from .inbox.keys import public_key_view
from .inbox.views import InboxView

app_name = "activity_queue"

urlpatterns = [
    path("inbox/", InboxView.as_view(), name="inbox"),
    path("activity-queue/actor/", actor_view, name="actor"),
    path("activity-queue/actor/outbox/", outbox_view, name="actor-outbox"),
    path("activity-queue/key/", public_key_view, name="public-key"),
    path(".well-known/webfinger", webfinger_view, name="webfinger"),
]
