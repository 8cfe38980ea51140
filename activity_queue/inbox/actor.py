"""The instance actor: the site itself as an ActivityPub ``Application``.

It owns the site key (``SIGNING_KEY``), so that every ``keyId`` we send
resolves to an actor, as Mastodon-family servers require of the key behind a
signed delivery or a signed fetch. It has an inbox (the app's) and an empty
outbox, which ActivityPub asks of every actor, and answers WebFinger: Mastodon
looks every actor up as ``acct:preferredUsername@host`` before it accepts a
signature of its key, and refuses the signature when that lookup does not lead
back to the actor.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import reverse

from ..conf import get_config
from ..net.addresses import origin
from ..net.signing import key_id_of
from .keys import CONTEXT, MULTIKEY_CONTEXT, published

CONTENT_TYPE = "application/activity+json"
JRD = "application/jrd+json"


def _site() -> str:
    site = getattr(settings, "SITE_URL", None)
    if not isinstance(site, str) or not site:
        raise Http404("SITE_URL is not set: the instance actor has no address")
    return site.rstrip("/")


def actor_url() -> str:
    """Our instance actor's id (``SITE_URL`` + the app's actor URL)."""
    return _site() + reverse("activity_queue:actor")


def username() -> str:
    """The instance actor's ``preferredUsername``: the site's host name, as Mastodon's own
    instance actor has."""
    return urlsplit(_site()).hostname or "activity_queue"


def account() -> str:
    """``acct:username@host[:port]``, what WebFinger knows the instance actor as."""
    return f"acct:{username()}@{urlsplit(_site()).netloc}"


def actor_document() -> dict:
    site = _site()
    me = actor_url()
    document = {
        "@context": CONTEXT,
        "id": me,
        "type": "Application",
        "preferredUsername": username(),
        "name": "activity_queue",
        "inbox": site + reverse("activity_queue:inbox"),
        "outbox": site + reverse("activity_queue:actor-outbox"),
        "manuallyApprovesFollowers": True,
    }
    config = get_config()
    key_id = key_id_of(config) if config.SIGNING_KEY else None
    if key_id and origin(key_id) == origin(me):
        try:
            key = published(config.SIGNING_KEY)
        except ValueError as exc:
            raise ImproperlyConfigured(f"ACTIVITY_QUEUE['SIGNING_KEY']: {exc}") from None
        document["publicKey"] = {"id": key_id, "owner": me, "publicKeyPem": key["publicKeyPem"]}
        if key["type"] == "Multikey":  # FEP-521a, where verifiers look for Ed25519 keys
            document["@context"] = [*CONTEXT, MULTIKEY_CONTEXT]
            document["assertionMethod"] = [{
                "id": key_id, "type": "Multikey", "controller": me,
                "publicKeyMultibase": key["publicKeyMultibase"]}]
    return document


def actor_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(actor_document(), content_type=CONTENT_TYPE)


def webfinger_view(request: HttpRequest) -> JsonResponse:
    """``/.well-known/webfinger?resource=…`` for the instance actor (by its ``acct:`` or
    its URL); 404 for any other resource, 400 without one."""
    resource = request.GET.get("resource", "").strip()
    if not resource:
        return JsonResponse({"detail": "the resource parameter is required"}, status=400)
    me, acct = actor_url(), account()
    if resource.lower() != acct.lower() and resource != me:
        return JsonResponse({"detail": f"no such resource here: {resource[:200]}"},
                            status=404)
    return JsonResponse({
        "subject": acct,
        "aliases": [me],
        "links": [{"rel": "self", "type": CONTENT_TYPE, "href": me}],
    }, content_type=JRD)


def outbox_view(request: HttpRequest) -> JsonResponse:
    """Empty: the instance actor signs, it does not publish."""
    url = _site() + reverse("activity_queue:actor-outbox")
    return JsonResponse({"@context": "https://www.w3.org/ns/activitystreams", "id": url,
                         "type": "OrderedCollection", "totalItems": 0, "orderedItems": []},
                        content_type=CONTENT_TYPE)
