"""Against a real fediverse server: Fedify (tests/support/fedify/peer.mjs), run by Node.

Fedify signs and verifies both schemes with its own code, checks that a key's owner is
the activity's actor, fetches actor documents as JSON-LD and publishes its keys both as
``publicKey`` and as FEP-521a ``Multikey`` entries. ``scripts/test`` installs it (Node 22
and ``@fedify/fedify`` from the npm registry, pinned in tests/support/fedify/) and sets
``AQ_FEDIFY_DIR``; without that directory these tests are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.db import transaction

from activity_queue import enqueue
from activity_queue.models import Activity, Host
from activity_queue.net.addresses import origin
from activity_queue.net.signing import CAVAGE, RFC9421, other

from ..support.actors import KEYS, serve_users, signing_site
from ..support.keys import pem
from ..support.processes import free_port

PEER = Path(__file__).resolve().parent.parent / "support" / "fedify" / "peer.mjs"
FEDIFY_DIR = os.environ.get("AQ_FEDIFY_DIR")

pytestmark = [
    pytest.mark.skipif(not FEDIFY_DIR, reason="AQ_FEDIFY_DIR is not set (scripts/test "
                       "installs Fedify and sets it)"),
    pytest.mark.usefixtures("clean_cache"),
]

class Fedify:
    def __init__(self, workdir: Path, *options: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        script = workdir / "peer.mjs"
        shutil.copy(PEER, script)  # Node resolves @fedify/fedify from the script's folder
        self.proc = subprocess.Popen(
            [str(workdir / "node_modules" / ".bin" / "node"), str(script), str(self.port),
             *options],
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()  # "ready", or the error it died of
        if line.strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"the Fedify peer did not start: {line}{self.proc.stdout.read()}")

    def received(self) -> list[dict]:
        return requests.get(self.base + "/received", timeout=10).json()

    def send(self, to: str, inbox: str, note: str) -> requests.Response:
        return requests.post(self.base + "/send", json={"to": to, "inbox": inbox, "note": note},
                             timeout=30)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def fedify():
    peer = Fedify(Path(FEDIFY_DIR))
    yield peer
    peer.stop()


@pytest.fixture
def people():
    """The site's user carol, with her own key."""
    server = serve_users(carol=3)
    yield server
    KEYS.clear()
    server.stop()


@pytest.fixture
def site(live_server, settings):
    return signing_site(live_server, settings)


def note_from(actor: str, n: int) -> dict:
    return {"@context": "https://www.w3.org/ns/activitystreams",
            "id": f"{actor}/activities/{n}", "type": "Create", "actor": actor,
            "object": {"id": f"{actor}/notes/{n}", "type": "Note", "attributedTo": actor,
                       "content": "from activity_queue"}}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scheme", [CAVAGE, RFC9421])
@pytest.mark.parametrize("who", ["user", "instance actor"])
def test_fedify_accepts_our_signed_deliveries(site, people, fedify, worker, settings, scheme,
                                              who):
    """Signed by the activity's actor (a user's own key, or the instance actor's), in the
    scheme asked for first: Fedify's inbox verifies it at once, with no second knock."""
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "SIGNATURE_SCHEME": scheme}
    actor = people.url("/users/carol") if who == "user" else site + "/activity-queue/actor/"
    activity = note_from(actor.rstrip("/"), 1) | {"actor": actor}
    with transaction.atomic():
        enqueue(activity, to=fedify.base + "/inbox")
    report = worker().run_once(timeout=30)
    assert report.sent == 1, report.outcomes
    assert fedify.received() == [{"id": activity["id"], "type": "Create", "actor": actor}]
    knocked_twice = Host.objects.filter(host=origin(fedify.base), signature_scheme=other(scheme))
    assert not knocked_twice.exists()


@pytest.mark.django_db(transaction=True)
def test_an_ed25519_site_key_reaches_fedify_at_the_first_knock(site, fedify, worker, settings):
    """Fedify verifies Ed25519 only in RFC 9421 (a draft-cavage one makes it answer 500,
    which is no cue to knock again): with an Ed25519 key, RFC 9421 goes first."""
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE,
                               "SIGNING_KEY": pem(ed25519.Ed25519PrivateKey.generate())}
    actor = site + "/activity-queue/actor/"
    with transaction.atomic():
        enqueue(note_from(actor.rstrip("/"), 3) | {"actor": actor}, to=fedify.base + "/inbox")
    report = worker().run_once(timeout=30)
    assert report.sent == 1, report.outcomes
    assert [a["actor"] for a in fedify.received()] == [actor]
    assert not Host.objects.filter(host=origin(fedify.base), signature_scheme=CAVAGE).exists()


@pytest.mark.django_db(transaction=True)
def test_fedify_refuses_a_user_activity_signed_by_the_site_key(site, people, fedify, worker,
                                                                 settings):
    """The check Mastodon-family servers make, made by another implementation: without
    ACTOR_KEYS the owner of the signing key is not the actor."""
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "ACTOR_KEYS": None}
    with transaction.atomic():
        enqueue(note_from(people.url("/users/carol"), 2), to=fedify.base + "/inbox")
    report = worker().run_once(timeout=30)
    assert report.failed == 1, report.outcomes
    assert "401" in report.outcomes[0].error
    assert fedify.received() == []


@pytest.mark.django_db(transaction=True)
def test_our_inbox_accepts_what_fedify_sends(site, fedify, applied, settings):
    """Fedify signs RFC 9421 first, with a key it publishes twice (publicKey and a
    Multikey of the same id), and adds its own object proofs; the inbox verifies the
    signature, fetches the key from Fedify and applies the activity."""
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "INBOX_REQUIRE_SIGNATURE": True}
    note = fedify.base + "/notes/1"
    answer = fedify.send(site + "/activity-queue/actor/", site + "/inbox/", note)
    assert answer.status_code == 200, answer.text
    [activity] = applied
    assert activity["type"] == "Create"
    assert activity["actor"] == fedify.base + "/users/alice"
    assert activity["object"]["id"] == note
    logged = Activity.objects.inbound().get()
    assert logged.activity_id == note + "#create"


@pytest.mark.django_db(transaction=True)
def test_our_key_fetch_is_signed_as_fedify_requires(site, applied, settings):
    """Fedify in authorized-fetch mode serves its actor only to a signed GET by an actor it
    can fetch in turn: our inbox gets the sender's key with a GET signed by our instance
    actor, which Fedify verifies against the key our site publishes."""
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "INBOX_REQUIRE_SIGNATURE": True}
    peer = Fedify(Path(FEDIFY_DIR), "authorized-fetch")
    try:
        unsigned = requests.get(peer.base + "/users/alice", timeout=10,
                                headers={"Accept": "application/activity+json"})
        assert unsigned.status_code == 401
        answer = peer.send(site + "/activity-queue/actor/", site + "/inbox/",
                           peer.base + "/notes/2")
        assert answer.status_code == 200, answer.text
        [activity] = applied
        assert activity["actor"] == peer.base + "/users/alice"
    finally:
        peer.stop()
