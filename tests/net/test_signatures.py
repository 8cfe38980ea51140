"""HTTP Signatures: the pure parts as tables, then sign → verify over real HTTP."""

import base64
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from django.core.checks import run_checks
from django.db import transaction
from django.test import override_settings

from activity_queue import enqueue
from activity_queue.inbox.keys import KeyUnavailable, key_from_document, remote_key
from activity_queue.models import Activity, ScheduledActivity
from activity_queue.net.signatures import (
    ParsedSignature,
    SignatureError,
    check_date,
    check_digest,
    check_request,
    load_private_key,
    parse_signature,
    public_pem,
    sign_headers,
    verify,
)
from activity_queue.net.signing import Signer, sign_get

from ..support.keys import ACTIVITY, BODY, LD, pem, rsa_key

pytestmark = pytest.mark.usefixtures("clean_cache")



def lower(headers):
    return {k.lower(): v for k, v in headers.items()}


# -- pure parts ------------------------------------------------------------------------


def test_sign_then_verify():
    key = rsa_key(0)
    url = "https://b.example:8443/inbox/?x=1"
    headers = sign_headers("POST", url, {"Content-Type": LD}, BODY, key=key,
                           key_id="https://a.example/actor#main-key")
    assert headers["Host"] == "b.example:8443"
    digest = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    assert headers["Digest"] == "SHA-256=" + digest
    assert headers["Date"].endswith(" GMT")
    parsed = parse_signature(headers["Signature"])
    assert parsed.key_id == "https://a.example/actor#main-key"
    assert parsed.headers == ("(request-target)", "host", "date", "digest")
    args = {"method": "POST", "target_path": "/inbox/?x=1", "headers": lower(headers),
            "max_age": 300}
    verify(parsed, body=BODY, public_key=key.public_key(), **args)
    with pytest.raises(SignatureError, match="Digest does not match"):
        verify(parsed, body=BODY + b" ", public_key=key.public_key(), **args)
    with pytest.raises(SignatureError, match="does not verify"):
        verify(parsed, body=BODY, public_key=rsa_key(1).public_key(), **args)
    with pytest.raises(SignatureError, match="does not verify"):
        verify(parsed, body=BODY, public_key=key.public_key(), **{**args, "target_path": "/x/"})


@pytest.mark.parametrize(("header", "reason"), [
    ("", "no keyId"),
    ('keyId="k"', "no signature"),
    ('keyId="k",signature="%%%"', "not valid base64"),
    ('keyId="k",algorithm="hmac-sha256",signature="AA=="', "unsupported signature algorithm"),
    ('keyId=k,signature="AA=="', "malformed"),
    ('keyId="k" signature="AA=="', "malformed"),
    ('keyId="k",signature="AA==' + "A" * 9000 + '"', "too long"),
])
def test_malformed_signature_headers(header, reason):
    with pytest.raises(SignatureError, match=reason):
        parse_signature(header)


def test_signature_header_variants():
    parsed = parse_signature('Signature keyId="k", algorithm="hs2019", signature="AA=="')
    assert (parsed.key_id, parsed.algorithm, parsed.headers) == ("k", "hs2019", ("date",))


@pytest.mark.parametrize(("value", "reason"), [
    (None, "missing"),
    ("MD5=abc", "no SHA-256 digest"),
    ("SHA-256=***", "not valid base64"),
    ("SHA-256=" + base64.b64encode(hashlib.sha256(b"other").digest()).decode(), "does not match"),
])
def test_bad_digests(value, reason):
    with pytest.raises(SignatureError, match=reason):
        check_digest(value, BODY)


def test_good_digests():
    check_digest("sha-256=" + base64.b64encode(hashlib.sha256(BODY).digest()).decode(), BODY)
    check_digest("SHA-512=" + base64.b64encode(hashlib.sha512(BODY).digest()).decode(), BODY)


NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("value", "reason"), [
    (None, "missing"),
    ("yesterday", "not an HTTP date"),
    ("Sun, 01 Nov 2026 11:54:59 GMT", "301 s away"),
    ("Sun, 01 Nov 2026 12:05:01 GMT", "301 s away"),
])
def test_bad_dates(value, reason):
    with pytest.raises(SignatureError, match=reason):
        check_date(value, 300, NOW)


