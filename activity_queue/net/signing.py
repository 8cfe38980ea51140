"""Who signs a request: a :class:`Signer` (one private key and its keyId), and the site's.

``signer(method, url, headers, body, scheme) -> headers`` returns the headers to send,
signed with either scheme the fediverse uses: ``"cavage"``
(draft-cavage-http-signatures, :mod:`.signatures`) or ``"rfc9421"`` (RFC 9421 HTTP
Message Signatures, :mod:`.rfc9421`). Both send ``Digest`` and ``Content-Digest``.

The site's signer is the instance actor's key, ``SIGNING_KEY`` under the id
``SIGNING_KEY_ID`` (by default the actor's ``#main-key``): the worker signs with it
what no actor key of :mod:`activity_queue.sending.actor_keys` signs, and every fetch
(inbox discovery, senders' keys, objects at their origin) is signed with it
(:func:`fetch_headers`), so that servers in authorized-fetch mode answer. A signer is
called from the worker's signing threads, so it keeps no state between calls.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.core.exceptions import ImproperlyConfigured

from ..conf import Config
from ..exceptions import ActivityQueueError
from . import rfc9421, signatures

logger = logging.getLogger(__name__)

CAVAGE = "cavage"
RFC9421 = "rfc9421"
#: The two schemes; ``Host.signature_scheme`` holds one of them once a host has told us.
SCHEMES = (CAVAGE, RFC9421)
#: How each scheme is named in errors and docs.
NAMES = {CAVAGE: "draft-cavage", RFC9421: "RFC 9421"}
#: What ActivityPub asks a client to send when it fetches an object.
FETCH_ACCEPT = ('application/ld+json; profile="https://www.w3.org/ns/activitystreams", '
                "application/activity+json")
#: What a signed GET covers (no body, so no digest), as Mastodon-family servers expect.
FETCH_HEADERS = ("(request-target)", "host", "date")


class SigningUnavailable(ActivityQueueError):
    """``SIGNING_KEY`` is set but cannot be used, so nothing is sent unsigned instead."""


def other(scheme: str) -> str:
    """The scheme a double knock tries after ``scheme`` was refused."""
    return RFC9421 if scheme == CAVAGE else CAVAGE


def first_scheme(signer: Signer | None, configured: str | None) -> str:
    """The scheme to try first with a host that has not told us which it accepts:
    ``SIGNATURE_SCHEME`` if set, else by key type. An RSA key signs draft-cavage first,
    which nearly every server verifies; an Ed25519 key signs RFC 9421 first, as
    draft-cavage verifiers (Mastodon's, Fedify's) take only RSA keys there."""
    if configured:
        return configured
    if signer is not None and isinstance(signer.private_key, ed25519.Ed25519PrivateKey):
        return RFC9421
    return CAVAGE


class Signer:
    """Signs requests with ``private_key`` (RSA or Ed25519) as ``key_id``.

    ``key_id`` is the URL a receiver fetches the public key from: an actor's
    ``publicKey`` (or, for Ed25519, ``assertionMethod``) entry.
    """

    __slots__ = ("private_key", "key_id")

    def __init__(self, private_key: Any, key_id: str) -> None:
        if '"' in key_id:
            raise ValueError("a keyId cannot contain a double quote")
        rfc9421.algorithm_for(private_key)  # refuses a key type neither scheme signs with
        self.private_key = private_key
        self.key_id = key_id

    def __call__(self, method: str, url: str, headers: dict[str, str], body: bytes,
                 scheme: str = CAVAGE) -> dict[str, str]:
        """``headers`` plus the signature headers of ``scheme`` (and ``Host``, ``Date``, the
        digests) for this request; ``url`` as sent (ASCII host, percent-encoded path)."""
        if scheme == RFC9421:
            return rfc9421.sign_headers(method, url, headers, body, key=self.private_key,
                                        key_id=self.key_id)
        return signatures.sign_headers(method, url, headers, body, key=self.private_key,
                                       key_id=self.key_id)

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"


class Unusable(Signer):
    """The signer of a configured key that cannot be used: it refuses to sign, so that
    deliveries wait (with the reason as their last error) instead of leaving unsigned."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.private_key, self.key_id, self.reason = None, "", reason

    def __call__(self, method: str, url: str, headers: dict[str, str], body: bytes,
                 scheme: str = CAVAGE) -> dict[str, str]:
        raise SigningUnavailable(self.reason)


# -- the site's key ----------------------------------------------------------------


