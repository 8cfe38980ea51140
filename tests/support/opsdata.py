"""Builders for log and queue rows in the operations tests."""

from __future__ import annotations

import itertools
from datetime import timedelta

from django.utils import timezone

from activity_queue.models import Activity, Host, Payload, ScheduledActivity
from activity_queue.net.addresses import origin
from activity_queue.sending import hosts

_serial = itertools.count(1)


def _payload(activity_id: str, kind: str, object_id: str, created_at=None) -> Payload:
    document = {"@context": "https://www.w3.org/ns/activitystreams", "id": activity_id,
                "type": kind, "object": {"@id": object_id, "@type": "hd:circle"}}
    payload = Payload.of(document, activity_type=kind, object_id=object_id,
                         created_at=created_at)
    payload.save()
    return payload


def log_row(*, save: bool = True, ago: timedelta = timedelta(minutes=30), **fields) -> Activity:
    """A log row: by default an outbound final failure (HTTP 500) half an hour ago."""
    n = next(_serial)
    inbox = fields.pop("inbox", "https://remote.example/inbox/")
    activity_id = fields.pop("activity_id", f"https://testserver/activities/{n}")
    kind = fields.pop("activity_type", "Create")
    object_id = fields.pop("object_id", f"https://testserver/circles/{n}/")
    now = timezone.now()
    values = {
        "activity_id": activity_id, "activity_type": kind, "object_id": object_id,
        "inbox": inbox, "host": origin(inbox),
        "payload": _payload(activity_id, kind, object_id, now - ago - timedelta(minutes=5)),
        "direction": Activity.Direction.OUTBOUND, "status": "failed", "status_code": 500,
        "error": "HTTP 500", "response_excerpt": "<h1>oops</h1>", "attempts": 3,
        "created_at": now - ago - timedelta(minutes=5), "resolved_at": now - ago,
    }
    values.update(fields)
    row = Activity(**values)
    if save:
        row.save()
    return row


def queued(**fields) -> ScheduledActivity:
    """A scheduled row, due now unless told otherwise."""
    n = next(_serial)
    inbox = fields.pop("inbox", "https://remote.example/inbox/")
    activity_id = fields.pop("activity_id", f"https://testserver/activities/q{n}")
    kind = fields.pop("activity_type", "Update")
    object_id = fields.pop("object_id", f"https://testserver/circles/q{n}/")
    created_at = fields.pop("created_at", None)
    values = {"inbox": inbox, "host": origin(inbox),
              "payload": _payload(activity_id, kind, object_id, created_at)}
    values.update(fields)
    return ScheduledActivity.objects.create(**values)


def moved_backlog(host: str, rows: int, *, keep: int = 1) -> int:
    """``rows`` due rows of a host that fails, moved out of the claims' way as a worker
    moves them (hosts.defer_backlog) but for ``keep`` probes; plus one retry due after the
    wait, which is not the failing host's doing. Returns how many were moved."""
    now = timezone.now()
    until = now + timedelta(minutes=10)
    Host.objects.create(host=host, consecutive_failures=1, deferred_until=until,
                        last_error="timed out")
    for _ in range(rows):
        queued(inbox=f"{host}/inbox/", next_attempt_at=now - timedelta(seconds=30))
    queued(inbox=f"{host}/inbox/", next_attempt_at=until + timedelta(minutes=5))
    return hosts.defer_backlog([host], until, keep=keep, now=now)


#: An outage as an operator meets it: three failures in a row pause the host for two
#: minutes; a retry waits longer than the pause.
OUTAGE = {"CIRCUIT_THRESHOLD": 3, "CIRCUIT_COOLDOWN": 120.0, "BACKOFF_FACTOR": 600.0,
          "BACKOFF_MAX": 3600.0}


def outage(receiver, make_worker, *, tried: int = 4, untried: int = 1) -> str:
    """A real outage: ``receiver`` answers 500 to every delivery, a worker tries ``tried``
    deliveries (to two inboxes of the host) and the host's circuit opens; then ``untried``
    more are enqueued, due now but held back by the pause. Returns the host."""
    from activity_queue import enqueue

    from .helpers import aq_settings
    from .receiver import Rule

    for path in ("/inbox/", "/users/bob/inbox/"):
        receiver.rules[path] = Rule(status=500, body=b'{"error": "database is down"}')

    def send(n: int, label: str) -> None:
        for i in range(n):
            path = "/inbox/" if i % 2 else "/users/bob/inbox/"
            kind = ("Create", "Follow", "Announce", "Note")[i % 4]
            enqueue({"type": kind, "object": f"https://testserver/circles/{label}{i}/"},
                    to=receiver.url(path))

    with aq_settings(**OUTAGE):
        send(tried, "tried-")
        make_worker().run_once(timeout=20)
        send(untried, "new-")
    assert Host.objects.get(host=receiver.base).paused_until > timezone.now()
    return receiver.base
