"""Both signature schemes against independent implementations, in both directions.

``httpsig`` stands for other draft-cavage servers, ``http-message-signatures`` for
RFC 9421 ones: what we sign, they verify (from the request our worker sent to a
loopback receiver), and what they sign, our live inbox accepts.
"""

import base64
import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import httpsig
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.db import transaction
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    MappingKeyResolver,
    algorithms,
)

from activity_queue import enqueue
from activity_queue.models import Activity
from activity_queue.net import rfc9421
from activity_queue.net.signatures import (
    SignatureError,
    http_date,
    multibase_public_key,
    multibase_to_pem,
    public_pem,
)
from activity_queue.net.signing import CAVAGE, RFC9421, Signer, first_scheme

from ..support.keys import ACTIVITY, BODY, LD, pem, rsa_key

pytestmark = pytest.mark.usefixtures("clean_cache")

KEY_ID = "https://a.example/actor#main-key"


@lru_cache(maxsize=2)
def ed_key(n: int) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def lower(headers):
    return {k.lower(): v for k, v in headers.items()}


class Request:
    """A received request as http-message-signatures reads it."""

    def __init__(self, method, url, headers):
        self.method, self.url, self.headers = method, url, dict(headers)


def library_verifies(got, url, public_key, algorithm=algorithms.RSA_V1_5_SHA256):
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithm,
        key_resolver=MappingKeyResolver(public_keys={KEY_ID: public_key}, private_keys={}))
    [result] = verifier.verify(Request("POST", url, got.headers), body=got.body,
                               require_components=("@method", "@target-uri", "content-digest"))
    return result


# -- what we sign, they verify ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scheme", [CAVAGE, RFC9421])
def test_our_deliveries_verify_with_the_independent_libraries(receiver, worker, settings,
                                                             scheme):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "SIGNING_KEY": pem(rsa_key(0)),
                               "SIGNING_KEY_ID": KEY_ID, "SIGNATURE_SCHEME": scheme}
    with transaction.atomic():
        enqueue(dict(ACTIVITY), to=receiver.url("/inbox/?x=1"))
    assert worker().run_once(timeout=20).sent == 1
    [got] = receiver.received
    digest = base64.b64encode(hashlib.sha256(got.body).digest()).decode()
    assert got.headers["Digest"] == "SHA-256=" + digest
    assert got.headers["Content-Digest"] == f"sha-256=:{digest}:"
    if scheme == CAVAGE:
        public = rsa_key(0).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        verifier = httpsig.HeaderVerifier(
            got.headers, public, required_headers=["(request-target)", "host", "date", "digest"],
            method="POST", path=got.path, sign_header="signature")
        assert verifier.verify()
        assert "Signature-Input" not in got.headers
    else:
        result = library_verifies(got, receiver.url(got.path), rsa_key(0).public_key())
        assert result.parameters["keyid"] == KEY_ID
        assert abs(result.parameters["created"] - time.time()) < 60
        assert got.headers["Signature-Input"].startswith(
            'sig1=("@method" "@target-uri" "content-digest");created=')


def test_an_ed25519_key_signs_both_schemes():
    signer = Signer(ed_key(0), KEY_ID)
    url = "https://b.example/inbox/"
    modern = signer("POST", url, {"Content-Type": LD}, BODY, RFC9421)
    result = HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={KEY_ID: ed_key(0).public_key()},
                                        private_keys={}),
    ).verify(Request("POST", url, modern), body=BODY)
    assert result[0].parameters["alg"] == "ed25519"
    cavage = signer("POST", url, {"Content-Type": LD}, BODY, CAVAGE)
    assert 'algorithm="hs2019"' in cavage["Signature"]


