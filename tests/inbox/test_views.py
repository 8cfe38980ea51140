"""The inbox over HTTP: Django's test client for the tables, a live server for real sockets."""

import asyncio
import gzip
import io
import json
import socket
import threading

import pytest
import requests
from django.core.handlers.asgi import ASGIHandler
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from activity_queue import enqueue
from activity_queue.exceptions import InvalidActivity
from activity_queue.inbox import receive
from activity_queue.inbox.validation import MAX_DEPTH, content_id
from activity_queue.models import Activity

INBOX = "/inbox/"
LD = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'

#: SPEC §10, exactly as a DjangoLDP server sends it.
DJANGOLDP_BODY = {
    "@context": ["https://www.w3.org/ns/activitystreams", {"hd": "https://a.example/ns#"}],
    "type": "Create",
    "actor": {"type": "Service", "name": "Backlinks Service"},
    "object": {"@type": "hd:circle", "@id": "https://a.example/circles/9/",
               "owner": {"@id": "https://b.example/users/7/", "@type": "foaf:user"}},
    "summary": "https://a.example/circles/9/ was created",
}


@pytest.fixture(autouse=True)
def trusted(settings):
    """The view's mechanics, tested with activities about objects nobody serves: checking
    unsigned activities at their origin is test_verification.py's job."""
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "INBOX_UNSIGNED": "trust"}


@pytest.fixture
def applied(monkeypatch):
    """Record what the inbox hands to receive.apply_activity (backlinks are tested elsewhere).

    The property test does without it, so that the real apply_activity sees its inputs too.
    """
    calls = []
    monkeypatch.setattr(receive, "apply_activity", calls.append)
    return calls


def post(client, body, content_type=LD, **extra):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.generic("POST", INBOX, data, content_type=content_type,
                          CONTENT_TYPE=content_type, **extra)


def with_id(n=1, **fields):
    return {**DJANGOLDP_BODY, "id": f"https://a.example/activities/{n}", **fields}


# (body, content type, status, fragment of the JSON "detail")
REFUSALS = [
    (b"", LD, 400, "the request body is empty"),
    (b"{nope", LD, 400, "malformed JSON"),
    (b"\xc3\x28", LD, 400, "not UTF-8"),
    (b'{"type": "Create", "n": NaN}', LD, 400, "NaN is not a JSON number"),
    (b"[]", LD, 400, "must be a JSON object, not a list"),
    (b"null", "application/json", 400, "must be a JSON object, not null"),
    ({**DJANGOLDP_BODY, "type": None}, LD, 400, "'type' must be a string"),
    ({k: v for k, v in DJANGOLDP_BODY.items() if k != "type"}, LD, 400, "'type' is missing"),
    ({**DJANGOLDP_BODY, "type": "Like"}, LD, 400, "unknown activity type 'Like'"),
    ({**DJANGOLDP_BODY, "object": None}, LD, 400, "'object' is missing"),
    ({**DJANGOLDP_BODY, "object": {"@type": "hd:circle"}}, LD, 400, "'object' has no '@id'"),
    ({**DJANGOLDP_BODY, "object": {"@id": "circles/9"}}, LD, 400, "absolute http(s) URL"),
    ({**DJANGOLDP_BODY, "type": "Add"}, LD, 400, "'target' is missing"),
    ({**DJANGOLDP_BODY, "type": "Remove", "target": {"@id": "https://b.example/u/1"}}, LD, 400,
     "Remove takes the collection member in 'origin'"),
    ({**DJANGOLDP_BODY, "actor": 42}, LD, 400, "'actor' must be a URL or a JSON object"),
    ({**DJANGOLDP_BODY, "@context": 1}, LD, 400, "'@context' must be"),
    ({**DJANGOLDP_BODY, "summary": "\u0000"}, LD, 400, "NUL character"),
    ({**DJANGOLDP_BODY, "id": "https://a.example/" + "i" * 600}, LD, 400, "longer than 500"),
    (b"[" * 5000 + b"]" * 5000, LD, 400, "nested more than"),
    (DJANGOLDP_BODY, "text/plain", 415, "unsupported Content-Type 'text/plain'"),
    (DJANGOLDP_BODY, "application/x-www-form-urlencoded", 415, "unsupported Content-Type"),
    (DJANGOLDP_BODY, "multipart/form-data; boundary=x", 415, "unsupported Content-Type"),
    (DJANGOLDP_BODY, "", 415, "the Content-Type header is missing"),
    (b'{"a": "' + b"x" * (1024 * 1024) + b'"}', LD, 413, "larger than 1048576 bytes"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "content_type", "status", "detail"), REFUSALS)
