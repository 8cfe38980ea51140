"""The instance actor: an Application that owns the site key, so our keyIds resolve to an actor."""


import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.checks import run_checks
from django.db import transaction

from activity_queue import enqueue
from activity_queue.inbox.keys import key_from_document, remote_key
from activity_queue.models import Activity
from activity_queue.net.signatures import parse_signature, public_pem
from activity_queue.net.signing import default_key_id

from ..support.keys import pem, rsa_key
from ..support.strict_peer import StrictPeer

pytestmark = pytest.mark.usefixtures("clean_cache")

CONTEXT = ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"]


def site_key() -> rsa.RSAPrivateKey:
    return rsa_key(0)


@pytest.fixture
def signing(settings):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "SIGNING_KEY": pem(site_key())}


@pytest.mark.parametrize("resource", ["acct:testserver@testserver", "ACCT:TestServer@TESTSERVER",
                                      "http://testserver/activity-queue/actor/"])
def test_webfinger_leads_back_to_the_actor(client, resource):
    """What Mastodon asks before it accepts a signature by the actor's key."""
    response = client.get("/.well-known/webfinger", {"resource": resource})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/jrd+json"
    assert response.json() == {
        "subject": "acct:testserver@testserver",
        "aliases": ["http://testserver/activity-queue/actor/"],
        "links": [{"rel": "self", "type": "application/activity+json",
                   "href": "http://testserver/activity-queue/actor/"}],
    }


@pytest.mark.parametrize(("query", "status", "detail"), [
    ({}, 400, "the resource parameter is required"),
    ({"resource": " "}, 400, "the resource parameter is required"),
    ({"resource": "acct:alice@testserver"}, 404, "no such resource here: acct:alice@testserver"),
    ({"resource": "acct:testserver@elsewhere.example"}, 404,
     "no such resource here: acct:testserver@elsewhere.example"),
])
def test_webfinger_knows_the_instance_actor_only(client, query, status, detail):
    response = client.get("/.well-known/webfinger", query)
    assert (response.status_code, response.json()) == (status, {"detail": detail})


def test_the_actor_document(client, signing):
    response = client.get("/activity-queue/actor/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/activity+json"
    assert response.json() == {
        "@context": CONTEXT,
        "id": "http://testserver/activity-queue/actor/",
        "type": "Application",
        "preferredUsername": "testserver",
        "name": "activity_queue",
        "inbox": "http://testserver/inbox/",
        "outbox": "http://testserver/activity-queue/actor/outbox/",
        "manuallyApprovesFollowers": True,
        "publicKey": {"id": "http://testserver/activity-queue/actor/#main-key",
                      "owner": "http://testserver/activity-queue/actor/",
                      "publicKeyPem": public_pem(site_key())},
    }


def test_the_default_key_id_is_the_actors_key(signing):
    assert default_key_id() == "http://testserver/activity-queue/actor/#main-key"


def test_our_own_key_lookup_finds_the_key_in_the_actor(client, signing):
    document = client.get("/activity-queue/actor/").json()
    key = key_from_document(document, default_key_id(), "http://testserver/activity-queue/actor/")
    assert key.owner == "http://testserver/activity-queue/actor/"
    assert key.pem == public_pem(site_key())


def test_without_a_key_the_actor_has_no_public_key(client):
    document = client.get("/activity-queue/actor/").json()
    assert document["type"] == "Application" and "publicKey" not in document


def test_without_site_url_there_is_no_actor(client, settings):
    del settings.SITE_URL
    assert client.get("/activity-queue/actor/").status_code == 404


def test_the_outbox_is_empty(client):
    response = client.get("/activity-queue/actor/outbox/")
    assert response["Content-Type"] == "application/activity+json"
    assert response.json() == {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": "http://testserver/activity-queue/actor/outbox/",
        "type": "OrderedCollection", "totalItems": 0, "orderedItems": [],
    }


def test_the_old_key_document_keeps_working(client, signing):
    """Its id is its own URL (signatures made under it still verify); its owner the actor."""
    assert client.get("/activity-queue/key/").json() == {
        "@context": CONTEXT, "id": "http://testserver/activity-queue/key/", "type": "Key",
        "owner": "http://testserver/activity-queue/actor/",
        "publicKeyPem": public_pem(site_key()),
    }


@pytest.mark.django_db(transaction=True)
def test_both_key_ids_resolve_over_http(live_server, settings, signing):
    settings.SITE_URL = live_server.url
    actor = live_server.url + "/activity-queue/actor/"
    for key_id in (actor + "#main-key", live_server.url + "/activity-queue/key/"):
        key = remote_key(key_id)
        assert (key.owner, key.pem) == (actor, public_pem(site_key()))


@pytest.mark.django_db(transaction=True)
def test_a_strict_receiver_accepts_the_instance_actors_activities(live_server, settings, worker,
                                                                  signing):
    """Mastodon's rule: the keyId resolves to an actor that lists the key, and that actor is
    the activity's actor."""
    settings.SITE_URL = live_server.url
    actor = live_server.url + "/activity-queue/actor/"
    peer = StrictPeer().start()
    try:
        with transaction.atomic():
            enqueue({"@context": "https://www.w3.org/ns/activitystreams", "type": "Update",
                     "actor": actor, "object": {"id": "https://a.example/o/1"}},
                    to=peer.url("/inbox/"))
        assert worker().run_once(timeout=30).sent == 1
        [post] = peer.posts()
        assert (post.status, post.owner) == (202, actor)
        assert parse_signature(post.headers["signature"]).key_id == actor + "#main-key"
        assert Activity.objects.outbound().get().status_code == 202
    finally:
        peer.stop()



@pytest.mark.django_db(transaction=True)
def test_a_key_file_named_by_a_path(live_server, settings, worker, tmp_path):
    """``BASE_DIR / "key.pem"``, as Django settings name files: the check accepts it, the
    actor publishes the key, and a strict receiver accepts what it signs."""
    key_file = tmp_path / "instance-key.pem"
    key_file.write_text(pem(site_key()))
    settings.SITE_URL = live_server.url
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "SIGNING_KEY": key_file}
    assert [m.id for m in run_checks() if (m.id or "").startswith("activity_queue.")] == []
    actor = live_server.url + "/activity-queue/actor/"
    assert remote_key(actor + "#main-key").pem == public_pem(site_key())
    peer = StrictPeer().start()
    try:
        with transaction.atomic():
            enqueue({"@context": "https://www.w3.org/ns/activitystreams", "type": "Update",
                     "actor": actor, "object": {"id": "https://a.example/o/2"}},
                    to=peer.url("/inbox/"))
        assert worker().run_once(timeout=30).sent == 1
        [post] = peer.posts()
        assert (post.status, post.owner) == (202, actor)
    finally:
        peer.stop()
