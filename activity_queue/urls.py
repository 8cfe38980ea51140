"""``path("", include("activity_queue.urls"))`` serves the inbox at ``inbox/`` and, when
``SIGNING_KEY`` is set, our public key document at ``activity-queue/key/``."""

from django.urls import path

from .inbox.keys import public_key_view
from .inbox.views import InboxView

app_name = "activity_queue"

urlpatterns = [
    path("inbox/", InboxView.as_view(), name="inbox"),
    path("activity-queue/key/", public_key_view, name="public-key"),
]