@pytest.mark.parametrize("value", ["Sun, 01 Nov 2026 11:55:00 GMT",
                                   "Sun, 01 Nov 2026 12:05:00 GMT",
                                   "Sun, 01 Nov 2026 12:00:00 -0000"])
def test_good_dates(value):
    check_date(value, 300, NOW)


KEY_ID = "https://a.example/users/1#main-key"
PEM = "-----BEGIN PUBLIC KEY-----..."


@pytest.mark.parametrize(("document", "owner", "reason"), [
    ({"id": "https://a.example/users/1", "type": "Person",
      "publicKey": {"id": KEY_ID, "owner": "https://a.example/users/1", "publicKeyPem": PEM}},
     "https://a.example/users/1", None),
    ({"id": "https://a.example/users/1",
      "publicKey": [{"id": "https://a.example/users/1#other", "publicKeyPem": "x"},
                    {"id": KEY_ID, "publicKeyPem": PEM}]},
     "https://a.example/users/1", None),
    ({"id": KEY_ID, "owner": "https://a.example/", "publicKeyPem": PEM},
     "https://a.example/", None),
    ({"publicKeyPem": PEM}, "https://a.example/users/1", None),
    ([], None, "not a JSON object"),
    ({"id": "https://a.example/users/1"}, None, "has no key"),
    ({"publicKey": {"id": "https://a.example/users/1#k2", "publicKeyPem": PEM}},
     None, "has no key"),
    ({"publicKey": {"id": KEY_ID}}, None, "has no publicKeyPem"),
    ({"publicKey": {"id": KEY_ID, "publicKeyPem": PEM, "owner": "https://evil.example/u"}},
     None, "not on the key's origin"),
])
def test_finding_the_key_in_a_document(document, owner, reason):
    if reason is None:
        found = key_from_document(document, KEY_ID, "https://a.example/users/1")
        assert (found.pem, found.owner) == (PEM, owner)
    else:
        with pytest.raises(KeyUnavailable, match=reason):
            key_from_document(document, KEY_ID, "https://a.example/users/1")


def test_loading_private_keys(tmp_path):
    text = pem(rsa_key(0))
    assert load_private_key(text).key_size == 2048
    path = tmp_path / "key.pem"
    path.write_text(text)
    assert public_pem(load_private_key(str(path))) == public_pem(rsa_key(0))
    with pytest.raises(ValueError, match="cannot read the key file"):
        load_private_key(str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        load_private_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="an RSA or Ed25519 key is required"):
        load_private_key(pem(ec.generate_private_key(ec.SECP256R1())))


def test_remote_key_refuses_private_addresses_unless_allowed(keys, settings):
    keys.documents["/k"] = (200, {"publicKeyPem": public_pem(rsa_key(0))})
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "ALLOW_PRIVATE_ADDRESSES": False}
    with pytest.raises(KeyUnavailable, match="loopback"):
        remote_key(keys.url("/k"))
    assert keys.hits == {}
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "ALLOW_PRIVATE_ADDRESSES": True}
    assert remote_key(keys.url("/k")).pem == public_pem(rsa_key(0))
    assert remote_key(keys.url("/k")).cached
    assert keys.hits == {"/k": 1}


def test_remote_key_size_cap_and_bad_documents(keys):
    keys.documents["/big"] = (200, b"{" + b" " * 300_000 + b"}")
    keys.documents["/html"] = (200, b"<html>")
    keys.documents["/gone"] = (410, b"{}")
    for path, reason in (("/big", "^the key document at .* is too large$"),
                         ("/html", "not JSON"), ("/gone", "^fetching .* answered HTTP 410$")):
        with pytest.raises(KeyUnavailable, match=reason):
            remote_key(keys.url(path))


@pytest.mark.parametrize("location", ["http://[::1/k", "//[bad"])
def test_a_redirect_to_no_url_is_an_unavailable_key(receiver, location):
    """The signer's server chooses the redirect: one Python cannot parse is its failure."""
    url = receiver.document("/k", None, status=302, headers={"Location": location})
    with pytest.raises(KeyUnavailable, match="gave an unusable answer: Invalid IPv6 URL"):
        remote_key(url)


