"""Backlink detection (activity_queue.federation.backlinks) as pure functions, with tables."""

import pytest

from activity_queue.federation.backlinks import (
    AS_CONTEXT,
    Ref,
    Resource,
    detect_delete,
    detect_m2m,
    detect_save,
)

SITE = "https://a.example"
CTX = "https://ctx.example/context.jsonld"
CIRCLE = Ref("https://a.example/circles/9/", "hd:circle")
LOCAL_USER = Ref("https://a.example/users/1/", "foaf:user")
BOB = Ref("https://b.example/users/7/", "foaf:user")
BOB_8443 = Ref("https://b.example:8443/users/7/", "foaf:user")
CAROL = Ref("https://c.example/users/3/", "foaf:user")
LOOKALIKE = Ref("https://a.example.evil/users/1/", "foaf:user")
SAME_ORIGIN_443 = Ref("https://a.example:443/users/2/", "foaf:user")
REMOTE_CIRCLE = Ref("https://b.example/circles/2/", "hd:circle")
FOLLOWER = "https://b.example/inbox/"


def res(*links, ref=CIRCLE):
    return Resource(ref, tuple(links))


def summary(plans):
    """(type, inboxes, resources) of each planned activity."""
    return [(p.activity["type"], p.inboxes, p.resources) for p in plans]


SAVES = [
    # (name, resource, created, links changed, followers, expected)
    ("created, no links", res(), True, True, (), []),
    ("created, local link only", res(("owner", LOCAL_USER)), True, True, (), []),
    ("created, same origin with explicit default port is local",
     res(("owner", SAME_ORIGIN_443)), True, True, (), []),
    ("created, external link", res(("owner", BOB)), True, True, (),
     [("Create", (), (BOB.urlid,))]),
    ("created, a look-alike host is external", res(("owner", LOOKALIKE)), True, True, (),
     [("Create", (), (LOOKALIKE.urlid,))]),
    ("created, other port is another origin", res(("owner", BOB_8443)), True, True, (),
     [("Create", (), (BOB_8443.urlid,))]),
    ("created, two links to two servers", res(("owner", BOB), ("editor", CAROL)), True, True,
     (), [("Create", (), (BOB.urlid, CAROL.urlid))]),
    ("created, two links to the same resource", res(("owner", BOB), ("editor", BOB)), True,
     True, (), [("Create", (), (BOB.urlid,))]),
    ("saved again, links unchanged", res(("owner", BOB)), False, False, (FOLLOWER,), []),
    ("links changed, to a follower and the new target",
     res(("owner", CAROL)), False, True, (FOLLOWER,),
     [("Update", (FOLLOWER,), (CAROL.urlid,))]),
    ("links changed to local only: followers still hear of it",
     res(("owner", LOCAL_USER)), False, True, (FOLLOWER,), [("Update", (FOLLOWER,), ())]),
    ("links changed, nobody to tell", res(("owner", LOCAL_USER)), False, True, (), []),
    ("the record of a remote resource sends nothing",
     res(("owner", LOCAL_USER), ref=REMOTE_CIRCLE), True, True, (), []),
]


@pytest.mark.parametrize("name,resource,created,changed,followers,expected", SAVES,
                         ids=[s[0] for s in SAVES])
def test_detect_save(name, resource, created, changed, followers, expected):
    plans = detect_save(resource, created=created, links_changed=changed, followers=followers,
                        site=SITE, context=CTX)
    assert summary(plans) == expected


def test_create_wire_format():
    [plan] = detect_save(res(("owner", BOB)), created=True, links_changed=True, followers=(),
                         site=SITE, context=CTX)
    assert plan.object_id == CIRCLE.urlid
    assert plan.activity == {
        "@context": [AS_CONTEXT, CTX],
        "type": "Create",
        "actor": {"type": "Service", "name": "Backlinks Service"},
        "object": {"@type": "hd:circle", "@id": CIRCLE.urlid,
                   "owner": {"@id": BOB.urlid, "@type": "foaf:user"}},
        "summary": f"{CIRCLE.urlid} was created",
    }


DELETES = [
    ("followers get a Delete", res(("owner", BOB)), (FOLLOWER, "https://c.example/inbox/"),
     [("Delete", (FOLLOWER, "https://c.example/inbox/"), ())]),
    ("no followers, nothing", res(("owner", BOB)), (), []),
    ("a remote record's deletion is not federated", res(ref=REMOTE_CIRCLE), (FOLLOWER,), []),
]


@pytest.mark.parametrize("name,resource,followers,expected", DELETES,
                         ids=[d[0] for d in DELETES])
def test_detect_delete(name, resource, followers, expected):
    plans = detect_delete(resource, followers=followers, site=SITE, context=CTX)
    assert summary(plans) == expected


def test_delete_wire_format():
    [plan] = detect_delete(res(("owner", BOB)), followers=(FOLLOWER,), site=SITE, context=CTX)
    assert plan.activity["object"] == {"@id": CIRCLE.urlid, "@type": "hd:circle"}
    assert plan.activity["summary"] == f"{CIRCLE.urlid} was deleted"


M2M = [
    ("add an external member", res(), [BOB], True, [("Add", (), (BOB.urlid,))]),
    ("add local members: nothing", res(), [LOCAL_USER, SAME_ORIGIN_443], True, []),
    ("add a mix: one per external member", res(), [LOCAL_USER, BOB, CAROL], True,
     [("Add", (), (BOB.urlid,)), ("Add", (), (CAROL.urlid,))]),
    ("remove an external member", res(), [BOB], False, [("Remove", (), (BOB.urlid,))]),
    ("a remote container sends nothing", res(ref=REMOTE_CIRCLE), [BOB], True, []),
]


@pytest.mark.parametrize("name,container,members,added,expected", M2M, ids=[m[0] for m in M2M])
def test_detect_m2m(name, container, members, added, expected):
    plans = detect_m2m(container, members, added=added, site=SITE, context=CTX)
    assert summary(plans) == expected


def test_add_and_remove_wire_format():
    container = res(("owner", LOCAL_USER))
    [add] = detect_m2m(container, [BOB], added=True, site=SITE, context=CTX)
    [remove] = detect_m2m(container, [BOB], added=False, site=SITE, context=CTX)
    tree = {"@type": "hd:circle", "@id": CIRCLE.urlid,
            "owner": {"@id": LOCAL_USER.urlid, "@type": "foaf:user"}}
    assert add.activity["object"] == tree and remove.activity["object"] == tree
    assert add.activity["target"] == {"@id": BOB.urlid, "@type": "foaf:user"}
    assert "origin" not in add.activity
    assert remove.activity["origin"] == {"@id": BOB.urlid, "@type": "foaf:user"}
    assert "target" not in remove.activity
    assert add.activity["summary"] == f"{CIRCLE.urlid} was added to {BOB.urlid}"
    assert remove.activity["summary"] == f"{CIRCLE.urlid} was removed from {BOB.urlid}"
