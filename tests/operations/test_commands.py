import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from activity_queue.checks import check_settings
from activity_queue.conf import get_config
from activity_queue.management.commands.activity_status import Command as StatusCommand
from activity_queue.models import Activity, Host, Payload, ScheduledActivity

from ..support.opsdata import log_row, moved_backlog, outage, queued

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def status_json() -> dict:
    """``activity_status --json`` of a healthy queue, parsed."""
    out, _ = run("activity_status", "--json")
    return json.loads(out)


def queued_ids() -> set[str]:
    return set(ScheduledActivity.objects.values_list("payload__activity_id", flat=True))


# -- activity_replay -------------------------------------------------------------


@pytest.fixture
def failures():
    return {
        "recent_a": log_row(inbox="https://a.example/inbox/", status_code=503,
                            ago=timedelta(minutes=30)),
        "old_a": log_row(inbox="https://a.example:8443/inbox/", status_code=None,
                         activity_type="Delete", ago=timedelta(days=3)),
        "recent_b": log_row(inbox="https://b.example/inbox/", status_code=410,
                            activity_type="Update", ago=timedelta(hours=5)),
        "sent": log_row(status="sent", status_code=202),
    }


@pytest.mark.parametrize(("flags", "expected"), [
    ([], {"recent_a", "old_a", "recent_b"}),
    (["--since", "2h"], {"recent_a"}),
    (["--since", "1d", "--until", "1h"], {"recent_b"}),
    (["--host", "a.example"], {"recent_a", "old_a"}),
    (["--host", "https://a.example"], {"recent_a"}),
    (["--host", "a.example", "--host", "b.example", "--type", "update"], {"recent_b"}),
    (["--status", "410", "--status", "none"], {"old_a", "recent_b"}),
    (["--type", "Delete"], {"old_a"}),
])
def test_replay_filters(failures, flags, expected):
    out, _ = run("activity_replay", *flags)
    assert queued_ids() == {failures[k].activity_id for k in expected}
    assert out.startswith(f"Re-queued {len(expected)} of {len(expected)} matching failure(s)")