def test_a_key_served_from_another_origin_after_a_redirect_is_refused(receiver, keys):
    """An open redirect on a server must not let another server publish that server's keys:
    the document names the victim's key and actor, but it is the redirect target's word."""
    key_id = receiver.url("/go") + "#main-key"
    receiver.document("/go", None, status=302, headers={"Location": keys.url("/k")})
    keys.documents["/k"] = (200, {"id": key_id, "owner": receiver.url("/users/alice"),
                                  "publicKeyPem": public_pem(rsa_key(1))})
    with pytest.raises(KeyUnavailable, match="^the key .* was served from http://127.0.0.1:"):
        remote_key(key_id)
    same = receiver.url("/k")
    receiver.document("/go2", None, status=302, headers={"Location": same})
    receiver.document("/k", {"id": receiver.url("/go2"), "publicKeyPem": public_pem(rsa_key(1))})
    assert remote_key(receiver.url("/go2")).pem == public_pem(rsa_key(1))


# -- checks --------------------------------------------------------------------------------


def messages(**values):
    with override_settings(ACTIVITY_QUEUE={"ALLOW_PRIVATE_ADDRESSES": True, **values}):
        found = run_checks(tags=["compatibility"])
        return [(m.id, m.msg) for m in found if m.id.startswith("activity_queue")]


def test_checks_of_the_inbox_and_signing_settings(tmp_path):
    assert messages(SIGNING_KEY=pem(rsa_key(0)), INBOX_REQUIRE_SIGNATURE=True) == []
    [(code, text)] = messages(INBOX_AUTHENTICATION=["no.such.Class"])
    assert code == "activity_queue.E010" and "'no.such.Class' cannot be imported" in text
    [(code, text)] = messages(INBOX_PERMISSIONS=["json.dumps"])
    assert code == "activity_queue.E010" and "has no has_permission() method" in text
    [(code, text)] = messages(SIGNING_KEY=str(tmp_path / "nope.pem"))
    assert code == "activity_queue.E011" and "cannot read the key file" in text
    [(code, text)] = messages(SIGNING_KEY_ID="key-1")
    assert code == "activity_queue.E012"
    with override_settings(SITE_URL=None):  # W004: the test site has linked-data models
        assert [c for c, _ in messages(SIGNING_KEY=pem(rsa_key(0)))] == [
            "activity_queue.W004", "activity_queue.E013"]
    assert [c for c, _ in messages(INBOX_REQUIRE_SIGNATURE=True)] == ["activity_queue.W011"]
    with override_settings(CACHES={"default": {
            "BACKEND": "django.core.cache.backends.dummy.DummyCache"}}):
        found = messages(INBOX_REQUIRE_SIGNATURE=True, SIGNING_KEY=pem(rsa_key(0)))
    assert [c for c, _ in found] == ["activity_queue.W010"]
    assert [c for c, _ in messages(INBOX_MAX_BYTES=0, SIGNING_KEY=5)] == [
        "activity_queue.E002", "activity_queue.E002"]
    assert messages(SIGNATURE_MAX_AGE=86400) == []
    with override_settings(ACTIVITY_QUEUE={"SIGNATURE_MAX_AGE": 90000}):
        found = [m for m in run_checks(tags=["compatibility"]) if m.id == "activity_queue.W040"]
    assert [(m.msg, m.hint) for m in found] == [(
        "ACTIVITY_QUEUE['SIGNATURE_MAX_AGE'] is 90000 s, over a day: a signed request captured "
        "on the way can be replayed to the inbox that long.",
        "Keep it at an hour (the default, Mastodon's clock skew) or a few.")]
    ed = ed25519.Ed25519PrivateKey.generate()
    assert messages(SIGNING_KEY=pem(ed)) == []
    [(code, text)] = messages(SIGNING_KEY=pem(ec.generate_private_key(ec.SECP256R1())))
    assert code == "activity_queue.E011"
    assert "an RSA or Ed25519 key is required, not" in text


# -- over real HTTP --------------------------------------------------------------------------

