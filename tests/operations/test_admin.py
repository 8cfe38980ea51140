import re
from datetime import UTC, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.utils.http import urlencode

from activity_queue.models import Activity, Follower, Host, PendingDiscovery, ScheduledActivity

from ..support.opsdata import log_row, moved_backlog, outage, queued

pytestmark = pytest.mark.django_db

LOG = reverse("admin:activity_queue_activity_changelist")
QUEUE = reverse("admin:activity_queue_scheduledactivity_changelist")
HOSTS = reverse("admin:activity_queue_host_changelist")
DASHBOARD = reverse("admin:activity_queue_dashboard")
# Lazy, so that a missing registration fails these tests alone, not the whole module.
FOLLOWERS = reverse_lazy("admin:activity_queue_follower_changelist")
DISCOVERIES = reverse_lazy("admin:activity_queue_pendingdiscovery_changelist")


@pytest.fixture
def operator(client, django_user_model):
    """A logged-in staff member with the given activity_queue permissions."""

    def make(*codenames: str):
        user = django_user_model.objects.create_user("operator", password="pw", is_staff=True)
        user.user_permissions.add(*Permission.objects.filter(
            content_type__app_label="activity_queue", codename__in=codenames))
        client.force_login(user)
        return client

    return make


VIEW_ALL = ("view_activity", "view_scheduledactivity", "view_host")


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def action(client, url, name, rows):
    return client.post(url, {"action": name, "_selected_action": [r.pk for r in rows]},
                       follow=True)


def test_log_list_columns_filters_and_search(admin_client):
    failed = log_row(inbox="https://a.example/inbox/", status_code=503)
    log_row(status="sent", status_code=202, inbox="https://b.example/inbox/")
    response = admin_client.get(LOG)
    assert response.status_code == 200
    page = response.content.decode()
    for text in ("failed (503)", "sent (202)", "https://a.example", "Re-queue selected failed",
                 "Dashboard"):
        assert text in page
    failed_only = admin_client.get(LOG, {"status__exact": "failed"})
    assert list(failed_only.context["cl"].result_list) == [failed]
    by_host = admin_client.get(LOG, {"host": "https://b.example"})
    assert [r.host for r in by_host.context["cl"].result_list] == ["https://b.example"]
    found = admin_client.get(LOG, {"q": failed.activity_id})
    assert list(found.context["cl"].result_list) == [failed]
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    for params in ({"direction__exact": "out"}, {"activity_type": "Create"},
                   {"resolved_at__gte": str(midnight)}):
        assert admin_client.get(LOG, params).status_code == 200


def test_log_detail_is_read_only_and_pretty(admin_client):
    row = log_row(response_excerpt="<b>upstream down</b>", error="HTTP 503: busy")
    url = reverse("admin:activity_queue_activity_change", args=[row.pk])
    response = admin_client.get(url)
    page = response.content.decode()
    assert response.status_code == 200
    assert '  &quot;type&quot;: &quot;Create&quot;' in page  # indented JSON
    assert "&lt;b&gt;upstream down&lt;/b&gt;" in page  # escaped, not rendered
    assert "HTTP 503: busy" in page
    assert 'name="_save"' not in page
    assert admin_client.post(url, {"error": "edited"}).status_code == 403
    assert admin_client.get(reverse("admin:activity_queue_activity_add")).status_code == 403
    assert admin_client.get(
        reverse("admin:activity_queue_activity_delete", args=[row.pk])).status_code == 403
    row.refresh_from_db()
    assert row.error == "HTTP 503: busy"


def test_queue_list_state_filter_and_detail(admin_client):
    now = timezone.now()
    due = queued(last_error="HTTP 502", last_status=502, attempts=1)
    waiting = queued(next_attempt_at=now + timedelta(hours=1))
    leased = queued(leased_by="w", leased_until=now + timedelta(minutes=5))
    cases = {"due": [due], "waiting": [waiting], "leased": [leased], "retrying": [due]}
    for state, rows in cases.items():
        listed = admin_client.get(QUEUE, {"state": state}).context["cl"].result_list
        assert list(listed) == rows, state
    page = admin_client.get(QUEUE).content.decode()
    assert "due now" in page and "leased (in flight)" in page
    detail = admin_client.get(reverse("admin:activity_queue_scheduledactivity_change",
                                      args=[due.pk])).content.decode()
    assert "HTTP 502" in detail and "search the log for this activity id" in detail
    assert admin_client.get(reverse("admin:activity_queue_scheduledactivity_add")
                            ).status_code == 403


