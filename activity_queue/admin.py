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
import math
from collections import Counter
from datetime import timedelta

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Exists, OuterRef, Q, Subquery
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.timesince import timesince, timeuntil

from .lifecycle import State
from .models import Activity, Follower, Host, Payload, PendingDiscovery, ScheduledActivity
from .net.addresses import origin
from .operations import actions as operations
from .operations import chart
from .operations import stats as health
from .payloads import string_problem

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
        value = self.value()
        if not value:
            return queryset
        if string_problem(value):  # PostgreSQL refuses to compare with it: nothing matches
            return queryset.none()
        return queryset.filter(**{self.field: value})


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
    """Hosts in trouble now (failures in a row, paused, unavailable) and hosts with final
    failures in the last day that were not delivered since, each with why it is listed."""

    title = "host (failing or paused)"

    def lookups(self, request, model_admin):
        now = timezone.now()
        reasons: dict[str, str] = {}
        for h in Host.objects.filter(Q(consecutive_failures__gt=0) | Q(paused_until__gt=now)
                                     | Q(unavailable_since__isnull=False)
                                     ).order_by("-consecutive_failures", "host")[:30]:
            reasons[h.host] = ("unavailable" if h.unavailable else "paused"
                               if h.circuit == "open" else
                               _plural(h.consecutive_failures, "failure") + " in a row")
        for f in health.failing_hosts(now - timedelta(days=1), 30):
            reasons.setdefault(f.host, _plural(f.failures, "final failure"))
        if self.value() and self.value() not in reasons:
            reasons[self.value()] = "not failing"
        return [(host, f"{host} ({why})") for host, why in reasons.items()]


class LogTypeFilter(QueueTypeFilter):
    """Every type among the latest log rows, most frequent first; others work from the URL."""

    #: Log rows read, newest first, through the ``resolved_at`` index: a bounded query
    #: whatever the size of the log.
    SAMPLE = 5_000
    field = "activity_type"

    def values(self, model_admin):
        latest = Activity.objects.order_by("-resolved_at").values_list(
            "activity_type", flat=True)[:self.SAMPLE]
        return [kind for kind, _ in sorted(Counter(latest).items(), key=lambda t: (-t[1], t[0]))]


def _paused_hosts(now):
    """Hosts whose circuit is open, or that are unavailable: nothing is sent to them now."""
    return Host.objects.filter(Q(paused_until__gt=now) | Q(unavailable_since__isnull=False)
                               ).values("host")


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("due", "due now"), ("waiting", "waiting (backoff)"),
                ("paused", "paused (host's circuit open)"),
                ("leased", State.LEASED.label), ("retrying", "retried at least once")]

    def queryset(self, request, queryset):
        now = timezone.now()
        free = Q(leased_until__isnull=True) | Q(leased_until__lt=now)
        match self.value():
            case "due":
                return queryset.due(now).exclude(host__in=_paused_hosts(now))
            case "waiting":
                return queryset.filter(free, next_attempt_at__gt=now).exclude(
                    host__in=_paused_hosts(now))
            case "paused":
                return queryset.filter(free, host__in=_paused_hosts(now))
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
        at = max(obj.next_attempt_at, getattr(obj, "host_paused_until", None)
                 or obj.next_attempt_at)
        if at <= timezone.now():
            return "due now"
        return format_html('<span title="{}">in {}</span>',
                           f"{timezone.localtime(at):%Y-%m-%d %H:%M:%S}", timeuntil(at, depth=1))

    @admin.display(description="last error")
    def last_error_pre(self, obj):
        return format_html(PRE, obj.last_error or "—")


