"""HTTP Signatures (draft-cavage-http-signatures, as Mastodon-family servers use them).

A signed POST carries ``Date``, ``Digest: SHA-256=<base64>`` and
``Signature: keyId="…",algorithm="rsa-sha256",headers="(request-target) host
date digest",signature="<base64>"``, the signature being RSASSA-PKCS1-v1_5
with SHA-256 over the listed headers. The cryptography is the
``cryptography`` package's; this module is only the glue: building and
parsing the headers, and checking a request against a public key. Fetching
the sender's key lives in :mod:`activity_queue.inbox.keys`, the DRF glue in
:mod:`activity_queue.inbox.authentication`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.core.exceptions import ImproperlyConfigured

from ..conf import Config
from ..exceptions import ActivityQueueError
from .addresses import origin

logger = logging.getLogger(__name__)

#: What we sign, and the least an inbound POST must have signed.
SIGNED_HEADERS = ("(request-target)", "host", "date", "digest")
#: ``hs2019`` is what newer Mastodon-family servers announce for the same RSA scheme.
ALGORITHMS = ("rsa-sha256", "hs2019")
MAX_HEADER_LENGTH = 8192
_DIGESTS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*"([^"]*)"\s*(,|$)')


class SignatureError(ValueError):
    """A request's signature is absent, malformed, stale or does not verify."""


class SigningUnavailable(ActivityQueueError):
    """``SIGNING_KEY`` is set but cannot be used, so nothing is sent unsigned instead."""


class BadSignature(SignatureError):
    """The signature does not match the key (perhaps a rotated key: fetch it again)."""


# -- signing -------------------------------------------------------------------


def load_private_key(value: str | bytes) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM text, or from the path of a PEM file.

    Raises ValueError with a readable reason; encrypted keys are not supported.
    """
    if isinstance(value, str) and not value.lstrip().startswith("-----BEGIN"):
        try:
            data = Path(value).expanduser().read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read the key file {value!r}: {exc.strerror}") from None
    else:
        data = value.encode() if isinstance(value, str) else value
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"an RSA key is required, not {type(key).__name__}")
    return key


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def digest_header(body: bytes) -> str:
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()


def http_date(when: datetime | None = None) -> str:
    """RFC 7231 IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return format_datetime((when or datetime.now(UTC)).astimezone(UTC), usegmt=True)


def request_target(method: str, url: str) -> str:
    parts = urlsplit(url)
    path = parts.path or "/"
    return f"{method.lower()} {path}?{parts.query}" if parts.query else f"{method.lower()} {path}"


def host_header(url: str) -> str:
    """``host[:port]`` as an HTTP client sends it (default port left out)."""
    return origin(url).split("://", 1)[1]


def signing_string(target: str, headers: dict[str, str], names: tuple[str, ...]) -> str:
    """The text that is signed: one ``name: value`` line per signed header, in order.

    ``headers`` has lower-case names. Raises SignatureError for a missing one.
    """
    lines = []
    for name in names:
        if name == "(request-target)":
            lines.append(f"(request-target): {target}")
            continue
        value = headers.get(name)
        if value is None:
            raise SignatureError(f"the signed header {name!r} is not in the request")
        lines.append(f"{name}: {value.strip()}")
    return "\n".join(lines)


def sign_headers(method: str, url: str, headers: dict[str, str], body: bytes, *,
                 key: rsa.RSAPrivateKey, key_id: str,
                 date: datetime | None = None) -> dict[str, str]:
    """``headers`` plus ``Host``, ``Date``, ``Digest`` and ``Signature`` for this request."""
    signed = {k: v for k, v in headers.items()
              if k.lower() not in ("host", "date", "digest", "signature")}
    values = {"host": host_header(url), "date": http_date(date), "digest": digest_header(body)}
    text = signing_string(request_target(method, url), values, SIGNED_HEADERS)
    signature = key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    signed.update({"Host": values["host"], "Date": values["date"], "Digest": values["digest"]})
    signed["Signature"] = (
        f'keyId="{key_id}",algorithm="rsa-sha256",headers="{" ".join(SIGNED_HEADERS)}",'
        f'signature="{base64.b64encode(signature).decode()}"'
    )
    return signed