def test_requeue_action_reports_and_never_duplicates(admin_client):
    failed = log_row()
    response = action(admin_client, LOG, "requeue", [failed])
    assert messages_of(response) == ["Re-queued 1 delivery."]
    assert ScheduledActivity.objects.get().activity_id == failed.activity_id
    again = action(admin_client, LOG, "requeue", [failed, log_row(status="sent")])
    assert messages_of(again) == [
        "Re-queued 0 deliveries.",
        "Skipped 2: 1 already pending, 1 not a failed or discarded outbound delivery."]
    assert ScheduledActivity.objects.count() == 1


def test_actions_need_their_permission(operator):
    client = operator(*VIEW_ALL)
    failed = log_row()
    row = queued()
    host = Host.objects.create(host="https://a.example",
                               paused_until=timezone.now() + timedelta(hours=1))
    for url, name, rows in ((LOG, "requeue", [failed]), (QUEUE, "retry_now", [row]),
                            (QUEUE, "discard", [row]), (HOSTS, "resume", [host])):
        page = client.get(url)
        assert page.status_code == 200
        assert f'value="{name}"' not in page.content.decode()
        response = action(client, url, name, rows)
        assert response.status_code == 200 and messages_of(response) == []
    assert ScheduledActivity.objects.get() == row and not Activity.objects.exclude(pk=failed.pk)
    assert Host.objects.exists()


def test_one_permission_does_not_grant_another_action(operator):
    client = operator(*VIEW_ALL, "change_scheduledactivity")
    row = queued()
    page = client.get(QUEUE).content.decode()
    assert 'value="retry_now"' in page and 'value="discard"' not in page
    assert messages_of(action(client, QUEUE, "discard", [row])) == ["No action selected."]
    assert ScheduledActivity.objects.get() == row and not Activity.objects.exists()


def test_permitted_operator_can_requeue(operator):
    client = operator(*VIEW_ALL, "add_scheduledactivity")
    failed = log_row()
    assert 'value="requeue"' in client.get(LOG).content.decode()
    assert messages_of(action(client, LOG, "requeue", [failed])) == ["Re-queued 1 delivery."]


def test_retry_now_action(operator):
    client = operator(*VIEW_ALL, "change_scheduledactivity")
    now = timezone.now()
    later = queued(next_attempt_at=now + timedelta(hours=3))
    leased = queued(leased_by="w", leased_until=now + timedelta(minutes=5))
    response = action(client, QUEUE, "retry_now", [later, leased])
    assert messages_of(response) == [
        "1 delivery due now; the worker was woken.",
        "Skipped 1: being delivered right now or already gone from the queue."]
    later.refresh_from_db()
    assert later.next_attempt_at <= timezone.now()


def test_discard_action_logs_what_it_removed(operator):
    client = operator(*VIEW_ALL, "delete_scheduledactivity")
    row = queued()
    response = action(client, QUEUE, "discard", [row])
    assert messages_of(response) == [
        "Discarded 1 delivery; each is in the log with status 'discarded'."]
    assert not ScheduledActivity.objects.exists()
    log = Activity.objects.get()
    assert (log.status, log.error) == ("discarded", "discarded by operator")


def test_resume_host_action(operator):
    client = operator(*VIEW_ALL, "change_host")
    host = Host.objects.create(host="https://a.example", trips=2,
                               paused_until=timezone.now() + timedelta(hours=1))
    page = client.get(HOSTS).content.decode()
    assert "open" in page
    response = action(client, HOSTS, "resume", [host])
    assert messages_of(response) == ["Resumed 1 host. Nothing is queued for them."]
    assert not Host.objects.exists()


def test_resuming_says_which_rows_are_claimable_and_when_the_others_are_due(admin_client):
    """Rows moved to the end of the pause come back; a retry in backoff keeps its time."""
    now = timezone.now()
    until = now + timedelta(hours=1)
    host = Host.objects.create(host="https://a.example", trips=1, consecutive_failures=5,
                               paused_until=until)
    queued(inbox="https://a.example/inbox/", next_attempt_at=until)
    queued(inbox="https://a.example/users/bob/inbox/", next_attempt_at=until)
    retry = queued(inbox="https://a.example/inbox/", attempts=2,
                   next_attempt_at=now + timedelta(minutes=7, seconds=30))
    response = action(admin_client, HOSTS, "resume", [host])
    at = timezone.localtime(retry.next_attempt_at)
    assert messages_of(response) == [
        "Resumed 1 host. 2 deliveries claimable now; 1 in backoff keeps its time, due in "
        f"7\xa0minutes ({at:%H:%M})."]


