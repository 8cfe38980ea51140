"""Activities nobody vouches for (INBOX_UNSIGNED): checked at the origin of their object,
which a real loopback server plays, serving the object's document."""

import json
import socket
import time

import pytest
import requests
from django.core.cache import cache
from django.db import connection, transaction
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from activity_queue.exceptions import InvalidActivity
from activity_queue.federation.discovery import Fetched
from activity_queue.inbox import verification
from activity_queue.inbox.receive import apply_activity
from activity_queue.inbox.verification import confirm, listed_members
from activity_queue.models import Activity
from activity_queue.net.signatures import public_pem, sign_headers
from example_project.circles.models import Circle, Member

from ..support.keys import rsa_key
from ..support.peer import trickle_body, trickle_head
from ..support.receiver import Receiver, Rule

INBOX = "/inbox/"
LD = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
CTX = ["https://www.w3.org/ns/activitystreams", "https://cdn.startinblox.com/owl/context.jsonld"]
ACTOR = {"type": "Service", "name": "Backlinks Service"}


@pytest.fixture
def origin():
    """The remote server the circles live on: it serves their documents."""
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def alice(db):
    return Member.objects.create(name="alice")


@pytest.fixture
def bob(db):
    return Member.objects.create(name="bob")


def ref(member):
    return {"@id": member.urlid, "@type": "foaf:user"}


def circle_url(origin, n=9):
    return origin.url(f"/circles/{n}/")


def serve_circle(origin, n=9, delay=0.0, **fields):
    """The circle's document on its origin, as a DjangoLDP server serves it."""
    return origin.document(f"/circles/{n}/", {
        "@context": CTX, "@id": circle_url(origin, n), "@type": "hd:circle", **fields},
        delay=delay)


def backlink(kind, server, n=9, **extra):
    """A backlink as a DjangoLDP server sends it: no id, an actor without id, unsigned."""
    obj = {"@type": "hd:circle", "@id": circle_url(server, n), **extra.pop("object", {})}
    return {"@context": CTX, "type": kind, "actor": ACTOR, "object": obj, **extra,
            "summary": f"{obj['@id']} changed"}


def post(client, body, **extra):
    return client.generic("POST", INBOX, json.dumps(body).encode(), content_type=LD, **extra)


def received():
    return Activity.objects.inbound().get()


def record(origin, n=9):
    return Circle.objects.filter(urlid=circle_url(origin, n)).first()


# -- verify (the default) ----------------------------------------------------------------


@pytest.mark.django_db
def test_djangoldp_backlink_confirmed_by_its_origin_is_applied(client, origin, alice):
    serve_circle(origin, owner=ref(alice))
    response = post(client, backlink("Create", origin, object={"owner": ref(alice)}))
    assert (response.status_code, response.json()) == (202, {})
    assert record(origin).owner == alice
    assert origin.fetched == ["/circles/9/"]
    row = received()
    assert (row.status, row.error, row.object_id) == ("received", "", circle_url(origin))


@pytest.mark.django_db
def test_what_is_applied_is_what_the_origin_says(client, origin, alice, bob):
    serve_circle(origin, owner=ref(bob))
    assert post(client, backlink("Update", origin, object={"owner": ref(alice)})).status_code \
        == 202
    assert record(origin).owner == bob


@pytest.mark.django_db
def test_a_link_the_origin_no_longer_has_is_removed(client, origin, alice):
    Circle.objects.create(urlid=circle_url(origin), owner=alice)
    serve_circle(origin, owner=None)
    assert post(client, backlink("Update", origin, object={"owner": ref(alice)})).status_code \
        == 202
    assert record(origin).owner is None


