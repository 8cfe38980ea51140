"""Keys bound to actors: each delivery is signed by its activity's actor's key (ACTOR_KEYS),
else by the instance actor's, and reaches a receiver that checks key owner == actor."""


import pytest
from django.core.cache import cache
from django.db import transaction

from activity_queue import enqueue
from activity_queue.conf import get_config
from activity_queue.models import Activity, ScheduledActivity
from activity_queue.net.signing import Signer, Unusable, load_signer
from activity_queue.sending.actor_keys import ActorKeys, actor_of
from activity_queue.sending.jobs import Job

from ..support.actors import ACTOR_KEYS, CALLS, KEYS, serve_users, signing_site
from ..support.keys import pem, rsa_key
from ..support.strict_peer import StrictPeer


def broken_key(actor_id: str):
    raise RuntimeError("the key store is down")


def odd_key(actor_id: str):
    return "-----BEGIN PRIVATE KEY-----"


def unusable_key(actor_id: str):
    return ("not a key", actor_id + "#main-key")


def note(actor, n: int = 1) -> dict:
    return {"@context": "https://www.w3.org/ns/activitystreams", "type": "Create",
            "actor": actor, "object": {"id": f"https://a.example/notes/{n}", "type": "Note"}}


@pytest.fixture(autouse=True)
def clean():
    cache.clear()
    KEYS.clear()
    CALLS.clear()
    yield
    KEYS.clear()


@pytest.fixture
def peer():
    server = StrictPeer().start()
    yield server
    server.stop()


@pytest.fixture
def people():
    """The site's users' actor documents, each with its own key."""
    server = serve_users(alice=1, bob=2)
    yield server
    server.stop()


@pytest.fixture
def site(live_server, settings):
    """This site at live_server: its instance actor owns the site key."""
    return signing_site(live_server, settings)


@pytest.mark.django_db(transaction=True)
def test_each_activity_is_signed_by_its_actors_key(site, people, peer, worker):
    alice, bob = people.url("/users/alice"), people.url("/users/bob")
    instance = site + "/activity-queue/actor/"
    with transaction.atomic():
        for n, actor in enumerate((alice, {"id": bob, "type": "Person"}, alice, instance)):
            enqueue(note(actor, n), to=peer.url("/inbox/"))
    report = worker().run_once(timeout=30)
    assert report.sent == 4, report.outcomes
    seen = sorted((s.status, s.owner, s.key_id) for s in peer.posts())
    assert seen == sorted([
        (202, alice, alice + "#main-key"), (202, alice, alice + "#main-key"),
        (202, bob, bob + "#main-key"),
        (202, instance, instance + "#main-key"),
    ])
    assert sorted(CALLS) == sorted([alice, bob, instance]), "one call per actor"
    assert Activity.objects.outbound().filter(status="sent").count() == 4


@pytest.mark.django_db(transaction=True)
def test_without_actor_keys_the_strict_receiver_refuses(site, people, peer, worker, settings):
    """The same delivery signed by the site key: its owner is not the actor, so 401, and
    401 again when the other signature scheme is tried."""
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "ACTOR_KEYS": None}
    alice = people.url("/users/alice")
    with transaction.atomic():
        enqueue(note(alice), to=peer.url("/inbox/"))
    report = worker().run_once(timeout=30)
    assert report.failed == 1, report.outcomes
    cavage, rfc9421 = peer.posts()
    assert (cavage.status, cavage.reason) == (
        401, f"the key's owner {site}/activity-queue/actor/ is not the actor {alice}")
    assert rfc9421.status == 401, rfc9421.reason


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("lookup", "error"), [
    ("broken_key", "ACTIVITY_QUEUE['ACTOR_KEYS'] failed for {alice}: RuntimeError: the key "
     "store is down"),
    ("odd_key", "ACTIVITY_QUEUE['ACTOR_KEYS'] answered str for {alice}, not "
     "(private_key_pem, key_id) or None"),
    ("unusable_key", "the key of {alice} from ACTOR_KEYS cannot be used: cannot read the key "
     "file 'not a key'"),
    ("missing_function", "ACTIVITY_QUEUE['ACTOR_KEYS'] cannot be imported: Module "
     '"tests.sending.test_actor_keys" does not define a "missing_function" attribute/class'),
    ("tests.support.failing_module.actor_key", "ACTIVITY_QUEUE['ACTOR_KEYS'] cannot be "
     "imported: RuntimeError: the module is broken"),
])
def test_an_actor_key_that_cannot_be_had_holds_the_delivery_back(
        site, people, peer, worker, settings, lookup, error):
    """Never sent under the site key instead (the receiver would refuse it for good)."""
    path = lookup if "." in lookup else f"{__name__}.{lookup}"
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "ACTOR_KEYS": path}
    alice = people.url("/users/alice")
    with transaction.atomic():
        enqueue(note(alice), to=peer.url("/inbox/"))
    report = worker().run_once(timeout=30)
    assert report.retried == 1 and peer.posts() == []
    row = ScheduledActivity.objects.get()
    assert "SigningUnavailable" in row.last_error
    assert error.format(alice=alice) in row.last_error