#: The activities here are about an object on another origin than the signer's (a.example),
#: applied as sent: checking such activities at the object's origin is test_verification's.
REQUIRE = {"INBOX_REQUIRE_SIGNATURE": True, "SIGNING_KEY": None, "INBOX_UNSIGNED": "trust"}


@pytest.fixture
def signed_inbox(live_server, keys, settings, applied):
    """A live inbox that requires signatures; key 0 published at keys:/actor#main-key."""
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, **REQUIRE}
    keys.documents["/actor"] = (200, {
        "id": keys.url("/actor"), "type": "Service", "inbox": keys.url("/inbox/"),
        "publicKey": {"id": keys.url("/actor#main-key"), "owner": keys.url("/actor"),
                      "publicKeyPem": public_pem(rsa_key(0))},
    })
    return live_server.url + "/inbox/"


def send(url, body=BODY, *, key=0, key_id=None, keys=None, date=None, tamper=None):
    headers = {"Content-Type": LD}
    if key is not None:
        headers = sign_headers("POST", url, headers, body, key=rsa_key(key),
                               key_id=key_id or keys.url("/actor#main-key"), date=date)
    if tamper:
        body = tamper(body)
    return requests.post(url, data=body, headers=headers, timeout=10)


@pytest.mark.django_db(transaction=True)
def test_signed_request_round_trip(signed_inbox, keys, applied):
    response = send(signed_inbox, keys=keys)
    assert (response.status_code, response.json()) == (201, {})
    assert applied == [ACTIVITY]
    row = Activity.objects.inbound().get()
    assert row.host == keys.base
    assert send(signed_inbox, keys=keys).status_code == 200  # duplicate, key from cache
    assert keys.hits == {"/actor": 1}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("how", "reason"), [
    ({"tamper": lambda b: b.replace(b"Create", b"Delete")}, "Digest does not match the body"),
    ({"key": 1}, "does not verify with the signer's key"),
    ({"age": timedelta(minutes=61)}, "away from now"),
    ({"age": -timedelta(minutes=61)}, "away from now"),
    ({"key": None}, "requires a valid HTTP Signature"),
    ({"key_id": "http://127.0.0.1:9/nobody#key"}, "failed"),
])
def test_bad_signatures_are_refused(signed_inbox, keys, applied, how, reason):
    if "age" in how:  # from the moment the test runs, not the moment it was collected
        how = {"date": datetime.now(UTC) - how["age"]}
    response = send(signed_inbox, keys=keys, **how)
    assert response.status_code == 401, response.content
    assert reason in response.json()["detail"]
    assert response.headers["WWW-Authenticate"].startswith("Signature")
    assert not applied and Activity.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_unknown_key_id_is_refused(signed_inbox, keys, applied):
    response = send(signed_inbox, keys=keys, key_id=keys.url("/missing#key"))
    assert response.status_code == 401 and "HTTP 404" in response.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_signed_activity_must_speak_for_its_signer(signed_inbox, keys, applied):
    body = json.dumps({**ACTIVITY, "actor": "https://evil.example/actor"}).encode()
    response = send(signed_inbox, body, keys=keys)
    assert response.status_code == 403 and "not on the signer's origin" in response.text
    assert not applied


@pytest.mark.django_db(transaction=True)
def test_a_rotated_key_is_fetched_again(signed_inbox, keys, applied):
    assert send(signed_inbox, keys=keys).status_code == 201
    document = keys.documents["/actor"][1]
    document["publicKey"]["publicKeyPem"] = public_pem(rsa_key(1))
    body = json.dumps({**ACTIVITY, "summary": "after rotation"}).encode()
    assert send(signed_inbox, body, key=1, keys=keys).status_code == 201
    assert keys.hits == {"/actor": 2}
    assert len(applied) == 2