@pytest.mark.django_db
@pytest.mark.parametrize(("served", "reason"), [
    ({"status": 404}, "answers HTTP 404 for it"),
    ({"status": 410}, "answers HTTP 410 for it"),
    ({"status": 403}, "answers HTTP 403 for it"),
    ({"body": ["not", "an", "object"]}, "answers no readable JSON document for it"),
    ({"body": {"@id": "http://127.0.0.1:1/circles/9/", "@type": "hd:circle"}},
     "serves another document ('http://127.0.0.1:1/circles/9/')"),
    ({"body": {"@type": "foaf:user"}}, "has @type 'foaf:user', not 'hd:circle'"),
])
def test_a_forged_update_leaves_the_record_unchanged(client, origin, alice, bob, served, reason):
    mine = Circle.objects.create(urlid=circle_url(origin), owner=alice)
    body = served.get("body")
    if isinstance(body, dict):
        body = {"@id": circle_url(origin), **body}
    origin.document("/circles/9/", body, status=served.get("status", 200))
    forged = backlink("Update", origin, object={"owner": ref(bob)})
    response = post(client, forged)
    assert (response.status_code, response.json()) == (202, {})
    mine.refresh_from_db()
    assert mine.owner == alice
    row = received()
    assert row.error.startswith("not applied: ") and reason in row.error, row.error
    assert row.payload.document == forged


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "reason"), [
    ("/u/1\x00", "contains whitespace or control characters"),
    ("/u/1\ud800", "contains an unpaired surrogate"),
    ("/u/" + "x" * 2000, "is longer than 2000 characters"),
])
def test_a_link_no_database_can_store_is_not_applied(client, origin, alice, path, reason):
    """The origin's document is as hostile as any input: a link PostgreSQL would refuse
    (NUL, a lone surrogate, longer than the urlid column) is a reason, not a server error."""
    serve_circle(origin, owner={"@id": origin.url(path), "@type": "foaf:user"})
    response = post(client, backlink("Create", origin))
    assert (response.status_code, response.json()) == (202, {})
    assert record(origin) is None
    assert reason in received().error, received().error


@pytest.mark.django_db
def test_a_document_nested_too_deep_is_no_document(client, origin, alice, bob):
    mine = Circle.objects.create(urlid=circle_url(origin), owner=alice)
    origin.documents["/circles/9/"] = Rule(status=200, body=b"[" * 100_000 + b"]" * 100_000)
    assert post(client, backlink("Update", origin, object={"owner": ref(bob)})).status_code \
        == 202
    mine.refresh_from_db()
    assert mine.owner == alice
    assert "answers no readable JSON document" in received().error


@pytest.mark.django_db
def test_an_unreachable_origin_changes_nothing(client, alice, bob):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    mine = Circle.objects.create(urlid=f"{dead}/circles/9/", owner=alice)
    forged = {"@context": CTX, "type": "Update", "actor": ACTOR,
              "object": {"@type": "hd:circle", "@id": mine.urlid, "owner": ref(bob)}}
    assert post(client, forged).status_code == 202
    mine.refresh_from_db()
    assert mine.owner == alice
    assert "could not be fetched from its origin" in received().error


@pytest.mark.django_db
@pytest.mark.parametrize("host", ["a..b.example", "a" * 64 + ".example", "127.0.0.1"])
def test_an_origin_that_cannot_be_fetched_safely_changes_nothing(client, settings, bob, host):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "ALLOW_PRIVATE_ADDRESSES": False}
    urlid = f"http://{host}/circles/1/"
    body = {"@context": CTX, "type": "Create", "actor": ACTOR,
            "object": {"@type": "hd:circle", "@id": urlid, "owner": ref(bob)}}
    assert post(client, body).status_code == 202
    assert not Circle.objects.filter(urlid=urlid).exists()
    assert "could not be fetched from its origin" in received().error


