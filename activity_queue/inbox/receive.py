"""Applying a received (inbound) activity to the local linked-data models.

The inbox view validates and records an activity, then calls
:func:`apply_activity`. A backlink only ever writes the local *record of a
remote resource* (a row whose ``urlid`` is on another origin) and that
record's links; a local object is never created, changed or deleted, whatever
the activity claims, and a deletion that would cascade to local objects is
refused. Plain values are not federated: only links are applied.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, models, router, transaction
from django.db.models.deletion import Collector, ProtectedError, RestrictedError

from ..exceptions import InvalidActivity, UnsafeDestination
from ..federation import backlinks
from ..federation import registry as linked
from ..net.addresses import check_url, origin
from ..payloads import string_problem
from .validation import url_problem

#: Create and Update carry the whole set of links; Add and Remove may carry part of it.
REPLACE, MERGE = "replace", "merge"


class Refused(InvalidActivity):
    """The activity would change a local object (the inbox answers 400 with the reason)."""


def apply_activity(activity: dict[str, Any], *, from_origin: bool = False) -> None:
    """Apply a validated inbound activity to local models.

    Types other than Create/Update/Delete/Add/Remove, and objects whose
    ``@type`` no local model has, are left alone (the inbox still records
    them). Raises :class:`~activity_queue.exceptions.InvalidActivity` when the
    activity is well-formed but cannot be applied, :class:`Refused` when it
    targets a local object. ``from_origin``: the object's own origin confirmed
    the activity (:mod:`.verification`), so who relayed it no longer matters.
    """
    handler = HANDLERS.get(activity.get("type"))
    if handler is None:
        return
    obj = activity.get("object")
    if not isinstance(obj, dict):
        raise InvalidActivity(f"{activity['type']}: 'object' must be a JSON object")
    spec = linked.spec_for_type(obj.get("@type") or obj.get("type"))
    if spec is None and activity["type"] != "Delete":
        return
    if not from_origin:
        _check_sender(activity, obj)
    using = router.db_for_write(spec.model if spec else models.Model)
    with transaction.atomic(using=using), backlinks.muted():
        handler(activity, obj, spec, using)


def _sender_origin(activity: dict[str, Any]) -> str | None:
    """The origin the activity says it comes from (its ``id`` or ``actor.id`` URL), if any."""
    actor = activity.get("actor")
    for value in (activity.get("id"), actor.get("id") if isinstance(actor, dict) else actor):
        if isinstance(value, str) and "://" in value:
            try:
                return origin(value)
            except ValueError:
                return None
    return None


def _check_sender(activity: dict[str, Any], obj: dict[str, Any]) -> None:
    """An activity that names its sender may only speak of that sender's objects.

    DjangoLDP servers name no sender (no ``id``, an actor without ``id``); an
    activity that does, and whose signature the inbox tied to that origin,
    cannot touch the records of a third server's objects.
    """
    sender = _sender_origin(activity)
    urlid = obj.get("@id") or obj.get("id")
    if sender and isinstance(urlid, str) and "://" in urlid:
        try:
            theirs = origin(urlid)
        except ValueError:
            return
        if theirs != sender:
            raise Refused(f"the object {urlid[:200]} is not on the sender's origin {sender}")


def _urlid(value: Any, what: str) -> str:
    urlid = value.get("@id") or value.get("id") if isinstance(value, dict) else value
    if not isinstance(urlid, str) or not urlid:
        raise InvalidActivity(f"{what} needs an '@id'")
    # Links come from documents nobody validated (an origin's answer) as well as from
    # activities: what no database column stores must be refused here, not by the driver.
    problem = url_problem(urlid) or string_problem(urlid)
    if problem:
        raise InvalidActivity(f"{what} '@id' {problem}")
    try:
        check_url(urlid)
    except UnsafeDestination:
        raise InvalidActivity(f"{what}: {urlid[:200]!r} is not an absolute http(s) URL "
                              "without credentials") from None
    return urlid


def _remote(value: Any, what: str) -> str:
    """The urlid of an object the activity may write: it must not be local."""
    urlid = _urlid(value, what)
    if not linked.is_external(urlid):
        raise Refused(f"{what} {urlid} is a local resource; a remote activity cannot change it")
    return urlid


def _record(spec: linked.LinkedSpec, urlid: str, using: str) -> models.Model:
    """The local record of a remote resource, created empty when unknown."""
    manager = spec.model._default_manager.db_manager(using)
    longest = spec.model._meta.get_field("urlid").max_length
    if longest and len(urlid) > longest:
        raise InvalidActivity(f"cannot record {urlid[:200]}… as a {spec.rdf_type}: its "
                              f"'@id' is longer than {longest} characters")
    try:
        with transaction.atomic(using=using):
            return manager.get_or_create(urlid=urlid)[0]
    except IntegrityError as exc:
        raise InvalidActivity(
            f"cannot record {urlid} as a {spec.rdf_type}: {exc}") from None


def _target(model: type[models.Model], value: Any, what: str, using: str) -> models.Model:
    """A link target: an existing local object, or the (possibly new) record of a remote one."""
    urlid = _urlid(value, what)
    spec = linked.spec_for_model(model)
    claimed = value.get("@type") if isinstance(value, dict) else None
    if claimed is not None and linked.spec_for_type(claimed) is not spec:
        raise InvalidActivity(f"{what} has @type {claimed!r}, expected {spec.rdf_type!r}")
    if linked.is_external(urlid):
        return _record(spec, urlid, using)
    found = model._default_manager.db_manager(using).filter(urlid=urlid).first()
    if found is None:
        raise InvalidActivity(f"{what} {urlid} does not exist here")
    return found


def _apply_links(instance: models.Model, spec: linked.LinkedSpec, obj: dict[str, Any],
                 mode: str, using: str) -> None:
    changed = []
    for f in spec.links:
        if f.name in obj and obj[f.name] is not None:
            target = _target(f.related_model, obj[f.name], f"{obj['@id']} {f.name}", using)
            value = target.pk
        elif mode == MERGE or not f.null:
            continue
        else:
            value = None
        if getattr(instance, f.attname) != value:
            setattr(instance, f.attname, value)
            changed.append(f.name)
    if changed:
        instance.save(using=using, update_fields=changed)


def _upsert(activity: dict[str, Any], obj: dict[str, Any], spec: linked.LinkedSpec,
            using: str, mode: str = REPLACE) -> models.Model:
    urlid = _remote(obj, f"{activity['type']} object")
    instance = _record(spec, urlid, using)
    _apply_links(instance, spec, {**obj, "@id": urlid}, mode, using)
    return instance


def _create_or_update(activity, obj, spec, using) -> None:
    _upsert(activity, obj, spec, using)


def _delete(activity, obj, spec, using) -> None:
    urlid = _remote(obj, "Delete object")
    specs = [spec] if spec else linked.registered()
    for candidate in specs:
        instance = candidate.model._default_manager.db_manager(using).filter(urlid=urlid).first()
        if instance is not None:
            _check_cascade(instance, using)
            instance.delete(using=using)
            return


def _is_remote_record(instance: models.Model) -> bool:
    return linked.spec_for_model(type(instance)) is not None and linked.is_external(
        getattr(instance, "urlid", None))


def _check_cascade(instance: models.Model, using: str) -> None:
    """Refuse a deletion that would delete or change anything but remote records and links."""
    collector = Collector(using=using)
    try:
        collector.collect([instance])
    except (ProtectedError, RestrictedError) as exc:
        raise Refused(f"deleting {instance.urlid} is blocked: {exc.args[0]}") from None
    for model, found in collector.data.items():
        for other in found:
            if not _is_remote_record(other):
                raise Refused(f"deleting {instance.urlid} would delete local {model.__name__} "
                              f"{other.pk}")
    for qs in collector.fast_deletes:
        if not qs.model._meta.auto_created and qs.exists():
            raise Refused(f"deleting {instance.urlid} would delete local "
                          f"{qs.model.__name__} rows")
    for (field, _value), batches in collector.field_updates.items():
        for batch in batches:
            rows = list(batch) if not isinstance(batch, models.QuerySet) else list(batch.all())
            if any(not _is_remote_record(row) for row in rows):
                raise Refused(f"deleting {instance.urlid} would change local "
                              f"{field.model.__name__} objects ({field.name})")


def collection(container: type[models.Model], member: type[models.Model]
               ) -> tuple[models.ManyToManyField, bool] | None:
    """The federated many-to-many between the two models, and whether it is declared on
    the container (True) or on the member (False)."""
    for spec, forward in ((linked.spec_for_model(container), True),
                          (linked.spec_for_model(member), False)):
        if spec is None:
            continue
        for f in spec.collections:
            if f.related_model is (member if forward else container):
                return f, forward
    return None


def _add_or_remove(activity, obj, spec, using) -> None:
    key = "target" if activity["type"] == "Add" else "origin"
    member_ref = activity.get(key)
    if member_ref is None and activity["type"] == "Remove":
        member_ref = activity.get("target")  # lenient: some servers say target
    if not isinstance(member_ref, dict):
        raise InvalidActivity(f"{activity['type']} needs '{key}' with an '@id' and '@type'")
    member_spec = linked.spec_for_type(member_ref.get("@type") or member_ref.get("type"))
    if member_spec is None:
        return
    relation = collection(spec.model, member_spec.model)
    if relation is None:
        return
    container = _upsert(activity, obj, spec, using, mode=MERGE)
    member = _target(member_spec.model, member_ref, f"{activity['type']} {key}", using)
    field, forward = relation
    if forward:
        manager = getattr(container, field.name)
        other = member
    else:
        if not _is_remote_record(member):
            raise Refused(f"{member.urlid} is a local resource; a remote activity cannot "
                          f"change its {field.name}")
        manager = getattr(member, field.name)
        other = container
    (manager.add if activity["type"] == "Add" else manager.remove)(other)


HANDLERS = {
    "Create": _create_or_update,
    "Update": _create_or_update,
    "Delete": _delete,
    "Add": _add_or_remove,
    "Remove": _add_or_remove,
}