@pytest.mark.parametrize(("key", "configured", "first"), [
    (lambda: rsa_key(0), None, CAVAGE),
    (lambda: ed_key(0), None, RFC9421),
    (lambda: ed_key(0), CAVAGE, CAVAGE),
    (lambda: rsa_key(0), RFC9421, RFC9421),
    (lambda: None, None, CAVAGE),
])
def test_the_first_scheme_follows_the_key_unless_configured(key, configured, first):
    signer = Signer(key(), KEY_ID) if key() is not None else None
    assert first_scheme(signer, configured) == first


def test_multibase_keys_round_trip():
    value = multibase_public_key(ed_key(0))
    assert value.startswith("z6Mk")
    assert multibase_to_pem(value) == public_pem(ed_key(0))
    for bad, reason in (("u6Mk", "must start with z"), ("z0OIl", "not a base58btc digit"),
                        ("z" + "2" * 40, "not an Ed25519 public key")):
        with pytest.raises(SignatureError, match=reason):
            multibase_to_pem(bad)


def test_a_tampered_rfc9421_request_is_told_apart():
    headers = lower(rfc9421.sign_headers("POST", "https://b.example/inbox/", {}, BODY,
                                         key=rsa_key(0), key_id=KEY_ID))
    parsed = rfc9421.parse_input(headers)
    check = {"method": "POST", "headers": headers, "max_age": 3600}
    rfc9421.check_request(parsed, body=BODY, **check)
    with pytest.raises(SignatureError, match="Content-Digest does not match the body"):
        rfc9421.check_request(parsed, body=BODY + b" ", **check)
    with pytest.raises(SignatureError, match="created 7200 s away"):
        rfc9421.check_request(parsed, body=BODY, now=parsed.created + 7200, **check)
    sig = {"method": "POST", "headers": headers, "max_age": 3600}
    with pytest.raises(SignatureError, match="does not verify with the signer's key"):
        rfc9421.check_signature(parsed, url="https://b.example/inbox/",
                                public_key=rsa_key(1).public_key(), **sig)
    with pytest.raises(SignatureError, match="does not verify with the signer's key"):
        rfc9421.check_signature(parsed, url="https://b.example/other/",
                                public_key=rsa_key(0).public_key(), **sig)


@pytest.mark.parametrize(("headers", "reason"), [
    ({"signature-input": "sig1=(", "signature": "sig1=:AA==:"}, "Signature-Input header is "
                                                                 "malformed"),
    ({"signature-input": 'sig1=("@method");keyid="k"', "signature": "sig2=:AA==:"},
     "none of the Signature-Input labels"),
    ({"signature-input": 'sig1=("@method");created=1', "signature": "sig1=:AA==:"},
     "has no keyid"),
    ({"signature-input": 'sig1=("@method");keyid="k";alg="hmac-sha256"',
      "signature": "sig1=:AA==:"}, "unsupported signature algorithm"),
    ({"signature-input": 'sig1=("@method");keyid="k";created="1"', "signature": "sig1=:AA==:"},
     "created is not an integer"),
])
def test_malformed_rfc9421_headers(headers, reason):
    with pytest.raises(SignatureError, match=reason):
        rfc9421.parse_input(headers)


# -- what they sign, our inbox accepts -------------------------------------------------------


@pytest.fixture
def inbox(live_server, keys, settings, applied):
    """A live inbox that requires signatures; RSA key 0 at keys:/actor#main-key and Ed25519
    key 0 at keys:/actor#ed25519-key (FEP-521a)."""
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "INBOX_REQUIRE_SIGNATURE": True,
                               "INBOX_UNSIGNED": "trust",  # the signature is the point here
                               "SIGNING_KEY": None}
    actor = keys.url("/actor")
    keys.documents["/actor"] = (200, {
        "id": actor, "type": "Service", "inbox": keys.url("/inbox/"),
        "publicKey": {"id": actor + "#main-key", "owner": actor,
                      "publicKeyPem": public_pem(rsa_key(0))},
        "assertionMethod": [{"id": actor + "#ed25519-key", "type": "Multikey",
                             "controller": actor,
                             "publicKeyMultibase": multibase_public_key(ed_key(0))}],
    })
    return live_server.url + "/inbox/"


