"""HTTP Signatures (draft-cavage-http-signatures, as Mastodon-family servers use them).

A signed POST carries ``Date``, ``Digest: SHA-256=<base64>`` and
``Signature: keyId="…",algorithm="rsa-sha256",headers="(request-target) host
date digest",signature="<base64>"``, the signature being RSASSA-PKCS1-v1_5
with SHA-256 over the listed headers (Ed25519 for an Ed25519 key, announced as
``hs2019``). The cryptography is the ``cryptography`` package's; this module is
only the glue, as no maintained library does draft-cavage: building and parsing
the headers, and checking a request against a public key. RFC 9421 is
:mod:`.rfc9421`'s, choosing between the two :mod:`.signing`'s. Fetching the
sender's key lives in :mod:`activity_queue.inbox.keys`, the DRF glue in
:mod:`activity_queue.inbox.authentication`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from .addresses import origin

#: What we sign.
SIGNED_HEADERS = ("(request-target)", "host", "date", "digest")
#: ``hs2019`` is what newer Mastodon-family servers announce for the same RSA scheme (and
#: for Ed25519: the key decides); ``ed25519`` names Ed25519 outright.
ALGORITHMS = ("rsa-sha256", "hs2019", "ed25519")
MAX_HEADER_LENGTH = 8192
_DIGESTS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
#: ``name="value"``; ``created`` and ``expires`` are numbers, sent without quotes.
_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*(?:"([^"]*)"|([0-9][0-9.]*))\s*(,|$)')


class SignatureError(ValueError):
    """A request's signature is absent, malformed, stale or does not verify."""


class BadSignature(SignatureError):
    """The signature does not match the key (perhaps a rotated key: fetch it again)."""


# -- signing -------------------------------------------------------------------


def load_private_key(value: str | bytes) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """An RSA or Ed25519 private key from PEM text, or from the path of a PEM file.

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
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"an RSA or Ed25519 key is required, not {type(key).__name__}")
    return key


def public_pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def digest_header(body: bytes) -> str:
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()


def content_digest_header(body: bytes) -> str:
    """RFC 9530 ``Content-Digest``: the same SHA-256 as a structured-field byte sequence."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


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


def signing_string(target: str, headers: dict[str, str], names: tuple[str, ...],
                   params: dict[str, str] | None = None) -> str:
    """The text that is signed: one ``name: value`` line per signed header, in order.

    ``headers`` has lower-case names; ``params`` the signature's ``created`` and
    ``expires``, for the ``(created)`` and ``(expires)`` pseudo-headers. Raises
    SignatureError for a missing one.
    """
    lines = []
    for name in names:
        if name == "(request-target)":
            lines.append(f"(request-target): {target}")
            continue
        if name in ("(created)", "(expires)"):
            value = (params or {}).get(name[1:-1])
            if value is None:
                raise SignatureError(f"the signature covers {name} but has no {name[1:-1]}")
            lines.append(f"{name}: {value}")
            continue
        value = headers.get(name)
        if value is None:
            raise SignatureError(f"the signed header {name!r} is not in the request")
        lines.append(f"{name}: {value.strip()}")
    return "\n".join(lines)


def sign_headers(method: str, url: str, headers: dict[str, str], body: bytes, *,
                 key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, key_id: str,
                 date: datetime | None = None) -> dict[str, str]:
    """``headers`` plus ``Host``, ``Date``, ``Digest``, ``Content-Digest`` and
    ``Signature`` for this request."""
    signed = {k: v for k, v in headers.items()
              if k.lower() not in ("host", "date", "digest", "content-digest", "signature")}
    values = {"host": host_header(url), "date": http_date(date), "digest": digest_header(body)}
    text = signing_string(request_target(method, url), values, SIGNED_HEADERS)
    signed.update({"Host": values["host"], "Date": values["date"], "Digest": values["digest"],
                   "Content-Digest": content_digest_header(body),
                   "Signature": signature_value(text, SIGNED_HEADERS, key=key, key_id=key_id)})
    return signed


def signature_value(text: str, names: tuple[str, ...], *,
                    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, key_id: str) -> str:
    """The ``Signature`` header of a signing string over ``names``.

    An RSA key signs ``rsa-sha256`` (what every Mastodon-family server verifies);
    an Ed25519 key signs ``hs2019``, whose algorithm the receiver takes from the key.
    """
    if '"' in key_id:
        raise ValueError("a keyId cannot contain a double quote")
    data = text.encode()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature, algorithm = key.sign(data), "hs2019"
    else:
        signature, algorithm = key.sign(data, padding.PKCS1v15(), hashes.SHA256()), "rsa-sha256"
    return (f'keyId="{key_id}",algorithm="{algorithm}",headers="{" ".join(names)}",'
            f'signature="{base64.b64encode(signature).decode()}"')


# -- verifying -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedSignature:
    key_id: str
    algorithm: str
    headers: tuple[str, ...]
    signature: bytes
    #: ``created`` and ``expires`` (Unix times, as sent), for the pseudo-headers.
    params: dict[str, str] = field(default_factory=dict)


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
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params.setdefault(match.group(1), value)
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
    times = {}
    for name in ("created", "expires"):
        if name in params:
            if not re.fullmatch(r"[0-9]{1,12}(\.[0-9]{1,9})?", params[name]):
                raise SignatureError(f"the signature's {name} is not a Unix time")
            times[name] = params[name]
    return ParsedSignature(params["keyId"], algorithm, names, signature, times)


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


