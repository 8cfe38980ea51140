"""``path("", include("activity_queue.urls"))`` serves the inbox at ``inbox/`` and, when
``SIGNING_KEY`` is set, our public key document at ``activity-queue/key/``."""

from django.urls import path

from .inbox import InboxView
from .keys import public_key_view

app_name = "activity_queue"

urlpatterns = [
    path("inbox/", InboxView.as_view(), name="inbox"),
    path("activity-queue/key/", public_key_view, name="public-key"),
]