@pytest.mark.django_db(transaction=True)
def test_optional_verification(live_server, keys, settings, applied):
    """Listed but not required: unsigned requests pass, badly signed ones do not."""
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "INBOX_UNSIGNED": "trust",
                               "INBOX_AUTHENTICATION": [
        "activity_queue.inbox.authentication.HTTPSignatureAuthentication"]}
    keys.documents["/key"] = (200, {"id": keys.url("/key"), "publicKeyPem": public_pem(rsa_key(0))})
    url = live_server.url + "/inbox/"
    assert send(url, key=None).status_code == 201
    bad = send(url, json.dumps({**ACTIVITY, "summary": "x"}).encode(), key=1,
               key_id=keys.url("/key"))
    assert bad.status_code == 401
    good = send(url, json.dumps({**ACTIVITY, "summary": "y"}).encode(), key=0,
                key_id=keys.url("/key"))
    assert good.status_code == 201
    assert Activity.objects.inbound().count() == 2


@pytest.mark.django_db(transaction=True)
def test_our_worker_signs_and_our_inbox_verifies(live_server, worker, settings, applied):
    """SIGNING_KEY alone: the key id defaults to SITE_URL + the app's key URL, served there."""
    settings.SITE_URL = live_server.url
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, **REQUIRE,
                               "SIGNING_KEY": pem(rsa_key(0))}
    key_document = requests.get(live_server.url + "/activity-queue/key/", timeout=5).json()
    assert key_document["id"] == live_server.url + "/activity-queue/key/"
    assert key_document["publicKeyPem"] == public_pem(rsa_key(0))
    with transaction.atomic():
        enqueue(dict(ACTIVITY), to=live_server.url + "/inbox/")
    report = worker().run_once(timeout=20)
    assert report.sent == 1, report.outcomes
    sent = Activity.objects.outbound().get()
    assert sent.status == "sent" and sent.status_code == 201
    received = Activity.objects.inbound().get()
    assert received.activity_id == sent.activity_id
    assert received.host == live_server.url
    assert len(applied) == 1


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_signed_gets_verify(kind):
    """``(request-target) host date``, as sent: the path and query, the host with its port."""
    import base64
    import re

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ed25519, padding

    key = rsa_key(0) if kind == "rsa" else ed25519.Ed25519PrivateKey.generate()
    headers = sign_get("https://b.example:8443/users/7?page=2",
                       Signer(key, "https://a.example/actor#k"))
    params = dict(re.findall(r'(\w+)="([^"]*)"', headers["Signature"]))
    assert params["keyId"] == "https://a.example/actor#k"
    assert params["headers"] == "(request-target) host date"
    assert params["algorithm"] == ("rsa-sha256" if kind == "rsa" else "hs2019")
    assert headers["Host"] == "b.example:8443"
    text = ("(request-target): get /users/7?page=2\nhost: b.example:8443\n"
            f"date: {headers['Date']}").encode()
    signature = base64.b64decode(params["signature"])
    if kind == "rsa":
        key.public_key().verify(signature, text, padding.PKCS1v15(), hashes.SHA256())
    else:
        key.public_key().verify(signature, text)


def test_signer_rejects_a_quote_in_the_key_id():
    with pytest.raises(ValueError, match="double quote"):
        Signer(rsa_key(0), 'https://a.example/"k"')


@pytest.mark.django_db
def test_public_key_view_without_a_key_is_404(client):
    assert client.get("/activity-queue/key/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_an_unusable_key_holds_deliveries_back(receiver, worker, settings, tmp_path):
    """Never sent unsigned, never a crash: the row waits with the reason as its last error."""
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE,
                               "SIGNING_KEY": str(tmp_path / "missing.pem")}
    with transaction.atomic():
        enqueue(dict(ACTIVITY), to=receiver.url("/inbox/"))
    report = worker().run_once(timeout=20)
    assert report.retried == 1 and receiver.received == []
    row = ScheduledActivity.objects.get()
    assert "SigningUnavailable" in row.last_error and "cannot read the key file" in row.last_error