@pytest.mark.django_db(transaction=True)
def test_no_transaction_is_open_while_the_origin_is_asked(client, origin, alice, bob,
                                                          monkeypatch):
    """Not even with ATOMIC_REQUESTS: on SQLite the site's one write lock would wait for a
    server the sender chose, for as long as it takes to answer."""
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    fetch, during = verification.discovery.fetch, []

    def watched(*args, **kwargs):
        during.append(connection.in_atomic_block)
        return fetch(*args, **kwargs)

    monkeypatch.setattr(verification.discovery, "fetch", watched)
    serve_circle(origin, owner=ref(bob))
    assert post(client, backlink("Create", origin)).status_code == 202
    assert during == [False]
    assert record(origin).owner == bob


@pytest.mark.django_db
def test_a_slow_origin_is_given_up_on_quickly(client, origin, alice, bob, monkeypatch):
    monkeypatch.setattr(verification, "FETCH_TIMEOUT", 0.3)
    mine = Circle.objects.create(urlid=circle_url(origin), owner=alice)
    serve_circle(origin, owner=ref(bob), delay=3)
    started = time.monotonic()
    assert post(client, backlink("Update", origin, object={"owner": ref(bob)})).status_code \
        == 202
    assert time.monotonic() - started < 2.5
    mine.refresh_from_db()
    assert mine.owner == alice
    assert "could not be fetched" in received().error


@pytest.mark.django_db
@pytest.mark.parametrize("script", [trickle_head, trickle_body], ids=["head", "body"])
def test_an_origin_answering_slowly_is_given_up_on_in_time(client, peer, monkeypatch,
                                                           script):
    """A byte at a time, each within the read timeout, does not stretch the fetch beyond
    FETCH_TIMEOUT in all."""
    monkeypatch.setattr(verification, "FETCH_TIMEOUT", 0.5)
    slow = peer(script)
    started = time.monotonic()
    response = post(client, backlink("Update", slow))
    took = time.monotonic() - started
    assert (response.status_code, response.json()) == (202, {})
    assert 0.5 <= took < 1.5
    assert record(slow) is None
    assert received().error == (f"not applied: {circle_url(slow)} could not be fetched from "
                                f"its origin: no answer from {circle_url(slow)} within 0.5 s")
    assert slow.wait_for(lambda p: 0 in p.client_closed)


@pytest.mark.django_db
def test_a_redirect_to_no_url_changes_nothing(client, origin, alice, bob):
    mine = Circle.objects.create(urlid=circle_url(origin), owner=alice)
    origin.document("/circles/9/", status=302, headers={"Location": "http://[::1/circles/9/"})
    response = post(client, backlink("Update", origin, object={"owner": ref(bob)}))
    assert (response.status_code, response.json()) == (202, {})
    mine.refresh_from_db()
    assert mine.owner == alice
    assert "gave an unusable answer: Invalid IPv6 URL" in received().error


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["Update", "Delete"])
def test_another_server_cannot_answer_for_the_origin_through_a_redirect(client, origin,
                                                                       receiver, alice,
                                                                       bob, kind):
    """What the object's origin serves decides, not what a server it redirects to serves:
    else an open redirect there would let any server confirm changes to its objects."""
    mine = Circle.objects.create(urlid=circle_url(origin), owner=alice)
    origin.document("/circles/9/", status=302, headers={"Location": receiver.url("/fake/")})
    if kind == "Update":
        receiver.document("/fake/", {"@context": CTX, "@id": circle_url(origin),
                                     "@type": "hd:circle", "owner": ref(bob)})
    else:
        receiver.document("/fake/", None, status=404)
    response = post(client, backlink(kind, origin, object={"owner": ref(bob)}))
    assert (response.status_code, response.json()) == (202, {})
    mine.refresh_from_db()
    assert mine.owner == alice
    assert receiver.fetched == ["/fake/"]
    assert received().error == (f"not applied: {circle_url(origin)} was served by "
                                f"{receiver.base}, not by its own origin")