def test_refusals(client, applied, body, content_type, status, detail):
    response = post(client, body, content_type)
    assert response.status_code == status, response.content
    assert detail in response.json()["detail"]
    assert not applied and Activity.objects.count() == 0


@pytest.mark.django_db
def test_enqueue_and_the_inbox_agree_on_nesting(client, applied):
    """At the limit both take an activity, one level deeper both refuse it: we do not send
    what our own inbox (a server like us) would refuse."""
    def at_depth(levels: int) -> dict:
        value = "https://a.example/tags/1/"
        for _ in range(levels - 1):  # the activity itself is the first level
            value = [value]
        return with_id(levels, tag=value)

    for levels, status in ((MAX_DEPTH, 201), (MAX_DEPTH + 1, 400)):
        activity = at_depth(levels)
        if status == 201:
            (row,) = enqueue(activity, to="https://b.example/inbox/")
            body = row.payload.body.encode()
        else:
            with pytest.raises(InvalidActivity, match=f"nested more than {MAX_DEPTH} levels"):
                enqueue(activity, to="https://b.example/inbox/")
            body = json.dumps(activity).encode()
        response = post(client, body)
        assert response.status_code == status, (levels, response.content)
    assert response.json() == {"detail": f"the activity is nested more than {MAX_DEPTH} "
                                         "levels deep"}
    assert len(applied) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("content_type", [
    LD, "application/ld+json", "application/activity+json",
    "application/json", "application/json; charset=utf-8",
])
def test_accepted_content_types(client, applied, content_type):
    response = post(client, with_id(), content_type)
    assert response.status_code == 201 and response.json() == {}
    assert len(applied) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(("refused", "accepted"), [
    ("gzip", "identity"), ("deflate", "Identity"), ("br", ""), ("identity, gzip", "identity"),
    ("GZIP", "identity"),
])
def test_encoded_bodies_are_refused(client, applied, refused, accepted):
    """The body is never decoded: a compressed activity is refused, not parsed as noise."""
    body = gzip.compress(json.dumps(with_id()).encode())
    response = post(client, body, HTTP_CONTENT_ENCODING=refused)
    assert response.status_code == 415, response.content
    assert response.json() == {"detail": f"unsupported Content-Encoding {refused!r}; "
                                         "send the body unencoded (identity)"}
    assert not applied and Activity.objects.count() == 0
    # The refusal left nothing behind: the same activity, unencoded, is new.
    assert post(client, with_id(), HTTP_CONTENT_ENCODING=accepted).status_code == 201
    assert len(applied) == 1


@pytest.mark.django_db
def test_djangoldp_activity_is_accepted_and_recorded(client, applied):
    response = post(client, DJANGOLDP_BODY, HTTP_ACCEPT="text/html")
    assert response.status_code == 201 and response.json() == {}
    assert applied == [DJANGOLDP_BODY]
    row = Activity.objects.get()
    assert row.direction == Activity.Direction.INBOUND and row.status == "received"
    assert row.activity_id == content_id(DJANGOLDP_BODY)
    assert row.activity_type == "Create"
    assert row.object_id == "https://a.example/circles/9/"
    assert row.host == "https://a.example"
    assert row.inbox == "http://testserver/inbox/"
    assert row.payload.document == DJANGOLDP_BODY


