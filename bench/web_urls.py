"""The site of the web-load scenario: what a federated site's POST does, and a page to read.

``POST /post/`` creates a row and enqueues a ``Create`` about it to the three
inboxes named in ``AQ_WEB_INBOXES`` (comma-separated), in one transaction, as
a view that publishes something does (only the row with ``AQ_WEB_ENQUEUE=0``).
``GET /recent/`` reads the latest rows.
"""

import os
import uuid

from django.contrib.auth.models import Group
from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from activity_queue import enqueue

INBOXES = [i for i in os.environ.get("AQ_WEB_INBOXES", "").split(",") if i]
ENQUEUE = os.environ.get("AQ_WEB_ENQUEUE", "1") == "1"


@csrf_exempt
def post(request):
    name = uuid.uuid4().hex
    with transaction.atomic():
        latest = Group.objects.order_by("-id").values_list("id", flat=True).first()
        group = Group.objects.create(name=name)
        if ENQUEUE:
            enqueue({"type": "Create", "actor": "http://127.0.0.1/users/bench",
                     "object": {"@id": f"http://127.0.0.1/groups/{group.pk}", "name": name,
                                "after": latest}},
                    to=INBOXES)
    return HttpResponse(status=201)


def recent(request):
    return JsonResponse({"groups": list(Group.objects.order_by("-id")
                                        .values_list("name", flat=True)[:20])})


urlpatterns = [path("post/", post), path("recent/", recent)]
