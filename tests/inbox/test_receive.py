"""Applying inbound backlinks: remote records and their links, never a local object."""

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from activity_queue.exceptions import InvalidActivity
from activity_queue.inbox.receive import Refused, apply_activity
from activity_queue.models import PendingDiscovery, ScheduledActivity
from example_project.circles.models import Circle, Member

pytestmark = pytest.mark.django_db

B = "https://b.example"
CTX = ["https://www.w3.org/ns/activitystreams", "https://cdn.startinblox.com/owl/context.jsonld"]
ACTOR = {"type": "Service", "name": "Backlinks Service"}


def activity(kind, obj, **extra):
    return {"@context": CTX, "type": kind, "actor": ACTOR, "object": obj, **extra,
            "summary": "…"}


def ref(urlid, rdf_type="foaf:user"):
    return {"@id": urlid, "@type": rdf_type}


def remote_circle(n=9, **links):
    return {"@type": "hd:circle", "@id": f"{B}/circles/{n}/", **links}


@pytest.fixture
def alice():
    return Member.objects.create(name="alice")


@pytest.fixture
def local_circle(alice):
    circle = Circle.objects.create(name="mine", owner=alice)
    circle.members.add(alice)
    return circle


def local_state():
    """Everything about local objects that a remote activity must not touch."""
    members = sorted((m.pk, m.urlid, m.name) for m in Member.objects.all()
                     if not m.is_external)
    circles = sorted((c.pk, c.urlid, c.name, c.owner_id,
                      tuple(sorted(c.members.values_list("pk", flat=True))))
                     for c in Circle.objects.all() if not c.is_external)
    return members, circles


def test_create_records_the_remote_object_and_its_link(alice):
    apply_activity(activity("Create", remote_circle(owner=ref(alice.urlid))))
    record = Circle.objects.get(urlid=f"{B}/circles/9/")
    assert record.is_external and record.owner == alice
    assert list(alice.owned_circles.all()) == [record]


def test_create_of_a_link_to_an_unknown_remote_creates_its_record():
    apply_activity(activity("Create", remote_circle(owner=ref(f"{B}/users/7/"))))
    bob = Member.objects.get(urlid=f"{B}/users/7/")
    assert bob.is_external and Circle.objects.get().owner == bob


def test_plain_values_are_not_applied():
    apply_activity(activity("Create", {**remote_circle(), "name": "ignored"}))
    assert Circle.objects.get().name == ""


def test_update_moves_and_clears_the_link(alice):
    bert = Member.objects.create(name="bert")
    apply_activity(activity("Create", remote_circle(owner=ref(alice.urlid))))
    apply_activity(activity("Update", remote_circle(owner=ref(bert.urlid))))
    assert Circle.objects.get().owner == bert
    apply_activity(activity("Update", remote_circle()))
    assert Circle.objects.get().owner is None


def test_update_of_an_unknown_remote_object_creates_it(alice):
    apply_activity(activity("Update", remote_circle(owner=ref(alice.urlid))))
    assert Circle.objects.get().owner == alice


def test_delete_removes_the_record():
    apply_activity(activity("Create", remote_circle()))
    apply_activity(activity("Delete", {"@id": f"{B}/circles/9/", "@type": "hd:circle"}))
    assert not Circle.objects.exists()
    apply_activity(activity("Delete", {"@id": f"{B}/circles/9/", "@type": "hd:circle"}))


def test_delete_without_type_finds_the_record():
    apply_activity(activity("Create", remote_circle()))
    apply_activity(activity("Delete", {"@id": f"{B}/circles/9/"}))
    assert not Circle.objects.exists()


def test_add_and_remove_link_the_remote_container_to_a_local_member(alice):
    apply_activity(activity("Add", remote_circle(owner=ref(f"{B}/users/7/")),
                            target=ref(alice.urlid)))
    record = Circle.objects.get(urlid=f"{B}/circles/9/")
    assert list(alice.circles.all()) == [record]
    assert record.owner.urlid == f"{B}/users/7/"
    apply_activity(activity("Add", remote_circle(owner=ref(f"{B}/users/7/")),
                            target=ref(alice.urlid)))  # the same Add twice
    assert alice.circles.count() == 1
    apply_activity(activity("Remove", remote_circle(), origin=ref(alice.urlid)))
    assert alice.circles.count() == 0
    assert Circle.objects.get().owner is not None  # Add/Remove do not clear absent links


def test_applying_sends_no_backlinks(alice):
    apply_activity(activity("Create", remote_circle(owner=ref(alice.urlid))))
    apply_activity(activity("Add", remote_circle(), target=ref(alice.urlid)))
    assert not ScheduledActivity.objects.exists() and not PendingDiscovery.objects.exists()


def test_an_activity_that_names_its_sender_speaks_only_of_its_objects(alice):
    third = {"@type": "hd:circle", "@id": "https://c.example/circles/1/",
             "owner": ref(alice.urlid)}
    for claim in ({"id": f"{B}/activities/1"},
                  {"actor": {"type": "Service", "name": "x", "id": f"{B}/actor"}}):
        with pytest.raises(Refused, match="not on the sender's origin https://b.example"):
            apply_activity({**activity("Create", third), **claim})
    assert not Circle.objects.exists()
    apply_activity({**activity("Create", remote_circle(owner=ref(alice.urlid))),
                    "id": f"{B}/activities/2"})
    apply_activity({**activity("Create", third), "id": "urn:uuid:1234"})  # names no origin
    assert Circle.objects.count() == 2


