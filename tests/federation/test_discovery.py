"""Inbox discovery: the document's inbox, the cache and its lifetime, the fallback, retries."""

import threading
import time

import pytest
from django.core.cache import cache

from activity_queue import signals
from activity_queue.federation import discovery, dispatch
from activity_queue.federation.discovery import DiscoveryFailed, inbox_from_document
from activity_queue.models import Activity, PendingDiscovery, ScheduledActivity
from example_project.circles.models import Circle, Member

from ..support.federation import Remote, drain
from ..support.helpers import wait_until
from ..support.peer import trickle_body, trickle_head

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


DOCUMENTS = [
    ("inbox", {"inbox": "https://b.example/inbox/"}, "https://b.example/inbox/"),
    ("ldp:inbox", {"ldp:inbox": "https://b.example/ldp/"}, "https://b.example/ldp/"),
    ("ldp:inbox as a node", {"ldp:inbox": {"@id": "https://b.example/n/"}},
     "https://b.example/n/"),
    ("expanded IRI", {"http://www.w3.org/ns/ldp#inbox": [{"@id": "https://b.example/x/"}]},
     "https://b.example/x/"),
    ("relative", {"inbox": "../inbox/"}, "https://b.example/users/inbox/"),
    ("inbox wins over ldp:inbox", {"ldp:inbox": "https://b.example/l/", "inbox":
                                   "https://b.example/i/"}, "https://b.example/i/"),
    ("not http(s)", {"inbox": "ftp://b.example/inbox/"}, None),
    ("a fragment, which enqueue() refuses", {"inbox": "https://b.example/inbox/#main"}, None),
    ("a NUL, which enqueue() refuses", {"inbox": "https://b.example/in\x00box/"}, None),
    ("empty", {"inbox": ""}, None),
    ("none", {"@id": "https://b.example/users/7/"}, None),
    ("not an object", ["https://b.example/inbox/"], None),
]


@pytest.mark.parametrize("name,doc,expected", DOCUMENTS, ids=[d[0] for d in DOCUMENTS])
def test_inbox_from_document(name, doc, expected):
    assert inbox_from_document(doc, "https://b.example/users/7/") == expected


def test_fallback_is_origin_plus_inbox():
    assert discovery.fallback_inbox("https://B.example:443/users/7/?x#y") == \
        "https://b.example/inbox/"
    assert discovery.fallback_inbox("http://b.example:8000/u/1/") == \
        "http://b.example:8000/inbox/"


def test_discovered_once_then_cached(receiver):
    url = receiver.document("/users/7/", {"@id": "x", "inbox": receiver.url("/b/inbox/")})
    assert discovery.cached_inbox(url) is None
    assert discovery.inbox_for(url) == receiver.url("/b/inbox/")
    assert discovery.inbox_for(url) == receiver.url("/b/inbox/")
    assert receiver.fetched == ["/users/7/"]
    assert discovery.cached_inbox(url) == receiver.url("/b/inbox/")


def test_cache_lifetime(receiver, settings):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "DISCOVERY_TTL": 1}
    url = receiver.document("/users/7/", {"inbox": receiver.url("/b/inbox/")})
    discovery.inbox_for(url)
    assert wait_until(lambda: discovery.cached_inbox(url) is None, timeout=5)
    discovery.inbox_for(url)
    assert receiver.fetched == ["/users/7/", "/users/7/"]


@pytest.mark.parametrize("status,body", [
    (200, {"@id": "no inbox here"}),
    (404, None),
    (410, None),
    (401, None),
])
def test_fallback_when_the_document_names_no_inbox(receiver, status, body):
    url = receiver.document("/users/7/", body, status=status)
    assert discovery.inbox_for(url) == receiver.url("/inbox/")
    assert discovery.cached_inbox(url) == receiver.url("/inbox/")


