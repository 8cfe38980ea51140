"""Where the inbox checks an inbound HTTP Signature: a DRF authentication class, and the
permission that requires one.

The inbox authenticates with it whenever a signature counts: when one is required
(``INBOX_REQUIRE_SIGNATURE``, or ``INBOX_UNSIGNED = "require"``), and with
``INBOX_UNSIGNED = "verify"``, where a good signature from an object's origin spares
the fetch there. The permission is added only when a signature is required.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission

from ..conf import get_config
from ..net import rfc9421, signatures
from ..net.signatures import BadSignature, SignatureError
from .body import read_body
from .keys import remote_key


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    """``request.auth`` of a request whose signature verified."""

    key_id: str
    owner: str


class RemoteActor:
    """``request.user`` of a signed request: the key's owner, authenticated, not a local user."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None

    def __init__(self, owner: str) -> None:
        self.id = owner

    def __str__(self) -> str:
        return self.id


def request_headers(request: HttpRequest) -> dict[str, str]:
    """The request's headers with lower-case names, as a signature names them."""
    headers = {}
    for key, value in request.META.items():
        if not isinstance(value, str):
            continue
        if key.startswith("HTTP_"):
            headers[key[5:].lower().replace("_", "-")] = value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            headers[key.lower().replace("_", "-")] = value
    return headers


def target_path(request: HttpRequest) -> str:
    """Path and query as the client sent them (before any percent-decoding), when known."""
    scope = getattr(request, "scope", None)
    if isinstance(scope, dict) and scope.get("raw_path"):
        query = scope.get("query_string") or b""
        raw = scope["raw_path"].decode("latin-1")
        return f"{raw}?{query.decode('latin-1')}" if query else raw
    for key in ("RAW_URI", "REQUEST_URI"):
        value = request.META.get(key)
        if isinstance(value, str) and value.startswith("/"):
            return value
    return request.get_full_path()


def signature_header(request: HttpRequest) -> str | None:
    value = request.META.get("HTTP_SIGNATURE")
    if value:
        return value
    value = request.META.get("HTTP_AUTHORIZATION", "")
    return value if value[:10].lower() == "signature " else None


def request_url(request: HttpRequest) -> str:
    """The absolute URL the client asked for, for RFC 9421's ``@target-uri``."""
    return f"{request.scheme}://{request.get_host()}{target_path(request)}"


def verify_request(request: HttpRequest) -> VerifiedSignature | None:
    """None for an unsigned request; the signer for a good one; SignatureError otherwise.

    A signature that fails with a cached key is tried once more with the key fetched
    afresh, so that a sender's key rotation costs one fetch, not an outage.
    """
    found = _checked_without_key(request)
    if found is None:
        return None
    key_id, check = found
    key = remote_key(key_id)
    try:
        check(key.public_key())
    except BadSignature:
        if not key.cached:
            raise
        key = remote_key(key_id, refresh=True)
        check(key.public_key())
    return VerifiedSignature(key_id=key.key_id, owner=key.owner)


def _checked_without_key(request: HttpRequest) -> tuple[str, Callable[[Any], None]] | None:
    """The request's keyId and the check left to make against its public key, once what
    needs no key (coverage, freshness, the body's digest) has held; None when unsigned.

    Checked first so that a stale or tampered request costs no key fetch. An RFC 9421
    signature (a ``Signature-Input`` header) is read as such, any other ``Signature``
    as draft-cavage.
    """
    headers = request_headers(request)
    modern = rfc9421.is_signed(headers)
    header = None if modern else signature_header(request)
    if header is None and not modern:
        return None
    config = get_config()
    body = read_body(request, config.INBOX_MAX_BYTES)
    method = request.method or ""
    if modern:
        parsed = rfc9421.parse_input(headers)
        rfc9421.check_request(parsed, method=method, headers=headers, body=body,
                              max_age=config.SIGNATURE_MAX_AGE)
        url = request_url(request)

        def check(public_key: Any) -> None:
            rfc9421.check_signature(parsed, method=method, url=url, headers=headers,
                                    public_key=public_key, max_age=config.SIGNATURE_MAX_AGE)
        return parsed.key_id, check
    parsed = signatures.parse_signature(header)
    signatures.check_request(parsed, method=method, headers=headers, body=body,
                             max_age=config.SIGNATURE_MAX_AGE)
    path = target_path(request)

    def check(public_key: Any) -> None:
        signatures.check_signature(parsed, method=method, target_path=path,
                                   headers=headers, public_key=public_key)
    return parsed.key_id, check


class HTTPSignatureAuthentication(BaseAuthentication):
    """Authenticates an HTTP Signature (draft-cavage or RFC 9421); unsigned requests pass on
    as anonymous.

    A signature that is present but wrong is a 401, whether or not signatures
    are required: a request must not be taken as anonymous by dropping it.
    """

    def authenticate(self, request):
        try:
            verified = verify_request(request._request)
        except SignatureError as exc:
            raise AuthenticationFailed(f"HTTP Signature: {exc}") from None
        if verified is None:
            return None
        return RemoteActor(verified.owner), verified

    def authenticate_header(self, request) -> str:
        return f'Signature realm="inbox",headers="{" ".join(signatures.SIGNED_HEADERS)}"'


class HasValidSignature(BasePermission):
    """Only requests authenticated by :class:`HTTPSignatureAuthentication` get in."""

    message = "this inbox requires a valid HTTP Signature"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, VerifiedSignature)