@pytest.mark.django_db
def test_the_timeout_covers_redirects_too(client, origin, alice, bob, monkeypatch):
    monkeypatch.setattr(verification, "FETCH_TIMEOUT", 0.5)
    mine = Circle.objects.create(urlid=circle_url(origin), owner=alice)
    serve_circle(origin, owner=ref(bob))  # served at the end of three slow redirects
    origin.documents["/circles/9/again/again/again/"] = origin.documents.pop("/circles/9/")
    for hop in range(3):
        origin.document(f"/circles/9/{'again/' * hop}", status=302, delay=0.2,
                        headers={"Location": f"/circles/9/{'again/' * (hop + 1)}"})
    started = time.monotonic()
    assert post(client, backlink("Update", origin, object={"owner": ref(bob)})).status_code \
        == 202
    assert time.monotonic() - started < 0.9
    mine.refresh_from_db()
    assert mine.owner == alice
    assert "could not be fetched from its origin" in received().error


@pytest.mark.django_db
@pytest.mark.parametrize(("listed", "applied"), [(True, True), (False, False)])
def test_add_needs_the_origin_to_list_the_member(client, origin, alice, listed, applied):
    serve_circle(origin, members=[ref(alice)] if listed else [])
    add = backlink("Add", origin, target=ref(alice))
    assert post(client, add).status_code == 202
    assert alice.circles.filter(urlid=circle_url(origin)).exists() is applied
    if not applied:
        assert f"does not list {alice.urlid} in its members" in received().error


@pytest.mark.django_db
@pytest.mark.parametrize(("listed", "applied"), [(True, False), (False, True)])
def test_remove_needs_the_origin_to_no_longer_list_the_member(client, origin, alice, listed,
                                                              applied):
    Circle.objects.create(urlid=circle_url(origin)).members.add(alice)
    container = {"@id": circle_url(origin) + "members/",
                 "ldp:contains": [ref(alice)] if listed else []}
    serve_circle(origin, members=container)
    assert post(client, backlink("Remove", origin, origin=ref(alice))).status_code == 202
    assert alice.circles.filter(urlid=circle_url(origin)).exists() is not applied
    if not applied:
        assert f"still lists {alice.urlid} in its members" in received().error


@pytest.mark.django_db
def test_membership_is_not_guessed_from_a_document_that_does_not_list_it(client, origin,
                                                                          alice):
    Circle.objects.create(urlid=circle_url(origin)).members.add(alice)
    serve_circle(origin)
    assert post(client, backlink("Remove", origin, origin=ref(alice))).status_code == 202
    assert alice.circles.exists()
    assert "does not list its members" in received().error


@pytest.mark.django_db
@pytest.mark.parametrize(("status", "deleted"), [(404, True), (410, True), (200, False),
                                                  (500, False)])
def test_delete_needs_the_origin_to_say_gone(client, origin, alice, status, deleted):
    Circle.objects.create(urlid=circle_url(origin), owner=alice)
    if status == 200:
        serve_circle(origin)
    else:
        origin.document("/circles/9/", None, status=status)
    delete = {"@context": CTX, "type": "Delete", "actor": ACTOR,
              "object": {"@id": circle_url(origin), "@type": "hd:circle"}}
    assert post(client, delete).status_code == 202
    assert (record(origin) is None) is deleted
    assert (received().error == "") is deleted


@pytest.mark.django_db
def test_nothing_is_fetched_when_nothing_could_change(client, origin, alice):
    unknown = backlink("Create", origin)
    unknown["object"]["@type"] = "hd:unknown"
    gone = {"@context": CTX, "type": "Delete", "actor": ACTOR,
            "object": {"@id": circle_url(origin, 5)}}
    assert [post(client, body).status_code for body in (unknown, gone)] == [201, 201]
    local = backlink("Update", origin, object={"@id": alice.urlid, "@type": "foaf:user"})
    response = post(client, local)
    assert response.status_code == 400 and "local resource" in response.json()["detail"]
    assert origin.fetched == []


