"""A loopback server as strict as Mastodon with AUTHORIZED_FETCH, written apart from our code.

Every POST must carry a draft-cavage signature over ``(request-target) host date
digest``, and its key must belong to the activity's ``actor``: the peer
fetches the ``keyId``; from an actor document it takes the ``publicKey`` with
that id, from a key document it fetches the ``owner`` and requires that
actor's ``publicKey`` to be that very key. Then, as Mastodon does before it
accepts an actor it has not seen, it looks the actor up by WebFinger
(``acct:preferredUsername@host``; Mastodon asks https on the default port, this
peer the actor's own scheme and port) and requires the answer's ``self`` link to
be the actor. With ``authorized_fetch`` on, GETs must be signed over
``(request-target) host date`` by a key an actor owns.
Anything else is answered 401 with the reason. It never imports
activity_queue: the signature check here is an independent one (the
``cryptography`` package's RSA and SHA-256, and our own reading of the spec).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

_PARAM = re.compile(r'([A-Za-z]+)="([^"]*)"')
MAX_SKEW = 3600


class Refused(Exception):
    """Why the request gets a 401."""


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int
    reason: str = ""
    key_id: str = ""
    owner: str = ""


def no_actor_key(actor_id: str) -> None:
    """An ``ACTOR_KEYS`` that knows no actor (every activity is signed by the site key)."""
    return None


def _fetch(url: str) -> dict:
    try:
        resp = requests.get(url, headers={"Accept": "application/activity+json"}, timeout=5)
    except requests.RequestException as exc:
        raise Refused(f"cannot fetch {url}: {type(exc).__name__}") from None
    if resp.status_code != 200:
        raise Refused(f"fetching {url} answered {resp.status_code}")
    try:
        document = resp.json()
    except ValueError:
        raise Refused(f"{url} is not JSON") from None
    if not isinstance(document, dict):
        raise Refused(f"{url} is not a JSON object")
    return document


def _keys_of(actor: dict) -> list[dict]:
    listed = actor.get("publicKey")
    listed = listed if isinstance(listed, list) else [listed]
    return [key for key in listed if isinstance(key, dict)]


def check_webfinger(actor: dict) -> None:
    """The actor's ``acct:`` resolves, by WebFinger on its host, back to the actor."""
    username, actor_id = actor.get("preferredUsername"), actor.get("id")
    if not isinstance(username, str) or not username:
        raise Refused(f"the actor {actor_id} has no preferredUsername")
    parts = urlsplit(str(actor_id))
    acct = f"acct:{username}@{parts.netloc}"
    jrd = _fetch(f"{parts.scheme}://{parts.netloc}/.well-known/webfinger?resource={acct}")
    selves = [link.get("href") for link in jrd.get("links", []) if isinstance(link, dict)
              and link.get("rel") == "self"]
    if str(jrd.get("subject", "")).lower() != acct.lower() or actor_id not in selves:
        raise Refused(f"Webfinger response for {acct} does not loop back to {actor_id}")


def resolve_key(key_id: str) -> tuple[str, str]:
    """``(owner, publicKeyPem)`` of ``key_id``, the owner being an actor that lists the key."""
    document = _fetch(key_id.split("#", 1)[0])
    if "publicKey" in document:
        actor = document
    elif document.get("publicKeyPem") and isinstance(document.get("owner"), str):
        actor = _fetch(document["owner"])
    else:
        raise Refused(f"{key_id} is neither an actor nor a key with an owner")
    key = next((k for k in _keys_of(actor) if k.get("id") == key_id), None)
    if key is None:
        raise Refused(f"the actor {actor.get('id')} does not list the key {key_id}")
    if key.get("owner") != actor.get("id"):
        raise Refused(f"the key {key_id} is owned by {key.get('owner')}, "
                      f"not by the actor {actor.get('id')} that lists it")
    check_webfinger(actor)
    return actor["id"], key["publicKeyPem"]