class RecordAdmin(NoHandEditsMixin, Displays, admin.ModelAdmin):
    """Shared by both delivery records: read-only pages, pretty payload and errors."""

    list_per_page = 50


    @admin.display(description="activity")
    def activity(self, obj):
        """The type, and the end of the object's URL: enough to tell rows apart."""
        value = obj.object_id or obj.activity_id
        return format_html('{} <span class="aq-quiet" title="{}">{}</span>', obj.activity_type,
                           value, _path_end(value, 22))

    @admin.display(description="inbox", ordering="inbox")
    def inbox_short(self, obj):
        """Linked to the host's page."""
        if not obj.inbox:
            return "—"
        bare = obj.inbox.split("://", 1)[-1]
        url = reverse("admin:activity_queue_host_overview", current_app=self.admin_site.name)
        return format_html('<a href="{}?{}" title="{}">{}</a>', url,
                           urlencode({"host": obj.host}), obj.inbox, _middle(bare, 30))

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
    list_display = ("activity", "inbox_short", "state_label", "tries", "last_error_short",
                    "age")
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
        return timesince(obj.created_at, depth=1)

    def get_queryset(self, request):
        """Each row with its host's pause: one subquery, not a query per row."""
        now = timezone.now()
        health = Host.objects.filter(host=OuterRef("host"))
        return super().get_queryset(request).annotate(
            host_paused_until=Subquery(health.filter(paused_until__gt=now)
                                       .values("paused_until")[:1]),
            host_unavailable=Exists(health.filter(unavailable_since__isnull=False)))

    @admin.display(description="state, next attempt", ordering="next_attempt_at")
    def state_label(self, obj):
        """What the row waits for: its host's pause, its own retry time, or nothing."""
        state = obj.state
        if state is State.LEASED:
            return state.label
        if getattr(obj, "host_unavailable", False):
            return format_html('<span class="aq-paused">host unavailable</span>')
        until = getattr(obj, "host_paused_until", None)
        if until is not None:
            paused = format_html('<span class="aq-paused" title="{}">paused until {}</span>',
                                 "the host's circuit is open",
                                 f"{timezone.localtime(until):%H:%M}")
            if obj.next_attempt_at <= until:
                return paused
            return format_html("{}; retry at {}", paused,
                               f"{timezone.localtime(obj.next_attempt_at):%H:%M}")
        return format_html("{}, {}", state.label, self.next_attempt(obj))

    @admin.display(description="tries", ordering="attempts")
    def tries(self, obj):
        return obj.attempts

    @admin.display(description="last error")
    def last_error_short(self, obj):
        text = obj.last_error or (f"HTTP {obj.last_status}" if obj.last_status else "")
        if not text:
            return "—"
        return format_html('<span title="{}">{}</span>', text, _short_start(text, 22))

    @admin.display(description="host circuit")
    def circuit(self, obj):
        state = Host.objects.filter(host=obj.host).first()
        if state is None:
            return "closed"
        if state.circuit == "open":
            return f"open, paused until {timezone.localtime(state.paused_until):%H:%M:%S}"
        return state.circuit

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
    list_display = ("activity", "dir", "inbox_short", "outcome", "tries", "resolved")
    list_filter = ("status", "direction", LogTypeFilter, LogHostFilter,
                   ("resolved_at", admin.DateFieldListFilter))
    search_fields = ("activity_id", "inbox", "object_id")
    ordering = ("-resolved_at",)
    show_full_result_count = False
    actions = ("requeue",)
    readonly_fields = ("activity_id", "activity_type", "direction", "object_id", "inbox",
                       "host", "outcome", "attempts", "created_at", "resolved_at",
                       "duration", "error_pre", "excerpt_pre", "payload_pretty", "history")
    fieldsets = (
        (None, {"fields": ("activity_id", "activity_type", "direction", "object_id", "inbox",
                           "host", "history")}),
        ("Outcome", {"fields": ("outcome", "attempts", "created_at", "resolved_at",
                                "duration")}),
        ("Last error", {"fields": ("error_pre",)}),
        ("Response excerpt", {"fields": ("excerpt_pre",)}),
        ("Payload", {"fields": ("payload_pretty",)}),
    )

    @admin.display(description="status", ordering="status")
    def outcome(self, obj):
        label = State(obj.status).label if obj.status in State.values else obj.status
        text = f"{label} ({obj.status_code})" if obj.status_code else label
        return format_html('<span class="aq-status aq-{}" title="{}">{}</span>', obj.status,
                           obj.error[:300], text)

    @admin.display(description="dir", ordering="direction")
    def dir(self, obj):
        return obj.direction

    @admin.display(description="tries", ordering="attempts")
    def tries(self, obj):
        return obj.attempts

    @admin.display(description="resolved", ordering="resolved_at")
    def resolved(self, obj):
        return format_html('<span title="{}">{} ago</span>',
                           f"{timezone.localtime(obj.resolved_at):%Y-%m-%d %H:%M:%S}",
                           timesince(obj.resolved_at, depth=1))

    @admin.display(description="duration of the last attempt")
    def duration(self, obj):
        if obj.duration_ms is None:
            return "—"
        if obj.duration_ms >= 1000:
            return f"{obj.duration_ms / 1000:.2f} s"
        return f"{obj.duration_ms:.1f} ms"

    def get_changelist_instance(self, request):
        """The log skips its full count (``show_full_result_count``); with no filter and no
        search the page's count is the full one, so no "(Show all)" link is offered."""
        changelist = super().get_changelist_instance(request)
        if not changelist.has_active_filters and not changelist.query:
            changelist.full_result_count = changelist.result_count
        return changelist

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
        self._requeue(request, queryset.values_list("pk", flat=True))

    def _requeue(self, request, ids) -> None:
        result = operations.requeue(ids)
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

    #: Seconds between two reloads of the dashboard (a meta refresh: no script).
    DASHBOARD_REFRESH = 30
    #: Troubled hosts listed on the dashboard; the Host health list has them all.
    DASHBOARD_HOSTS = 50

    def get_urls(self):
        view = self.admin_site.admin_view(self.dashboard_view)
        requeue = self.admin_site.admin_view(self.requeue_view)
        return [path("dashboard/", view, name="activity_queue_dashboard"),
                path("<path:object_id>/requeue/", requeue, name="activity_queue_activity_requeue"),
                *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        row = self.get_object(request, object_id)
        can = (row is not None and row.status in operations.REQUEUEABLE
               and row.direction == Activity.Direction.OUTBOUND
               and self.has_requeue_permission(request))
        return super().change_view(request, object_id, form_url,
                                   {**(extra_context or {}), "can_requeue": can})

    def requeue_view(self, request, object_id):
        """The detail page's *Re-queue* button: one record, by POST (the admin's CSRF check)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_requeue_permission(request):
            raise PermissionDenied
        row = self.get_object(request, object_id)
        if row is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        self._requeue(request, [row.pk])
        return HttpResponseRedirect(reverse("admin:activity_queue_activity_change",
                                            args=[row.pk], current_app=self.admin_site.name))

    def dashboard_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        day_ago = now - timedelta(hours=24)
        buckets = health.hourly_outcomes(24, now)
        troubled = health.troubled_hosts(limit=self.DASHBOARD_HOSTS)
        counts = health.host_counts(now)
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
            "failing_hosts": health.struggling_hosts(day_ago),
            "troubled_hosts": troubled,
            "troubled_count": counts["troubled"],
            "troubled_more": counts["troubled"] - len(troubled),
            "open_circuits": counts["open"],
            "dropped_24h": health.count_since(State.DROPPED, day_ago),
            "discarded_24h": health.count_since(State.DISCARDED, day_ago),
            "failed_url": f"{changelist}?status__exact={State.FAILED.value}",
            "dropped_url": f"{changelist}?status__exact={State.DROPPED.value}",
            "queue_url": reverse("admin:activity_queue_scheduledactivity_changelist",
                                 current_app=self.admin_site.name),
            "hosts_url": reverse("admin:activity_queue_host_changelist",
                                 current_app=self.admin_site.name),
            "host_url": reverse("admin:activity_queue_host_overview",
                                current_app=self.admin_site.name),
            "refresh": self.DASHBOARD_REFRESH,
        }
        return TemplateResponse(request, "admin/activity_queue/dashboard.html", context)


@admin.register(Host)
class HostAdmin(NoHandEditsMixin, admin.ModelAdmin):
    list_display = ("host_link", "availability", "circuit", "consecutive_failures", "trips",
                    "paused_until", "last_error_short", "scheme")
    #: The host's name links to its overview, which holds what the read-only form holds.
    list_display_links = None
    search_fields = ("host",)
    ordering = ("host",)
    actions = ("resume", "stop_delivery")
    readonly_fields = ("host", "availability", "circuit", "consecutive_failures", "trips",
                       "paused_until", "deferred_until", "failing_since", "last_error",
                       "signature_scheme", "updated_at")
    fields = readonly_fields

    @admin.display(description="signs with", ordering="signature_scheme")
    def scheme(self, obj):
        return obj.get_signature_scheme_display() if obj.signature_scheme else "—"

    @admin.display(description="last error")
    def last_error_short(self, obj):
        return _titled(obj.last_error, _short_start(obj.last_error, 60))

    @admin.display(description="host", ordering="host")
    def host_link(self, obj):
        return _host_link(obj.host, self.admin_site.name)

    # -- one host's page ----------------------------------------------------------------

    #: The pauses an operator can choose on a host's page, in minutes.
    PAUSES = (15, 60, 360, 1440)

    def get_urls(self):
        view = self.admin_site.admin_view(self.overview_view)
        return [path("overview/", view, name="activity_queue_host_overview"),
                *super().get_urls()]

    def overview_view(self, request):
        """A host's circuit, queue and last errors, with its actions (POST, then back here)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        name = (request.GET.get("host") or request.POST.get("host") or "").strip()
        if not name:
            return HttpResponseRedirect(reverse("admin:activity_queue_host_changelist",
                                                current_app=self.admin_site.name))
        try:
            host = health.known_host(name)
        except ValueError:
            raise Http404(f"no host can be named {name[:100]!r}") from None
        url = reverse("admin:activity_queue_host_overview", current_app=self.admin_site.name)
        here = f"{url}?{urlencode({'host': host})}"
        if request.method == "POST":
            self._act_on_host(request, host)
            return HttpResponseRedirect(here)
        overview = health.host_overview(host)
        state = overview.health
        queue_url = reverse("admin:activity_queue_scheduledactivity_changelist",
                            current_app=self.admin_site.name)
        log_url = reverse("admin:activity_queue_activity_changelist",
                          current_app=self.admin_site.name)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Host {host}",
            "opts": self.model._meta,
            "host": host,
            "overview": overview,
            "state": state,
            "circuit": state.circuit if state else "closed",
            "paused_for": (math.ceil((state.paused_until - timezone.now()).total_seconds())
                           if state and state.circuit == "open" else None),
            "can_change": _has(request, "change", Host),
            "can_requeue": _has(request, "add", ScheduledActivity),
            "pauses": [(m, _plural(m // 60, "hour") if m >= 60 else f"{m} minutes")
                       for m in self.PAUSES],
            "queue_url": f"{queue_url}?{urlencode({'host': host})}",
            "paused_url": f"{queue_url}?{urlencode({'host': host, 'state': 'paused'})}",
            "failed_url": f"{log_url}?{urlencode({'host': host, 'status__exact': 'failed'})}",
            "log_url": f"{log_url}?{urlencode({'host': host})}",
            "action_url": here,
        }
        return TemplateResponse(request, "admin/activity_queue/host_overview.html", context)

    def _act_on_host(self, request, host: str) -> None:
        match request.POST.get("do"):
            case "pause" if _has(request, "change", Host):
                try:
                    minutes = int(request.POST.get("minutes", ""))
                except ValueError:
                    minutes = 0
                if minutes not in self.PAUSES:
                    self.message_user(request, "Choose how long to pause.", messages.ERROR)
                    return
                operations.pause_hosts([host], minutes * 60)
                until = timezone.localtime(timezone.now() + timedelta(minutes=minutes))
                self.message_user(request, f"Paused deliveries to {host} until {until:%H:%M} "
                                           "(nothing is sent to it until then; Resume ends "
                                           "the pause).", messages.SUCCESS)
            case "resume" if _has(request, "change", Host):
                resumed = operations.resume_hosts([host])
                self.message_user(request, _resumed_message(resumed, [host]), messages.SUCCESS)
            case "stop" if _has(request, "change", Host):
                result = operations.stop_hosts([host], by=request.user.get_username())
                self.message_user(request, f"Stopped deliveries to {host}: unavailable until "
                                           f"resumed; {_plural(result.failed, *DELIVERY)} in "
                                           "the queue failed (logged as failed: host "
                                           "unavailable).", messages.SUCCESS)
            case "requeue" if _has(request, "add", ScheduledActivity):
                since = timezone.now() - timedelta(days=7)
                ids = health.standing_failures(Activity.objects.filter(
                    host=host, resolved_at__gte=since)).values_list("pk", flat=True)[:10_000]
                result = operations.requeue(list(ids))
                self.message_user(request, f"Re-queued {_plural(len(result.requeued), *DELIVERY)}"
                                           f" that failed in the last 7 days (skipped "
                                           f"{result.skipped}: already pending or superseded).",
                                  messages.SUCCESS if result.requeued else messages.WARNING)
            case _:
                raise PermissionDenied

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
        names = list(queryset.values_list("host", flat=True))
        resumed = operations.resume_hosts(names)
        self.message_user(request, _resumed_message(resumed, names), messages.SUCCESS)

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


def _host_link(host: str, site: str = "admin"):
    """A host's name, linking to its overview page."""
    url = reverse("admin:activity_queue_host_overview", current_app=site)
    return format_html('<a href="{}?{}">{}</a>', url, urlencode({"host": host}), host)


def _titled(full: str, shown: str):
    """``shown``, with the ``full`` text as its tooltip."""
    return format_html('<span title="{}">{}</span>', full, shown)


def _short_start(value: str, size: int) -> str:
    value = " ".join(value.split())
    return value if len(value) <= size else f"{value[:size - 1]}…"


def _path_end(url: str, size: int) -> str:
    """The end of a URL's path (``…/circles/12/``), or the whole URL if it is short."""
    path = url.split("://", 1)[-1].partition("/")[2]
    tail = f"/{path}" if path else url
    return tail if len(tail) <= size else f"…{tail[-(size - 1):]}"


def _middle(value: str, size: int) -> str:
    """A URL's start (its host, whole if short) and end (its path's last part), the
    middle elided."""
    if len(value) <= size:
        return value
    host = value.partition("/")[0]
    head = len(host) + 1 if len(host) < size // 2 + 4 else (size - 1) // 2
    return f"{value[:head]}…{value[-(size - 1 - head):]}"


def _resumed_message(resumed: int, hosts: list[str]) -> str:
    """What resuming did to the hosts' queues: rows in backoff keep their time."""
    queue = health.host_queue(hosts)
    text = f"Resumed {_plural(resumed, 'host')}. "
    if not queue.queued:
        return text + "Nothing is queued for them."
    text += f"{_plural(queue.claimable, *DELIVERY)} claimable now"
    if queue.backoff:
        when = f"in {timeuntil(queue.next_due)} ({timezone.localtime(queue.next_due):%H:%M})"
        text += (f"; 1 in backoff keeps its time, due {when}" if queue.backoff == 1 else
                 f"; {queue.backoff} in backoff keep their time, the next due {when}")
    if queue.leased:
        text += f"; {queue.leased} being delivered"
    return text + "."


@admin.register(Follower)
class FollowerAdmin(NoHandEditsMixin, admin.ModelAdmin):
    """Who was told about which local object: the audience of its Updates and Deletes."""

    list_display = ("object_short", "inbox_short", "created_at")
    list_filter = (("created_at", admin.DateFieldListFilter),)
    search_fields = ("object_id", "inbox")
    ordering = ("-created_at", "-id")
    list_per_page = 50
    readonly_fields = ("object_id", "inbox", "inbox_host", "created_at")
    fields = readonly_fields

    @admin.display(description="object", ordering="object_id")
    def object_short(self, obj):
        return _titled(obj.object_id, _middle(obj.object_id.split("://", 1)[-1], 40))

    @admin.display(description="inbox", ordering="inbox")
    def inbox_short(self, obj):
        return _titled(obj.inbox, _middle(obj.inbox.split("://", 1)[-1], 40))

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

    list_display = ("kind", "resource_short", "object_short", "tries", "next_attempt",
                    "last_error_short", "age")
    list_filter = (DiscoveryStateFilter, "activity_type",
                   ("created_at", admin.DateFieldListFilter))
    search_fields = ("resource", "object_id")
    ordering = ("next_attempt_at", "id")
    list_per_page = 50
    readonly_fields = ("resource", "activity_type", "object_id", "attempts", "created_at",
                       "next_attempt_at", "claimed_by", "last_error_pre", "payload_pretty")
    fields = readonly_fields

    @admin.display(description="type", ordering="activity_type")
    def kind(self, obj):
        return obj.activity_type

    @admin.display(description="resource", ordering="resource")
    def resource_short(self, obj):
        return _titled(obj.resource, _middle(obj.resource.split("://", 1)[-1], 30))

    @admin.display(description="object", ordering="object_id")
    def object_short(self, obj):
        return _titled(obj.object_id, _path_end(obj.object_id, 24)) if obj.object_id else "—"

    @admin.display(description="tries", ordering="attempts")
    def tries(self, obj):
        return obj.attempts

    @admin.display(description="age", ordering="created_at")
    def age(self, obj):
        return timesince(obj.created_at, depth=1)

    @admin.display(description="last error")
    def last_error_short(self, obj):
        return _titled(obj.last_error, _short_start(obj.last_error, 22)) if obj.last_error else "—"