@pytest.mark.django_db(transaction=True)
def test_deliveries_are_signed_for_any_receiver(receiver, worker, settings):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "SIGNING_KEY": pem(rsa_key(0)),
                               "SIGNING_KEY_ID": "https://a.example/actor#main-key"}
    with transaction.atomic():
        enqueue(dict(ACTIVITY), to=receiver.url("/inbox/?x=1"))
    assert worker().run_once(timeout=20).sent == 1
    [got] = receiver.received
    parsed = parse_signature(got.headers["Signature"])
    assert parsed.key_id == "https://a.example/actor#main-key"
    verify(parsed, method="POST", target_path=got.path, headers=lower(got.headers),
           body=got.body, public_key=rsa_key(0).public_key(), max_age=300)
    assert got.headers["Content-Type"] == LD


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("inbox", "path", "host"), [
    ("http://127.0.0.1:{port}/inbox/?x=1", "/inbox/?x=1", "127.0.0.1:{port}"),
    ("http://LOCALHOST:{port}/inbox/", "/inbox/", "localhost:{port}"),
    # Under IDNA, full-width letters are the name "localhost": an IDN that resolves here.
    ("http://ｌｏｃａｌｈｏｓｔ:{port}/inbox/", "/inbox/", "localhost:{port}"),
    ("http://127.0.0.1:{port}/inbox/é?tag=ü", "/inbox/%C3%A9?tag=%C3%BC", "127.0.0.1:{port}"),
], ids=["query", "upper-case", "idn", "non-ascii-path"])
def test_what_is_signed_is_what_is_sent(receiver, worker, settings, inbox, path, host):
    """The receiver checks the signature against the Host and request target it received."""
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "SIGNING_KEY": pem(rsa_key(0)),
                               "SIGNING_KEY_ID": "https://a.example/actor#main-key"}
    with transaction.atomic():
        enqueue(dict(ACTIVITY), to=inbox.format(port=receiver.port))
    report = worker().run_once(timeout=20)
    assert report.sent == 1, report.outcomes
    [got] = receiver.received
    assert (got.path, got.headers["Host"]) == (path, host.format(port=receiver.port))
    verify(parse_signature(got.headers["Signature"]), method="POST", target_path=got.path,
           headers=lower(got.headers), body=got.body, public_key=rsa_key(0).public_key(),
           max_age=300)


def parsed_with(headers: str, **params) -> ParsedSignature:
    extra = "".join(f",{k}={v}" for k, v in params.items())
    return parse_signature(f'keyId="k",algorithm="hs2019",headers="{headers}"{extra},'
                           'signature="AA=="')


DIGEST = "SHA-256=" + base64.b64encode(hashlib.sha256(BODY).digest()).decode()
STAMP = int(NOW.timestamp())


@pytest.mark.parametrize(("covered", "params", "reason"), [
    ("(request-target) host (created) digest", {"created": STAMP - 3000}, None),
    ("(request-target) host (created) (expires) digest",
     {"created": STAMP, "expires": STAMP + 60}, None),
    ("(request-target) host date digest", {}, None),
    ("(request-target) host date", {}, "does not cover digest"),
    ("(request-target) host digest", {}, "does not cover date"),
    ("(request-target) date digest", {}, "does not cover host"),
    ("host date digest", {}, "does not cover (request-target)"),
    ("(request-target) host (created) digest", {}, "covers (created) but has no created"),
    ("(request-target) host (created) digest", {"created": STAMP - 3700},
     "created is not within 3600 s of now"),
    ("(request-target) host (created) digest", {"created": STAMP + 3700},
     "created is not within 3600 s of now"),
    ("(request-target) host (created) (expires) digest",
     {"created": STAMP - 3000, "expires": STAMP - 3601}, "has expired"),
])
def test_what_an_inbound_draft_cavage_signature_must_cover(covered, params, reason):
    """As lenient as Mastodon: date or (created), digest on a POST, an hour of skew."""
    parsed = parsed_with(covered, **params)
    headers = {"date": "Sun, 01 Nov 2026 12:30:00 GMT", "digest": DIGEST}
    check = {"method": "POST", "headers": headers, "body": BODY, "max_age": 3600, "now": NOW}
    if reason is None:
        check_request(parsed, **check)
    else:
        with pytest.raises(SignatureError, match=re.escape(reason)):
            check_request(parsed, **check)


def test_a_get_need_not_cover_digest():
    check_request(parsed_with("(request-target) host date"), method="GET",
                  headers={"date": "Sun, 01 Nov 2026 12:00:00 GMT"}, body=b"", max_age=3600,
                  now=NOW)
