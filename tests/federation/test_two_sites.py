"""Two real sites over loopback: this test process (live_server, site A) and the example
project in a subprocess (site B), each applying what the other sends."""


import pytest
import requests
from django.core.cache import cache

from activity_queue.models import Activity
from example_project.circles.management.commands.demo import Site
from example_project.circles.models import Circle, Member

from ..support.federation import drain
from ..support.helpers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def site_b(tmp_path_factory):
    site = Site("B", tmp_path_factory.mktemp("site-b"))
    migrate = site.migrate()
    output, _ = migrate.communicate(timeout=120)
    assert migrate.returncode == 0, output.decode()
    site.start()
    yield site
    site.stop()


@pytest.fixture
def site_a(live_server, settings):
    settings.SITE_URL = live_server.url
    cache.clear()
    yield live_server
    cache.clear()


def circle_on(site, urlid):
    return next((c for c in site.state()["circles"] if c["urlid"] == urlid), None)


def test_backlinks_travel_both_ways(site_a, site_b, worker):
    # A links its circle to a user of B: B learns of the circle and its owner.
    bob_urlid = site_b.post("/demo/members/", name="bob")["urlid"]
    bob = Member.objects.create(urlid=bob_urlid)
    alice = Member.objects.create(name="alice")
    circle = Circle.objects.create(name="climbers", owner=bob)
    circle.members.add(alice, bob)
    assert circle.urlid.startswith(site_a.url)
    drain(worker)
    on_b = circle_on(site_b, circle.urlid)
    assert on_b == {"urlid": circle.urlid, "name": "", "external": True, "owner": bob_urlid,
                    "members": [bob_urlid]}
    assert sorted(Activity.objects.values_list("activity_type", "status")) == [
        ("Add", "sent"), ("Create", "sent")]
    # Unsigned: B applied them once A served the circle (INBOX_UNSIGNED "verify"), and said so.
    assert set(Activity.objects.values_list("status_code", flat=True)) == {202}

    # A changes the owner, then removes bob: B follows.
    circle.owner = alice
    circle.save()
    circle.members.remove(bob)
    drain(worker)
    on_b = circle_on(site_b, circle.urlid)
    assert on_b["owner"] == alice.urlid and on_b["members"] == []

    # B links its own circle to alice, who lives on A: A's inbox applies it.
    made = site_b.post("/demo/circles/", name="belayers", owner=alice.urlid)
    site_b.post(f"/demo/circles/{made['pk']}/", add=[alice.urlid])
    assert wait_until(lambda: Circle.objects.filter(urlid=made["urlid"], owner=alice).exists()
                      and alice.circles.filter(urlid=made["urlid"]).exists(), timeout=15)
    record = Circle.objects.get(urlid=made["urlid"])
    assert record.is_external and record.name == ""
    received = Activity.objects.filter(direction="in").values_list("activity_type", flat=True)
    assert sorted(received) == ["Add", "Create"]
    assert not Activity.objects.filter(direction="in").exclude(error="").exists()
    assert wait_until(lambda: sorted(e["code"] for e in site_b.state()["log"]
                                     if e["direction"] == "out") == [202, 202], timeout=15)

    # A deletes its circle: B's record goes too.
    urlid = circle.urlid
    circle.delete()
    drain(worker)
    assert circle_on(site_b, urlid) is None


def test_a_remote_server_cannot_change_a_local_object(site_a, site_b):
    alice = Member.objects.create(name="alice")
    mine = Circle.objects.create(name="mine", owner=alice)
    attack = {"@context": "https://www.w3.org/ns/activitystreams", "type": "Update",
              "actor": {"type": "Service", "name": "Backlinks Service"},
              "object": {"@type": "hd:circle", "@id": mine.urlid,
                         "owner": {"@id": site_b.url + "/members/1/", "@type": "foaf:user"}}}
    response = requests.post(site_a.url + "/inbox/", json=attack, timeout=10,
                             headers={"Content-Type": "application/ld+json"})
    assert response.status_code == 400
    assert "local resource" in response.text
    mine.refresh_from_db()
    assert mine.owner == alice
    delete = {**attack, "type": "Delete", "object": {"@id": alice.urlid}}
    response = requests.post(site_a.url + "/inbox/", json=delete, timeout=10,
                             headers={"Content-Type": "application/ld+json"})
    assert response.status_code == 400 and Member.objects.filter(pk=alice.pk).exists()