def test_fallback_for_a_document_that_is_not_json_or_too_large(receiver, settings):
    url = receiver.document("/bad/", None)
    receiver.documents["/bad/"].body = b"<html>not json</html>"
    assert discovery.inbox_for(url) == receiver.url("/inbox/")
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "DISCOVERY_MAX_BYTES": 100}
    big = receiver.document("/big/", {"inbox": receiver.url("/b/inbox/"), "pad": "x" * 500})
    assert discovery.inbox_for(big) == receiver.url("/inbox/")


def test_redirect_is_followed(receiver):
    receiver.document("/moved/", None, status=301, headers={"Location": "/users/7/"})
    receiver.document("/users/7/", {"inbox": receiver.url("/b/inbox/")})
    assert discovery.inbox_for(receiver.url("/moved/")) == receiver.url("/b/inbox/")


def test_a_redirect_to_no_url_is_refused_for_good(receiver):
    url = receiver.document("/moved/", None, status=301, headers={"Location": "http://[::1/x"})
    with pytest.raises(DiscoveryFailed, match="unusable answer: Invalid IPv6 URL") as caught:
        discovery.inbox_for(url)
    assert not caught.value.retryable


@pytest.mark.parametrize("status", [500, 503, 429, 408])
def test_transient_failures_are_retryable_and_not_cached(receiver, status):
    url = receiver.document("/users/7/", None, status=status)
    with pytest.raises(DiscoveryFailed) as caught:
        discovery.inbox_for(url)
    assert caught.value.retryable
    assert discovery.cached_inbox(url) is None


@pytest.mark.parametrize("script", [trickle_head, trickle_body], ids=["head", "body"])
def test_a_document_served_a_byte_at_a_time_is_given_up_on_in_time(peer, settings, script):
    """Background discovery too: a server that sends a byte within every read timeout holds
    a discovery thread no longer than 3 x TIMEOUT in all."""
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "TIMEOUT": 0.3}
    slow = peer(script)
    started = time.monotonic()
    with pytest.raises(DiscoveryFailed, match="within 0.9 s") as failed:
        discovery.inbox_for(slow.url("/users/slow"))
    assert 0.9 <= time.monotonic() - started < 2.5
    assert failed.value.retryable
    assert slow.wait_for(lambda p: 0 in p.client_closed)


def test_connection_refused_is_retryable():
    with pytest.raises(DiscoveryFailed) as caught:
        discovery.inbox_for("http://127.0.0.1:9/users/7/")
    assert caught.value.retryable


def test_private_addresses_are_refused_unless_allowed(receiver, settings):
    url = receiver.document("/users/7/", {"inbox": receiver.url("/b/inbox/")})
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "ALLOW_PRIVATE_ADDRESSES": False}
    for target in (url, url.replace("127.0.0.1", "localhost"), "http://[::1]:9/x/",
                   "http://10.1.2.3/x/", "http://169.254.169.254/latest/"):
        with pytest.raises(DiscoveryFailed) as caught:
            discovery.inbox_for(target)
        assert not caught.value.retryable, target
        assert "refused" in str(caught.value)
    assert receiver.fetched == []


# -- through the queue: a discovery that fails is retried like a delivery ---------------

def test_discovery_happens_outside_the_request_then_the_cache_sends_directly(receiver, worker):
    b = Remote(receiver, "/b")
    bob = b.user(7)
    Circle.objects.create(name="one", owner=bob)
    assert PendingDiscovery.objects.count() == 1 and not ScheduledActivity.objects.exists()
    assert receiver.fetched == []  # nothing fetched while saving
    drain(worker)
    Circle.objects.create(name="two", owner=bob)
    assert ScheduledActivity.objects.count() == 1 and not PendingDiscovery.objects.exists()
    drain(worker)
    assert receiver.fetched == ["/b/users/7/"]
    assert [x["object"]["owner"]["@id"] for x in b.posts()] == [bob.urlid, bob.urlid]