def post(url, body, headers):
    return requests.post(url, data=body, headers=headers, timeout=10)


def library_signed(url, body, key, key_id, algorithm=algorithms.RSA_V1_5_SHA256, **options):
    request = Request("POST", url, {"Content-Type": LD})
    HTTPMessageSigner(
        signature_algorithm=algorithm,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: key}),
    ).sign(request, key_id=key_id, covered_component_ids=("@method", "@target-uri"),
           body=body, label="sig", **options)
    return request.headers


def httpsig_signed(url, body, key, key_id, headers=("(request-target)", "host", "date",
                                                    "digest"), algorithm="rsa-sha256"):
    path = url.split("/", 3)[3]
    sent = {"Content-Type": LD, "Host": url.split("/")[2], "Date": http_date(),
            "Digest": "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()}
    signer = httpsig.HeaderSigner(key_id, pem(key).encode(), algorithm=algorithm,
                                  headers=list(headers), sign_header="signature")
    return dict(signer.sign(sent, method="POST", path="/" + path))


@pytest.mark.django_db(transaction=True)
def test_our_inbox_accepts_rfc9421_from_the_library(inbox, keys, applied):
    response = post(inbox, BODY, library_signed(inbox, BODY, rsa_key(0),
                                                keys.url("/actor#main-key")))
    assert response.status_code == 201, response.content
    assert applied == [ACTIVITY]


@pytest.mark.django_db(transaction=True)
def test_our_inbox_accepts_draft_cavage_from_httpsig(inbox, keys, applied):
    response = post(inbox, BODY, httpsig_signed(inbox, BODY, rsa_key(0),
                                                keys.url("/actor#main-key")))
    assert response.status_code == 201, response.content
    assert applied == [ACTIVITY]


@pytest.mark.django_db(transaction=True)
def test_our_inbox_verifies_ed25519_keys_of_fep_521a(inbox, keys, applied):
    key_id = keys.url("/actor#ed25519-key")
    response = post(inbox, BODY, library_signed(inbox, BODY, ed_key(0), key_id,
                                                algorithms.ED25519))
    assert response.status_code == 201, response.content
    other = json.dumps({**ACTIVITY, "summary": "cavage"}).encode()
    headers = Signer(ed_key(0), key_id)("POST", inbox, {"Content-Type": LD}, other)
    assert post(inbox, other, headers).status_code == 201
    forged = Signer(ed_key(1), key_id)("POST", inbox, {"Content-Type": LD}, BODY, RFC9421)
    refused = post(inbox, json.dumps({**ACTIVITY, "summary": "x"}).encode(), forged)
    assert refused.status_code == 401
    assert len(applied) == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("make", "reason"), [
    (lambda url, key_id: ({**library_signed(url, BODY, rsa_key(0), key_id)}, BODY + b" "),
     "Content-Digest does not match the body"),
    (lambda url, key_id: (library_signed(url, BODY, rsa_key(1), key_id), BODY),
     "does not verify with the signer's key"),
    (lambda url, key_id: (library_signed(url, BODY, rsa_key(0), key_id,
                                         created=datetime.now(UTC) - timedelta(hours=2)), BODY),
     "away from now"),
    (lambda url, key_id: (httpsig_signed(url, BODY, rsa_key(0), key_id,
                                         headers=("(request-target)", "date", "digest")), BODY),
     "does not cover host"),
    (lambda url, key_id: (httpsig_signed(url, BODY, rsa_key(0), key_id,
                                         headers=("(request-target)", "host", "date")), BODY),
     "does not cover digest"),
    (lambda url, key_id: (httpsig_signed(url, BODY, rsa_key(0), key_id), BODY + b" "),
     "Digest does not match the body"),
], ids=["rfc9421-tampered", "rfc9421-wrong-key", "rfc9421-stale", "cavage-no-host",
        "cavage-no-digest", "cavage-tampered"])
