"""The admin: read-only delivery records, explicit actions, and a dashboard.

Nothing here edits a delivery by hand. Operators act through actions that
call :mod:`activity_queue.operations.actions` (the same code as the commands), each
guarded by one of Django's own model permissions:

- re-queue a failed delivery: ``add_scheduledactivity`` (it creates a queue row);
- retry now: ``change_scheduledactivity``;
- discard: ``delete_scheduledactivity``;
- resume a paused or unavailable host, or stop deliveries to one: ``change_host``.

Followers and pending inbox discoveries are shown read-only, with no actions:
the backlink machinery keeps them in step with the local objects.
"""

from __future__ import annotations

import json
from datetime import timedelta

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.timesince import timesince, timeuntil

from .lifecycle import State
from .models import (
    Activity,
    Follower,
    Host,
    Payload,
    PendingDiscovery,
    ScheduledActivity,
    troubled_hosts_q,
)
from .net.addresses import origin
from .operations import actions as operations
from .operations import chart
from .operations import stats as health

DELIVERY = ("delivery", "deliveries")
PRE = '<pre style="white-space:pre-wrap;max-height:32em;overflow:auto;margin:0">{}</pre>'


def _plural(n: int, word: str, words: str = "") -> str:
    return f"{n} {word}" if n == 1 else f"{n} {words or word + 's'}"


def _has(request, action: str, model) -> bool:
    opts = model._meta
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")


class ValueFilter(admin.SimpleListFilter):
    """Filter on one field's exact value, offering a short list of likely values.

    Django's plain field filter lists every distinct value, which scans the
    whole table: fine for the queue, too slow for a log of millions of rows.
    A value that is not offered still works from the URL (``?host=…``).
    """

    field = ""

    def values(self, model_admin) -> list[str]:
        raise NotImplementedError

    def lookups(self, request, model_admin):
        values = [v for v in self.values(model_admin) if v]
        if self.value() and self.value() not in values:
            values.append(self.value())
        return [(v, v) for v in values]

    def queryset(self, request, queryset):
        return queryset.filter(**{self.field: self.value()}) if self.value() else queryset


class QueueHostFilter(ValueFilter):
    title = parameter_name = field = "host"

    def values(self, model_admin):
        return list(ScheduledActivity.objects.values_list("host", flat=True)
                    .annotate(n=Count("id")).order_by("-n", "host")[:30])


class QueueTypeFilter(ValueFilter):
    title = "type"
    parameter_name = "activity_type"
    field = "payload__activity_type"

    def values(self, model_admin):
        return list(ScheduledActivity.objects.values_list("payload__activity_type", flat=True)
                    .annotate(n=Count("id")).order_by("-n", "payload__activity_type")[:30])


class LogHostFilter(QueueHostFilter):
    title = "host (failing or paused)"

    def values(self, model_admin):
        failing = [h.host for h in health.failing_hosts(timezone.now() - timedelta(days=1), 30)]
        paused = (Host.objects.filter(troubled_hosts_q()).order_by("host")
                  .values_list("host", flat=True)[:30])
        return list(dict.fromkeys([*failing, *paused]))


class LogTypeFilter(QueueTypeFilter):
    #: The types this app sends and DjangoLDP servers exchange; others work from the URL.
    TYPES = ("Create", "Update", "Delete", "Add", "Remove")
    field = "activity_type"

    def values(self, model_admin):
        return list(self.TYPES)


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("due", "due now"), ("waiting", "waiting (backoff)"),
                ("leased", State.LEASED.label), ("retrying", "retried at least once")]

    def queryset(self, request, queryset):
        now = timezone.now()
        free = Q(leased_until__isnull=True) | Q(leased_until__lt=now)
        match self.value():
            case "due":
                return queryset.due(now)
            case "waiting":
                return queryset.filter(free, next_attempt_at__gt=now)
            case "leased":
                return queryset.leased(now)
            case "retrying":  # a leased row's current attempt is counted already
                return queryset.filter(Q(attempts__gt=1) | Q(free, attempts=1))
        return queryset