def test_app_index_links_the_dashboard(admin_client):
    page = admin_client.get(reverse("admin:app_list", args=["activity_queue"]))
    assert DASHBOARD in page.content.decode()


def test_dashboard_needs_login_and_view_permission(client, operator):
    assert client.get(DASHBOARD).status_code == 302
    assert operator("view_host").get(DASHBOARD).status_code == 403


def test_dashboard_numbers(operator):
    client = operator(*VIEW_ALL)
    now = timezone.now()
    paused = "https://paused.example"
    Host.objects.create(host=paused, paused_until=now + timedelta(hours=1), trips=1,
                        consecutive_failures=5, last_error="timeout")
    first = queued(created_at=now - timedelta(hours=2), next_attempt_at=now - timedelta(hours=1))
    queued(next_attempt_at=now - timedelta(minutes=1))
    queued(inbox=f"{paused}/inbox/", next_attempt_at=now - timedelta(hours=5))
    queued(leased_by="w", leased_until=now + timedelta(minutes=1))
    queued(next_attempt_at=now + timedelta(hours=1))
    three_hours = timedelta(hours=3)
    for _ in range(5):
        log_row(status="sent", status_code=202, ago=timedelta(minutes=1))
    for _ in range(2):
        log_row(status="sent", status_code=202, ago=three_hours)
    log_row(inbox="https://a.example/inbox/", ago=three_hours)
    log_row(inbox="https://a.example/inbox/", ago=three_hours)
    log_row(inbox=f"{paused}/inbox/", ago=three_hours)
    log_row(inbox="https://old.example/inbox/", ago=timedelta(hours=30))
    log_row(status="dropped", ago=timedelta(hours=1))
    log_row(status="dropped", ago=timedelta(hours=2))
    log_row(status="dropped", ago=timedelta(days=2))
    log_row(status="discarded", ago=timedelta(hours=1))
    log_row(status="received", direction="in", ago=timedelta(hours=1))

    response = client.get(DASHBOARD)
    assert response.status_code == 200
    ctx = response.context
    stats = ctx["stats"]
    assert (stats.depth, stats.due, stats.due_paused, stats.in_flight) == (5, 3, 1, 1)
    assert stats.waiting_for_paused == 1
    assert stats.oldest_pending == first.created_at
    assert stats.oldest_due == first.next_attempt_at  # the paused host's row does not count
    assert (ctx["sent_24h"], ctx["failed_24h"], ctx["success_rate"]) == (7, 3, 70.0)
    assert [(h.host, h.failures, h.circuit) for h in ctx["failing_hosts"]] == [
        (paused, 1, "open"), ("https://a.example", 2, "closed")]
    assert [h.host for h in ctx["troubled_hosts"]] == [paused]
    assert (ctx["dropped_24h"], ctx["discarded_24h"]) == (2, 1)
    page = response.content.decode()
    assert page.count('aria-label="Deliveries and final failures per hour, last 24 hours"') == 1
    hour = (now - three_hours).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    assert f"{timezone.localtime(hour):%Y-%m-%d %H:00}: 2 delivered, 3 failed" in page
    assert sum(b.sent for b in ctx["buckets"]) == 7


def test_dashboard_lists_a_bounded_number_of_troubled_hosts(admin_client):
    """A site that federates widely keeps thousands of unavailable hosts: the page, which
    reloads itself, reads and shows the first ones and says how many there are."""
    now = timezone.now()
    Host.objects.bulk_create([
        Host(host=f"https://gone{n:03}.example", unavailable_since=now, failing_since=now,
             updated_at=now) for n in range(120)])
    Host.objects.create(host="https://down.example", paused_until=now + timedelta(minutes=5),
                        trips=1, updated_at=now)
    response = admin_client.get(DASHBOARD)
    ctx = response.context
    shown = ctx["troubled_hosts"]
    assert len(shown) == 50 and shown[0].host == "https://down.example"
    assert ctx["troubled_count"] == 121 and ctx["open_circuits"] == 1
    circuits = response.content.decode().split('id="aq-circuits"')[1]
    assert circuits.count("<tr><td>") == 50
    assert f'<a href="{HOSTS}">and 71 more</a>' in circuits