def test_replay_by_id_and_absolute_dates(failures):
    target = failures["recent_b"]
    since = (timezone.localtime() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    run("activity_replay", "--id", target.activity_id, "--since", since)
    assert queued_ids() == {target.activity_id}
    tomorrow = (timezone.localtime() + timedelta(days=1)).date().isoformat()
    out, _ = run("activity_replay", "--until", tomorrow)
    assert "Re-queued 2 of 3 matching failure(s); skipped 1 already pending" in out


def test_replay_dry_run_lists_and_changes_nothing(failures):
    queued(activity_id=failures["recent_b"].activity_id, inbox=failures["recent_b"].inbox)
    out, _ = run("activity_replay", "--dry-run")
    lines = out.splitlines()
    assert sorted(lines[:-1]) == sorted(
        f"would re-queue {r.activity_type} {r.activity_id} -> {r.inbox}"
        for r in (failures["recent_a"], failures["old_a"]))
    assert lines[-1] == ("Dry run: Would re-queue 2 of 3 matching failure(s); skipped 1 already "
                         "pending, 0 superseded by a later attempt, 0 unusable. "
                         "Nothing was changed.")
    assert ScheduledActivity.objects.count() == 1


def test_replay_twice_never_duplicates(failures):
    run("activity_replay")
    out, _ = run("activity_replay")
    assert out.startswith("Re-queued 0 of 3 matching failure(s); skipped 3 already pending")
    assert ScheduledActivity.objects.count() == 3


def test_replay_can_include_discarded():
    row = log_row(status="discarded")
    run("activity_replay")
    assert not ScheduledActivity.objects.exists()
    run("activity_replay", "--include-discarded")
    assert queued_ids() == {row.activity_id}


def test_replay_shows_progress_on_long_runs_only():
    template = log_row(save=False)
    Activity.objects.bulk_create([
        Activity(**{**{f.attname: getattr(template, f.attname)
                       for f in Activity._meta.concrete_fields if f.attname != "id"},
                    "activity_id": f"https://testserver/activities/bulk-{i}"})
        for i in range(1200)])
    out, err = run("activity_replay", "--dry-run", "--batch-size", "120")
    progress = err.splitlines()
    assert progress[0] == "would re-queue: 120/1200 (10%)"
    assert progress[-1] == "would re-queue: 1200/1200 (100%)" and len(progress) == 10
    assert out.splitlines()[-1].startswith("Dry run: Would re-queue 1200 of 1200")
    Activity.objects.filter(pk__gt=Activity.objects.order_by("pk")[10].pk).delete()
    _, err = run("activity_replay", "--dry-run")
    assert err == ""


@pytest.mark.parametrize(("flags", "message"), [
    (["--since", "yesterday"], "'yesterday' is not a date or an age"),
    (["--until", "2024-13-45"], "'2024-13-45' is not a date or an age"),
    (["--status", "abc"], "'abc' is not an HTTP status (100-599) or 'none'"),
    (["--status", "700"], "'700' is not an HTTP status"),
    (["--batch-size", "0"], "'0' must be at least 1"),
    (["--since", "1h", "--until", "2h"], "--since (") ,
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_replay_usage_errors(flags, message):
    with pytest.raises(CommandError) as caught:
        run("activity_replay", *flags)
    assert message in str(caught.value)


def test_bad_flag_from_the_shell_is_a_usage_error():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run([sys.executable, "manage.py", "activity_replay", "--since", "soon"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "usage: manage.py activity_replay" in done.stderr
    assert "'soon' is not a date or an age" in done.stderr


# -- activity_status -------------------------------------------------------------


def test_status_of_an_empty_queue_is_healthy():
    out, _ = run("activity_status")
    assert "queue depth     0" in out and out.rstrip().endswith("status          healthy")


def test_status_reports_and_fails_on_lag():
    now = timezone.now()
    queued(next_attempt_at=now - timedelta(minutes=10), created_at=now - timedelta(hours=1))
    queued(leased_by="w", leased_until=now + timedelta(minutes=1))
    log_row(inbox="https://a.example/inbox/", ago=timedelta(minutes=5))
    log_row(inbox="https://a.example/inbox/", ago=timedelta(minutes=50))
    log_row(inbox="https://b.example/inbox/", ago=timedelta(hours=2))
    log_row(status="dropped", ago=timedelta(minutes=20))
    log_row(status="dropped", ago=timedelta(hours=2))
    with pytest.raises(CommandError) as caught:
        run("activity_status", "--json")
    assert caught.value.returncode == 1
    assert "unhealthy: a claimable row is 600s overdue (max 300s)" in str(caught.value)
    out = StringIO()
    call_command("activity_status", "--json", "--max-lag", "15m", stdout=out)
    report = json.loads(out.getvalue())
    assert report["healthy"] is True and report["problems"] == []
    assert {k: report["queue"][k] for k in ("depth", "due", "due_paused", "waiting_for_paused",
                                            "in_flight")} == {
        "depth": 2, "due": 1, "due_paused": 0, "waiting_for_paused": 0, "in_flight": 1}
    assert 3590 < report["queue"]["oldest_pending_age_s"] < 3700
    assert report["dropped"] == 1
    assert report["failures"]["hosts"] == [
        {"host": "https://a.example", "failures": 2, "circuit": "closed", "paused_until": None}]
    out, _ = run("activity_status", "--max-lag", "1h", "--window", "3h")
    assert "  https://a.example       2  circuit closed" in out
    assert "  https://b.example       1  circuit closed" in out
    assert "dropped         2 as redundant in the last 3h" in out


def test_status_other_rules_and_paused_hosts():
    now = timezone.now()
    Host.objects.create(host="https://down.example", paused_until=now + timedelta(minutes=5),
                        trips=1, consecutive_failures=5, last_error="connection refused")
    queued(inbox="https://down.example/inbox/", next_attempt_at=now - timedelta(hours=2))
    queued(inbox="https://down.example/inbox/", next_attempt_at=now + timedelta(minutes=5))
    queued(inbox="https://down.example/inbox/", next_attempt_at=now + timedelta(minutes=6))
    queued(next_attempt_at=now + timedelta(hours=1))
    out, _ = run("activity_status")  # the paused host's overdue row is not our lag
    assert "due now         1 (1 for paused hosts)" in out
    # The due row and the one moved to the end of the pause; not the later retry.
    assert "paused hosts    2 rows wait for the end of a pause" in out
    assert "  https://down.example  open       5 failures in a row" in out
    with pytest.raises(CommandError, match="circuit open for https://down.example"):
        run("activity_status", "--fail-on-open-circuit")
    with pytest.raises(CommandError, match=r"4 rows queued \(max 1\)"):
        run("activity_status", "--max-depth", "1")


def test_status_exit_codes_from_the_command_line():
    queued(next_attempt_at=timezone.now() - timedelta(hours=1))
    with pytest.raises(SystemExit) as caught:
        StatusCommand(stdout=StringIO(), stderr=StringIO()).run_from_argv(
            ["manage.py", "activity_status"])
    assert caught.value.code == 1
    with pytest.raises(CommandError, match="'soon' is not a duration"):
        run("activity_status", "--max-lag", "soon")


# -- activity_prune --------------------------------------------------------------


RETENTION = {"RETENTION_SENT_DAYS": 7, "RETENTION_FAILED_DAYS": 30,
             "RETENTION_RECEIVED_DAYS": None}


@pytest.fixture
def aged_log():
    get_config.cache_clear()
    days = timedelta(days=1)
    rows = {
        "expired": [log_row(status="sent", ago=10 * days) for _ in range(5)]
        + [log_row(status="dropped", ago=8 * days), log_row(status="failed", ago=40 * days),
           log_row(status="discarded", ago=31 * days)],
        "kept": [log_row(status="sent", ago=days), log_row(status="failed", ago=10 * days),
                 log_row(status="received", direction="in", ago=100 * days)],
    }
    yield rows
    get_config.cache_clear()


def test_prune_dry_run_counts_and_keeps(aged_log):
    with override_settings(ACTIVITY_QUEUE=RETENTION):
        out, _ = run("activity_prune", "--dry-run")
    assert out.strip() == (
        "Dry run: would delete 8 log row(s) (sent/dropped older than 7 days: 6; "
        "failed/discarded older than 30 days: 2; received: kept forever), and 8 payload(s) "
        "nothing would refer to any more. Nothing was changed.")
    assert Activity.objects.count() == 11
    assert Payload.objects.count() == 11


def test_prune_dry_run_counts_only_payloads_nothing_kept_refers_to(aged_log):
    """Of the 8 expired rows' payloads, one is still queued and one is shared with a kept row."""
    first, second = aged_log["expired"][:2]
    ScheduledActivity.objects.create(payload=first.payload, inbox=first.inbox, host=first.host)
    Activity.objects.filter(pk=aged_log["kept"][0].pk).update(payload=second.payload_id)
    Payload.objects.exclude(records__isnull=False).exclude(deliveries__isnull=False).delete()
    with override_settings(ACTIVITY_QUEUE=RETENTION):
        out, _ = run("activity_prune", "--dry-run")
        assert "and 6 payload(s) nothing would refer to any more" in out
        out, _ = run("activity_prune")
    assert "and 6 payload(s) nothing refers to any more" in out


def test_prune_deletes_in_batches(aged_log):
    with override_settings(ACTIVITY_QUEUE=RETENTION), \
            CaptureQueriesContext(connection) as queries:
        out, _ = run("activity_prune", "--batch-size", "2")
    assert out.strip() == (
        "Deleted 8 log row(s) in 4 batch(es) (sent/dropped older than 7 days: 6; "
        "failed/discarded older than 30 days: 2; received: kept forever), and 8 payload(s) "
        "nothing refers to any more.")
    log = Activity._meta.db_table
    deletes = [q["sql"] for q in queries.captured_queries
               if q["sql"].startswith(f"DELETE FROM {connection.ops.quote_name(log)}")]
    assert len(deletes) == 4
    assert set(Activity.objects.values_list("pk", flat=True)) == {
        r.pk for r in aged_log["kept"]}
    assert set(Payload.objects.values_list("pk", flat=True)) == {
        r.payload_id for r in aged_log["kept"]}, "the pruned rows' payloads go with them"


def test_prune_uses_the_defaults(aged_log):
    out, _ = run("activity_prune")
    assert "sent/dropped older than 30 days: 0" in out
    assert "failed/discarded older than 90 days: 0" in out
    assert "received older than 30 days: 1" in out


@pytest.mark.parametrize(("value", "ok"), [(None, True), (14, True), (0, False), ("7", False),
                                          (True, False)])
def test_retention_settings_are_checked(value, ok):
    with override_settings(ACTIVITY_QUEUE={"RETENTION_FAILED_DAYS": value}):
        messages = check_settings()
    assert (messages == []) is ok
    if not ok:
        assert messages[0].id == "activity_queue.E002"
        assert "RETENTION_FAILED_DAYS must be a number of days >= 1, or None" in messages[0].hint


def test_status_counts_the_rows_waiting_for_a_failing_host():
    assert moved_backlog("https://down.example", 4) == 3
    queue = status_json()["queue"]
    assert (queue["depth"], queue["due"], queue["waiting_for_failing"]) == (5, 1, 3)
    text, _ = run("activity_status")
    assert "failing hosts   3 rows wait for their host to answer" in text


def test_a_failing_host_that_is_also_paused_is_counted_once():
    moved_backlog("https://down.example", 4)
    Host.objects.filter(host="https://down.example").update(
        paused_until=timezone.now() + timedelta(minutes=20), consecutive_failures=5, trips=1)
    queue = status_json()["queue"]
    assert (queue["waiting_for_paused"], queue["waiting_for_failing"]) == (5, 0)


def test_status_shows_unavailable_hosts():
    now = timezone.now()
    Host.objects.create(host="https://dead.example", consecutive_failures=40, trips=6,
                        failing_since=now - timedelta(days=8),
                        unavailable_since=now - timedelta(days=1),
                        paused_until=now + timedelta(hours=2))
    Host.objects.create(host="https://stopped.example", unavailable_since=now,
                        unavailable_by="alice")
    out, _ = run("activity_status")
    since = (now - timedelta(days=1)).isoformat()
    dead = "  https://dead.example     open       40 failures in a row  unavailable since "
    assert dead + since in out
    assert "  https://stopped.example  closed     0 failures in a row  unavailable since " in out
    out, _ = run("activity_status", "--json")
    report = json.loads(out)
    assert [(u["host"], u["since"], u["stopped_by"]) for u in report["unavailable"]] == [
        ("https://dead.example", since, ""), ("https://stopped.example", now.isoformat(), "alice")]
    assert report["unavailable"][0]["next_probe"] == (now + timedelta(hours=2)).isoformat()
    assert report["unavailable"][1]["next_probe"] is None


# -- activity_status during a real outage --------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_status_during_an_outage_says_paused_until_and_degraded(receiver, worker):
    host = outage(receiver, worker, tried=4, untried=1)
    paused_until = Host.objects.get().paused_until
    at = timezone.localtime(paused_until).strftime("%H:%M:%S")
    out, _ = run("activity_status")
    lines = out.splitlines()
    assert "due now         1 (1 for paused hosts)" in lines
    assert "paused hosts    1 row waits for the end of a pause" in lines
    circuit = next(line for line in lines if line.startswith(f"  {host}  open"))
    found = re.fullmatch(rf"  {re.escape(host)}  open       4 failures in a row  "
                         rf"paused until {at} \(in (\d+) s\)", circuit)
    assert found and 100 <= int(found[1]) <= 120, circuit
    assert lines[-1] == (
        f"status          degraded: circuit open for {host} (their rows wait for the pause to "
        "end; exit status 0, --fail-on-open-circuit makes it 1)")

    report = status_json()
    assert (report["status"], report["healthy"], report["problems"]) == ("degraded", True, [])
    assert report["warnings"] == [f"circuit open for {host}"]
    [state] = report["circuits"]
    assert (state["host"], state["circuit"], state["consecutive_failures"]) == (host, "open", 4)
    assert state["paused_until"] == paused_until.isoformat()
    assert 100 <= state["paused_for_s"] <= 120
    assert state["last_error"] == "HTTP 500"

    with pytest.raises(CommandError, match=f"unhealthy: circuit open for {re.escape(host)}"):
        run("activity_status", "--fail-on-open-circuit", "--json")


def test_status_uses_plurals_for_one_row():
    moved_backlog("https://down.example", 2, keep=1)
    out, _ = run("activity_status")
    assert "failing hosts   1 row waits for its host to answer" in out


def test_a_failure_replayed_and_delivered_is_no_longer_listed():
    failed = log_row(inbox="https://a.example/inbox/", ago=timedelta(minutes=20))
    log_row(inbox="https://b.example/inbox/", ago=timedelta(minutes=20))
    log_row(activity_id=failed.activity_id, inbox=failed.inbox, status="sent",
            status_code=202, ago=timedelta(minutes=5))
    assert [h["host"] for h in status_json()["failures"]["hosts"]] == ["https://b.example"]
    out, _ = run("activity_status")
    assert "https://a.example" not in out