@pytest.mark.django_db
def test_a_duplicate_is_not_fetched_again(client, origin, alice):
    serve_circle(origin, owner=ref(alice))
    body = backlink("Create", origin, object={"owner": ref(alice)})
    assert [post(client, body).status_code for _ in range(2)] == [202, 200]
    assert origin.fetched == ["/circles/9/"]


@pytest.mark.django_db
def test_a_forgery_sent_ahead_does_not_mask_the_real_activity(client, origin, alice):
    """Content identifies an activity without id: one that was not applied does not count."""
    serve_circle(origin, members=[])
    add = backlink("Add", origin, target=ref(alice))
    assert post(client, add).status_code == 202
    assert not alice.circles.exists()
    serve_circle(origin, members=[ref(alice)])
    assert post(client, add).status_code == 202
    assert alice.circles.filter(urlid=circle_url(origin)).exists()


# -- require and trust ---------------------------------------------------------------------


@pytest.mark.django_db
def test_require_refuses_unsigned_activities(client, origin, alice, settings):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "INBOX_UNSIGNED": "require"}
    serve_circle(origin, owner=ref(alice))
    response = post(client, backlink("Create", origin, object={"owner": ref(alice)}))
    assert response.status_code == 401
    assert response.json() == {"detail": "this inbox requires a valid HTTP Signature"}
    assert response["WWW-Authenticate"].startswith("Signature")
    assert record(origin) is None and not Activity.objects.exists() and origin.fetched == []


@pytest.mark.django_db
def test_trust_applies_unsigned_activities_as_sent(client, origin, alice, bob, settings):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "INBOX_UNSIGNED": "trust"}
    serve_circle(origin, owner=ref(bob))
    response = post(client, backlink("Create", origin, object={"owner": ref(alice)}))
    assert response.status_code == 201
    assert record(origin).owner == alice
    assert origin.fetched == [] and received().error == ""


# -- signed activities ---------------------------------------------------------------------


def publish_key(server):
    """An actor with a key on ``server``; returns the keyId."""
    server.document("/actor", {
        "id": server.url("/actor"), "type": "Service",
        "publicKey": {"id": server.url("/actor#key"), "owner": server.url("/actor"),
                      "publicKeyPem": public_pem(rsa_key())}})
    return server.url("/actor#key")


def post_signed(url, activity, key_id, key=None):
    body = json.dumps(activity).encode()
    headers = sign_headers("POST", url, {"Content-Type": LD}, body, key=key or rsa_key(),
                           key_id=key_id)
    return requests.post(url, data=body, headers=headers, timeout=10)


@pytest.fixture
def signed_inbox(live_server):
    """The live inbox with the default settings: a signature present is checked."""
    cache.clear()
    yield live_server.url + INBOX
    cache.clear()


@pytest.mark.django_db(transaction=True)
def test_signed_by_another_origin_is_verified_at_the_objects_origin(signed_inbox, origin,
                                                                    alice, bob):
    relay = Receiver().start()
    try:
        key_id = publish_key(relay)
        serve_circle(origin, owner=ref(bob))
        activity = {**backlink("Update", origin, object={"owner": ref(alice)}),
                    "id": relay.url("/activities/1"), "actor": relay.url("/actor")}
        response = post_signed(signed_inbox, activity, key_id)
    finally:
        relay.stop()
    assert response.status_code == 202
    assert origin.fetched == ["/circles/9/"]
    assert record(origin).owner == bob
    assert received().host == relay.base


@pytest.mark.django_db(transaction=True)
def test_signed_by_the_objects_origin_is_applied_as_sent(signed_inbox, origin, alice, bob):
    key_id = publish_key(origin)
    serve_circle(origin, owner=ref(bob))
    activity = {**backlink("Update", origin, object={"owner": ref(alice)}),
                "id": origin.url("/activities/1"), "actor": origin.url("/actor")}
    response = post_signed(signed_inbox, activity, key_id)
    assert response.status_code == 201
    assert record(origin).owner == alice
    assert origin.fetched == ["/actor"]  # the key, not the circle


