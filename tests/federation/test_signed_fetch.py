"""Signed fetches: discovery and key fetches are GETs signed by the instance actor, so a peer
in authorized-fetch mode (401 to unsigned GETs) answers them."""

from importlib.metadata import version

import pytest

from activity_queue.federation import discovery, dispatch
from activity_queue.inbox.keys import KeyUnavailable, remote_key
from activity_queue.models import ScheduledActivity
from activity_queue.net.signatures import public_pem
from example_project.circles.models import Circle, Member

from ..support.keys import pem, rsa_key
from ..support.strict_peer import StrictPeer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_cache")]

ACCEPT = ('application/ld+json; profile="https://www.w3.org/ns/activitystreams", '
          "application/activity+json")


@pytest.fixture
def peer():
    """A remote server in authorized-fetch mode: a user whose document names its inbox."""
    server = StrictPeer(authorized_fetch=True).start()
    user = server.url("/users/7")
    server.document("/users/7", {
        "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
        "id": user, "type": "Person", "inbox": server.url("/users/7/inbox"),
        "publicKey": {"id": user + "#main-key", "owner": user,
                      "publicKeyPem": public_pem(rsa_key(1))}})
    yield server
    server.stop()


@pytest.fixture
def site(live_server, settings):
    """This site, whose instance actor (and its key) the peer can fetch."""
    settings.SITE_URL = live_server.url
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "SIGNING_KEY": pem(rsa_key(0))}
    return live_server.url


def test_discovery_finds_the_real_inbox(site, peer):
    resource = peer.url("/users/7")
    assert discovery.inbox_for(resource) == peer.url("/users/7/inbox")
    [get] = peer.seen
    actor = site + "/activity-queue/actor/"
    assert (get.status, get.key_id, get.owner) == (200, actor + "#main-key", actor)
    assert get.headers["accept"] == ACCEPT
    assert get.headers["user-agent"] == f"activity_queue/{version('activity_queue')} (+{site})"


def test_unsigned_discovery_falls_back_to_a_guess(peer):
    """What happens without a site key: the peer refuses, and the inbox is only guessed."""
    resource = peer.url("/users/7")
    assert discovery.inbox_for(resource) == peer.url("/inbox/")
    [get] = peer.seen
    assert (get.status, get.reason) == (401, "not signed")
    assert get.headers["accept"] == ACCEPT


def test_a_backlink_goes_to_the_discovered_inbox(site, peer):
    """The whole path: a model change, its pending discovery, the signed fetch, the row."""
    bob = Member.objects.create(urlid=peer.url("/users/7"), name="bob")
    Circle.objects.create(name="one", owner=bob)
    assert dispatch.resolve_due()["enqueued"] == 1
    assert list(ScheduledActivity.objects.values_list("inbox", flat=True)) == [
        peer.url("/users/7/inbox")]
    assert [(s.method, s.status) for s in peer.seen] == [("GET", 200)]


def test_key_fetches_are_signed(site, peer):
    key = remote_key(peer.url("/users/7#main-key"))
    assert (key.owner, key.pem) == (peer.url("/users/7"), public_pem(rsa_key(1)))
    [get] = peer.seen
    assert get.status == 200 and get.owner == site + "/activity-queue/actor/"


def test_unsigned_key_fetches_are_refused(peer):
    with pytest.raises(KeyUnavailable, match="answered HTTP 401"):
        remote_key(peer.url("/users/7#main-key"))


def test_each_redirect_hop_is_signed_for_its_own_target(site, peer):
    peer.redirects["/old/7"] = peer.url("/users/7")
    assert discovery.inbox_for(peer.url("/old/7")) == peer.url("/users/7/inbox")
    assert [(s.path, s.status) for s in peer.seen] == [("/old/7", 302), ("/users/7", 200)]


@pytest.mark.parametrize("path", ["/users/x/%2e%2e/7", "/users/%2E/7"])
def test_what_is_signed_is_the_path_sent(site, peer, path):
    """requests decodes %2e to a dot and then, sending, removes the dot segment: the path
    signed must be the one that goes out, or the peer refuses the fetch."""
    assert discovery.inbox_for(peer.url(path)) == peer.url("/users/7/inbox")
    assert [(s.path, s.status) for s in peer.seen] == [("/users/7", 200)]