def test_our_inbox_refuses_with_a_reason(inbox, keys, applied, make, reason):
    headers, body = make(inbox, keys.url("/actor#main-key"))
    response = post(inbox, body, headers)
    assert response.status_code == 401, response.content
    assert reason in response.json()["detail"]
    assert not applied


def cavage_with(url, body, key, key_id, names, params, date=None):
    """A draft-cavage signature as Mastodon-family servers send it, with ``(created)``."""
    headers = {"Content-Type": LD, "Host": url.split("/")[2],
               "Digest": "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()}
    if date is not None:
        headers["Date"] = http_date(date)
    lines = []
    for name in names:
        if name == "(request-target)":
            lines.append("(request-target): post /" + url.split("/", 3)[3])
        elif name in ("(created)", "(expires)"):
            lines.append(f"{name}: {params[name[1:-1]]}")
        else:
            lines.append(f"{name}: {headers[name.title()]}")
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    signature = key.sign("\n".join(lines).encode(), padding.PKCS1v15(), hashes.SHA256())
    extra = "".join(f",{k}={v}" for k, v in params.items())
    headers["Signature"] = (f'keyId="{key_id}",algorithm="hs2019"{extra},'
                            f'headers="{" ".join(names)}",'
                            f'signature="{base64.b64encode(signature).decode()}"')
    return headers


@pytest.mark.django_db(transaction=True)
def test_our_inbox_is_as_lenient_as_mastodon(inbox, keys, applied):
    """hs2019 with (created) and (expires) and no Date; a Date 50 minutes off."""
    key_id = keys.url("/actor#main-key")
    now = int(time.time())
    names = ("(request-target)", "host", "(created)", "(expires)", "digest")
    headers = cavage_with(inbox, BODY, rsa_key(0), key_id, names,
                          {"created": now - 10, "expires": now + 300})
    response = post(inbox, BODY, headers)
    assert response.status_code == 201, response.content
    skewed = json.dumps({**ACTIVITY, "summary": "skewed"}).encode()
    headers = cavage_with(inbox, skewed, rsa_key(0), key_id,
                          ("(request-target)", "host", "date", "digest"), {},
                          date=datetime.now(UTC) - timedelta(minutes=50))
    assert post(inbox, skewed, headers).status_code == 201
    stale = cavage_with(inbox, BODY, rsa_key(0), key_id, names,
                        {"created": now - 7200, "expires": now - 7000})
    response = post(inbox, BODY, stale)
    assert response.status_code == 401
    assert "created is not within 3600 s of now" in response.json()["detail"]
    assert len(applied) == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scheme", [CAVAGE, RFC9421])
def test_an_ed25519_site_key_is_published_and_verified(live_server, worker, settings, applied,
                                                       scheme):
    """Our worker signs with an Ed25519 SIGNING_KEY; our inbox fetches the published
    Multikey (FEP-521a's publicKeyMultibase) and verifies it, in either scheme."""
    settings.SITE_URL = live_server.url
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "INBOX_REQUIRE_SIGNATURE": True,
                               "INBOX_UNSIGNED": "trust",  # the signature is the point here
                               "SIGNING_KEY": pem(ed_key(0)), "SIGNATURE_SCHEME": scheme}
    document = requests.get(live_server.url + "/activity-queue/key/", timeout=5).json()
    assert document["type"] == "Multikey"
    assert document["controller"] == live_server.url + "/activity-queue/actor/"
    assert document["publicKeyMultibase"] == multibase_public_key(ed_key(0))
    with transaction.atomic():
        enqueue(dict(ACTIVITY), to=live_server.url + "/inbox/")
    report = worker().run_once(timeout=20)
    assert report.sent == 1, report.outcomes
    assert Activity.objects.outbound().get().status_code == 201
    assert Activity.objects.inbound().count() == 1 and len(applied) == 1