def test_failed_discovery_is_retried_then_delivered(receiver, worker, settings):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "BACKOFF_FACTOR": 0.05}
    b = Remote(receiver, "/b")
    bob = b.user(7)
    doc = receiver.documents["/b/users/7/"]
    receiver.documents["/b/users/7/"] = type(doc)(status=503)
    circle = Circle.objects.create(name="one", owner=bob)
    assert dispatch.resolve_due() == {"enqueued": 0, "retrying": 1, "failed": 0}
    pending = PendingDiscovery.objects.get()
    assert pending.attempts == 1 and "HTTP 503" in pending.last_error
    assert pending.next_attempt_at > pending.created_at
    receiver.documents["/b/users/7/"] = doc
    assert wait_until(lambda: dispatch.resolve_due()["enqueued"] == 1, timeout=5)
    drain(worker)
    assert [x["object"]["@id"] for x in b.posts()] == [circle.urlid]


def test_failed_discovery_finally_fails_like_a_delivery(receiver, settings):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "BACKOFF_FACTOR": 0.01,
                               "MAX_ATTEMPTS": 2}
    failures = []

    def on_failed(sender, outcome, **kwargs):
        failures.append(outcome)

    signals.activity_failed.connect(on_failed)
    try:
        url = receiver.document("/b/users/7/", None, status=500)
        circle = Circle.objects.create(owner=Member.objects.create(urlid=url))
        assert dispatch.resolve_due()["retrying"] == 1
        assert wait_until(lambda: dispatch.resolve_due()["failed"] == 1, timeout=5)
    finally:
        signals.activity_failed.disconnect(on_failed)
    assert not PendingDiscovery.objects.exists()
    failed = Activity.objects.get()
    assert (failed.status, failed.activity_type, failed.object_id) == \
        ("failed", "Create", circle.urlid)
    assert failed.attempts == 2 and failed.host == receiver.base
    assert "inbox discovery" in failed.error and "HTTP 500" in failed.error
    assert len(failures) == 1 and failures[0].job.host == receiver.base


def test_refused_discovery_fails_at_once(receiver, settings):
    url = receiver.document("/b/users/7/", {"inbox": receiver.url("/b/inbox/")})
    Circle.objects.create(owner=Member.objects.create(urlid=url))
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "ALLOW_PRIVATE_ADDRESSES": False}
    assert dispatch.resolve_due()["failed"] == 1
    assert Activity.objects.get().status == "failed"


def test_deleting_the_object_makes_pending_discoveries_moot(receiver):
    url = receiver.document("/b/users/7/", {"inbox": receiver.url("/b/inbox/")})
    circle = Circle.objects.create(owner=Member.objects.create(urlid=url))
    circle.delete()
    assert not PendingDiscovery.objects.exists()
    dropped = Activity.objects.get()
    assert (dropped.status, dropped.activity_type) == ("dropped", "Create")
    assert receiver.fetched == []


def test_two_claimers_never_resolve_the_same_row(receiver):
    url = receiver.document("/b/users/7/", {"inbox": receiver.url("/b/inbox/")})
    Circle.objects.create(owner=Member.objects.create(urlid=url))
    PendingDiscovery.objects.update(claimed_by="someone-else",
                                    next_attempt_at="2999-01-01T00:00:00Z")
    assert dispatch.resolve_due() == {"enqueued": 0, "retrying": 0, "failed": 0}
    assert PendingDiscovery.objects.count() == 1


def test_the_worker_loop_resolves_in_the_background(receiver, worker):
    b = Remote(receiver, "/b")
    circle = Circle.objects.create(owner=b.user(7))
    w = worker()
    thread = threading.Thread(target=w.run_forever, daemon=True)
    thread.start()
    try:
        assert receiver.wait_for(lambda r: any(x.path == "/b/inbox/" for x in r.received),
                                 timeout=10)
    finally:
        w.stop()
        thread.join(10)
    assert b.posts()[0]["object"]["@id"] == circle.urlid
