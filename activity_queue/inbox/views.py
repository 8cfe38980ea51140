"""The inbox: a DRF view that takes activities from other servers.

In order: the content encoding and type (415), the body size (413), authentication and
permissions (401), the activity's shape (400, see :mod:`.validation`), then
idempotency: an activity seen before answers 200 and is not applied again.
A new one is logged as an inbound ``Activity`` and handed to
:func:`activity_queue.inbox.receive.apply_activity` in the same transaction (an
``InvalidActivity`` from it is a 400 and leaves nothing behind); it answers
201 ``{}``, as DjangoLDP servers do.

An activity that is unsigned, or signed by another origin than its object's,
goes by ``INBOX_UNSIGNED``: with "verify" (the default) its object is fetched
from its origin first (:mod:`.verification`) when applying it would change
anything, what that origin confirms is applied, the answer is 202 whatever it
confirmed, and the log row says why nothing was applied when nothing was;
"require" answers 401; "trust" applies it as sent.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.db import connections, router, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from rest_framework import status
from rest_framework.exceptions import (
    APIException,
    NotAuthenticated,
    PermissionDenied,
    UnsupportedMediaType,
)
from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import lifecycle
from ..conf import Config, get_config
from ..exceptions import InvalidActivity
from ..lifecycle import State
from ..models import Activity, Payload
from ..net.addresses import origin
from . import receive, validation, verification
from .authentication import HasValidSignature, HTTPSignatureAuthentication, VerifiedSignature
from .body import check_identity_encoding, read_body

logger = logging.getLogger(__name__)


class ActivityParser(BaseParser):
    """JSON-LD (``application/ld+json``, any ``profile``), decoded strictly."""

    media_type = "application/ld+json"

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        return validation.decode(stream.read())


class ActivityStreamsParser(ActivityParser):
    media_type = "application/activity+json"


class PlainJSONParser(ActivityParser):
    media_type = "application/json"


ACCEPTED_MEDIA_TYPES = ", ".join(p.media_type for p in (
    ActivityParser, ActivityStreamsParser, PlainJSONParser))


class AnyAccept(BaseContentNegotiation):
    """The inbox answers JSON whatever ``Accept`` says: a sender's taste is no reason for 406."""

    def select_parser(self, request, parsers):
        return DefaultContentNegotiation().select_parser(request, parsers)

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class InboxView(APIView):
    parser_classes = (ActivityParser, ActivityStreamsParser, PlainJSONParser)
    renderer_classes = (JSONRenderer,)
    content_negotiation_class = AnyAccept

    @classmethod
    def as_view(cls, **initkwargs):
        """Never inside ``ATOMIC_REQUESTS``: a signer's key and an unsigned activity's
        object are fetched while the sender waits, and no transaction may stay open
        (on SQLite, hold the one write lock) for a server the sender chose. The view
        opens its own transaction to log and apply."""
        view = super().as_view(**initkwargs)
        for alias in connections:
            view = transaction.non_atomic_requests(using=alias)(view)
        return view

    # -- pluggable authentication --------------------------------------------------

    def get_authenticators(self) -> list:
        config = get_config()
        classes = [import_string(path) for path in config.INBOX_AUTHENTICATION]
        # A signature present is checked unless unsigned senders are trusted anyway: a bad one
        # is refused, and a good one from the object's origin spares the fetch there.
        if _requires_signature(config) or config.INBOX_UNSIGNED == "verify":
            classes = [HTTPSignatureAuthentication,
                       *(c for c in classes if c is not HTTPSignatureAuthentication)]
        return [cls() for cls in classes]

    def get_permissions(self) -> list:
        config = get_config()
        classes = [import_string(path) for path in config.INBOX_PERMISSIONS]
        if _requires_signature(config):
            classes.append(HasValidSignature)
        return [cls() for cls in classes]

    def permission_denied(self, request, message=None, code=None):
        if _requires_signature(get_config()) and not isinstance(request.auth,
                                                                   VerifiedSignature):
            raise NotAuthenticated(message or HasValidSignature.message)
        super().permission_denied(request, message=message, code=code)

    # -- the request -----------------------------------------------------------------

    def initial(self, request, *args, **kwargs) -> None:
        """Content type, encoding and size come before authentication, which needs the body."""
        if request.method == "POST":
            check_identity_encoding(request._request)
            self.parser = self._select_parser(request)
            read_body(request._request, get_config().INBOX_MAX_BYTES)
        super().initial(request, *args, **kwargs)

    def _select_parser(self, request) -> BaseParser:
        content_type = request.content_type
        if not content_type:
            raise UnsupportedMediaType("", detail="the Content-Type header is missing; "
                                       f"send one of {ACCEPTED_MEDIA_TYPES}")
        parser = request.negotiator.select_parser(request, self.get_parsers())
        if parser is None:
            raise UnsupportedMediaType(content_type, detail=(
                f"unsupported Content-Type {content_type[:100]!r}; "
                f"send one of {ACCEPTED_MEDIA_TYPES}"))
        return parser

    def post(self, request, *args, **kwargs) -> Response:
        body = read_body(request._request, get_config().INBOX_MAX_BYTES)
        try:
            activity = self.parser.parse(io.BytesIO(body))
            reason = validation.problem(activity)
        except InvalidActivity as exc:
            reason = str(exc)
        if reason:
            return self._refuse(reason)
        signed = request.auth if isinstance(request.auth, VerifiedSignature) else None
        if signed is not None:
            mismatch = validation.origin_mismatch(activity, signed.key_id)
            if mismatch:
                raise PermissionDenied(mismatch)
        summary = validation.summarize(activity)
        host = origin(signed.key_id)[:255] if signed else summary.claimed_host
        verdict = verification.Verdict(activity)
        if _needs_verification(signed, summary):
            if _seen(router.db_for_read(Activity), summary):
                return self._duplicate(summary, host)  # no fetch for a duplicate
            verdict = verification.verify(activity)
        try:
            duplicate = self._receive(request, activity, summary, host, verdict)
        except InvalidActivity as exc:
            return self._refuse(str(exc) or "the activity cannot be applied")
        if duplicate:
            return self._duplicate(summary, host)
        logger.info("activity_queue inbox: received %s %s from %s%s",
                    summary.activity_type, summary.activity_id, host or "?",
                    f"; {verdict.reason}" if verdict.reason else "")
        return Response({}, status=status.HTTP_202_ACCEPTED if verdict.at_origin
                        else status.HTTP_201_CREATED)

    def _duplicate(self, summary: validation.Summary, host: str) -> Response:
        logger.info("activity_queue inbox: duplicate %s %s from %s ignored",
                    summary.activity_type, summary.activity_id, host or "?")
        return Response({}, status=status.HTTP_200_OK)

    def _refuse(self, reason: str) -> Response:
        logger.info("activity_queue inbox: refused an activity: %s", reason)
        return Response({"detail": reason}, status=status.HTTP_400_BAD_REQUEST)

    # -- recording -------------------------------------------------------------------

    def _receive(self, request, activity: dict[str, Any], summary: validation.Summary,
                 host: str, verdict: verification.Verdict) -> bool:
        """Log ``activity`` and apply what ``verdict`` allows of it unless it was seen
        before; True for a duplicate.

        What its origin confirmed and still cannot be applied is logged with the reason
        (the sender was told 202); anything else that cannot be applied raises.
        """
        using = router.db_for_write(Activity)
        with _one_at_a_time(using, summary.activity_id):
            if _seen(using, summary):
                return True
            error = verdict.reason
            if verdict.activity is not None and not verdict.at_origin:
                receive.apply_activity(verdict.activity)
            elif verdict.activity is not None:
                try:
                    receive.apply_activity(verdict.activity, from_origin=True)
                except InvalidActivity as exc:
                    error = f"not applied: {exc}"
            now = timezone.now()
            lifecycle.move(lifecycle.NEW, State.RECEIVED)
            payload = Payload.of(activity, activity_type=summary.activity_type,
                                 object_id=summary.object_id,
                                 activity_id=summary.activity_id, created_at=now)
            payload.save(using=using)
            Activity.objects.using(using).create(
                activity_id=summary.activity_id, activity_type=summary.activity_type,
                object_id=summary.object_id, inbox=_inbox_url(request), host=host,
                payload=payload, direction=Activity.Direction.INBOUND,
                status=State.RECEIVED, error=error, created_at=now, resolved_at=now,
            )
        return False


