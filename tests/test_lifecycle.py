"""The lifecycle table is the truth: every move the code makes is declared, and every declared
move is made by some part of the app."""

from collections import Counter
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from activity_queue import enqueue, lifecycle
from activity_queue.federation import dispatch
from activity_queue.lifecycle import NEW, TRANSITIONS, IllegalTransition, State
from activity_queue.models import Activity, Payload, PendingDiscovery, ScheduledActivity
from activity_queue.operations import actions
from activity_queue.sending import drops
from activity_queue.sending import queue as store

from .support.helpers import aq_settings, stored
from .support.receiver import Rule

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def moves():
    made: Counter = Counter()

    def watch(src, dst, count):
        made[(src, dst)] += count

    lifecycle.watchers.append(watch)
    yield made
    lifecycle.watchers.remove(watch)


@pytest.mark.parametrize(("src", "dst"), [
    (State.SENT, State.PENDING), (NEW, State.LEASED), (State.FAILED, State.RETRYING),
    (State.PENDING, State.SENT), (State.LEASED, State.DISCARDED), (State.RECEIVED, State.DROPPED),
])
def test_a_move_not_in_the_table_is_refused(src, dst, moves):
    with pytest.raises(IllegalTransition, match="cannot go from"):
        lifecycle.move(src, dst)
    assert not moves


def note(n: int, kind: str = "Update", **extra) -> dict:
    return {"type": kind, "object": {"@id": f"https://here.example/notes/{n}", **extra}}


def queue_raw(inbox: str, activity: dict, attempts: int = 0) -> ScheduledActivity:
    """A row as a worker left it, written without going through enqueue()."""
    activity = {**activity, "id": f"https://here.example/a/{Payload.objects.count()}-{attempts}"}
    return ScheduledActivity.objects.create(
        payload=stored(activity, activity["object"]["@id"]), inbox=inbox,
        host=inbox.rsplit("/", 2)[0], attempts=attempts, has_predecessor=True)


def test_every_declared_move_is_made_and_none_other(receiver, worker, moves):
    inbox = receiver.url("/inbox/")
    with aq_settings(ALLOW_PRIVATE_ADDRESSES=True, MAX_ATTEMPTS=5):
        # Delivered, retried, failed; a retry claimed again; a row handed back unattempted.
        receiver.rules["/retry/"] = Rule(status=503)
        receiver.rules["/gone/"] = Rule(status=410)
        enqueue(note(1), to=[inbox, receiver.url("/retry/"), receiver.url("/gone/")])
        report = worker().run_once(timeout=10)
        assert (report.sent, report.retried, report.failed) == (1, 1, 1)
        ScheduledActivity.objects.update(next_attempt_at=timezone.now())
        (job,) = store.claim("w", 10, 30)
        store.release("w", [job.id])

        # Redundant rows: dropped when queued (waiting and retrying) and once claimed.
        enqueue(note(2), to=inbox)
        queue_raw(inbox, note(3), attempts=2)
        enqueue(note(2), to=inbox)  # the same Update twice: one is enough
        enqueue(note(3, summary="newer"), to=inbox)  # a newer Update replaces the retrying one
        ScheduledActivity.objects.all().delete()
        queue_raw(inbox, note(4))
        queue_raw(inbox, note(4))
        jobs = store.claim("w", 10, 30)
        kept, dropped, _ = drops.on_claim("w", jobs, "default")
        assert dropped == 1
        store.release("w", [j.id for j in kept])

        # Discarded by an operator, waiting and retrying.
        ScheduledActivity.objects.all().delete()
        queue_raw(inbox, note(5))
        queue_raw(inbox, note(6), attempts=1)
        assert len(actions.discard(ScheduledActivity.objects.values_list("pk", flat=True))
                   .discarded) == 2

        # A host stopped: its waiting and retrying rows fail, and so does a new enqueue.
        queue_raw(inbox, note(9))
        queue_raw(inbox, note(10), attempts=1)
        assert actions.stop_hosts([receiver.base], by="test").failed == 2
        assert enqueue(note(11), to=inbox) == []
        actions.resume_hosts([receiver.base])

        # Backlinks whose target inbox is never known: given up, or moot once deleted.
        for resource, object_id in (("https://127.0.0.1:1/users/1", "https://here.example/x/1"),
                                    ("https://b.example/users/2", "https://here.example/x/2")):
            PendingDiscovery.objects.create(resource=resource, activity_type="Create",
                                            object_id=object_id, payload=note(7, "Create"),
                                            next_attempt_at=timezone.now() - timedelta(1))
        dispatch.forget("https://here.example/x/2")
    with aq_settings(ALLOW_PRIVATE_ADDRESSES=False):
        assert dispatch.resolve_due()["failed"] == 1

    # Received at the inbox.
    response = Client().post("/inbox/", note(8, "Create", **{"@type": "hd:circle"}),
                             content_type="application/ld+json")
    assert response.status_code in (200, 201, 202), response.content

    assert set(moves) == set(TRANSITIONS), (
        f"declared but never made: {sorted(map(str, set(TRANSITIONS) - set(moves)))}")
    assert Activity.objects.filter(status=State.DROPPED).count() == moves[
        (State.PENDING, State.DROPPED)] + moves[(State.RETRYING, State.DROPPED)] + moves[
        (State.LEASED, State.DROPPED)] + moves[(NEW, State.DROPPED)]
