"""An inbox that answers 410 Gone follows nothing any more: later activities skip it."""

import pytest

from activity_queue import enqueue
from activity_queue.federation import dispatch
from activity_queue.models import Follower

from ..support.receiver import Rule

pytestmark = pytest.mark.django_db(transaction=True)

OBJECTS = ("https://here.example/notes/1", "https://here.example/notes/2")


@pytest.mark.parametrize(("status", "pruned"), [(410, True), (404, False), (202, False)])
def test_410_gone_prunes_the_inbox_from_the_followers(receiver, worker, status, pruned):
    receiver.rules["/gone/"] = Rule(status=status)
    gone, other = receiver.url("/gone/"), receiver.url("/other/")
    for object_id in OBJECTS:
        dispatch.follow(object_id, [gone, other])
    enqueue({"type": "Update", "object": OBJECTS[0]}, to=gone)
    worker().run_once(timeout=10)
    left = set(Follower.objects.values_list("object_id", "inbox"))
    kept = {(o, other) for o in OBJECTS}
    assert left == (kept if pruned else kept | {(o, gone) for o in OBJECTS})


def test_urls_that_differ_only_in_case_are_different_followers(receiver, worker):
    """URL paths are case-sensitive; MySQL's and MariaDB's default collations are not, so
    there the columns compare bytes, or one inbox's 410 would prune the other."""
    upper, lower = receiver.url("/users/Alice/inbox"), receiver.url("/users/alice/inbox")
    for object_id in (OBJECTS[0], OBJECTS[0].upper()):
        dispatch.follow(object_id, [upper, lower])
    assert Follower.objects.count() == 4
    assert list(Follower.objects.filter(object_id=OBJECTS[0], inbox=lower)
                .values_list("inbox", flat=True)) == [lower]
    receiver.rules["/users/alice/inbox"] = Rule(status=410)
    enqueue({"type": "Update", "object": OBJECTS[0]}, to=lower)
    worker().run_once(timeout=10)
    assert set(Follower.objects.values_list("inbox", flat=True)) == {upper}


def test_forgetting_an_object_keeps_the_pending_backlinks_of_its_case_variant():
    from activity_queue.models import PendingDiscovery

    for object_id in (OBJECTS[0], OBJECTS[0].upper()):
        PendingDiscovery.objects.create(resource="https://there.example/r", activity_type="Add",
                                        object_id=object_id, payload={"type": "Add"})
    dispatch.forget(OBJECTS[0].upper())
    assert list(PendingDiscovery.objects.values_list("object_id", flat=True)) == [OBJECTS[0]]