def make_signer(key: rsa.RSAPrivateKey, key_id: str
                ) -> Callable[[str, str, dict[str, str], bytes], dict[str, str]]:
    """A :data:`activity_queue.sending.transport.Signer` that signs with ``key`` as ``key_id``."""
    if '"' in key_id:
        raise ValueError("a keyId cannot contain a double quote")

    def signer(method: str, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        return sign_headers(method, url, headers, body, key=key, key_id=key_id)

    return signer


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


def signing_key(config: Config) -> tuple[rsa.RSAPrivateKey, str] | None:
    """The configured key and its id, None when signing is off; ImproperlyConfigured if broken."""
    if not config.SIGNING_KEY:
        return None
    try:
        key = load_private_key(config.SIGNING_KEY)
    except ValueError as exc:
        raise ImproperlyConfigured(f"ACTIVITY_QUEUE['SIGNING_KEY']: {exc}") from None
    key_id = key_id_of(config)
    if not key_id:
        raise ImproperlyConfigured(
            "ACTIVITY_QUEUE['SIGNING_KEY'] is set but there is no key id: set SIGNING_KEY_ID, "
            "or SITE_URL and include activity_queue.urls so the key is published")
    return key, key_id


def signer_from_config(config: Config) -> Callable[..., dict[str, str]] | None:
    """The worker's signer: None unless ``SIGNING_KEY`` is configured.

    A key that is configured but unusable gives a signer that refuses: its
    deliveries are retried (and visible in the log with the reason) rather than
    sent unsigned, and the worker's construction, which may happen inside a
    request, does not fail. The system checks report the same problem earlier.
    """
    try:
        found = signing_key(config)
    except ImproperlyConfigured as exc:
        logger.error("activity_queue: %s; deliveries wait until it is fixed", exc)
        reason = str(exc)

        def refuse(method: str, url: str, headers: dict[str, str], body: bytes) -> dict:
            raise SigningUnavailable(reason)

        return refuse
    return make_signer(*found) if found else None


# -- verifying -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedSignature:
    key_id: str
    algorithm: str
    headers: tuple[str, ...]
    signature: bytes


def parse_signature(value: str) -> ParsedSignature:
    """Parse a ``Signature`` header value (or an ``Authorization: Signature …`` one)."""
    if len(value) > MAX_HEADER_LENGTH:
        raise SignatureError("the Signature header is too long")
    text = value.strip()
    if text[:10].lower() == "signature ":
        text = text[10:]
    params: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _PARAM.match(text, pos)
        if not match or match.end() == pos:
            raise SignatureError("the Signature header is malformed")
        params.setdefault(match.group(1), match.group(2))
        pos = match.end()
    if not params.get("keyId"):
        raise SignatureError("the Signature header has no keyId")
    if "signature" not in params:
        raise SignatureError("the Signature header has no signature")
    algorithm = params.get("algorithm", "rsa-sha256").lower()
    if algorithm not in ALGORITHMS:
        raise SignatureError(f"unsupported signature algorithm {algorithm[:40]!r}")
    names = tuple(params.get("headers", "date").lower().split())
    try:
        signature = base64.b64decode(params["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the signature is not valid base64") from None
    return ParsedSignature(params["keyId"], algorithm, names, signature)


def check_digest(value: str | None, body: bytes) -> None:
    """The ``Digest`` header must name SHA-256 (or SHA-512) and match the body."""
    if not value:
        raise SignatureError("the Digest header is missing")
    known = 0
    for part in value.split(","):
        name, _, encoded = part.strip().partition("=")
        make = _DIGESTS.get(name.strip().lower())
        if make is None:
            continue
        known += 1
        try:
            expected = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("the Digest header is not valid base64") from None
        if make(body).digest() != expected:
            raise SignatureError("the Digest does not match the body")
    if not known:
        raise SignatureError("the Digest header has no SHA-256 digest")


def check_date(value: str | None, max_age: float, now: datetime | None = None) -> None:
    """``Date`` within ``max_age`` seconds of now, in either direction (clock skew)."""
    if not value:
        raise SignatureError("the Date header is missing")
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise SignatureError("the Date header is not an HTTP date") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    skew = abs(((now or datetime.now(UTC)) - when).total_seconds())
    if skew > max_age:
        raise SignatureError(f"the Date is {int(skew)} s away from now (more than {max_age:g} s)")


def check_request(parsed: ParsedSignature, *, headers: dict[str, str], body: bytes,
                  max_age: float, now: datetime | None = None) -> None:
    """What can be checked without the key: coverage, ``Date`` and ``Digest``.

    Done first, so that a stale or tampered request never costs a key fetch.
    """
    missing = [h for h in SIGNED_HEADERS if h not in parsed.headers]
    if missing:
        raise SignatureError(f"the signature does not cover {' '.join(missing)}")
    check_date(headers.get("date"), max_age, now)
    check_digest(headers.get("digest"), body)


def check_signature(parsed: ParsedSignature, *, method: str, target_path: str,
                    headers: dict[str, str], public_key: Any) -> None:
    """The signature itself, over the headers it lists (lower-case names in ``headers``)."""
    text = signing_string(f"{method.lower()} {target_path}", headers, parsed.headers)
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise SignatureError("the signer's key is not an RSA key")
    try:
        public_key.verify(parsed.signature, text.encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise BadSignature("the signature does not verify with the signer's key") from None


def verify(parsed: ParsedSignature, *, method: str, target_path: str,
           headers: dict[str, str], body: bytes, public_key: Any, max_age: float,
           now: datetime | None = None) -> None:
    """Check a request against a parsed signature and a key; raise SignatureError if it fails.

    ``target_path`` is the path and query as sent.
    """
    check_request(parsed, headers=headers, body=body, max_age=max_age, now=now)
    check_signature(parsed, method=method, target_path=target_path, headers=headers,
                    public_key=public_key)


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode("utf-8", "replace"))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SignatureError("the signer's publicKeyPem is not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError("the signer's key is not an RSA key")
    return key