class NoHandEditsMixin:
    """Records are written by the queue alone; operators act through the actions."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class Displays:
    """Columns and detail fields shared by the pages of rows with a payload."""

    @admin.display(description="payload")
    def payload_pretty(self, obj):
        document = obj.payload.document if isinstance(obj.payload, Payload) else obj.payload
        return format_html(PRE, json.dumps(document, indent=2, ensure_ascii=False,
                                           sort_keys=True))

    @admin.display(description="next attempt", ordering="next_attempt_at")
    def next_attempt(self, obj):
        if obj.next_attempt_at <= timezone.now():
            return "due now"
        return f"in {timeuntil(obj.next_attempt_at)}"

    @admin.display(description="last error")
    def last_error_pre(self, obj):
        return format_html(PRE, obj.last_error or "—")


class RecordAdmin(NoHandEditsMixin, Displays, admin.ModelAdmin):
    """Shared by both delivery records: read-only pages, pretty payload and errors."""

    list_per_page = 50


    @admin.display(description="object")
    def object_short(self, obj):
        value = obj.object_id or obj.activity_id
        return value if len(value) <= 45 else f"…{value[-44:]}"

    @admin.display(description="age", ordering="created_at")
    def age(self, obj):
        return timesince(obj.created_at)

    @admin.display(description="other records of this activity")
    def history(self, obj):
        url = reverse("admin:activity_queue_activity_changelist",
                      current_app=self.admin_site.name)
        return format_html('<a href="{}?{}">search the log for this activity id</a>',
                           url, urlencode({"q": obj.activity_id}))


@admin.register(ScheduledActivity)
class ScheduledActivityAdmin(RecordAdmin):
    list_display = ("activity_type", "host", "object_short", "state_label", "last_status",
                    "attempts", "next_attempt", "age")
    list_filter = (StateFilter, QueueTypeFilter, QueueHostFilter,
                   ("payload__created_at", admin.DateFieldListFilter))
    search_fields = ("payload__activity_id", "inbox", "payload__object_id")
    list_select_related = ("payload",)
    ordering = ("next_attempt_at",)
    actions = ("retry_now", "discard")
    readonly_fields = ("activity_id", "activity_type", "object_id", "inbox", "host",
                       "state_label", "circuit", "attempts", "created_at", "next_attempt_at",
                       "last_status", "leased_by", "leased_until", "last_error_pre",
                       "payload_pretty", "history")
    fieldsets = (
        (None, {"fields": ("activity_id", "activity_type", "object_id", "inbox", "host",
                           "circuit", "history")}),
        ("Progress", {"fields": ("state_label", "attempts", "created_at", "next_attempt_at",
                                 "last_status", "leased_by", "leased_until")}),
        ("Last error", {"fields": ("last_error_pre",)}),
        ("Payload", {"fields": ("payload_pretty",)}),
    )

    @admin.display(description="age", ordering="payload__created_at")
    def age(self, obj):
        return timesince(obj.created_at)

    @admin.display(description="state")
    def state_label(self, obj):
        return obj.state.label

    @admin.display(description="host circuit")
    def circuit(self, obj):
        state = Host.objects.filter(host=obj.host).first()
        return state.circuit if state else "closed"

    def has_retry_now_permission(self, request):
        return _has(request, "change", ScheduledActivity)

    def has_discard_permission(self, request):
        return _has(request, "delete", ScheduledActivity)

    @admin.action(description="Retry selected deliveries now", permissions=["retry_now"])
    def retry_now(self, request, queryset):
        result = operations.retry_now(queryset.values_list("id", flat=True))
        self.message_user(request, f"{_plural(result.scheduled, *DELIVERY)} due now; "
                                   "the worker was woken.", messages.SUCCESS)
        if result.skipped:
            self.message_user(request, f"Skipped {result.skipped}: being delivered right now "
                                       "or already gone from the queue.", messages.WARNING)
        if result.paused_hosts:
            self.message_user(request, "These hosts are paused (circuit open) and their rows "
                                       f"wait until it closes: {', '.join(result.paused_hosts)}.",
                              messages.WARNING)

    @admin.action(description="Discard selected deliveries (logged as discarded)",
                  permissions=["discard"])
    def discard(self, request, queryset):
        result = operations.discard(queryset.values_list("id", flat=True),
                                    by=request.user.get_username())
        self.message_user(request, f"Discarded {_plural(len(result.discarded), *DELIVERY)}; "
                                   "each is in the log with status 'discarded'.",
                          messages.SUCCESS)
        if result.skipped:
            self.message_user(request, f"Skipped {result.skipped}: being delivered right now "
                                       "or already gone from the queue.", messages.WARNING)


@admin.register(Activity)
class ActivityAdmin(RecordAdmin):
    list_display = ("activity_type", "direction", "host", "object_short", "outcome",
                    "attempts", "resolved_at", "age")
    list_filter = ("status", "direction", LogTypeFilter, LogHostFilter,
                   ("resolved_at", admin.DateFieldListFilter))
    search_fields = ("activity_id", "inbox", "object_id")
    ordering = ("-resolved_at",)
    show_full_result_count = False
    actions = ("requeue",)
    readonly_fields = ("activity_id", "activity_type", "direction", "object_id", "inbox",
                       "host", "outcome", "attempts", "created_at", "resolved_at",
                       "duration_ms", "error_pre", "excerpt_pre", "payload_pretty", "history")
    fieldsets = (
        (None, {"fields": ("activity_id", "activity_type", "direction", "object_id", "inbox",
                           "host", "history")}),
        ("Outcome", {"fields": ("outcome", "attempts", "created_at", "resolved_at",
                                "duration_ms")}),
        ("Last error", {"fields": ("error_pre",)}),
        ("Response excerpt", {"fields": ("excerpt_pre",)}),
        ("Payload", {"fields": ("payload_pretty",)}),
    )

    @admin.display(description="status", ordering="status")
    def outcome(self, obj):
        label = State(obj.status).label if obj.status in State.values else obj.status
        return f"{label} ({obj.status_code})" if obj.status_code else label

    @admin.display(description="error")
    def error_pre(self, obj):
        return format_html(PRE, obj.error or "—")

    @admin.display(description="response excerpt")
    def excerpt_pre(self, obj):
        return format_html(PRE, obj.response_excerpt or "—")

    def has_requeue_permission(self, request):
        return _has(request, "add", ScheduledActivity)

    @admin.action(description="Re-queue selected failed deliveries", permissions=["requeue"])
    def requeue(self, request, queryset):
        result = operations.requeue(queryset.values_list("pk", flat=True))
        done = len(result.requeued)
        self.message_user(request, f"Re-queued {_plural(done, *DELIVERY)}.",
                          messages.SUCCESS if done else messages.WARNING)
        reasons = [(result.pending, "already pending"),
                   (result.superseded, "superseded by a later attempt"),
                   (result.ineligible, "not a failed or discarded outbound delivery")]
        details = ", ".join(f"{n} {why}" for n, why in reasons if n)
        if details:
            self.message_user(request, f"Skipped {result.skipped}: {details}.",
                              messages.WARNING)

    # -- dashboard --------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view(self.dashboard_view)
        return [path("dashboard/", view, name="activity_queue_dashboard"), *super().get_urls()]

    def dashboard_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        day_ago = now - timedelta(hours=24)
        buckets = health.hourly_outcomes(24, now)
        sent = sum(b.sent for b in buckets)
        failed = sum(b.failed for b in buckets)
        changelist = reverse("admin:activity_queue_activity_changelist",
                             current_app=self.admin_site.name)
        context = {
            **self.admin_site.each_context(request),
            "title": "Activity queue dashboard",
            "opts": self.model._meta,
            "stats": health.queue_stats(now),
            "buckets": buckets,
            "chart": chart.outcomes_svg(buckets),
            "sent_24h": sent,
            "failed_24h": failed,
            "success_rate": round(100 * sent / (sent + failed), 1) if sent + failed else None,
            "failing_hosts": health.failing_hosts(day_ago),
            "troubled_hosts": health.troubled_hosts(),
            "dropped_24h": health.count_since(State.DROPPED, day_ago),
            "discarded_24h": health.count_since(State.DISCARDED, day_ago),
            "failed_url": f"{changelist}?status__exact={State.FAILED.value}",
            "dropped_url": f"{changelist}?status__exact={State.DROPPED.value}",
            "queue_url": reverse("admin:activity_queue_scheduledactivity_changelist",
                                 current_app=self.admin_site.name),
            "hosts_url": reverse("admin:activity_queue_host_changelist",
                                 current_app=self.admin_site.name),
        }
        return TemplateResponse(request, "admin/activity_queue/dashboard.html", context)


@admin.register(Host)
class HostAdmin(NoHandEditsMixin, admin.ModelAdmin):
    list_display = ("host", "availability", "circuit", "consecutive_failures", "trips",
                    "paused_until", "last_error_short", "signature_scheme", "updated_at")
    search_fields = ("host",)
    ordering = ("host",)
    actions = ("resume", "stop_delivery")
    readonly_fields = ("host", "availability", "circuit", "consecutive_failures", "trips",
                       "paused_until", "deferred_until", "failing_since", "last_error",
                       "signature_scheme", "updated_at")
    fields = readonly_fields

    @admin.display(description="last error")
    def last_error_short(self, obj):
        return obj.last_error[:80]

    @admin.display(description="availability", ordering="unavailable_since")
    def availability(self, obj):
        if not obj.unavailable:
            return "available"
        since = timezone.localtime(obj.unavailable_since).strftime("%Y-%m-%d %H:%M")
        if obj.unavailable_by:
            note = f" (stopped by {obj.unavailable_by})"
        else:
            note = f" (next probe in {timeuntil(obj.paused_until)})" if obj.paused_until else ""
        return f"unavailable since {since}{note}"

    def has_resume_permission(self, request):
        return _has(request, "change", Host)

    has_stop_delivery_permission = has_resume_permission

    @admin.action(description="Resume deliveries to selected hosts (close the circuit, "
                              "available again)", permissions=["resume"])
    def resume(self, request, queryset):
        resumed = operations.resume_hosts(queryset.values_list("host", flat=True))
        self.message_user(request, f"Resumed {_plural(resumed, 'host')}; their queued "
                                   "deliveries are claimable now.", messages.SUCCESS)

    @admin.action(description="Stop deliveries to selected hosts (unavailable until resumed)",
                  permissions=["stop_delivery"])
    def stop_delivery(self, request, queryset):
        result = operations.stop_hosts(queryset.values_list("host", flat=True),
                                       by=request.user.get_username())
        self.message_user(request, f"Stopped deliveries to {_plural(len(result.stopped), 'host')}"
                                   f"; {_plural(result.failed, *DELIVERY)} in the queue failed "
                                   "(logged as failed: host unavailable).", messages.SUCCESS)


def _short(value: str, size: int = 60) -> str:
    return value if len(value) <= size else f"…{value[-(size - 1):]}"


@admin.register(Follower)
class FollowerAdmin(NoHandEditsMixin, admin.ModelAdmin):
    """Who was told about which local object: the audience of its Updates and Deletes."""

    list_display = ("object_short", "inbox_host", "inbox", "created_at")
    list_filter = (("created_at", admin.DateFieldListFilter),)
    search_fields = ("object_id", "inbox")
    ordering = ("-created_at", "-id")
    list_per_page = 50
    readonly_fields = ("object_id", "inbox", "inbox_host", "created_at")
    fields = readonly_fields

    @admin.display(description="object", ordering="object_id")
    def object_short(self, obj):
        return _short(obj.object_id)

    @admin.display(description="host")
    def inbox_host(self, obj):
        return origin(obj.inbox)


class DiscoveryStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("due", "due now"), ("waiting", "waiting (backoff)"),
                ("claimed", "being fetched"), ("retrying", "failed at least once")]

    def queryset(self, request, queryset):
        now = timezone.now()
        match self.value():
            case "due":
                return queryset.filter(claimed_by="", next_attempt_at__lte=now)
            case "waiting":
                return queryset.filter(claimed_by="", next_attempt_at__gt=now)
            case "claimed":
                return queryset.exclude(claimed_by="")
            case "retrying":
                return queryset.filter(attempts__gt=0)
        return queryset


@admin.register(PendingDiscovery)
class PendingDiscoveryAdmin(NoHandEditsMixin, Displays, admin.ModelAdmin):
    """Backlinks waiting for their target's inbox to be found."""

    list_display = ("activity_type", "resource_short", "object_short", "attempts",
                    "next_attempt", "last_error_short", "created_at")
    list_filter = (DiscoveryStateFilter, "activity_type",
                   ("created_at", admin.DateFieldListFilter))
    search_fields = ("resource", "object_id")
    ordering = ("next_attempt_at", "id")
    list_per_page = 50
    readonly_fields = ("resource", "activity_type", "object_id", "attempts", "created_at",
                       "next_attempt_at", "claimed_by", "last_error_pre", "payload_pretty")
    fields = readonly_fields

    @admin.display(description="resource", ordering="resource")
    def resource_short(self, obj):
        return _short(obj.resource)

    @admin.display(description="object", ordering="object_id")
    def object_short(self, obj):
        return _short(obj.object_id) if obj.object_id else "—"

    @admin.display(description="last error")
    def last_error_short(self, obj):
        return obj.last_error[:80] or "—"