def test_unknown_types_are_left_alone():
    apply_activity(activity("Like", remote_circle()))
    apply_activity(activity("Create", {"@type": "schema:Thing", "@id": f"{B}/things/1/"}))
    apply_activity({"type": "Follow"})
    assert not Circle.objects.exists()


# -- a remote activity can never change a local object ---------------------------------

def local(alice_or_circle):
    return alice_or_circle.urlid


ATTACKS = [
    # (name, build(alice, circle) -> activity, expected exception)
    ("Update a local circle",
     lambda a, c: activity("Update", {"@type": "hd:circle", "@id": c.urlid}), Refused),
    ("Create over a local circle",
     lambda a, c: activity("Create", {"@type": "hd:circle", "@id": c.urlid,
                                      "owner": ref(f"{B}/users/7/")}), Refused),
    ("Delete a local circle",
     lambda a, c: activity("Delete", {"@type": "hd:circle", "@id": c.urlid}), Refused),
    ("Delete a local member, no type",
     lambda a, c: activity("Delete", {"@id": a.urlid}), Refused),
    ("Update a local circle named with the default port",
     lambda a, c: activity("Update", {"@type": "hd:circle",
                                      "@id": c.urlid.replace("testserver", "testserver:80")}),
     Refused),
    ("Update a local circle with an upper-case host",
     lambda a, c: activity("Update", {"@type": "hd:circle",
                                      "@id": c.urlid.replace("testserver", "TESTSERVER")}),
     Refused),
    ("Update a local circle through userinfo",
     lambda a, c: activity("Update", {"@type": "hd:circle",
                                      "@id": c.urlid.replace("//", "//evil@")}),
     InvalidActivity),
    ("Add a remote member to a local circle",
     lambda a, c: activity("Add", {"@type": "hd:circle", "@id": c.urlid},
                           target=ref(f"{B}/users/7/")), Refused),
    ("Add a local circle to a remote member's circles (the collection is the circle's)",
     lambda a, c: activity("Add", {"@type": "foaf:user", "@id": f"{B}/users/7/"},
                           target=ref(c.urlid, "hd:circle")), Refused),
    ("Remove a local member from a local circle",
     lambda a, c: activity("Remove", {"@type": "hd:circle", "@id": c.urlid},
                           origin=ref(a.urlid)), Refused),
    ("A local member typed as a circle",
     lambda a, c: activity("Update", {"@type": "hd:circle", "@id": a.urlid}), Refused),
    ("A link to a local object that does not exist",
     lambda a, c: activity("Create", remote_circle(owner=ref("http://testserver/members/999/"))),
     InvalidActivity),
    ("A link whose type is not the field's",
     lambda a, c: activity("Create", remote_circle(owner=ref(c.urlid, "hd:circle"))),
     InvalidActivity),
    ("An object id that is not a URL",
     lambda a, c: activity("Update", {"@type": "hd:circle", "@id": "javascript:alert(1)"}),
     InvalidActivity),
    ("An object without id",
     lambda a, c: activity("Update", {"@type": "hd:circle"}), InvalidActivity),
    ("Add without target",
     lambda a, c: activity("Add", remote_circle()), InvalidActivity),
]


@pytest.mark.parametrize("name,build,error", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_local_objects_cannot_be_changed(name, build, error, alice, local_circle):
    before = local_state()
    with pytest.raises(error):
        apply_activity(build(alice, local_circle))
    assert local_state() == before
    assert not Circle.objects.filter(urlid__startswith=B).exists()


def test_deleting_a_remote_record_that_local_objects_point_to_is_refused(alice):
    bob = Member.objects.create(urlid=f"{B}/users/7/")
    mine = Circle.objects.create(name="mine", owner=bob)  # SET_NULL would change it
    before = local_state()
    with pytest.raises(Refused, match="would change local Circle"):
        apply_activity(activity("Delete", {"@id": bob.urlid, "@type": "foaf:user"}))
    assert local_state() == before and Member.objects.filter(pk=bob.pk).exists()
    mine.owner = alice
    mine.save()
    mine.members.add(bob)  # a membership row is a link, not a local object
    apply_activity(activity("Delete", {"@id": bob.urlid, "@type": "foaf:user"}))
    assert not Member.objects.filter(pk=bob.pk).exists()
    assert list(mine.members.all()) == []


urls = st.sampled_from([
    "http://testserver/circles/1/", "http://testserver/members/1/", "http://testserver:80/c/",
    "http://TestServer/circles/1/", "https://testserver/circles/1/",
    f"{B}/circles/9/", f"{B}/users/7/", "http://testserver.evil/circles/1/", "not a url", "",
])
refs = st.one_of(urls, st.fixed_dictionaries({"@id": urls, "@type": st.sampled_from(
    ["hd:circle", "foaf:user", "x:y"])}), st.none())
objects = st.fixed_dictionaries(
    {"@id": urls, "@type": st.sampled_from(["hd:circle", "foaf:user", "x:y"])},
    optional={"owner": refs, "name": st.text(max_size=5)},
)
activities = st.fixed_dictionaries(
    {"type": st.sampled_from(["Create", "Update", "Delete", "Add", "Remove", "Like"]),
     "object": objects},
    optional={"target": refs, "origin": refs},
)


@hsettings(max_examples=150, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(activities)
def test_no_inbound_activity_changes_a_local_object(alice, local_circle, incoming):
    Member.objects.get_or_create(urlid="http://testserver/members/1/",
                                 defaults={"name": "m1"})
    before = local_state()
    try:
        apply_activity(incoming)
    except InvalidActivity:
        pass
    assert local_state() == before