@pytest.mark.django_db(transaction=True)
def test_a_bad_signature_is_refused_not_taken_for_unsigned(signed_inbox, origin, alice, bob):
    key_id = publish_key(origin)
    serve_circle(origin, owner=ref(bob))
    activity = {**backlink("Update", origin, object={"owner": ref(alice)}),
                "id": origin.url("/activities/1"), "actor": origin.url("/actor")}
    response = post_signed(signed_inbox, activity, key_id, key=rsa_key(1))
    assert response.status_code == 401
    assert "does not verify" in response.json()["detail"]
    assert origin.fetched == ["/actor"]  # the key, not the circle
    assert record(origin) is None  # nothing applied


# -- the pure parts ------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "ids"), [
    ([{"@id": "https://a.example/u/1"}, "https://a.example/u/2"],
     {"https://a.example/u/1", "https://a.example/u/2"}),
    ({"@id": "https://a.example/c/", "ldp:contains": [{"@id": "https://a.example/u/1"}]},
     {"https://a.example/u/1"}),
    ({"id": "https://a.example/c/", "orderedItems": ["https://a.example/u/1"]},
     {"https://a.example/u/1"}),
    ({"@id": "https://a.example/u/1"}, {"https://a.example/u/1"}),
    ({"@id": "https://a.example/c/", "ldp:contains": {"@id": "https://a.example/u/3"}},
     {"https://a.example/u/3"}),
    ([], set()),
    (None, set()),
    ([{"@id": ["https://a.example/u/1"]}, {"@id": {"@id": "x"}}, 5, None], set()),
])
def test_listed_members(value, ids):
    assert listed_members({"members": value}, "members") == ids


def test_a_document_without_the_collection_lists_nothing():
    assert listed_members({"name": "x"}, "members") is None


@pytest.mark.django_db
def test_confirm_keeps_only_the_links_the_document_has():
    url = "https://b.example/circles/1/"
    activity = {"type": "Create", "object": {"@type": "hd:circle", "@id": url,
                                             "owner": {"@id": "https://c.example/u/1"},
                                             "name": "sent"}}
    document = {"@id": url, "@type": "hd:circle", "owner": {"@id": "https://b.example/u/2"},
                "name": "served", "members": []}
    verdict = confirm(activity, Fetched(url, 200, document))
    assert verdict.reason == ""
    assert verdict.activity["object"] == {"@type": "hd:circle", "@id": url,
                                          "owner": {"@id": "https://b.example/u/2"}}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.sampled_from(["hd:circle", "foaf:user", "https://b.example/circles/1/",
                       "https://b.example/u/1", "http://testserver/members/1/"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["@id", "id", "@type", "type", "owner", "members",
                                       "ldp:contains", "items", "x"]), children, max_size=4),
    max_leaves=20,
)


@pytest.mark.django_db
@hsettings(max_examples=200, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(["Create", "Update", "Add", "Remove", "Delete"]),
       document=st.dictionaries(st.sampled_from(["owner", "members", "@type", "x"]),
                                json_values, max_size=4),
       status=st.sampled_from([200, 404, 410, 403]))
def test_no_document_makes_applying_fail_otherwise_than_with_a_reason(kind, document, status):
    url = "https://b.example/circles/1/"
    activity = {"type": kind, "object": {"@type": "hd:circle", "@id": url},
                "target": {"@id": "https://b.example/u/1", "@type": "foaf:user"},
                "origin": {"@id": "https://b.example/u/1", "@type": "foaf:user"}}
    verdict = confirm(activity, Fetched(url, status, {"@id": url, "@type": "hd:circle",
                                                      **document}))
    assert (verdict.activity is None) == bool(verdict.reason)
    if verdict.activity is not None:
        try:
            with transaction.atomic():
                apply_activity(verdict.activity, from_origin=True)
        except InvalidActivity as exc:
            assert str(exc)
