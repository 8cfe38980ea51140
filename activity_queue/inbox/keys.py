"""Public keys: ours, published for receivers, and theirs, fetched from a ``keyId``.

A sender's key is fetched once with ``requests`` (synchronous: it happens in
the request that needs it), with a timeout, a size cap, a total deadline and
the same refusal of private addresses as deliveries, then kept in Django's
cache for ``SIGNATURE_KEY_TTL`` seconds. Any failure is a
:class:`KeyUnavailable`, which the inbox answers with 401, never a 5xx.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import reverse

from ..conf import Config, get_config
from ..net.addresses import forbidden_address, origin
from ..net.signatures import (
    SignatureError,
    load_private_key,
    load_public_key,
    multibase_public_key,
    multibase_to_pem,
    public_pem,
)
from ..net.signing import fetch_headers, key_id_of
from .validation import node_id, url_problem

logger = logging.getLogger(__name__)

KEY_DOCUMENT_MAX_BYTES = 256 * 1024
MAX_REDIRECTS = 3
CONTEXT = ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"]
MULTIKEY_CONTEXT = "https://w3id.org/security/multikey/v1"


class KeyUnavailable(SignatureError):
    """The ``keyId`` document could not be fetched, or holds no usable key."""


@dataclass(frozen=True, slots=True)
class RemoteKey:
    key_id: str
    owner: str
    pem: str
    #: Came from the cache (so it may be stale), not from a fetch just now.
    cached: bool = False

    def public_key(self):
        return load_public_key(self.pem)


# -- theirs ----------------------------------------------------------------------


def key_from_document(document: Any, key_id: str, url: str) -> RemoteKey:
    """Find ``key_id`` in an actor document (``publicKey``, or FEP-521a's ``assertionMethod``
    with an Ed25519 ``publicKeyMultibase``) or a key document (pure)."""
    if not isinstance(document, dict):
        raise KeyUnavailable("the key document is not a JSON object")
    keyed = ("publicKeyPem" in document or "publicKeyMultibase" in document)
    candidates = [document] if keyed else []
    for name in ("publicKey", "assertionMethod"):
        listed = document.get(name)
        if isinstance(listed, dict):
            candidates.append(listed)
        elif isinstance(listed, list):
            candidates.extend(item for item in listed if isinstance(item, dict))
    chosen = next((c for c in candidates if node_id(c) == key_id), None)
    if chosen is None and len(candidates) == 1 and node_id(candidates[0]) in (None, url):
        chosen = candidates[0]
    if chosen is None:
        raise KeyUnavailable(f"the document at {url} has no key {key_id!r}")
    pem = chosen.get("publicKeyPem")
    if (not isinstance(pem, str) or not pem) and "publicKeyMultibase" in chosen:
        try:
            pem = multibase_to_pem(chosen["publicKeyMultibase"])
        except SignatureError as exc:
            raise KeyUnavailable(f"the key {key_id!r}: {exc}") from None
    if not isinstance(pem, str) or not pem:
        raise KeyUnavailable(f"the key {key_id!r} has no publicKeyPem")
    owner = chosen.get("owner", chosen.get("controller"))
    if owner is None:
        owner = node_id(document) if chosen is not document else None
    owner = owner if owner is not None else url
    if url_problem(owner) is not None or origin(owner) != origin(key_id):
        raise KeyUnavailable(f"the key {key_id!r} belongs to {str(owner)[:200]!r}, "
                             "which is not on the key's origin")
    return RemoteKey(key_id=key_id, owner=owner, pem=pem)


def _check_destination(url: str, allow_private: bool) -> None:
    parts = urlsplit(url)
    if url_problem(url) is not None or parts.username or parts.password:
        raise KeyUnavailable(f"the key URL {url[:200]!r} is not a plain http(s) URL")
    if allow_private:
        return
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        answers = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise KeyUnavailable(f"cannot resolve {parts.hostname}: {exc}") from None
    for *_, address in answers:
        kind = forbidden_address(address[0])
        if kind:
            raise KeyUnavailable(f"{parts.hostname} resolves to a {kind} address; "
                                 "set ACTIVITY_QUEUE['ALLOW_PRIVATE_ADDRESSES'] to allow it")


def fetch_document(url: str, config: Config) -> tuple[Any, str]:
    """GET a JSON document with the outbound safety rules, and the URL that served it
    (after redirects); raise KeyUnavailable."""
    deadline = time.monotonic() + 3 * config.TIMEOUT
    for _hop in range(MAX_REDIRECTS + 1):
        _check_destination(url, config.ALLOW_PRIVATE_ADDRESSES)
        try:
            url, headers = fetch_headers(url, config)  # signed by the instance actor
            with requests.get(url, headers=headers, timeout=(config.TIMEOUT, config.TIMEOUT),
                              stream=True, allow_redirects=False) as resp:
                location = resp.headers.get("Location")
                if resp.is_redirect and location:
                    url = urljoin(url, location)
                    continue
                if resp.status_code != 200:
                    raise KeyUnavailable(f"fetching {url[:200]} answered HTTP {resp.status_code}")
                data = bytearray()
                for chunk in resp.iter_content(16384):
                    data += chunk
                    if len(data) > KEY_DOCUMENT_MAX_BYTES:
                        raise KeyUnavailable(f"the key document at {url[:200]} is too large")
                    if time.monotonic() > deadline:
                        raise KeyUnavailable(f"fetching {url[:200]} took too long")
        except requests.RequestException as exc:
            raise KeyUnavailable(f"fetching {url[:200]} failed: {type(exc).__name__}") from None
        except KeyUnavailable:
            raise
        except ValueError as exc:  # a Location that is no URL (requests reads it, too)
            raise KeyUnavailable(f"{url[:200]} gave an unusable answer: {exc}") from None
        try:
            return json.loads(bytes(data)), url
        except (ValueError, RecursionError):
            raise KeyUnavailable(f"the key document at {url[:200]} is not JSON") from None
    raise KeyUnavailable(f"more than {MAX_REDIRECTS} redirects fetching the key")


def _cache_key(key_id: str) -> str:
    return "activity_queue:key:" + hashlib.sha256(key_id.encode("utf-8", "replace")).hexdigest()


def remote_key(key_id: str, *, refresh: bool = False) -> RemoteKey:
    """The public key named ``key_id``: from the cache, else fetched (and then cached)."""
    problem = url_problem(key_id)
    if problem:
        raise KeyUnavailable(f"the keyId {problem}")
    name = _cache_key(key_id)
    if not refresh:
        try:
            cached = cache.get(name)
        except Exception:  # a cache outage must not become a 500; fetch instead
            logger.warning("activity_queue: key cache read failed", exc_info=True)
            cached = None
        if isinstance(cached, dict):
            return RemoteKey(**cached, cached=True)
    config = get_config()
    url = key_id.split("#", 1)[0]
    document, served_from = fetch_document(url, config)
    if origin(served_from) != origin(key_id):
        # Only the key's own origin speaks for it: else an open redirect there would let
        # any server publish keys for that origin's actors.
        raise KeyUnavailable(f"the key {key_id[:200]!r} was served from "
                             f"{origin(served_from)}, not from its own origin")
    found = key_from_document(document, key_id, url)
    found.public_key()  # never cache a key that does not load
    try:
        cache.set(name, {"key_id": found.key_id, "owner": found.owner, "pem": found.pem},
                  config.SIGNATURE_KEY_TTL)
    except Exception:
        logger.warning("activity_queue: key cache write failed", exc_info=True)
    return found


# -- ours --------------------------------------------------------------------------


@lru_cache(maxsize=4)
def published(value: str) -> dict[str, str]:
    """The public half of a private key, as a key document states it: PEM for every key,
    and ``publicKeyMultibase`` too for Ed25519 (FEP-521a)."""
    key = load_private_key(value)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return {"type": "Multikey", "publicKeyMultibase": multibase_public_key(key),
                "publicKeyPem": public_pem(key)}
    return {"type": "Key", "publicKeyPem": public_pem(key)}


def public_key_view(request: HttpRequest) -> JsonResponse:
    """A key document for ``SIGNING_KEY`` (404 without one), owned by the instance actor.

    The key's own id is this URL unless ``SIGNING_KEY_ID`` names another, so
    that signatures made under this URL as ``keyId`` still verify.
    """
    config = get_config()
    if not config.SIGNING_KEY or not key_id_of(config):
        raise Http404("no signing key is configured")
    try:
        document = published(config.SIGNING_KEY)
    except ValueError as exc:
        raise ImproperlyConfigured(f"ACTIVITY_QUEUE['SIGNING_KEY']: {exc}") from None
    site = getattr(settings, "SITE_URL", None)
    if config.SIGNING_KEY_ID or not isinstance(site, str) or not site:
        key_id = key_id_of(config)
    else:
        key_id = site.rstrip("/") + reverse("activity_queue:public-key")
    owner = key_id
    if isinstance(site, str) and site and origin(site) == origin(key_id):
        owner = site.rstrip("/") + reverse("activity_queue:actor")
    multikey = document["type"] == "Multikey"
    context = [*CONTEXT, MULTIKEY_CONTEXT] if multikey else CONTEXT
    controller = {"controller": owner} if multikey else {}
    return JsonResponse(
        {"@context": context, "id": key_id, "owner": owner, **controller, **document},
        content_type="application/activity+json",
    )