def verify(method: str, path: str, headers: dict[str, str], body: bytes,
           required: tuple[str, ...]) -> tuple[str, str]:
    """Check the request's signature; ``(key_id, owner)`` when it verifies."""
    value = headers.get("signature")
    if not value:
        raise Refused("not signed")
    params = dict(_PARAM.findall(value))
    key_id, covered = params.get("keyId", ""), params.get("headers", "date").split()
    missing = [name for name in required if name not in covered]
    if missing:
        raise Refused(f"the signature does not cover {' '.join(missing)}")
    when = parsedate_to_datetime(headers.get("date", "Thu, 01 Jan 1970 00:00:00 GMT"))
    if abs(time.time() - when.timestamp()) > MAX_SKEW:
        raise Refused("stale Date")
    if "digest" in covered:
        expected = "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
        if headers.get("digest") != expected:
            raise Refused("the Digest does not match the body")
    lines = []
    for name in covered:
        if name == "(request-target)":
            lines.append(f"(request-target): {method.lower()} {path}")
        elif name in headers:
            lines.append(f"{name}: {headers[name]}")
        else:
            raise Refused(f"the signed header {name} is missing")
    owner, pem = resolve_key(key_id)
    public = serialization.load_pem_public_key(pem.encode())
    try:
        public.verify(base64.b64decode(params.get("signature", "")), "\n".join(lines).encode(),
                      padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise Refused(f"the signature does not verify with {key_id}") from None
    return key_id, owner


def actor_id(activity: object) -> str | None:
    actor = activity.get("actor") if isinstance(activity, dict) else None
    if isinstance(actor, dict):
        actor = actor.get("id")
    return actor if isinstance(actor, str) else None


class StrictPeer:
    def __init__(self, *, authorized_fetch: bool = True) -> None:
        self.authorized_fetch = authorized_fetch
        #: GET path -> JSON document.
        self.documents: dict[str, dict] = {}
        #: GET path -> URL it redirects to (302), once the request passed the checks.
        self.redirects: dict[str, str] = {}
        self.seen: list[Seen] = []
        self.cond = threading.Condition()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, seen: Seen, body: bytes, location: str = "") -> None:
                with peer.cond:
                    peer.seen.append(seen)
                    peer.cond.notify_all()
                self.send_response(seen.status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Type", "application/activity+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _check(self, body: bytes, required: tuple[str, ...]) -> Seen:
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen = Seen(self.command, self.path, headers, body, 200)
                try:
                    seen.key_id, seen.owner = verify(self.command, self.path, headers, body,
                                                     required)
                except Refused as exc:
                    seen.status, seen.reason = 401, str(exc)
                return seen

            def do_GET(self):  # noqa: N802
                if peer.authorized_fetch:
                    seen = self._check(b"", ("(request-target)", "host", "date"))
                else:
                    seen = Seen("GET", self.path, {k.lower(): v for k, v in
                                                   self.headers.items()}, b"", 200)
                location = peer.redirects.get(self.path, "")
                if seen.status == 200 and location:
                    seen.status = 302
                    return self._answer(seen, b"{}", location)
                document = peer.documents.get(self.path)
                if seen.status == 200 and document is None:
                    seen.status, seen.reason = 404, "no such document"
                payload = document if seen.status == 200 else {"error": seen.reason}
                self._answer(seen, json.dumps(payload).encode())

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = self._check(body, ("(request-target)", "host", "date", "digest"))
                if seen.status == 200:
                    try:
                        actor = actor_id(json.loads(body))
                    except ValueError:
                        actor = None
                    if actor != seen.owner:
                        seen.status = 401
                        seen.reason = f"the key's owner {seen.owner} is not the actor {actor}"
                    else:
                        seen.status = 202
                self._answer(seen, json.dumps({"error": seen.reason} if seen.reason
                                              else {}).encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)

    def url(self, path: str) -> str:
        return self.base + path

    def document(self, path: str, body: dict) -> str:
        self.documents[path] = body
        return self.url(path)

    def start(self) -> StrictPeer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def posts(self) -> list[Seen]:
        with self.cond:
            return [s for s in self.seen if s.method == "POST"]