@pytest.mark.django_db
def test_same_id_twice_is_applied_once(client, applied):
    first = post(client, with_id(7))
    again = post(client, with_id(7, summary="a retry may differ; the id decides"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == {}
    assert len(applied) == 1
    assert Activity.objects.filter(activity_id="https://a.example/activities/7").count() == 1
    assert post(client, with_id(8)).status_code == 201
    assert len(applied) == 2


@pytest.mark.django_db
def test_ids_that_differ_only_in_case_are_different_activities(client, applied):
    """MySQL's and MariaDB's default collations fold case; an id is a case-sensitive URI."""
    assert post(client, with_id("Ab")).status_code == 201
    assert post(client, with_id("aB")).status_code == 201
    assert len(applied) == 2
    assert Activity.objects.filter(activity_id="https://a.example/activities/aB").count() == 1


@pytest.mark.django_db
def test_same_content_without_id_twice_is_applied_once(client, applied):
    assert post(client, DJANGOLDP_BODY).status_code == 201
    reordered = json.dumps(dict(reversed(DJANGOLDP_BODY.items())), indent=2).encode()
    assert post(client, reordered).status_code == 200
    assert len(applied) == 1 and Activity.objects.count() == 1


@pytest.mark.django_db
def test_same_content_again_after_something_newer_is_applied(client, applied):
    add = {**DJANGOLDP_BODY, "type": "Add", "target": {"@id": "https://testserver/users/1/"}}
    remove = {**DJANGOLDP_BODY, "type": "Remove", "origin": {"@id": "https://testserver/users/1/"}}
    statuses = [post(client, body).status_code for body in (add, remove, add, add)]
    assert statuses == [201, 201, 201, 200]
    assert [a["type"] for a in applied] == ["Add", "Remove", "Add"]


@pytest.mark.django_db
def test_content_duplicates_expire_with_the_window(client, applied, settings):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "INBOX_DEDUP_WINDOW": 0}
    assert [post(client, DJANGOLDP_BODY).status_code for _ in range(2)] == [201, 201]
    assert len(applied) == 2


@pytest.mark.django_db
def test_apply_refusal_is_a_400_and_leaves_nothing(client, monkeypatch):
    def refuse(activity):
        raise InvalidActivity("no local model has type hd:circle")

    monkeypatch.setattr(receive, "apply_activity", refuse)
    response = post(client, with_id())
    assert response.status_code == 400
    assert response.json() == {"detail": "no local model has type hd:circle"}
    assert Activity.objects.count() == 0


@pytest.mark.django_db
def test_a_link_longer_than_the_urlid_column_is_a_400(client):
    owner = {"@id": "https://b.example/users/" + "7" * 2000, "@type": "foaf:user"}
    body = {**DJANGOLDP_BODY, "object": {**DJANGOLDP_BODY["object"], "owner": owner}}
    response = post(client, body)
    assert response.status_code == 400
    assert "is longer than 2000 characters" in response.json()["detail"]
    assert Activity.objects.count() == 0


@pytest.mark.django_db
def test_size_limit_is_a_setting_and_checks_the_declared_length(client, settings):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "INBOX_MAX_BYTES": 100}
    assert post(client, b"{" + b" " * 120 + b"}").status_code == 413
    # A declared length above the limit is refused before a byte is read.
    response = client.generic("POST", INBOX, b"", CONTENT_TYPE=LD, CONTENT_LENGTH="101",
                              **{"wsgi.input": io.BytesIO(b"")})
    assert response.status_code == 413
    response = client.generic("POST", INBOX, b"{}", content_type=LD, CONTENT_LENGTH="2x")
    assert response.status_code == 400 and "invalid Content-Length" in response.json()["detail"]