def assert_read_only(client, model: str, row, field: str, value) -> None:
    """The detail page shows the row with no save button; add, edit and delete are refused."""
    url = reverse(f"admin:activity_queue_{model}_change", args=[row.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert client.post(url, {field: "edited"}).status_code == 403
    assert client.get(reverse(f"admin:activity_queue_{model}_add")).status_code == 403
    assert client.post(reverse(f"admin:activity_queue_{model}_add"),
                       {field: "new"}).status_code == 403
    assert client.post(reverse(f"admin:activity_queue_{model}_delete", args=[row.pk]),
                       {"post": "yes"}).status_code == 403
    row.refresh_from_db()
    assert getattr(row, field) == value
    assert type(row).objects.count() >= 1


def test_followers_are_listed_searchable_and_read_only(admin_client):
    alice = Follower.objects.create(object_id="https://here.example/circles/1/",
                                    inbox="https://b.example/inbox/")
    Follower.objects.create(object_id="https://here.example/circles/2/",
                            inbox="https://C.example:8443/inbox/")
    response = admin_client.get(FOLLOWERS)
    assert response.status_code == 200
    page = response.content.decode()
    for text in ("here.example/circles/1/", "b.example/inbox/",
                 "C.example:8443/inbox/", "2 followers"):
        assert text in page
    found = admin_client.get(FOLLOWERS, {"q": "circles/1/"}).context["cl"].result_list
    assert list(found) == [alice]
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    today = admin_client.get(FOLLOWERS, {"created_at__gte": str(midnight)})
    assert today.context["cl"].result_count == 2
    assert_read_only(admin_client, "follower", alice, "inbox", "https://b.example/inbox/")
    assert Follower.objects.count() == 2


def test_pending_discoveries_are_listed_filtered_and_read_only(admin_client):
    now = timezone.now()
    payload = {"type": "Add", "object": {"@id": "https://here.example/circles/1/"}}
    due = PendingDiscovery.objects.create(
        resource="https://b.example/users/7/", activity_type="Add", payload=payload,
        object_id="https://here.example/circles/1/")
    waiting = PendingDiscovery.objects.create(
        resource="https://c.example/users/8/", activity_type="Remove", payload=payload,
        attempts=2, next_attempt_at=now + timedelta(hours=1),
        last_error="inbox discovery: HTTP 503 fetching the document")
    claimed = PendingDiscovery.objects.create(
        resource="https://d.example/users/9/", activity_type="Add", payload=payload,
        claimed_by="worker-1")
    response = admin_client.get(DISCOVERIES)
    assert response.status_code == 200
    page = response.content.decode()
    for text in ("https://b.example/users/7/", "due now", "in 59\xa0minutes",
                 "inbox discovery: HTTP 503", "3 pending inbox discoveries"):
        assert text in page, text
    cases = {"due": [due], "waiting": [waiting], "claimed": [claimed], "retrying": [waiting]}
    for state, rows in cases.items():
        listed = admin_client.get(DISCOVERIES, {"state": state}).context["cl"].result_list
        assert list(listed) == rows, state
    by_type = admin_client.get(DISCOVERIES, {"activity_type__exact": "Remove"})
    assert list(by_type.context["cl"].result_list) == [waiting]
    found = admin_client.get(DISCOVERIES, {"q": "d.example"}).context["cl"].result_list
    assert list(found) == [claimed]
    detail = admin_client.get(reverse("admin:activity_queue_pendingdiscovery_change",
                                      args=[waiting.pk])).content.decode()
    assert "HTTP 503 fetching the document" in detail
    assert "  &quot;type&quot;: &quot;Add&quot;" in detail  # indented JSON
    assert_read_only(admin_client, "pendingdiscovery", waiting, "resource",
                     "https://c.example/users/8/")
    assert PendingDiscovery.objects.count() == 3


def test_followers_and_discoveries_are_in_the_app_index(admin_client):
    page = admin_client.get(reverse("admin:app_list", args=["activity_queue"])).content.decode()
    assert str(FOLLOWERS) in page and str(DISCOVERIES) in page


def test_dashboard_counts_the_rows_waiting_for_a_failing_host(operator):
    moved_backlog("https://down.example", 4)
    page = operator(*VIEW_ALL).get(DASHBOARD)
    assert page.context["stats"].waiting_for_failing == 3
    assert "3 wait for failing hosts to answer" in page.content.decode()


def test_host_admin_stops_and_resumes_deliveries(admin_client):
    Host.objects.create(host="https://a.example", consecutive_failures=2)
    queued(inbox="https://a.example/inbox/")
    host = Host.objects.get()
    response = action(admin_client, HOSTS, "stop_delivery", [host])
    assert "Stopped deliveries to 1 host; 1 delivery in the queue failed" in messages_of(
        response)[0]
    host.refresh_from_db()
    assert host.unavailable_by == "admin" and host.unavailable_since is not None
    assert not ScheduledActivity.objects.exists()
    assert Activity.objects.get().error.startswith("host unavailable: delivery stopped by admin")
    page = admin_client.get(HOSTS).content.decode()
    assert "unavailable since " in page and "(stopped by admin)" in page

    response = action(admin_client, HOSTS, "resume", [host])
    assert "Resumed 1 host" in messages_of(response)[0]
    assert not Host.objects.exists()


def test_host_admin_stop_needs_the_change_permission(operator):
    client = operator("view_host")
    host = Host.objects.create(host="https://a.example")
    response = action(client, HOSTS, "stop_delivery", [host])
    assert response.status_code == 200
    host.refresh_from_db()
    assert host.unavailable_since is None


# -- what an operator sees during an outage ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_rows_of_a_paused_host_show_as_paused(admin_client, receiver, worker):
    host = outage(receiver, worker, tried=4, untried=1)
    other = queued(inbox="https://fine.example/inbox/")
    until = Host.objects.get(host=host).paused_until
    response = admin_client.get(QUEUE)
    page = response.content.decode()
    assert page.count(f"paused until {timezone.localtime(until):%H:%M}") == 5
    assert "HTTP 500" in page  # the last error, in its own column
    assert f"{host}/users/bob/inbox/" in page and f"{host}/inbox/" in page
    paused = admin_client.get(QUEUE, {"state": "paused"}).context["cl"].result_list
    assert {r.host for r in paused} == {host} and len(paused) == 5
    assert list(admin_client.get(QUEUE, {"state": "due"}).context["cl"].result_list) == [other]
    assert "paused (host&#x27;s circuit open)" in page
    detail = admin_client.get(reverse("admin:activity_queue_scheduledactivity_change",
                                      args=[paused[0].pk])).content.decode()
    assert f"open, paused until {timezone.localtime(until):%H:%M:%S}" in detail


def test_log_type_filter_offers_every_type_present(admin_client):
    for kind in ("Follow", "Announce", "Note", "Create", "Follow"):
        log_row(activity_type=kind)
    filters = admin_client.get(LOG).context["cl"].filter_specs
    types = next(f for f in filters if getattr(f, "parameter_name", "") == "activity_type")
    assert [value for value, _ in types.lookup_choices] == [
        "Follow", "Announce", "Create", "Note"]
    found = admin_client.get(LOG, {"activity_type": "Announce"}).context["cl"].result_list
    assert [r.activity_type for r in found] == ["Announce"]


def test_log_host_filter_lists_only_failing_or_paused_hosts(admin_client):
    now = timezone.now()
    Host.objects.create(host="https://paused.example", trips=1, consecutive_failures=5,
                        paused_until=now + timedelta(minutes=5))
    Host.objects.create(host="https://failing.example", consecutive_failures=2)
    Host.objects.create(host="https://deferred-only.example", deferred_until=now)
    log_row(inbox="https://gone.example/inbox/", status_code=410)
    replayed = log_row(inbox="https://healthy.example/inbox/")
    log_row(activity_id=replayed.activity_id, inbox=replayed.inbox, status="sent",
            ago=timedelta(minutes=1))
    log_row(status="sent", inbox="https://fine.example/inbox/")
    filters = admin_client.get(LOG).context["cl"].filter_specs
    hosts = next(f for f in filters if getattr(f, "parameter_name", "") == "host")
    assert hosts.lookup_choices == [
        ("https://paused.example", "https://paused.example (paused)"),
        ("https://failing.example", "https://failing.example (2 failures in a row)"),
        ("https://gone.example", "https://gone.example (1 final failure)")]


def test_failed_rows_are_marked_and_show_all_needs_a_filter(admin_client):
    log_row()
    log_row(status="sent", status_code=202)
    page = admin_client.get(LOG).content.decode()
    assert page.count('class="aq-status aq-failed"') == 1
    assert "Show all" not in page and "2 activities" in page
    filtered = admin_client.get(LOG, {"status__exact": "failed"}).content.decode()
    assert "Show all" in filtered


def test_detail_shows_the_duration_and_requeues_a_failure(admin_client):
    failed = log_row(duration_ms=2.7774089994636597)
    url = reverse("admin:activity_queue_activity_change", args=[failed.pk])
    page = admin_client.get(url).content.decode()
    assert "2.8 ms" in page and "2.777" not in page
    assert 'id="aq-requeue"' in page
    requeue = reverse("admin:activity_queue_activity_requeue", args=[failed.pk])
    assert admin_client.get(requeue).status_code == 405
    response = admin_client.post(requeue, follow=True)
    assert response.redirect_chain[-1][0] == url
    assert messages_of(response) == ["Re-queued 1 delivery."]
    assert ScheduledActivity.objects.get().activity_id == failed.activity_id
    sent = log_row(status="sent", duration_ms=1234.5)
    page = admin_client.get(reverse("admin:activity_queue_activity_change",
                                    args=[sent.pk])).content.decode()
    assert "1.23 s" in page and 'id="aq-requeue"' not in page


def test_the_requeue_button_needs_permission_and_csrf(operator, django_user_model):
    failed = log_row()
    viewer = operator(*VIEW_ALL)
    page = viewer.get(reverse("admin:activity_queue_activity_change", args=[failed.pk]))
    assert 'id="aq-requeue"' not in page.content.decode()
    requeue = reverse("admin:activity_queue_activity_requeue", args=[failed.pk])
    assert viewer.post(requeue).status_code == 403
    user = django_user_model.objects.get(username="operator")
    user.user_permissions.add(Permission.objects.get(codename="add_scheduledactivity"))
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post(requeue).status_code == 403  # no CSRF token
    assert not ScheduledActivity.objects.exists()
    assert viewer.post(requeue).status_code == 302
    assert ScheduledActivity.objects.count() == 1


# -- one host's page ---------------------------------------------------------------------

OVERVIEW = reverse_lazy("admin:activity_queue_host_overview")


@pytest.mark.django_db(transaction=True)
def test_host_page_during_an_outage(admin_client, receiver, worker):
    host = outage(receiver, worker, tried=4, untried=1)
    log_row(inbox=f"{host}/inbox/", status_code=500, error="HTTP 500")
    state = Host.objects.get(host=host)
    bare = host.split("://", 1)[1]
    response = admin_client.get(OVERVIEW, {"host": bare})  # the name alone finds the origin
    assert response.status_code == 200 and response.context["host"] == host
    overview = response.context["overview"]
    # The untried row waits for the pause; the retries' own time is later than its end.
    queue = overview.queue
    assert (queue.queued, queue.paused, queue.backoff, queue.claimable) == (5, 1, 4, 0)
    assert queue.next_due > state.paused_until
    assert overview.queue_errors == [("HTTP 500", 4)]
    assert overview.failed_24h == 1
    page = response.content.decode()
    until = timezone.localtime(state.paused_until)
    assert f"paused until {until:%H:%M:%S} (in " in page
    assert '<span class="aq-value aq-open">open</span>' in page
    for button in ("aq-do-pause", "aq-do-resume", "aq-do-stop", "aq-do-requeue"):
        assert f'id="{button}"' in page
    link = f"{OVERVIEW}?{urlencode({'host': host})}"
    for listing in (QUEUE, HOSTS, DASHBOARD):
        assert link in admin_client.get(listing).content.decode(), listing


def test_host_page_actions(admin_client):
    host = "https://a.example"
    queued(inbox=f"{host}/inbox/")
    failed = log_row(inbox=f"{host}/inbox/", ago=timedelta(hours=2))
    url = f"{OVERVIEW}?host={host}"
    response = admin_client.post(url, {"do": "pause", "minutes": "60", "host": host}, follow=True)
    paused = Host.objects.get(host=host)
    assert paused.circuit == "open"
    assert paused.paused_until > timezone.now() + timedelta(minutes=59)
    assert messages_of(response)[0].startswith(f"Paused deliveries to {host} until ")
    assert response.context["overview"].queue.paused == 1

    response = admin_client.post(url, {"do": "resume"}, follow=True)
    assert messages_of(response) == ["Resumed 1 host. 1 delivery claimable now."]
    assert not Host.objects.exists()

    ScheduledActivity.objects.all().delete()
    response = admin_client.post(url, {"do": "requeue"}, follow=True)
    assert messages_of(response)[0].startswith("Re-queued 1 delivery that failed")
    assert ScheduledActivity.objects.get().activity_id == failed.activity_id

    response = admin_client.post(url, {"do": "stop"}, follow=True)
    assert messages_of(response)[0].startswith(f"Stopped deliveries to {host}")
    assert Host.objects.get(host=host).unavailable_by == "admin"
    assert not ScheduledActivity.objects.exists()
    assert admin_client.post(url, {"do": "pause", "minutes": "7"}, follow=True
                             ).context["messages"]
    assert admin_client.post(url, {"do": "explode"}).status_code == 403


@pytest.mark.parametrize("name", ["a\x00b", "https://a\x00b", "x" * 300,
                                  "https://a.example:99999"])
def test_host_page_of_no_possible_host_is_404(admin_client, name):
    assert admin_client.get(OVERVIEW, {"host": name}).status_code == 404
    assert admin_client.post(f"{OVERVIEW}?{urlencode({'host': name})}",
                             {"do": "pause", "minutes": "60"}).status_code == 404
    assert not Host.objects.exists()


def test_host_page_of_an_origin_written_otherwise(admin_client):
    response = admin_client.get(OVERVIEW, {"host": "HTTPS://A.example:443/"})
    assert response.status_code == 200 and response.context["host"] == "https://a.example"


@pytest.mark.parametrize("listing", [LOG, QUEUE])
def test_a_host_filter_no_database_could_match_finds_nothing(admin_client, listing):
    log_row(inbox="https://a.example/inbox/")
    queued(inbox="https://a.example/inbox/")
    response = admin_client.get(listing, {"host": "https://a\x00.example"})
    assert response.status_code == 200 and list(response.context["cl"].result_list) == []


def test_host_page_needs_permissions(operator):
    client = operator("view_host")
    host = "https://a.example"
    page = client.get(OVERVIEW, {"host": host})
    assert page.status_code == 200 and 'id="aq-actions"' not in page.content.decode()
    assert client.post(f"{OVERVIEW}?host={host}", {"do": "pause", "minutes": "60"}
                       ).status_code == 403
    assert not Host.objects.exists()


def test_dashboard_ranks_hosts_by_failures_in_a_row_and_forgives_replayed_failures(admin_client):
    """A host still retrying has no final failure yet; a replayed failure that went through
    counts as delivered."""
    now = timezone.now()
    Host.objects.create(host="https://retrying.example", consecutive_failures=7,
                        failing_since=now - timedelta(minutes=20), last_error="HTTP 502")
    Host.objects.create(host="https://down.example", consecutive_failures=12, trips=3,
                        paused_until=now + timedelta(minutes=4), last_error="timed out")
    log_row(inbox="https://down.example/inbox/", ago=timedelta(hours=2))
    for _ in range(3):
        log_row(inbox="https://gone.example/inbox/", status_code=410, ago=timedelta(hours=2))
    replayed = log_row(inbox="https://back.example/inbox/", ago=timedelta(hours=3))
    log_row(activity_id=replayed.activity_id, inbox=replayed.inbox, status="sent",
            status_code=202, ago=timedelta(hours=1))
    response = admin_client.get(DASHBOARD)
    ctx = response.context
    assert [(h.host, h.circuit, h.consecutive_failures, h.failures)
            for h in ctx["failing_hosts"]] == [
        ("https://down.example", "open", 12, 1),
        ("https://retrying.example", "closed", 7, 0),
        ("https://gone.example", "closed", 0, 3)]
    assert (ctx["sent_24h"], ctx["failed_24h"], ctx["success_rate"]) == (1, 4, 20.0)
    page = response.content.decode()
    assert '<meta http-equiv="refresh" content="30">' in page
    assert not re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(?:https?:)?//', page)
    assert "1 <small>host</small>" in page  # paused
    assert "0 <small>rows</small>" in page and "0 <small>s</small>" in page