#: Seconds a receipt waits for another receipt of the same activity (MySQL, MariaDB).
LOCK_WAIT = 30


class Busy(APIException):
    """Another receipt of the same activity held its lock for all of ``LOCK_WAIT``: going on
    unlocked could apply it twice, so the sender is asked to try again (DRF sends ``wait``
    as ``Retry-After``)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "another copy of this activity is being received; try again later"

    def __init__(self, wait: int) -> None:
        super().__init__()
        self.wait = wait


def _requires_signature(config: Config) -> bool:
    return config.INBOX_REQUIRE_SIGNATURE or config.INBOX_UNSIGNED == "require"


def _needs_verification(signed: VerifiedSignature | None, summary: validation.Summary) -> bool:
    """Whether the activity must be checked at its object's origin before it is applied:
    nobody vouches for it (no signature), or its signer is not that origin."""
    if get_config().INBOX_UNSIGNED == "trust":
        return False
    return signed is None or origin(signed.key_id) != origin(summary.object_id)


@contextmanager
def _one_at_a_time(using: str, activity_id: str) -> Iterator[None]:
    """A transaction in which two concurrent receipts of one activity take turns: under a
    transaction-scoped advisory lock on PostgreSQL, a named lock held over the transaction
    on MySQL and MariaDB. SQLite needs nothing: its IMMEDIATE transactions already admit
    one writer."""
    connection = connections[using]
    digest = hashlib.sha256(b"activity_queue.inbox.views:" + activity_id.encode()).digest()
    if connection.vendor != "mysql":
        with transaction.atomic(using=using):
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)",
                                   [int.from_bytes(digest[:8], "big", signed=True)])
            yield
        return
    name = f"activity_queue:{digest.hex()[:40]}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT GET_LOCK(%s, %s)", [name, LOCK_WAIT])
        if cursor.fetchone()[0] != 1:  # 0 after the wait, NULL on an error
            raise Busy(LOCK_WAIT)
    try:
        with transaction.atomic(using=using):
            yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT RELEASE_LOCK(%s)", [name])


def _seen(using: str, summary: validation.Summary) -> bool:
    """Seen before: same ``id`` ever; without an id, same content lately and nothing since.

    Content alone is a weaker identity (Add, Remove, then the same Add again is
    legitimate), hence the window and the "nothing newer about that object" rule.
    Only applied activities count: one its origin did not confirm is checked again
    when it comes again, so a forgery sent ahead cannot mask the real one.
    """
    inbound = Activity.objects.using(using).inbound().filter(error="")
    if summary.has_id:
        return inbound.filter(activity_id=summary.activity_id).exists()
    window = get_config().INBOX_DEDUP_WINDOW
    if not window:
        return False
    last = (inbound.filter(activity_id=summary.activity_id,
                           created_at__gte=timezone.now() - timedelta(seconds=window))
            .order_by("-id").values_list("id", flat=True).first())
    if last is None:
        return False
    return not inbound.filter(object_id=summary.object_id, id__gt=last).exists()


def _inbox_url(request) -> str:
    try:
        return request._request.build_absolute_uri(request._request.path)[:2000]
    except Exception:  # DisallowedHost and friends: the path is enough for the log
        return request._request.path[:2000]
