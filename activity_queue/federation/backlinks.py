"""Backlinks: which activities a change to a linked-data object sends, and to whom.

The decision is a set of pure functions over plain values (:class:`Resource`,
:class:`Ref`, follower inboxes), so it can be tested with tables; the signal
handlers at the bottom turn model instances into those values and hand the
result to :mod:`activity_queue.federation.dispatch`. The wire format is the one DjangoLDP
servers exchange (SPEC section 10).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.models.signals import m2m_changed, post_delete, post_init, post_save

from ..conf import get_config
from . import dispatch
from . import registry as linked
from .dispatch import Outgoing

AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
ACTOR = {"type": "Service", "name": "Backlinks Service"}


@dataclass(frozen=True, slots=True)
class Ref:
    """A link target: its urlid and RDF type."""

    urlid: str
    rdf_type: str

    def as_json(self) -> dict[str, str]:
        return {"@id": self.urlid, "@type": self.rdf_type}


@dataclass(frozen=True, slots=True)
class Resource:
    """A linked-data object as the rules see it: itself and its non-empty single-valued links."""

    ref: Ref
    links: tuple[tuple[str, Ref], ...] = ()

    def tree(self) -> dict[str, Any]:
        """The ``object`` of a Create/Update/Add/Remove: links nested as ``{@id, @type}``."""
        out: dict[str, Any] = {"@type": self.ref.rdf_type, "@id": self.ref.urlid}
        for name, ref in self.links:
            out[name] = ref.as_json()
        return out


def build(kind: str, obj: dict[str, Any], summary: str, context: str,
          **extra: Any) -> dict[str, Any]:
    """An activity in the DjangoLDP backlink shape (``id`` is added when it is enqueued)."""
    return {"@context": [AS_CONTEXT, context], "type": kind, "actor": dict(ACTOR),
            "object": obj, **extra, "summary": summary}


def _external_targets(resource: Resource, site: str) -> tuple[str, ...]:
    targets = (ref.urlid for _, ref in resource.links if linked.is_external(ref.urlid, site))
    return tuple(dict.fromkeys(targets))


def detect_save(resource: Resource, *, created: bool, links_changed: bool,
                followers: Iterable[str], site: str, context: str) -> list[Outgoing]:
    """``Create`` on the first save of an object linked to an external resource,
    ``Update`` when its links change, to the followers and to the servers of its
    external links. A remote resource's local record sends nothing."""
    if linked.is_external(resource.ref.urlid, site) or not (created or links_changed):
        return []
    followers = tuple(dict.fromkeys(followers))
    targets = _external_targets(resource, site)
    if not followers and not targets:
        return []
    kind, verb = ("Create", "created") if created else ("Update", "updated")
    activity = build(kind, resource.tree(), f"{resource.ref.urlid} was {verb}", context)
    return [Outgoing(activity, resource.ref.urlid, followers, targets)]


def detect_delete(resource: Resource, *, followers: Iterable[str], site: str,
                  context: str) -> list[Outgoing]:
    """``Delete`` with only ``@id`` and ``@type``, to every follower of the object."""
    followers = tuple(dict.fromkeys(followers))
    if linked.is_external(resource.ref.urlid, site) or not followers:
        return []
    activity = build("Delete", resource.ref.as_json(), f"{resource.ref.urlid} was deleted",
                     context)
    return [Outgoing(activity, resource.ref.urlid, followers)]


def detect_m2m(container: Resource, members: Iterable[Ref], *, added: bool, site: str,
               context: str) -> list[Outgoing]:
    """``Add`` (``target`` = member) or ``Remove`` (``origin`` = member), one per external
    member of a local container, to that member's server."""
    if linked.is_external(container.ref.urlid, site):
        return []
    out = []
    for member in dict.fromkeys(members):
        if not linked.is_external(member.urlid, site):
            continue
        if added:
            activity = build("Add", container.tree(),
                             f"{container.ref.urlid} was added to {member.urlid}", context,
                             target=member.as_json())
        else:
            activity = build("Remove", container.tree(),
                             f"{container.ref.urlid} was removed from {member.urlid}", context,
                             origin=member.as_json())
        out.append(Outgoing(activity, container.ref.urlid, (), (member.urlid,)))
    return out


# -- from model instances to the plain values above --------------------------------

_MISSING = object()
_muted: ContextVar[bool] = ContextVar("activity_queue_backlinks_muted", default=False)


@contextmanager
def muted() -> Iterator[None]:
    """Send no backlinks for changes made inside (an inbound activity being applied:
    its sender already knows)."""
    token = _muted.set(True)
    try:
        yield
    finally:
        _muted.reset(token)


def _sending() -> bool:
    return get_config().BACKLINKS and not _muted.get()


def ref_of(instance: models.Model) -> Ref | None:
    spec = linked.spec_for_model(type(instance))
    if spec is None:
        return None
    return Ref(linked.urlid_of(instance), spec.rdf_type)


