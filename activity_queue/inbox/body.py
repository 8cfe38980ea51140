"""Reading a request body with a size cap, whatever the server framing.

Django's ``request.body`` trusts ``Content-Length`` and reads everything;
an inbox open to the world must refuse a large body before and while
reading it. Bodies without a length are read too: under ASGI the server
hands over the whole stream, under WSGI a server that de-chunks (gunicorn)
says so with ``wsgi.input_terminated``.
"""

from __future__ import annotations

import re

from django.http import HttpRequest
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError, UnsupportedMediaType

_DIGITS = re.compile(r"[0-9]+")
_CACHED = "_activity_queue_body"
CHUNK = 64 * 1024


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "the request body is too large"
    default_code = "payload_too_large"


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than {limit} bytes")


def check_identity_encoding(request: HttpRequest) -> None:
    """Refuse (415) a body sent with a ``Content-Encoding`` other than identity.

    The body is never decoded here, so a gzip body would reach the JSON
    parser as noise, and decompressing would undo the size cap.
    """
    value = request.META.get("HTTP_CONTENT_ENCODING", "")
    codings = {c.strip().lower() for c in value.split(",")} - {"", "identity"}
    if codings:
        raise UnsupportedMediaType(value, detail=(
            f"unsupported Content-Encoding {value[:100]!r}; send the body unencoded "
            "(identity)"))


def read_body(request: HttpRequest, limit: int) -> bytes:
    """The body, at most ``limit`` bytes (413 beyond, 400 if unreadable or cut short).

    Read once, then kept.
    """
    cached = getattr(request, _CACHED, None)
    if cached is not None:
        return cached
    declared = (request.META.get("CONTENT_LENGTH") or "").strip()
    if declared:
        if not _DIGITS.fullmatch(declared):
            raise ParseError(f"invalid Content-Length {declared[:40]!r}")
        if int(declared) > limit:
            raise too_large(limit)
    if getattr(request, "_body", None) is not None:  # someone already read request.body
        data = request._body
    else:
        stream = request
        if not declared and request.META.get("wsgi.input_terminated"):
            stream = request.META["wsgi.input"]
        data = _read_capped(stream, limit)
    if len(data) > limit:
        raise too_large(limit)
    if declared and len(data) < int(declared):
        # A client that went away mid-body: what arrived may still parse, but is not all.
        raise ParseError(f"the request body is shorter than its Content-Length "
                         f"({len(data)} of {declared} bytes)")
    setattr(request, _CACHED, data)
    return data


def _read_capped(stream, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    try:
        while total <= limit:
            chunk = stream.read(min(CHUNK, limit + 1 - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
    except OSError:  # includes UnreadablePostError: the client went away mid-body
        raise ParseError("the request body could not be read") from None
    return b"".join(parts)
