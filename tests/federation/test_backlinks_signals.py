"""Each signal path sends exactly the expected backlinks, over real HTTP, and nothing else."""

import pytest
from django.core.cache import cache
from django.db import transaction

from activity_queue.models import Activity, Follower, PendingDiscovery, ScheduledActivity
from example_project.circles.models import Circle, Member

from ..support.federation import Remote, drain, shape

pytestmark = pytest.mark.django_db(transaction=True)

SITE = "http://testserver"


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def b(receiver):
    return Remote(receiver, "/b")


@pytest.fixture
def c(receiver):
    return Remote(receiver, "/c")


def test_local_objects_get_their_urlid():
    alice = Member.objects.create(name="alice")
    assert alice.urlid == f"{SITE}/members/{alice.pk}/"
    assert Member.objects.get(pk=alice.pk).urlid == alice.urlid
    assert not alice.is_external


def test_create_sends_one_create_to_the_linked_server(b, worker):
    bob = b.user(7)
    assert not PendingDiscovery.objects.exists()  # a remote record sends nothing
    circle = Circle.objects.create(name="climbers", owner=bob)
    drain(worker)
    [body] = b.posts()
    assert body["@context"][0] == "https://www.w3.org/ns/activitystreams"
    assert body["type"] == "Create"
    assert body["actor"] == {"type": "Service", "name": "Backlinks Service"}
    assert body["object"] == {"@type": "hd:circle", "@id": circle.urlid,
                              "owner": {"@id": bob.urlid, "@type": "foaf:user"}}
    assert body["summary"] == f"{circle.urlid} was created"
    assert body["id"].startswith(f"{SITE}/activities/")
    assert "name" not in body["object"]  # plain values are not federated
    assert list(Follower.objects.values_list("object_id", "inbox")) == [(circle.urlid, b.inbox)]


def test_create_without_external_link_sends_nothing(b, worker):
    alice = Member.objects.create(name="alice")
    Circle.objects.create(name="local", owner=alice)
    Circle.objects.create(name="orphan")
    assert not ScheduledActivity.objects.exists() and not PendingDiscovery.objects.exists()


def test_plain_field_change_sends_nothing(b, worker):
    circle = Circle.objects.create(name="climbers", owner=b.user(7))
    drain(worker)
    circle.name = "boulderers"
    circle.save()
    again = Circle.objects.get(pk=circle.pk)  # a fresh instance remembers its links too
    again.name = "alpinists"
    again.save()
    assert not ScheduledActivity.objects.exists()
    assert [shape(x) for x in b.posts()] == [("Create", circle.urlid, None)]


def test_link_change_sends_update_to_followers_and_create_to_new_servers(b, c, worker):
    bob, carol = b.user(7), c.user(3)
    circle = Circle.objects.create(name="climbers", owner=bob)
    drain(worker)
    circle = Circle.objects.get(pk=circle.pk)
    circle.owner = carol
    circle.save()
    drain(worker)
    assert [x["type"] for x in b.posts()] == ["Create", "Update"]
    [update_c] = c.posts()
    assert update_c["type"] == "Update"
    assert update_c["object"]["owner"] == {"@id": carol.urlid, "@type": "foaf:user"}
    assert b.posts()[1]["object"] == update_c["object"]
    # unlinking: the followers hear that the owner is gone
    circle.owner = Member.objects.create(name="alice")
    circle.save()
    drain(worker)
    assert [x["type"] for x in b.posts()] == ["Create", "Update", "Update"]
    assert b.posts()[-1]["object"]["owner"]["@id"].startswith(SITE)
    assert len(c.posts()) == 2


def test_delete_reaches_every_follower_and_no_one_else(b, c, receiver, worker):
    bob, carol = b.user(7), c.user(3)
    d = Remote(receiver, "/d")
    dave = d.user(1)
    circle = Circle.objects.create(name="climbers", owner=bob)
    circle.members.add(carol)
    other = Circle.objects.create(name="others", owner=dave)
    drain(worker)
    urlid = circle.urlid
    circle.delete()
    drain(worker)
    assert [shape(x) for x in b.posts()] == [("Create", urlid, None), ("Delete", urlid, None)]
    assert [shape(x) for x in c.posts()] == [("Add", urlid, carol.urlid), ("Delete", urlid, None)]
    assert [shape(x) for x in d.posts()] == [("Create", other.urlid, None)]
    delete = b.posts()[-1]
    assert delete["object"] == {"@id": urlid, "@type": "hd:circle"}
    assert not Follower.objects.filter(object_id=urlid).exists()