def check_request(parsed: ParsedSignature, *, method: str, headers: dict[str, str],
                  body: bytes, max_age: float, now: datetime | None = None) -> None:
    """What can be checked without the key: coverage, freshness and ``Digest``.

    Done first, so that a stale or tampered request never costs a key fetch. As
    lenient as Mastodon, and no more: ``(request-target)`` and ``host`` covered,
    ``date`` or ``(created)`` covered, ``digest`` covered on a POST; ``Date`` and
    ``created`` within ``max_age`` seconds of now either way (clock skew), and an
    ``expires`` not past by more than that.
    """
    covered = set(parsed.headers)
    missing = [h for h in ("(request-target)", "host") if h not in covered]
    if not covered & {"date", "(created)"}:
        missing.append("date")
    if method.upper() == "POST" and "digest" not in covered:
        missing.append("digest")
    if missing:
        raise SignatureError(f"the signature does not cover {' '.join(missing)}")
    now = now or datetime.now(UTC)
    if "date" in covered:
        check_date(headers.get("date"), max_age, now)
    for name in ("created", "expires"):
        if f"({name})" in covered and name not in parsed.params:
            raise SignatureError(f"the signature covers ({name}) but has no {name}")
    if "created" in parsed.params:
        created = float(parsed.params["created"])
        if not abs(now.timestamp() - created) <= max_age:
            raise SignatureError(f"the signature's created is not within {max_age:g} s of now")
    if "expires" in parsed.params and float(parsed.params["expires"]) + max_age < now.timestamp():
        raise SignatureError("the signature has expired")
    if "digest" in covered or body:
        check_digest(headers.get("digest"), body)


def check_signature(parsed: ParsedSignature, *, method: str, target_path: str,
                    headers: dict[str, str], public_key: Any) -> None:
    """The signature itself, over the headers it lists (lower-case names in ``headers``).

    RSA keys verify PKCS#1 v1.5 with SHA-256 (``rsa-sha256``, or ``hs2019`` as
    Mastodon reads it), Ed25519 keys Ed25519 (``hs2019`` or ``ed25519``).
    """
    text = signing_string(f"{method.lower()} {target_path}", headers, parsed.headers,
                          parsed.params).encode()
    try:
        if isinstance(public_key, rsa.RSAPublicKey) and parsed.algorithm != "ed25519":
            public_key.verify(parsed.signature, text, padding.PKCS1v15(), hashes.SHA256())
        elif (isinstance(public_key, ed25519.Ed25519PublicKey)
              and parsed.algorithm in ("hs2019", "ed25519")):
            public_key.verify(parsed.signature, text)
        else:
            raise SignatureError(f"the signer's {type(public_key).__name__} does not fit the "
                                 f"algorithm {parsed.algorithm}")
    except InvalidSignature:
        raise BadSignature("the signature does not verify with the signer's key") from None


def verify(parsed: ParsedSignature, *, method: str, target_path: str,
           headers: dict[str, str], body: bytes, public_key: Any, max_age: float,
           now: datetime | None = None) -> None:
    """Check a request against a parsed signature and a key; raise SignatureError if it fails.

    ``target_path`` is the path and query as sent.
    """
    check_request(parsed, method=method, headers=headers, body=body, max_age=max_age, now=now)
    check_signature(parsed, method=method, target_path=target_path, headers=headers,
                    public_key=public_key)


def load_public_key(pem: str) -> rsa.RSAPublicKey | ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode("utf-8", "replace"))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SignatureError("the signer's publicKeyPem is not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise SignatureError("the signer's key is neither an RSA nor an Ed25519 key")
    return key


# -- Ed25519 keys as FEP-521a publishes them (``publicKeyMultibase``) ------------

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
#: The multicodec prefix of an Ed25519 public key (0xed, as a varint).
_ED25519_PUB = b"\xed\x01"


def _b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, digit = divmod(number, 58)
        out = _BASE58[digit] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        digit = _BASE58.find(char)
        if digit < 0:
            raise ValueError(f"{char!r} is not a base58btc digit")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def multibase_public_key(key: ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey) -> str:
    """``z6Mk…``: an Ed25519 public key as FEP-521a's ``publicKeyMultibase`` holds it."""
    public = key.public_key() if isinstance(key, ed25519.Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "z" + _b58encode(_ED25519_PUB + raw)


def multibase_to_pem(value: str) -> str:
    """The PEM of an Ed25519 ``publicKeyMultibase``; SignatureError for anything else."""
    if not isinstance(value, str) or not value.startswith("z") or len(value) > 200:
        raise SignatureError("the publicKeyMultibase is not base58btc (it must start with z)")
    try:
        data = _b58decode(value[1:])
    except ValueError as exc:
        raise SignatureError(f"the publicKeyMultibase is malformed: {exc}") from None
    if not data.startswith(_ED25519_PUB) or len(data) != 34:
        raise SignatureError("the publicKeyMultibase is not an Ed25519 public key")
    key = ed25519.Ed25519PublicKey.from_public_bytes(data[2:])
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