@pytest.mark.django_db
def test_chunked_wsgi_body_is_read_and_capped(client, applied, settings):
    """A de-chunking WSGI server (gunicorn) gives no Content-Length, only wsgi.input_terminated."""
    body = json.dumps(with_id()).encode()
    response = client.generic("POST", INBOX, b"", CONTENT_TYPE=LD, CONTENT_LENGTH="",
                              **{"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True})
    assert response.status_code == 201 and len(applied) == 1
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "INBOX_MAX_BYTES": 100}
    response = client.generic("POST", INBOX, b"", CONTENT_TYPE=LD, CONTENT_LENGTH="",
                              **{"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True})
    assert response.status_code == 413


def asgi_post(chunks, headers):
    """POST through Django's real ASGI handler, the body in several messages, no length."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": INBOX, "raw_path": INBOX.encode(),
             "query_string": b"", "root_path": "", "server": ("testserver", 80),
             "client": ("127.0.0.1", 5000), "headers": headers}
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    sent = []

    async def run():
        never = asyncio.Event()

        async def receive_message():
            if messages:
                return messages.pop(0)
            await never.wait()

        async def send(message):
            sent.append(message)

        await ASGIHandler()(scope, receive_message, send)

    asyncio.run(run())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


@pytest.mark.django_db(transaction=True)
def test_asgi_streamed_body_without_length(applied, settings):
    headers = [(b"host", b"testserver"), (b"content-type", LD.encode())]
    body = json.dumps(with_id()).encode()
    status, answer = asgi_post([body[:10], body[10:50], body[50:]], headers)
    assert (status, answer) == (201, {})
    assert Activity.objects.inbound().count() == 1
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "INBOX_MAX_BYTES": 64}
    status, answer = asgi_post([body[:50], body[50:]], headers)
    assert status == 413 and "larger than 64 bytes" in answer["detail"]


@pytest.mark.django_db
def test_other_methods_are_not_allowed(client):
    assert client.get(INBOX).status_code == 405
    assert client.put(INBOX, b"{}", content_type=LD).status_code == 405


@pytest.mark.django_db
def test_authentication_and_permissions_come_from_settings(client, settings, django_user_model,
                                                           applied):
    settings.ACTIVITY_QUEUE = {
        **settings.ACTIVITY_QUEUE,
        "INBOX_AUTHENTICATION": ["rest_framework.authentication.BasicAuthentication"],
        "INBOX_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    }
    response = post(client, with_id())
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic")
    django_user_model.objects.create_user("peer", password="s3cret-pass")
    import base64
    token = base64.b64encode(b"peer:s3cret-pass").decode()
    assert post(client, with_id(), HTTP_AUTHORIZATION=f"Basic {token}").status_code == 201


@pytest.mark.django_db
def test_required_signature_refuses_unsigned_requests(client, settings, applied):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "INBOX_REQUIRE_SIGNATURE": True}
    response = post(client, DJANGOLDP_BODY)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Signature")
    assert "requires a valid HTTP Signature" in response.json()["detail"]
    assert not applied


# -- no input makes it answer 5xx --------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
FIELDS = ["@context", "type", "id", "@id", "actor", "object", "target", "origin", "summary"]
near_valid = st.builds(
    lambda base, changes: {**base, **changes},
    st.sampled_from([DJANGOLDP_BODY, with_id(),
                     {**DJANGOLDP_BODY, "type": "Add", "target": {"@id": "https://b.example/"}},
                     {**DJANGOLDP_BODY, "type": "Remove", "origin": {"@id": "https://b.ex/"}}]),
    st.dictionaries(st.sampled_from(FIELDS), json_values | st.sampled_from(
        ["Create", "Delete", "https://a.example/x", {"@id": "https://a.example/y"},
         {"@id": 3}, {"id": "urn:x:1"}]), max_size=3),
)
content_types = st.sampled_from([
    LD, "application/json", "application/activity+json", "text/plain", "",
    "application/json; charset=latin-1", "*/*", "application/*", "multipart/form-data",
    "application/ld+json; profile", "application/x-www-form-urlencoded", "a" * 300,
]) | st.text(max_size=40)
bodies = (json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=300)
          | near_valid.map(lambda v: json.dumps(v).encode()))


@pytest.mark.django_db
@hypothesis_settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=bodies, content_type=content_types)
def test_no_input_makes_a_server_error(body, content_type):
    """Whatever arrives, the answer is never a 5xx (the real apply_activity included)."""
    client = Client(raise_request_exception=False)
    try:
        response = client.generic("POST", INBOX, body, content_type=content_type)
    except UnicodeEncodeError:  # the test client cannot send such a header at all
        return
    assert response.status_code < 500, response.content
    assert response.status_code in (200, 201, 400, 413, 415)


# -- over real sockets -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_live_server_accepts_and_refuses(live_server, applied):
    url = live_server.url + INBOX
    ok = requests.post(url, data=json.dumps(DJANGOLDP_BODY), headers={"Content-Type": LD},
                       timeout=5)
    assert (ok.status_code, ok.json()) == (201, {})
    again = requests.post(url, data=json.dumps(DJANGOLDP_BODY), headers={"Content-Type": LD},
                          timeout=5)
    assert again.status_code == 200
    bad = requests.post(url, data=b'{"type": "Create"}', headers={"Content-Type": LD}, timeout=5)
    assert bad.status_code == 400 and bad.json() == {"detail": "'object' is missing"}
    assert len(applied) == 1 and Activity.objects.inbound().count() == 1


@pytest.mark.django_db(transaction=True)
def test_live_server_refuses_a_large_declared_body_early(live_server, settings):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "INBOX_MAX_BYTES": 1000}
    host, port = live_server.url.split("://")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /inbox/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 50000000\r\nConnection: close\r\n\r\n{")
        answer = b""
        while b"\r\n\r\n" not in answer:  # the answer comes before the body is sent
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413")


@pytest.mark.django_db(transaction=True)
def test_live_server_refuses_a_body_shorter_than_declared(live_server, applied):
    """A complete, valid activity, but the client promised more and hung up: 400, nothing kept."""
    body = json.dumps(with_id()).encode()
    host, port = live_server.url.split("://")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /inbox/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (len(body) + 100, body))
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert json.loads(payload) == {"detail": "the request body is shorter than its "
                                             f"Content-Length ({len(body)} of "
                                             f"{len(body) + 100} bytes)"}
    assert not applied and Activity.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_receipts_of_one_activity_take_turns(live_server, monkeypatch):
    """The second copy waits for the first one's transaction, then sees it: one row, one apply.

    Observable on PostgreSQL (the advisory lock shows in pg_locks) and MySQL/MariaDB (the
    named lock's waiter shows in the process list); SQLite's IMMEDIATE transactions
    serialise writers by themselves.
    """
    from django.db import connection

    from ..support.helpers import wait_until

    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers by itself: no lock of ours to observe")
    release = threading.Event()
    calls = []

    def slow_apply(activity):
        calls.append(activity)
        release.wait(20)

    monkeypatch.setattr(receive, "apply_activity", slow_apply)
    url = live_server.url + INBOX
    statuses = []

    def deliver():
        statuses.append(requests.post(url, data=json.dumps(with_id(99)),
                                      headers={"Content-Type": LD}, timeout=30).status_code)

    def waiting_for_lock():
        with connection.cursor() as cursor:
            if connection.vendor == "mysql":
                cursor.execute("SELECT count(*) FROM information_schema.processlist "
                               "WHERE info LIKE 'SELECT GET_LOCK(%%' AND id <> CONNECTION_ID()")
            else:
                cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                               "AND NOT granted")
            return cursor.fetchone()[0] == 1

    first = threading.Thread(target=deliver)
    first.start()
    assert wait_until(lambda: calls, timeout=10)
    second = threading.Thread(target=deliver)
    second.start()
    assert wait_until(waiting_for_lock, timeout=10)
    release.set()
    first.join(30)
    second.join(30)
    assert sorted(statuses) == [200, 201]
    assert len(calls) == 1
    assert Activity.objects.inbound().count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_receipt_that_cannot_take_its_turn_is_a_503(live_server, applied, monkeypatch):
    """On MySQL/MariaDB the named lock is waited for LOCK_WAIT seconds; when another receipt
    holds it longer, this one is not applied unlocked (a double apply) but retried later."""
    import hashlib

    from django.db import connection

    from activity_queue.inbox import views

    if connection.vendor != "mysql":
        pytest.skip("only MySQL/MariaDB's named lock has a time limit")
    monkeypatch.setattr(views, "LOCK_WAIT", 1)
    activity = with_id(98)
    digest = hashlib.sha256(b"activity_queue.inbox.views:" + activity["id"].encode())
    name = f"activity_queue:{digest.hexdigest()[:40]}"
    url = live_server.url + INBOX
    with connection.cursor() as cursor:
        cursor.execute("SELECT GET_LOCK(%s, 0)", [name])
        try:
            busy = requests.post(url, data=json.dumps(activity), headers={"Content-Type": LD},
                                 timeout=30)
        finally:
            cursor.execute("SELECT RELEASE_LOCK(%s)", [name])
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    assert not applied and Activity.objects.count() == 0
    assert requests.post(url, data=json.dumps(activity), headers={"Content-Type": LD},
                         timeout=30).status_code == 201
    assert len(applied) == 1