def test_deleting_a_remote_record_sends_nothing(b, worker):
    bob = b.user(7)
    remote_circle = Circle.objects.create(urlid=b.receiver.url("/b/circles/1/"), owner=bob)
    remote_circle.delete()
    bob.delete()
    assert not ScheduledActivity.objects.exists() and not PendingDiscovery.objects.exists()


def test_m2m_add_remove_clear(b, c, worker):
    bob, carol = b.user(7), c.user(3)
    alice = Member.objects.create(name="alice")
    circle = Circle.objects.create(name="climbers", owner=alice)
    assert not PendingDiscovery.objects.exists()
    circle.members.add(alice, bob, carol)
    drain(worker)
    assert [shape(x) for x in b.posts()] == [("Add", circle.urlid, bob.urlid)]
    assert [shape(x) for x in c.posts()] == [("Add", circle.urlid, carol.urlid)]
    add = b.posts()[0]
    assert add["object"] == {"@type": "hd:circle", "@id": circle.urlid,
                             "owner": {"@id": alice.urlid, "@type": "foaf:user"}}
    assert add["target"] == {"@id": bob.urlid, "@type": "foaf:user"}
    circle.members.add(bob)  # already a member: Django sends no change, neither do we
    circle.members.remove(bob, alice)
    drain(worker)
    assert [shape(x) for x in b.posts()][1:] == [("Remove", circle.urlid, bob.urlid)]
    remove = b.posts()[1]
    assert remove["origin"] == {"@id": bob.urlid, "@type": "foaf:user"} and "target" not in remove
    circle.members.add(bob)
    circle.members.clear()
    drain(worker)
    assert [shape(x) for x in b.posts()][2:] == [("Add", circle.urlid, bob.urlid),
                                                  ("Remove", circle.urlid, bob.urlid)]
    assert [shape(x) for x in c.posts()][1:] == [("Remove", circle.urlid, carol.urlid)]


def test_m2m_from_the_member_side(b, worker):
    bob = b.user(7)
    circle = Circle.objects.create(name="climbers")
    bob.circles.add(circle)
    drain(worker)
    bob.circles.remove(circle)
    drain(worker)
    bob.circles.add(circle)
    bob.circles.clear()
    drain(worker)
    assert [shape(x) for x in b.posts()] == [
        ("Add", circle.urlid, bob.urlid), ("Remove", circle.urlid, bob.urlid),
        ("Add", circle.urlid, bob.urlid), ("Remove", circle.urlid, bob.urlid)]


def test_m2m_on_a_remote_record_sends_nothing(b, worker):
    bob = b.user(7)
    remote_circle = Circle.objects.create(urlid=b.receiver.url("/b/circles/1/"))
    remote_circle.members.add(bob, Member.objects.create(name="alice"))
    remote_circle.members.clear()
    assert not ScheduledActivity.objects.exists() and not PendingDiscovery.objects.exists()


def test_rollback_sends_nothing(b, worker):
    bob = b.user(7)
    with pytest.raises(RuntimeError), transaction.atomic():
        circle = Circle.objects.create(name="climbers", owner=bob)
        circle.members.add(bob)
        raise RuntimeError
    assert not ScheduledActivity.objects.exists() and not PendingDiscovery.objects.exists()
    assert not Follower.objects.exists()


def test_backlinks_setting_turns_signals_off(b, worker, settings):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "BACKLINKS": False}
    circle = Circle.objects.create(name="climbers", owner=b.user(7))
    circle.members.add(b.user(8))
    assert not ScheduledActivity.objects.exists() and not PendingDiscovery.objects.exists()


def test_nothing_is_logged_as_failed_or_dropped_on_the_happy_path(b, worker):
    bob = b.user(7)
    circle = Circle.objects.create(name="climbers", owner=bob)
    circle.members.add(bob)
    drain(worker)
    statuses = sorted(Activity.objects.values_list("activity_type", "status"))
    assert statuses == [("Add", "sent"), ("Create", "sent")]
