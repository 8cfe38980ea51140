"""What is persisted: the activities' bodies (``Payload``), the queue
(``ScheduledActivity``), the log (``Activity``) and per-host health (``Host``).

The queue's hot paths (claim, resolve) are single SQL statements over many
rows, written against SQLite, PostgreSQL and MySQL/MariaDB, because the ORM's
per-object cost would be most of a delivery's budget.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from django.db import models
from django.utils import timezone
from django.utils.functional import cached_property

from .lifecycle import FINAL_STATES, State, waiting_state


def pair_key(object_id: str, inbox: str) -> int:
    """A 64-bit key for an (object, inbox) pair, 0 for no object: what a queued row is
    indexed by for "what is queued for this inbox about this object".

    One integer is a small index entry, whatever the length of the URLs, and fits
    every database's key-length limit. Two pairs sharing a key only make a row looked
    at more closely: the checks compare the inbox and the object id themselves.
    """
    if not object_id:
        return 0
    digest = hashlib.blake2b(f"{object_id}\n{inbox}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True) or 1


#: Characters of a long text column that an index holds on MySQL and MariaDB: InnoDB keys
#: are at most 3,072 bytes, and utf8mb4 takes up to four bytes a character.
MYSQL_PREFIX = 255


class PrefixIndex(models.Index):
    """An index over long text columns (URLs of up to 2,000 characters); on MySQL and
    MariaDB it holds the first :data:`MYSQL_PREFIX` characters of each.

    A whole URL is over InnoDB's key limit there, and the prefix finds the same rows:
    the queries that use these indexes compare the whole values anyway. MySQL has no
    partial indexes either: a ``condition`` narrows the index elsewhere, and there the
    index holds every row. It is kept out of ``Index.condition``, so that Django's checks
    do not warn at every ``migrate`` on MySQL that it is ignored. Everywhere else this is
    a plain :class:`~django.db.models.Index`.
    """

    def __init__(self, *args, condition: models.Q | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.where = condition

    def deconstruct(self):
        path, args, kwargs = super().deconstruct()
        if self.where is not None:
            kwargs["condition"] = self.where
        return path, args, kwargs

    def create_sql(self, model, schema_editor, using="", **kwargs):
        if schema_editor.connection.vendor != "mysql":
            plain = models.Index(fields=list(self.fields), name=self.name,
                                 condition=self.where)
            return plain.create_sql(model, schema_editor, using, **kwargs)
        quote = schema_editor.quote_name
        columns = []
        for name, _order in self.fields_orders:
            field = model._meta.get_field(name)
            column = quote(field.column)
            if isinstance(field, models.CharField) and field.max_length > MYSQL_PREFIX:
                column += f"({MYSQL_PREFIX})"
            columns.append(column)
        return (f"CREATE INDEX {quote(self.name)} ON {quote(model._meta.db_table)} "
                f"({', '.join(columns)})")


class URIField(models.CharField):
    """A URI column whose values compare byte for byte on every database.

    A URI's path is case-sensitive, and MySQL's and MariaDB's default collations are
    not: there two inboxes differing only in case would be one row of a unique key,
    and a filter on one would match the other. There the column has the binary
    collation of ``utf8mb4`` (which also sets its character set); elsewhere this is
    a plain :class:`~django.db.models.CharField`.
    """

    def db_parameters(self, connection):
        params = super().db_parameters(connection)
        if connection.vendor == "mysql" and not self.db_collation:
            params["collation"] = "utf8mb4_bin"
        return params


class LongUniqueConstraint(models.UniqueConstraint):
    """Unique over long text columns, which MySQL cannot key whole.

    MariaDB keeps such a key as a hash of the values by itself (``USING HASH``); MySQL
    (8.0.13+) keys a SHA-256 digest of the values as a functional key part. Everywhere
    else this is a plain :class:`~django.db.models.UniqueConstraint`.
    """

    def _mysql_sql(self, model, schema_editor) -> str | None:
        connection = schema_editor.connection
        if connection.vendor != "mysql" or connection.mysql_is_mariadb:
            return None
        quote = schema_editor.quote_name
        columns = ", ".join(quote(model._meta.get_field(f).column) for f in self.fields)
        return f"UNIQUE KEY {quote(self.name)} ((SHA2(CONCAT_WS(0x0a, {columns}), 256)))"

    def constraint_sql(self, model, schema_editor):
        return self._mysql_sql(model, schema_editor) or super().constraint_sql(
            model, schema_editor)

    def create_sql(self, model, schema_editor):
        key = self._mysql_sql(model, schema_editor)
        if key is None:
            return super().create_sql(model, schema_editor)
        return f"ALTER TABLE {schema_editor.quote_name(model._meta.db_table)} ADD {key}"


class Payload(models.Model):
    """One activity as sent: its identity and its JSON, stored once.

    A fan-out to a thousand inboxes is one ``Payload`` and a thousand small
    ``ScheduledActivity`` rows, and the log rows of those deliveries show the
    same one. ``activity_prune`` removes the payloads nobody refers to any more.
    """

    activity_id = URIField(max_length=500, help_text="The activity's own id (URI).")
    activity_type = models.CharField(max_length=32)
    object_id = URIField(max_length=2000, blank=True)
    body = models.TextField(help_text="The JSON text, exactly as sent.")
    created_at = models.DateTimeField(default=timezone.now, help_text="enqueued or received")

    class Meta:
        indexes = [
            models.Index(fields=["activity_id"], name="aq_payload_activity"),
            # The admin's search by object; the queue's checks go by pair_key instead.
            PrefixIndex(fields=["object_id"], name="aq_payload_object"),
        ]

    def __str__(self) -> str:
        return f"{self.activity_type} {self.activity_id}"

    @classmethod
    def of(cls, document: dict[str, Any], *, activity_type: str, object_id: str = "",
           activity_id: str | None = None, created_at=None) -> Payload:
        """An unsaved payload holding ``document``."""
        if activity_id is None:
            activity_id = str(document.get("id") or "")[:500]
        made = cls(activity_id=activity_id, activity_type=activity_type,
                   object_id=object_id, body=json.dumps(document),
                   created_at=created_at or timezone.now())
        made.document = document
        return made

    @cached_property
    def document(self) -> dict[str, Any]:
        """The body as a dict (``{}`` if it is not a JSON object)."""
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class ScheduledActivityQuerySet(models.QuerySet):
    def due(self, now=None):
        """Rows whose time has come and that no live worker holds."""
        now = now or timezone.now()
        return self.filter(next_attempt_at__lte=now).filter(
            models.Q(leased_until__isnull=True) | models.Q(leased_until__lt=now)
        )

    def leased(self, now=None):
        return self.filter(leased_until__gte=now or timezone.now())

    def release_expired(self, now=None) -> int:
        """Clear leases of dead workers, so that their rows show as pending again.

        Not needed for correctness (a claim ignores expired leases) but keeps
        the admin and status honest after a crash.
        """
        now = now or timezone.now()
        return self.filter(leased_until__lt=now).update(leased_by="", leased_until=None)

    def next_claimable(self, now=None):
        """When the first row that cannot be claimed now can be: its attempt time, the
        end of another worker's lease, or the end of its host's pause; or when the next
        probe of an unavailable host is due. None if there is nothing to wait for.

        A worker that stops when idle (the Celery backend) schedules its next run
        from this, so retries and probes run on time with nobody polling.
        """
        now = now or timezone.now()
        health = Host.objects.using(self.db)
        unavailable = models.Q(unavailable_since__isnull=False)
        paused = health.filter(models.Q(paused_until__gt=now) | unavailable)
        free = self.filter(models.Q(leased_until__isnull=True) | models.Q(leased_until__lt=now))
        times = [
            free.exclude(host__in=paused.values("host"))
                .aggregate(at=models.Min("next_attempt_at"))["at"],
            self.filter(leased_until__gte=now).aggregate(at=models.Min("leased_until"))["at"],
            paused.filter(host__in=free.values("host"))
                  .aggregate(at=models.Min("paused_until"))["at"],
            health.filter(unavailable, unavailable_by="")
                  .aggregate(at=models.Min("paused_until"))["at"],
        ]
        return min((t for t in times if t is not None), default=None)


class DueIndex(models.Index):
    """The index of "what is due", in ``next_attempt_at`` order; on SQLite it also holds
    each row's ``id``, ``host`` and ``leased_until``.

    There a claim reads the due range in this index alone: it rejects a row that is
    in flight, or whose host is paused or already busy, without reading the row
    (1.2 KB for a 1 KB activity), which matters most behind the rows of a host that
    never answers (the black-hole run of ``bench/``). ``id`` keeps the rows of a
    fan-out, which share one
    ``next_attempt_at``, in id order rather than by host. Not on PostgreSQL: a claim
    sets ``leased_until``, and an update of an indexed column cannot be a HOT update
    there (see migration 0004).
    """

    SQLITE_COVERS = ("id", "host", "leased_until")

    def create_sql(self, model, schema_editor, using="", **kwargs):
        if schema_editor.connection.vendor == "sqlite":
            # Names the model (as a migration sees it) no longer has are left out: a
            # later migration that renames one still rebuilds the table.
            names = {f.name for f in model._meta.get_fields()}
            covers = [name for name in self.SQLITE_COVERS if name in names]
            wide = models.Index(fields=[*self.fields, *covers], name=self.name)
            return wide.create_sql(model, schema_editor, using, **kwargs)
        return super().create_sql(model, schema_editor, using, **kwargs)


class ScheduledActivity(models.Model):
    """One activity waiting to be delivered to one inbox.

    The activity itself (id, type, object, body) is its ``payload``, shared by
    every inbox it goes to; a row holds only what differs per inbox, which keeps
    a large backlog small.
    """

    payload = models.ForeignKey(Payload, on_delete=models.PROTECT, related_name="deliveries",
                                db_index=False)  # aq_sched_payload, named
    #: :func:`pair_key` of the payload's object and the inbox, for "what is queued for
    #: this inbox about this object" (the redundancy and order checks).
    pair_key = models.BigIntegerField(default=0)
    inbox = models.URLField(max_length=2000)
    host = models.CharField(max_length=255, help_text="scheme://host[:port] of the inbox")
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    leased_by = models.CharField(max_length=100, blank=True)
    leased_until = models.DateTimeField(null=True, blank=True)
    # A database default too, so that rows written without it (raw SQL, a process still
    # running the previous release) are checked.
    has_predecessor = models.BooleanField(
        db_default=True,
        help_text="When this row was written, an earlier activity about the same object was "
                  "queued for this inbox or delivered to it (or nobody looked): the worker "
                  "then checks order and redundancy before sending.",
    )

    objects = ScheduledActivityQuerySet.as_manager()

    class Meta:
        verbose_name = "scheduled activity"
        verbose_name_plural = "scheduled activities"
        indexes = [
            DueIndex(fields=["next_attempt_at"], name="aq_sched_due"),
            # A host's due rows in order: the probation claim (store.claim), per-host counts.
            models.Index(fields=["host", "next_attempt_at"], name="aq_sched_host_due"),
            models.Index(fields=["payload"], name="aq_sched_payload"),
            models.Index(fields=["pair_key"], name="aq_sched_pair"),
        ]

    def __str__(self) -> str:
        return f"{self.activity_type} {self.object_id or self.activity_id} → {self.inbox}"

    def save(self, *args, **kwargs) -> None:
        if not self.pair_key and self.payload_id:
            self.pair_key = pair_key(self.payload.object_id, self.inbox)
        super().save(*args, **kwargs)

    @property
    def activity_id(self) -> str:
        return self.payload.activity_id

    @property
    def activity_type(self) -> str:
        return self.payload.activity_type

    @property
    def object_id(self) -> str:
        return self.payload.object_id

    @property
    def created_at(self):
        """When the activity was enqueued."""
        return self.payload.created_at

    @property
    def state(self) -> State:
        if self.leased_until and self.leased_until >= timezone.now():
            return State.LEASED
        return waiting_state(self.attempts)


class ActivityQuerySet(models.QuerySet):
    def outbound(self):
        return self.filter(direction=Activity.Direction.OUTBOUND)

    def inbound(self):
        return self.filter(direction=Activity.Direction.INBOUND)

    def failed(self):
        return self.filter(status=State.FAILED)


class Activity(models.Model):
    """The permanent record of an activity that left the queue, or arrived at the inbox."""

    class Direction(models.TextChoices):
        OUTBOUND = "out", "outbound"
        INBOUND = "in", "inbound"

    activity_id = URIField(max_length=500)
    activity_type = models.CharField(max_length=32)
    object_id = URIField(max_length=2000, blank=True)
    inbox = URIField(max_length=2000, blank=True)
    host = models.CharField(max_length=255, blank=True)
    payload = models.ForeignKey(Payload, on_delete=models.PROTECT, related_name="records")
    direction = models.CharField(max_length=3, choices=Direction.choices)
    status = models.CharField(
        max_length=16, choices=[(s.value, s.label) for s in FINAL_STATES]
    )
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    response_excerpt = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, help_text="enqueued or received")
    resolved_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.FloatField(null=True, blank=True, help_text="last attempt")

    objects = ActivityQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "activities"
        indexes = [
            models.Index(fields=["resolved_at"], name="aq_act_resolved"),
            models.Index(fields=["status", "resolved_at"], name="aq_act_status"),
            models.Index(fields=["host", "resolved_at"], name="aq_act_host"),
            models.Index(fields=["activity_id"], name="aq_act_activity"),
            # The redundancy rules' "last activity delivered to this inbox about this
            # object": one probe into delivered rows only.
            PrefixIndex(fields=["inbox", "object_id", "id"], name="aq_act_delivered",
                        condition=models.Q(direction="out", status="sent")),
        ]

    def __str__(self) -> str:
        return f"{self.activity_type} {self.object_id or self.activity_id} ({self.status})"


def troubled_hosts_q() -> models.Q:
    """Host rows that say something is wrong (the others only remember a signature scheme)."""
    return (models.Q(consecutive_failures__gt=0) | models.Q(trips__gt=0)
            | models.Q(paused_until__isnull=False) | models.Q(deferred_until__isnull=False)
            | models.Q(failing_since__isnull=False) | models.Q(unavailable_since__isnull=False))


class Host(models.Model):
    """Health of one remote origin, for the circuit breaker and the operators.

    A row exists while the host is troubled, or once it has told us which HTTP
    signature scheme it accepts (:attr:`signature_scheme`).
    """

    host = models.CharField(max_length=255, primary_key=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    trips = models.PositiveIntegerField(default=0, help_text="times the circuit opened in a row")
    paused_until = models.DateTimeField(null=True, blank=True)
    deferred_until = models.DateTimeField(
        null=True, blank=True,
        help_text="where the host's backlog waits for its next answer while it fails")
    last_error = models.TextField(blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    failing_since = models.DateTimeField(
        null=True, blank=True,
        help_text="the first failure since the host last answered")
    unavailable_since = models.DateTimeField(
        null=True, blank=True,
        help_text="deliveries stopped: failing for longer than UNAVAILABLE_AFTER, or by hand")
    unavailable_by = models.CharField(
        max_length=150, blank=True,
        help_text="the operator who stopped deliveries by hand (no probes then)")
    signature_scheme = models.CharField(
        max_length=16, blank=True, choices=[("cavage", "draft-cavage"), ("rfc9421", "RFC 9421")],
        help_text="the HTTP signature scheme the host accepted after refusing the other one; "
                  "deliveries start with it (blank: SIGNATURE_SCHEME)")

    class Meta:
        verbose_name = "host health"
        verbose_name_plural = "host health"

    def __str__(self) -> str:
        return self.host

    @property
    def circuit(self) -> str:
        if self.paused_until and self.paused_until > timezone.now():
            return "open"
        return "half-open" if self.trips else "closed"

    @property
    def unavailable(self) -> bool:
        return self.unavailable_since is not None

    @property
    def unavailable_reason(self) -> str:
        """What the log rows of deliveries that never left because of it say."""
        return unavailable_reason(self.failing_since, self.unavailable_by,
                                  self.unavailable_since)


def unavailable_reason(failing_since: datetime | None, by: str, since: datetime | None) -> str:
    """``host unavailable: failing since …``, or ``… delivery stopped by <operator> on …``."""
    if by or failing_since is None:
        who = f" by {by}" if by else ""
        return f"host unavailable: delivery stopped{who} on {_utc(since or timezone.now())}"
    return f"host unavailable: failing since {_utc(failing_since)}"


def _utc(value: datetime) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


class Follower(models.Model):
    """A remote inbox that was told about one of our objects.

    Written when a backlink to that inbox is enqueued, so that later
    ``Update`` and ``Delete`` activities about the object reach exactly the
    servers that know it; removed when the object is deleted.
    """

    object_id = URIField(max_length=2000, help_text="urlid of the local object")
    inbox = URIField(max_length=2000)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            LongUniqueConstraint(fields=["object_id", "inbox"], name="aq_follower_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.inbox} follows {self.object_id}"


class PendingDiscovery(models.Model):
    """A backlink whose target inbox is not known yet.

    Written in the caller's transaction instead of a ``ScheduledActivity``
    when the remote resource's inbox is not cached; the worker fetches the
    resource document, then turns the row into a scheduled delivery. Failed
    fetches are retried with the delivery backoff, up to ``MAX_ATTEMPTS``.
    """

    resource = models.CharField(max_length=2000, help_text="urlid of the remote resource")
    activity_type = models.CharField(max_length=32)
    object_id = URIField(max_length=2000, blank=True)
    payload = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    claimed_by = models.CharField(max_length=100, blank=True)

    class Meta:
        verbose_name = "pending inbox discovery"
        verbose_name_plural = "pending inbox discoveries"
        indexes = [
            models.Index(fields=["next_attempt_at"], name="aq_discovery_due"),
            PrefixIndex(fields=["object_id"], name="aq_discovery_object"),
        ]

    def __str__(self) -> str:
        return f"{self.activity_type} {self.object_id} → inbox of {self.resource}"