def default_key_id() -> str | None:
    """``SITE_URL`` + the instance actor's URL + ``#main-key``: the key of an actor
    (:mod:`activity_queue.inbox.actor`), as Mastodon-family receivers require."""
    from django.conf import settings
    from django.urls import NoReverseMatch, reverse

    site = getattr(settings, "SITE_URL", None)
    if not isinstance(site, str) or not site:
        return None
    try:
        return site.rstrip("/") + reverse("activity_queue:actor") + "#main-key"
    except NoReverseMatch:
        return None


def key_id_of(config: Config) -> str | None:
    return config.SIGNING_KEY_ID or default_key_id()


def required_key_id(config: Config) -> str:
    """The site key's id, for a configured ``SIGNING_KEY``; ImproperlyConfigured if none."""
    key_id = key_id_of(config)
    if not key_id:
        raise ImproperlyConfigured(
            "ACTIVITY_QUEUE['SIGNING_KEY'] is set but there is no key id: set SIGNING_KEY_ID, "
            "or SITE_URL and include activity_queue.urls so the key is published")
    return key_id


@lru_cache(maxsize=1024)
def load_signer(private_key: str, key_id: str) -> Signer:
    """The signer of a PEM key (or the path of one) as ``key_id``; ValueError if unusable.

    Cached: parsing an RSA key costs far more than a signature.
    """
    if not isinstance(key_id, str) or '"' in key_id or urlsplit(key_id).scheme not in (
            "http", "https"):
        raise ValueError(f"the key id {str(key_id)[:200]!r} is not an http(s) URL")
    return Signer(signatures.load_private_key(private_key), key_id)


def site_signer(config: Config) -> Signer | None:
    """The instance actor's signer (``SIGNING_KEY``); None when signing is off.

    Raises ImproperlyConfigured when the key is set but unusable.
    """
    if not config.SIGNING_KEY:
        return None
    key_id = required_key_id(config)
    try:
        return load_signer(config.SIGNING_KEY, key_id)
    except ValueError as exc:
        raise ImproperlyConfigured(f"ACTIVITY_QUEUE['SIGNING_KEY']: {exc}") from None


def delivery_signer(config: Config) -> Signer | None:
    """The site signer of deliveries: :func:`site_signer`, but a key that is configured and
    unusable gives an :class:`Unusable` signer instead of an error.

    The worker's construction, which may happen inside a request, does not fail, and
    deliveries wait with the reason rather than leave unsigned. The system checks
    report the same problem earlier.
    """
    try:
        return site_signer(config)
    except ImproperlyConfigured as exc:
        logger.error("activity_queue: %s; deliveries wait until it is fixed", exc)
        return Unusable(str(exc))


# -- signed fetches ---------------------------------------------------------------


def fetch_headers(url: str, config: Config,
                  accept: str | None = None) -> tuple[str, dict[str, str]]:
    """The URL as ``requests`` will send it, and the headers of a GET of it (``Accept``:
    an ActivityStreams document unless told), signed by the instance actor when
    ``SIGNING_KEY`` is set.

    Servers in authorized-fetch mode (GoToSocial by default, Mastodon with
    ``AUTHORIZED_FETCH``) answer an unsigned GET with 401. An unusable key
    leaves the fetch unsigned (the system checks report the key).
    """
    prepared = requests.PreparedRequest()
    for _ in range(2):  # requests decodes %2e, then removes the dot segment when it sends
        prepared.prepare_url(url, None)
        url = prepared.url
    headers = {"Accept": accept or FETCH_ACCEPT, "User-Agent": config.USER_AGENT}
    try:
        signer = site_signer(config)
    except ImproperlyConfigured as exc:
        logger.warning("activity_queue: fetching %s unsigned: %s", url[:200], exc)
        return url, headers
    if signer is None:
        return url, headers
    return url, {**headers, **sign_get(url, signer)}


def sign_get(url: str, signer: Signer) -> dict[str, str]:
    """``Host``, ``Date`` and a draft-cavage ``Signature`` over ``(request-target) host date``,
    its host sent as the URL names it, port included."""
    values = {"host": urlsplit(url).netloc.rpartition("@")[2], "date": signatures.http_date()}
    text = signatures.signing_string(signatures.request_target("GET", url), values,
                                     FETCH_HEADERS)
    return {"Host": values["host"], "Date": values["date"],
            "Signature": signatures.signature_value(text, FETCH_HEADERS, key=signer.private_key,
                                                    key_id=signer.key_id)}
