"""RFC 9421 HTTP Message Signatures, as Mastodon (4.5+) and Fedify-based servers use them.

A signed POST carries ``Content-Digest: sha-256=:<base64>:`` (RFC 9530),
``Signature-Input: sig1=("@method" "@target-uri" "content-digest");created=…;
keyid="…";alg="rsa-v1_5-sha256"`` and ``Signature: sig1=:<base64>:``. Building
the signature base, the structured fields and the cryptography are the
``http-message-signatures`` library's (``http-sf`` parses the fields); this
module only picks what is covered, which algorithm a key calls for, and what
an inbound signature must cover to be accepted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import http_sf
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)

from .signatures import BadSignature, SignatureError, digest_header, host_header, http_date

#: What we sign: the request's method and URL, and its body through ``Content-Digest``.
COVERED = ("@method", "@target-uri", "content-digest")
#: The least an inbound signature must cover (``content-digest`` too when there is a body).
REQUIRED = ("@method", "@target-uri")
LABEL = "sig1"
MAX_HEADER_LENGTH = 8192
_ALGORITHMS = {cls.algorithm_id: cls for cls in (
    algorithms.RSA_V1_5_SHA256, algorithms.RSA_PSS_SHA512, algorithms.ED25519)}


class _Message:
    """The request as ``http-message-signatures`` reads it: method, absolute URL, headers."""

    __slots__ = ("method", "url", "headers")

    def __init__(self, method: str, url: str, headers: dict[str, str]) -> None:
        self.method = method.upper()
        self.url = url
        self.headers = headers


class _Key(HTTPSignatureKeyResolver):
    """The one key of this signature, whatever its id: the caller has already chosen it."""

    def __init__(self, private: Any = None, public: Any = None) -> None:
        self.private, self.public = private, public

    def resolve_private_key(self, key_id: str):
        return self.private

    def resolve_public_key(self, key_id: str):
        return self.public


def algorithm_for(key: Any, announced: str | None = None) -> type:
    """The algorithm class for a key: RSA PKCS#1 v1.5 (what the fediverse uses) unless the
    signature announced RSA-PSS, Ed25519 for an Ed25519 key; SignatureError otherwise."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        chosen = _ALGORITHMS.get(announced or "rsa-v1_5-sha256")
        if chosen is None or chosen is algorithms.ED25519:
            raise SignatureError(f"the algorithm {str(announced)[:40]!r} does not fit an RSA key")
        return chosen
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        if announced not in (None, "ed25519"):
            raise SignatureError(f"the algorithm {announced[:40]!r} does not fit an Ed25519 key")
        return algorithms.ED25519
    raise SignatureError(f"unsupported key type {type(key).__name__}")


# -- signing -------------------------------------------------------------------


def sign_headers(method: str, url: str, headers: dict[str, str], body: bytes, *,
                 key: Any, key_id: str, created: datetime | None = None) -> dict[str, str]:
    """``headers`` plus ``Host``, ``Date``, ``Content-Digest``, ``Signature-Input`` and
    ``Signature`` for this request (``url`` as sent: ASCII host, percent-encoded path)."""
    names = {"host", "date", "digest", "content-digest", "signature", "signature-input"}
    out = {k: v for k, v in headers.items() if k.lower() not in names}
    out["Host"] = host_header(url)
    out["Date"] = http_date(created)
    out["Digest"] = digest_header(body)
    message = _Message(method, url, out)
    signer = HTTPMessageSigner(signature_algorithm=algorithm_for(key), key_resolver=_Key(key))
    try:
        signer.sign(message, key_id=key_id, created=created or datetime.now(UTC), label=LABEL,
                    covered_component_ids=COVERED[:2], body=body)
    except HTTPMessageSignaturesException as exc:
        raise ValueError(f"cannot sign {url[:200]}: {exc}") from None
    return out


# -- verifying -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedInput:
    """One signature of a request: its ``Signature-Input`` member and its bytes."""

    label: str
    key_id: str
    algorithm: str | None
    created: int | None
    expires: int | None
    components: tuple[str, ...]
    signature: bytes
    #: The request's two fields reduced to this signature, for the verifier.
    fields: dict[str, str] = field(repr=False)


def is_signed(headers: dict[str, str]) -> bool:
    """Whether a request (lower-case header names) carries an RFC 9421 signature."""
    return "signature-input" in headers