def job(body: bytes) -> Job:
    return Job(1, "https://b.example/inbox", "https://b.example", 1, False, "Create", "", "",
               body)


@pytest.mark.django_db
def test_keys_are_loaded_once(settings):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "ACTOR_KEYS": ACTOR_KEYS}
    KEYS["https://a.example/users/c"] = (pem(rsa_key(3)), "https://a.example/users/c#k")
    load_signer.cache_clear()
    jobs = [job(b'{"actor": "https://a.example/users/c", "n": %d}' % n) for n in range(3)]
    keys = ActorKeys(get_config())
    keys.assign(jobs)
    ActorKeys(get_config()).assign([job(b'{"actor": "https://a.example/users/c"}')])
    assert {type(j.signer) for j in jobs} == {Signer}
    assert jobs[0].signer is jobs[2].signer
    assert jobs[0].signer.key_id == "https://a.example/users/c#k"
    info = load_signer.cache_info()
    assert (info.misses, info.hits) == (1, 3), "parsed once, for two workers"
    assert CALLS == ["https://a.example/users/c"] * 2, "one call per worker"


@pytest.mark.django_db
def test_no_actor_keys_means_no_per_job_signer(settings):
    jobs = [job(b'{"actor": "https://a.example/users/c"}')]
    ActorKeys(get_config()).assign(jobs)
    assert jobs[0].signer is None and CALLS == []


@pytest.mark.parametrize(("activity", "actor"), [
    ({"actor": "https://a.example/u/1"}, "https://a.example/u/1"),
    ({"actor": {"id": "https://a.example/u/1", "type": "Person"}}, "https://a.example/u/1"),
    ({"actor": {"@id": "https://a.example/u/1"}}, "https://a.example/u/1"),
    ({"actor": ["https://a.example/u/1"]}, "https://a.example/u/1"),
    ({"actor": {"type": "Service", "name": "Backlinks Service"}}, None),
    ({"actor": ["https://a.example/u/1", "https://a.example/u/2"]}, None),
    ({"actor": ""}, None),
    ({"actor": 7}, None),
    ({}, None),
    ([], None),
])
def test_actor_of(activity, actor):
    assert actor_of(activity) == actor


def test_refusal_says_why():
    with pytest.raises(Exception, match="no key"):
        Unusable("no key")("POST", "https://b.example/inbox", {}, b"")


@pytest.mark.django_db
def test_a_rotated_key_is_picked_up_once_the_answer_expires(settings):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "ACTOR_KEYS": ACTOR_KEYS}
    actor = "https://a.example/users/d"
    KEYS[actor] = (pem(rsa_key(1)), actor + "#old")
    keys = ActorKeys(get_config())
    assert keys.signer_for(actor).key_id == actor + "#old"
    KEYS[actor] = (pem(rsa_key(2)), actor + "#new")
    assert keys.signer_for(actor).key_id == actor + "#old", "reused within ANSWER_TTL"
    keys._answers[actor] = (0.0, keys._answers[actor][1])  # its time is up
    assert keys.signer_for(actor).key_id == actor + "#new"
