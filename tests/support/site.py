"""A view that publishes as a site's POST does: a row and an ``enqueue()``, in one transaction.

``POST /test-publish/`` with a JSON list of inboxes as the body; answers 201 with the
activity's id. Routed in :mod:`tests.urls` for the servers the tests start.
"""

import json
import uuid

from django.contrib.auth.models import Group
from django.db import transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from activity_queue import enqueue


@csrf_exempt
def publish(request):
    inboxes = json.loads(request.body)
    with transaction.atomic():
        group = Group.objects.create(name=uuid.uuid4().hex)
        rows = enqueue({"type": "Create",
                        "object": {"@id": f"http://testserver/groups/{group.pk}"}}, to=inboxes)
    return JsonResponse({"id": rows[0].activity_id}, status=201)
