"""Linked-data models: how a site's models take part in federation.

A model takes part by inheriting :class:`LinkedDataModel` and naming its RDF
type, or by calling :func:`federate` for a model that has its own ``urlid``
field. Every instance has a canonical URL (``urlid``); a local object's is
``SITE_URL`` plus its path, a remote resource's local record keeps the remote
URL. Which of the model's relations federate defaults to every forward
foreign key and many-to-many field that points at another linked-data model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models.signals import class_prepared
from django.dispatch import Signal
from django.utils.text import slugify

from ..net.addresses import origin

_registry: dict[type[models.Model], LinkedSpec] = {}
#: Sent with ``sender=model`` when a model becomes linked: the backlink handlers listen to it.
model_federated = Signal()
_by_rdf_type: dict[str, LinkedSpec] = {}


@dataclass(eq=False)
class LinkedSpec:
    """What federates about one model: its RDF type and its relations."""

    model: type[models.Model]
    rdf_type: str
    #: Names of the relations that federate, or None for "every relation to a linked model".
    only: tuple[str, ...] | None = None
    _links: tuple[models.Field, ...] | None = field(default=None, repr=False)
    _collections: tuple[models.ManyToManyField, ...] | None = field(default=None, repr=False)

    def _wanted(self, f: models.Field) -> bool:
        if self.only is not None and f.name not in self.only:
            return False
        related = f.related_model
        return isinstance(related, type) and spec_for_model(related) is not None

    @property
    def links(self) -> tuple[models.Field, ...]:
        """Single-valued relations (forward foreign keys and one-to-ones) that federate."""
        if self._links is None:
            self._links = tuple(
                f for f in self.model._meta.concrete_fields
                if f.is_relation and (f.many_to_one or f.one_to_one) and self._wanted(f)
            )
        return self._links

    @property
    def collections(self) -> tuple[models.ManyToManyField, ...]:
        """Many-to-many relations declared on this model that federate."""
        if self._collections is None:
            self._collections = tuple(
                f for f in self.model._meta.local_many_to_many if self._wanted(f)
            )
        return self._collections


def federate(model: type[models.Model], *, rdf_type: str,
             links: Iterable[str] | None = None) -> LinkedSpec:
    """Make ``model`` a linked-data model whose changes send backlinks.

    ``model`` needs a ``urlid`` field (nullable, unique) and, for local
    objects, a ``get_absolute_url()``; ``links`` limits which relations
    federate (default: all relations to other linked-data models).
    """
    if not rdf_type or not isinstance(rdf_type, str):
        raise ValueError(f"{model.__name__}: rdf_type must be a non-empty string")
    try:
        model._meta.get_field("urlid")
    except Exception:
        raise ValueError(f"{model.__name__} needs a 'urlid' field to federate") from None
    other = _by_rdf_type.get(rdf_type)
    if other is not None and other.model is not model:
        raise ValueError(f"rdf_type {rdf_type!r} is already used by {other.model.__name__}")
    spec = LinkedSpec(model, rdf_type, tuple(links) if links is not None else None)
    _registry[model] = spec
    _by_rdf_type[rdf_type] = spec
    for known in _registry.values():  # a new linked model may be the target of known ones
        known._links = known._collections = None
    model_federated.send(sender=model)
    return spec


def spec_for_model(model: type[models.Model]) -> LinkedSpec | None:
    return _registry.get(model)


def spec_for_type(rdf_type: Any) -> LinkedSpec | None:
    """The model whose RDF type is ``rdf_type`` (or one of them, for a JSON-LD list)."""
    if isinstance(rdf_type, str):
        return _by_rdf_type.get(rdf_type)
    if isinstance(rdf_type, list):
        for item in rdf_type:
            if isinstance(item, str) and item in _by_rdf_type:
                return _by_rdf_type[item]
    return None


def registered() -> list[LinkedSpec]:
    return list(_registry.values())


def site_origin() -> str:
    """The origin of ``SITE_URL``, or "" when the setting is missing."""
    site = getattr(settings, "SITE_URL", "") or ""
    return origin(site) if site else ""


def is_external(urlid: str | None, site: str | None = None) -> bool:
    """True when ``urlid`` lives on another origin than this site.

    Origins are compared exactly after normalisation (scheme, host and port,
    default ports dropped), never by string prefix: ``https://a.example.evil``
    is not ``https://a.example``. A relative or empty urlid is local.
    """
    if not urlid or "://" not in urlid:
        return False
    site = site_origin() if site is None else site
    try:
        return origin(urlid) != site
    except ValueError:  # unparsable port: not ours
        return True


def local_urlid(instance: models.Model) -> str:
    """``SITE_URL`` plus the object's path."""
    return (getattr(settings, "SITE_URL", "") or "").rstrip("/") + instance.get_absolute_url()


def urlid_of(instance: models.Model) -> str:
    return getattr(instance, "urlid", None) or local_urlid(instance)


class LinkedDataModel(models.Model):
    """Abstract base of linked-data models.

    Subclasses set ``rdf_type`` (e.g. ``"hd:circle"``) and may set
    ``federated_links`` to the names of the relations that federate. Rows
    with an external ``urlid`` are the local records of remote resources.
    """

    urlid = models.URLField(max_length=2000, unique=True, null=True, blank=True)

    rdf_type: ClassVar[str] = ""
    federated_links: ClassVar[tuple[str, ...] | None] = None

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Give a new local object its urlid once it has a primary key."""
        super().save(*args, **kwargs)
        if not self.urlid:
            self.urlid = local_urlid(self)
            type(self)._default_manager.using(self._state.db).filter(pk=self.pk).update(
                urlid=self.urlid
            )

    def get_absolute_url(self) -> str:
        return f"/{slugify(str(self._meta.verbose_name_plural))}/{self.pk}/"

    @property
    def is_external(self) -> bool:
        return is_external(self.urlid)


def _register_subclass(sender: type[models.Model], **kwargs: Any) -> None:
    if (issubclass(sender, LinkedDataModel) and not sender._meta.abstract
            and not sender._meta.proxy and sender.rdf_type):
        federate(sender, rdf_type=sender.rdf_type, links=sender.federated_links)


class_prepared.connect(_register_subclass, dispatch_uid="activity_queue.federation.registry")
