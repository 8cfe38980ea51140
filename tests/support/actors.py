"""A site's users as actors, for the tests of keys bound to actors: their documents on a
loopback server, their keys in :data:`KEYS`, handed to the worker by the ``ACTOR_KEYS``
callable ``tests.support.actors.actor_key``."""

from __future__ import annotations

from activity_queue.net.signatures import public_pem

from .key_server import DocumentServer
from .keys import pem, rsa_key

#: actor id -> (private key PEM, key id), what the site's ACTOR_KEYS answers.
KEYS: dict[str, tuple[str, str]] = {}
#: The actor ids ACTOR_KEYS was asked about, in order.
CALLS: list[str] = []
ACTOR_KEYS = f"{__name__}.actor_key"


def actor_key(actor_id: str):
    CALLS.append(actor_id)
    return KEYS.get(actor_id)


def person(url: str, key) -> dict:
    return {"@context": ["https://www.w3.org/ns/activitystreams",
                         "https://w3id.org/security/v1"],
            "id": url, "type": "Person", "inbox": url + "/inbox", "preferredUsername":
            url.rsplit("/", 1)[-1],
            "publicKey": {"id": url + "#main-key", "owner": url,
                          "publicKeyPem": public_pem(key)}}


def serve_users(**users: int) -> DocumentServer:
    """``/users/<name>`` for each user, with RSA test key number ``users[name]``, its
    private half in :data:`KEYS`, and its WebFinger answer."""
    server = DocumentServer().start()
    netloc = server.base.split("://", 1)[1]
    for name, n in users.items():
        url = server.url(f"/users/{name}")
        server.documents[f"/users/{name}"] = (200, person(url, rsa_key(n)))
        server.documents[f"/.well-known/webfinger?resource=acct:{name}@{netloc}"] = (200, {
            "subject": f"acct:{name}@{netloc}",
            "links": [{"rel": "self", "type": "application/activity+json", "href": url}]})
        KEYS[url] = (pem(rsa_key(n)), url + "#main-key")
    return server


def signing_site(live_server, settings) -> str:
    """This site at ``live_server``: its instance actor owns SIGNING_KEY (test key 0), and
    ACTOR_KEYS hands out :data:`KEYS`."""
    settings.SITE_URL = live_server.url
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "SIGNING_KEY": pem(rsa_key(0)),
                               "ACTOR_KEYS": ACTOR_KEYS}
    return live_server.url