def resource_of(instance: models.Model, urlid: str | None = None) -> Resource:
    spec = linked.spec_for_model(type(instance))
    links = []
    for f in spec.links:
        if getattr(instance, f.attname) is None:
            continue
        ref = ref_of(getattr(instance, f.name))
        if ref is not None:
            links.append((f.name, ref))
    return Resource(Ref(urlid or linked.urlid_of(instance), spec.rdf_type), tuple(links))


def _link_values(instance: models.Model, spec: linked.LinkedSpec) -> tuple:
    values = instance.__dict__
    return tuple(values.get(f.attname, _MISSING) for f in spec.links)


def _remember_links(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    spec = linked.spec_for_model(sender)
    if spec is not None:
        instance._aq_links = _link_values(instance, spec)


def _followers(urlid: str) -> list[str]:
    from ..models import Follower

    return list(Follower.objects.filter(object_id=urlid).values_list("inbox", flat=True))


def _context() -> tuple[str, str]:
    return linked.site_origin(), get_config().LD_CONTEXT


def _on_save(sender: type[models.Model], instance: models.Model, created: bool,
             raw: bool = False, using: str | None = None, **kwargs: Any) -> None:
    spec = linked.spec_for_model(sender)
    if spec is None or raw:
        return
    before = instance.__dict__.get("_aq_links")
    now = _link_values(instance, spec)
    instance._aq_links = now
    if not _sending():
        return
    urlid = linked.urlid_of(instance)
    site, context = _context()
    if linked.is_external(urlid, site):
        return
    changed = before is None or before != now or _MISSING in now
    if not (created or changed):
        return
    followers = () if created else _followers(urlid)
    plans = detect_save(resource_of(instance, urlid), created=created, links_changed=changed,
                        followers=followers, site=site, context=context)
    dispatch.send(plans, using=using)


def _on_delete(sender: type[models.Model], instance: models.Model,
               using: str | None = None, **kwargs: Any) -> None:
    if linked.spec_for_model(sender) is None or not _sending():
        return
    urlid = linked.urlid_of(instance)
    site, context = _context()
    if linked.is_external(urlid, site):
        return
    spec = linked.spec_for_model(sender)
    plans = detect_delete(Resource(Ref(urlid, spec.rdf_type)), followers=_followers(urlid),
                          site=site, context=context)
    dispatch.send(plans, using=using)
    dispatch.forget(urlid, using=using)


def _m2m_field(through: type[models.Model]) -> models.ManyToManyField | None:
    for spec in linked.registered():
        for f in spec.collections:
            if f.remote_field.through is through:
                return f
    return None


def _on_m2m(sender: type[models.Model], instance: models.Model, action: str, reverse: bool,
            model: type[models.Model], pk_set: set | None, using: str | None = None,
            **kwargs: Any) -> None:
    if action not in ("post_add", "post_remove", "pre_clear", "post_clear"):
        return
    field = _m2m_field(sender)
    if field is None or not _sending():
        return
    if action == "pre_clear":
        instance._aq_cleared = _cleared_pks(field, instance, reverse)
        return
    if action == "post_clear":
        pk_set = instance.__dict__.pop("_aq_cleared", set())
    if not pk_set:
        return
    site, context = _context()
    added = action == "post_add"
    manager = model._default_manager.using(using)
    others = list(manager.filter(pk__in=pk_set))
    if reverse:  # instance is the member; the containers changed
        member = ref_of(instance)
        pairs = [(c, [member]) for c in others if not linked.is_external(c.urlid, site)]
    else:
        if linked.is_external(linked.urlid_of(instance), site):
            return
        pairs = [(instance, [r for r in map(ref_of, others) if r is not None])]
    for container, members in pairs:
        plans = detect_m2m(resource_of(container), members, added=added, site=site,
                           context=context)
        dispatch.send(plans, using=using)


def _cleared_pks(field: models.ManyToManyField, instance: models.Model, reverse: bool) -> set:
    if reverse:
        return set(field.model._default_manager.filter(**{field.name: instance})
                   .values_list("pk", flat=True))
    return set(getattr(instance, field.name).values_list("pk", flat=True))


def connect(model: type[models.Model], **kwargs: Any) -> None:
    """Listen to ``model``'s saves and deletes (on :data:`registry.model_federated`)."""
    uid = f"activity_queue.federation.backlinks.{model._meta.label_lower}"
    post_init.connect(_remember_links, sender=model, weak=False, dispatch_uid=uid)
    post_save.connect(_on_save, sender=model, weak=False, dispatch_uid=uid)
    post_delete.connect(_on_delete, sender=model, weak=False, dispatch_uid=uid)


m2m_changed.connect(_on_m2m, weak=False, dispatch_uid="activity_queue.federation.backlinks.m2m")
linked.model_federated.connect(connect, dispatch_uid="activity_queue.federation.backlinks")
for _spec in linked.registered():  # models made linked before this module was imported
    connect(_spec.model)
