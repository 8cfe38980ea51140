"""Double-knocking: a delivery signed with one scheme and refused with a 401 goes again at
once signed with the other, within the same attempt; the host's health row remembers the
scheme it accepted, and every later delivery starts with it."""

import asyncio
import threading
from functools import lru_cache

import httpsig
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.db import transaction
from http_message_signatures import HTTPMessageVerifier, MappingKeyResolver, algorithms

from activity_queue import enqueue
from activity_queue.models import Activity, Host, ScheduledActivity
from activity_queue.net.signing import NAMES, SCHEMES, Signer
from activity_queue.sending import hosts
from activity_queue.sending.signing_threads import SigningThreads

from ..support.receiver import Rule

KEY_ID = "https://a.example/actor#main-key"
ACTIVITY = {"@context": "https://www.w3.org/ns/activitystreams", "type": "Create",
            "object": {"@id": "https://a.example/notes/1"}}


@lru_cache(maxsize=1)
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem() -> str:
    return key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()).decode()


class Got:
    def __init__(self, url, received):
        self.method, self.url, self.headers = "POST", url, received.headers


def rfc9421_only(receiver):
    """An inbox that checks RFC 9421 signatures with http-message-signatures, and only them."""
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithms.RSA_V1_5_SHA256,
        key_resolver=MappingKeyResolver(public_keys={KEY_ID: key().public_key()},
                                        private_keys={}))

    def accept(got) -> bool:
        try:
            verifier.verify(Got(receiver.url(got.path), got), body=got.body,
                            require_components=("@method", "@target-uri", "content-digest"))
        except Exception:
            return False
        return True

    return accept


def cavage_only(got) -> bool:
    """An inbox that checks draft-cavage signatures with httpsig, and only them."""
    if "Signature-Input" in got.headers:
        return False
    public = key().public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        return httpsig.HeaderVerifier(
            got.headers, public, required_headers=["(request-target)", "host", "date", "digest"],
            method="POST", path=got.path, sign_header="signature").verify()
    except Exception:
        return False


def signed(settings, first):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "SIGNING_KEY": pem(),
                               "SIGNING_KEY_ID": KEY_ID, "SIGNATURE_SCHEME": first}


def deliver(worker, receiver, summary):
    with transaction.atomic():
        enqueue({**ACTIVITY, "summary": summary}, to=receiver.url("/inbox/"))
    return worker().run_once(timeout=20)


def scheme_of(received) -> str:
    return "rfc9421" if "Signature-Input" in received.headers else "cavage"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("first", "accepted"), [("cavage", "rfc9421"), ("rfc9421", "cavage")])
def test_a_refused_scheme_is_followed_by_the_other_and_remembered(receiver, worker, settings,
                                                                  first, accepted):
    signed(settings, first)
    check = rfc9421_only(receiver) if accepted == "rfc9421" else cavage_only
    receiver.rules["/inbox/"] = Rule(status=202, accept=check)
    report = deliver(worker, receiver, "one")
    assert report.sent == 1, report.outcomes
    assert [scheme_of(r) for r in receiver.received] == [first, accepted]
    row = Activity.objects.outbound().get()
    assert (row.status, row.attempts, row.status_code) == ("sent", 1, 202)
    assert Host.objects.get(host=receiver.base).signature_scheme == accepted

    # Another worker (another process, as far as it knows) starts with the host's scheme.
    report = deliver(worker, receiver, "two")
    assert report.sent == 1
    assert [scheme_of(r) for r in receiver.received] == [first, accepted, accepted]
    assert ScheduledActivity.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_host_that_refuses_both_schemes_fails_once(receiver, worker, settings):
    signed(settings, "cavage")
    receiver.rules["/inbox/"] = Rule(status=202, accept=lambda got: False)
    report = deliver(worker, receiver, "one")
    assert report.failed == 1
    assert [scheme_of(r) for r in receiver.received] == ["cavage", "rfc9421"]
    row = Activity.objects.outbound().get()
    assert (row.status, row.attempts, row.status_code) == ("failed", 1, 401)
    assert row.error == "HTTP 401: refused both draft-cavage and RFC 9421 signatures"
    assert not Host.objects.exclude(signature_scheme="").exists()


@pytest.mark.django_db(transaction=True)
def test_unsigned_deliveries_do_not_knock(receiver, worker):
    receiver.rules["/inbox/"] = Rule(status=401)
    report = deliver(worker, receiver, "one")
    assert report.failed == 1 and len(receiver.received) == 1


@pytest.mark.django_db(transaction=True)
def test_closing_a_circuit_keeps_the_scheme(receiver, worker, settings):
    """A host's health row also remembers its scheme: a success clears its troubles only."""
    signed(settings, "cavage")
    Host.objects.create(host=receiver.base, signature_scheme="rfc9421", consecutive_failures=2,
                        last_error="HTTP 503")
    receiver.rules["/inbox/"] = Rule(status=202, accept=rfc9421_only(receiver))
    assert deliver(worker, receiver, "one").sent == 1
    assert [scheme_of(r) for r in receiver.received] == ["rfc9421"]
    health = Host.objects.get(host=receiver.base)
    assert (health.signature_scheme, health.consecutive_failures, health.last_error) == (
        "rfc9421", 0, "")
    assert hosts.close_circuits([receiver.base]) == 0  # nothing troubled: one SELECT


def test_the_schemes_match_the_model():
    field = Host._meta.get_field("signature_scheme")
    assert [value for value, _ in field.choices] == list(SCHEMES)
    assert [label for _, label in field.choices] == [NAMES[s] for s in SCHEMES]


class Recording(Signer):
    """A signer that notes the thread each signature is made in."""

    __slots__ = ("threads",)

    def __init__(self, signer: Signer):
        super().__init__(signer.private_key, signer.key_id)
        self.threads = []

    def __call__(self, *args):
        self.threads.append(threading.current_thread().name)
        return super().__call__(*args)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("threads", "where"), [(None, "activity-queue-sign-"),
                                                (0, "activity-queue-http")])
def test_signatures_are_made_off_the_event_loop(receiver, worker, settings, threads, where):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "SIGNING_THREADS": threads}
    signer = Recording(Signer(key(), KEY_ID))
    with transaction.atomic():
        for i in range(6):
            enqueue({**ACTIVITY, "object": {"@id": f"https://a.example/notes/{i}"}},
                    to=receiver.url("/inbox/"))
    assert worker(signer=signer).run_once(timeout=20).sent == 6
    assert len(signer.threads) == 6
    assert all(name.startswith(where) for name in signer.threads), signer.threads
    assert all("Signature" in r.headers for r in receiver.received)


def test_signing_threads_hand_back_results_and_errors():
    async def main():
        pool = SigningThreads(asyncio.get_running_loop(), 2)
        try:
            results = await asyncio.gather(*(pool.sign(lambda i: i * i, i) for i in range(50)))
            assert results == [i * i for i in range(50)]
            with pytest.raises(ValueError, match="no key"):
                await pool.sign(lambda: (_ for _ in ()).throw(ValueError("no key")))
        finally:
            pool.close()

    asyncio.run(main())