def _dictionary(value: str, name: str) -> dict:
    if len(value) > MAX_HEADER_LENGTH:
        raise SignatureError(f"the {name} header is too long")
    try:
        parsed = http_sf.parse(value.encode("latin-1"), tltype="dictionary")
    except (ValueError, TypeError, UnicodeError, http_sf.StructuredFieldError):
        raise SignatureError(f"the {name} header is malformed") from None
    if not isinstance(parsed, dict) or not parsed:
        raise SignatureError(f"the {name} header is empty")
    return parsed


def parse_input(headers: dict[str, str]) -> ParsedInput:
    """The first signature of ``Signature-Input`` that ``Signature`` has (lower-case names).

    Senders that sign twice (with a tag, for another audience) still send one we
    can check; which one we check is not covered by any signature, and need not be.
    """
    inputs = _dictionary(headers.get("signature-input", ""), "Signature-Input")
    values = _dictionary(headers.get("signature", ""), "Signature")
    label = next((name for name in inputs if name in values), None)
    if label is None:
        raise SignatureError("the Signature header has none of the Signature-Input labels")
    members, params = inputs[label]
    signature = values[label][0]
    if not isinstance(members, list) or not isinstance(signature, bytes):
        raise SignatureError("the Signature-Input or Signature member is malformed")
    components = []
    for name, item_params in members:
        if not isinstance(name, str):
            raise SignatureError("a covered component is not a string")
        components.append(name if not item_params else http_sf.ser((name, item_params)))
    key_id = params.get("keyid")
    if not isinstance(key_id, str) or not key_id:
        raise SignatureError("the signature has no keyid")
    alg = params.get("alg")
    created, expires = params.get("created"), params.get("expires")
    for name, value in (("created", created), ("expires", expires)):
        if value is not None and (type(value) is not int):
            raise SignatureError(f"the signature's {name} is not an integer")
    if alg is not None and alg not in _ALGORITHMS:
        raise SignatureError(f"unsupported signature algorithm {str(alg)[:40]!r}")
    fields = {"signature-input": http_sf.ser({label: inputs[label]}),
              "signature": http_sf.ser({label: values[label]})}
    return ParsedInput(label, key_id, alg, created, expires, tuple(components), signature,
                       fields)


def check_request(parsed: ParsedInput, *, method: str, headers: dict[str, str], body: bytes,
                  max_age: float, now: float | None = None) -> None:
    """What can be checked without the key: coverage, ``created``/``expires`` within
    ``max_age`` seconds of clock skew, and ``Content-Digest`` against the body."""
    required = list(REQUIRED)
    if body or method.upper() == "POST":
        required.append("content-digest")
    missing = [c for c in required if c not in parsed.components]
    if missing:
        raise SignatureError(f"the signature does not cover {' '.join(missing)}")
    now = time.time() if now is None else now
    if parsed.created is None:
        raise SignatureError("the signature has no created time")
    if abs(now - parsed.created) > max_age:
        raise SignatureError(f"the signature was created {int(abs(now - parsed.created))} s "
                             f"away from now (more than {max_age:g} s)")
    if parsed.expires is not None and parsed.expires + max_age < now:
        raise SignatureError("the signature has expired")
    if "content-digest" in parsed.components:
        value = headers.get("content-digest")
        if not value:
            raise SignatureError("the Content-Digest header is missing")
        try:
            ContentDigest.verify(value, body)
        except (InvalidSignature, HTTPMessageSignaturesException) as exc:
            raise SignatureError(f"the Content-Digest {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "does not match" in text:
        return "does not match the body"
    return f"is not usable ({text[:120]})"


def check_signature(parsed: ParsedInput, *, method: str, url: str, headers: dict[str, str],
                    public_key: Any, max_age: float) -> None:
    """The signature itself, over what it covers, with ``http-message-signatures``.

    ``url`` is the absolute URL of the request as received (for ``@target-uri``).
    """
    verifier = HTTPMessageVerifier(signature_algorithm=algorithm_for(public_key, parsed.algorithm),
                                   key_resolver=_Key(public=public_key))
    verifier.max_clock_skew = timedelta(seconds=max_age)
    message = _Message(method, url, {**headers, **parsed.fields})
    try:
        verifier.verify(message, max_age=None)
    except (InvalidSignature, HTTPMessageSignaturesException) as exc:
        if isinstance(exc.__cause__, CryptoInvalidSignature):
            raise BadSignature("the signature does not verify with the signer's key") from None
        text = str(exc) or type(exc.__cause__).__name__
        raise SignatureError(f"the signature does not verify: {text[:200]}") from None
