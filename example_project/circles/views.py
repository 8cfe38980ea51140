"""JSON-LD documents of circles and members, and the small JSON API the demo drives.

The documents name the site's inbox, which is how another server discovers
where to send backlinks. The demo API (``/demo/...``) exists only when the
``EXAMPLE_DEMO_API`` setting is true: it lets ``manage.py demo`` act as a user
of each site.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from activity_queue.conf import get_config
from activity_queue.federation.backlinks import AS_CONTEXT, resource_of
from activity_queue.federation.registry import is_external
from activity_queue.models import Activity, Host, PendingDiscovery, ScheduledActivity

from .models import Circle, Member

LD_JSON = "application/ld+json"


def _inbox() -> str:
    return settings.SITE_URL.rstrip("/") + "/inbox/"


def _document(instance: Member | Circle, **extra: Any) -> HttpResponse:
    if instance.is_external:
        raise Http404("only local resources are served here")
    body = {"@context": [AS_CONTEXT, get_config().LD_CONTEXT], **resource_of(instance).tree(),
            "name": instance.name, "inbox": _inbox(), **extra}
    return HttpResponse(json.dumps(body), content_type=LD_JSON)


@require_GET
def member_document(request: HttpRequest, pk: int) -> HttpResponse:
    return _document(get_object_or_404(Member, pk=pk))


@require_GET
def circle_document(request: HttpRequest, pk: int) -> HttpResponse:
    circle = get_object_or_404(Circle, pk=pk)
    members = [resource_of(m).ref.as_json() for m in circle.members.all()]
    return _document(circle, members=members)


# -- the demo API ---------------------------------------------------------------------

def _demo(view):
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not getattr(settings, "EXAMPLE_DEMO_API", False):
            raise Http404("the demo API is off")
        data = json.loads(request.body or b"{}") if request.method == "POST" else {}
        with transaction.atomic():
            return JsonResponse(view(data, *args, **kwargs))
    return csrf_exempt(wrapped)


def member_for(urlid: str) -> Member:
    """The member with this urlid: a local one, or the record of a remote one."""
    if is_external(urlid):
        return Member.objects.get_or_create(urlid=urlid)[0]
    return get_object_or_404(Member, urlid=urlid)


@require_POST
@_demo
def new_member(data: dict) -> dict:
    return {"urlid": Member.objects.create(name=data.get("name", "")).urlid}


@require_POST
@_demo
def new_circle(data: dict) -> dict:
    owner = member_for(data["owner"]) if data.get("owner") else None
    circle = Circle.objects.create(name=data.get("name", ""), owner=owner)
    return {"urlid": circle.urlid, "pk": circle.pk}


@require_POST
@_demo
def change_circle(data: dict, pk: int) -> dict:
    circle = get_object_or_404(Circle, pk=pk)
    if "owner" in data:
        circle.owner = member_for(data["owner"]) if data["owner"] else None
        circle.save()
    if data.get("clear"):
        circle.members.clear()
    if data.get("add"):
        circle.members.add(*[member_for(u) for u in data["add"]])
    if data.get("remove"):
        circle.members.remove(*[member_for(u) for u in data["remove"]])
    return {"urlid": circle.urlid}


@require_POST
@_demo
def delete_circle(data: dict, pk: int) -> dict:
    get_object_or_404(Circle, pk=pk).delete()
    return {}


@require_GET
@_demo
def state(data: dict) -> dict:
    now = timezone.now()
    return {
        "site": settings.SITE_URL,
        "members": [{"urlid": m.urlid, "name": m.name, "external": m.is_external}
                    for m in Member.objects.all()],
        "circles": [{"urlid": c.urlid, "name": c.name, "external": c.is_external,
                     "owner": c.owner.urlid if c.owner else None,
                     "members": [m.urlid for m in c.members.all()]}
                    for c in Circle.objects.select_related("owner")],
        "queue": [{"type": s.activity_type, "object": s.object_id, "inbox": s.inbox,
                   "attempts": s.attempts, "error": s.last_error,
                   "due_in": round((s.next_attempt_at - now).total_seconds(), 1)}
                  for s in ScheduledActivity.objects.order_by("pk")],
        "pending_discovery": PendingDiscovery.objects.count(),
        "hosts": [{"host": h.host, "circuit": h.circuit, "failures": h.consecutive_failures}
                  for h in Host.objects.all()],
        "log": [{"direction": a.direction, "status": a.status, "type": a.activity_type,
                 "object": a.object_id, "inbox": a.inbox, "code": a.status_code,
                 "attempts": a.attempts, "error": a.error,
                 "target": _member_of(a.payload)}
                for a in Activity.objects.order_by("pk")],
    }


def _member_of(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    for key in ("target", "origin"):
        value = payload.get(key)
        if isinstance(value, dict):
            return value.get("@id")
    return None
