"""HTTP Signature verification as a DRF authentication class, and the permission that
requires it (both used by the inbox when ``INBOX_REQUIRE_SIGNATURE`` is on)."""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission

from ..conf import get_config
from ..net.signatures import (
    SIGNED_HEADERS,
    BadSignature,
    SignatureError,
    check_request,
    check_signature,
    parse_signature,
)
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


def verify_request(request: HttpRequest) -> VerifiedSignature | None:
    """None for an unsigned request; the signer for a good one; SignatureError otherwise.

    A signature that fails with a cached key is tried once more with the key
    fetched afresh, so that a sender's key rotation costs one fetch, not an outage.
    """
    header = signature_header(request)
    if header is None:
        return None
    config = get_config()
    parsed = parse_signature(header)
    headers = request_headers(request)
    body = read_body(request, config.INBOX_MAX_BYTES)
    check_request(parsed, headers=headers, body=body, max_age=config.SIGNATURE_MAX_AGE)
    key = remote_key(parsed.key_id)
    check = {"method": request.method or "", "target_path": target_path(request),
             "headers": headers}
    try:
        check_signature(parsed, public_key=key.public_key(), **check)
    except BadSignature:
        if not key.cached:
            raise
        key = remote_key(parsed.key_id, refresh=True)
        check_signature(parsed, public_key=key.public_key(), **check)
    return VerifiedSignature(key_id=key.key_id, owner=key.owner)


class HTTPSignatureAuthentication(BaseAuthentication):
    """Authenticates a draft-cavage HTTP Signature; unsigned requests pass on as anonymous.

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
        return f'Signature realm="inbox",headers="{" ".join(SIGNED_HEADERS)}"'


class HasValidSignature(BasePermission):
    """Only requests authenticated by :class:`HTTPSignatureAuthentication` get in."""

    message = "this inbox requires a valid HTTP Signature"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, VerifiedSignature)
