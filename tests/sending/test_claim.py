"""The claim applies per-host caps in SQL: nothing is leased only to be handed back."""

import pytest
from django.db import transaction

from activity_queue import enqueue
from activity_queue.models import Host, Payload, ScheduledActivity
from activity_queue.sending import hosts
from activity_queue.sending import queue as store

from ..support.helpers import aq_settings, recorded_statements, sqlite_plan

pytestmark = pytest.mark.django_db(transaction=True)


def backlog(host: str, n: int) -> None:
    with transaction.atomic():
        enqueue({"type": "Create", "object": "https://a.example/1"},
                to=[f"https://{host}/inbox/{i}" for i in range(n)])


def leased_by(name: str) -> int:
    return ScheduledActivity.objects.filter(leased_by=name).count()


def test_per_host_cap_and_room():
    backlog("one.example", 100)
    backlog("two.example", 5)
    jobs = store.claim("w", 500, 30, per_host=32, room={"https://two.example": 2})
    hosts = [j.host for j in jobs]
    assert hosts.count("https://one.example") == 32
    assert hosts.count("https://two.example") == 2
    assert leased_by("w") == 34  # nothing over the caps was leased


def test_excluded_and_paused_hosts_are_skipped():
    backlog("one.example", 3)
    backlog("two.example", 3)
    backlog("three.example", 3)
    Host.objects.create(host="https://three.example", consecutive_failures=9,
                        paused_until="2999-01-01T00:00:00Z")
    jobs = store.claim("w", 50, 30, per_host=10, exclude_hosts=["https://one.example"])
    assert {j.host for j in jobs} == {"https://two.example"}


def test_limit_is_total_and_oldest_first():
    backlog("one.example", 10)
    backlog("two.example", 10)
    jobs = store.claim("w", 12, 30, per_host=10)
    assert len(jobs) == 12
    first = ScheduledActivity.objects.order_by("next_attempt_at", "id")[:10]
    assert {r.id for r in first} <= {j.id for j in jobs}


def test_a_dead_hosts_backlog_does_not_crowd_out_the_others():
    """Its rows are the oldest due ones: in the main window they would fill it."""
    backlog("dead.example", 200)
    backlog("live.example", 20)
    with_room = store.claim("w", 10, 30, per_host=10, room={"https://dead.example": 1})
    assert [j.host for j in with_room] == ["https://dead.example"]  # a window of dead rows
    store.release("w", [j.id for j in with_room])
    jobs = store.claim("w", 10, 30, per_host=10, probation={"https://dead.example": 1})
    hosts = [j.host for j in jobs]
    assert (hosts.count("https://dead.example"), hosts.count("https://live.example")) == (1, 9)
    oldest = ScheduledActivity.objects.filter(host="https://dead.example").order_by(
        "next_attempt_at", "id").first()
    assert oldest.id in {j.id for j in jobs}
    assert leased_by("w") == 10


def test_probation_honours_exclusions_and_pauses():
    backlog("dead.example", 5)
    backlog("paused.example", 5)
    Host.objects.create(host="https://paused.example", consecutive_failures=9,
                        paused_until="2999-01-01T00:00:00Z")
    ids = sorted(ScheduledActivity.objects.filter(host="https://dead.example")
                 .values_list("id", flat=True))
    jobs = store.claim("w", 10, 30, probation={"https://dead.example": 2,
                                               "https://paused.example": 2},
                       exclude_ids=ids[:1])
    assert [j.id for j in jobs] == ids[1:3]


def test_excluded_rows_are_skipped():
    backlog("one.example", 4)
    ids = sorted(ScheduledActivity.objects.values_list("id", flat=True))
    jobs = store.claim("w", 50, 30, exclude_ids=ids[:3])
    assert [j.id for j in jobs] == ids[3:]


def test_next_claimable_is_the_first_time_a_claim_would_find_a_row():
    """What the Celery backend sets its timer by: retries, other leases, paused hosts."""
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    queue = ScheduledActivity.objects
    assert queue.next_claimable(now) is None
    backlog("retry.example", 1)
    queue.update(next_attempt_at=now + timedelta(seconds=60))
    assert queue.next_claimable(now) == now + timedelta(seconds=60)

    backlog("leased.example", 1)
    queue.filter(host="https://leased.example").update(
        leased_by="other", leased_until=now + timedelta(seconds=20))
    assert queue.next_claimable(now) == now + timedelta(seconds=20)

    backlog("paused.example", 1)
    Host.objects.create(host="https://paused.example", paused_until=now + timedelta(seconds=5))
    assert queue.next_claimable(now) == now + timedelta(seconds=5)

    backlog("due.example", 1)  # due now: claimable now, or earlier
    assert queue.next_claimable(now + timedelta(seconds=1)) <= now + timedelta(seconds=1)


def test_queue_table_leaves_room_in_its_pages_on_postgresql():
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("fillfactor is a PostgreSQL storage parameter")
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s",
                       [ScheduledActivity._meta.db_table])
        (options,) = cursor.fetchone()
    assert "fillfactor=80" in (options or [])


def test_on_sqlite_a_claim_reads_the_due_range_from_its_index_alone():
    """Rows of busy or paused hosts and rows in flight are rejected without reading them."""
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("on PostgreSQL the due index stays narrow, for HOT updates")
    backlog("busy.example", 300)
    backlog("live.example", 300)
    Host.objects.create(host="https://paused.example", consecutive_failures=9,
                        paused_until="2999-01-01T00:00:00Z")
    store.claim("w0", 100, 30, per_host=100, exclude_hosts=["https://busy.example"])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    with recorded_statements() as statements:
        jobs = store.claim("w1", 100, 30, per_host=100, exclude_hosts=["https://busy.example"])
    assert len(jobs) == 100 and {j.host for j in jobs} == {"https://live.example"}
    # The claim, then its payloads by primary key, in one transaction.
    (sql, params), (read, _) = [(s, p) for s, p in statements if not s.startswith("BEGIN")]
    assert read.lstrip().startswith("SELECT") and Payload._meta.db_table in read
    plan = sqlite_plan(sql, params)
    table = ScheduledActivity._meta.db_table
    reads = [p for p in plan if table in p and "USING INTEGER PRIMARY KEY" not in p]
    assert reads and all("USING COVERING INDEX aq_sched_due" in p for p in reads), plan


def test_the_worker_reads_at_most_32_hosts_on_probation_per_claim_in_turn(worker):
    from activity_queue.sending.hosts import PROBATION_PER_CLAIM
    from activity_queue.sending.worker import Report

    hosts = [f"dead{i:02d}.example" for i in range(PROBATION_PER_CLAIM + 8)]
    for host in hosts:
        backlog(host, 3)
    w = worker()
    w.hosts.faulty = {f"https://{h}" for h in hosts}
    first = {j.host for j in w._claim(500, Report())}
    second = {j.host for j in w._claim(500, Report())}
    assert len(first) == PROBATION_PER_CLAIM
    assert first | second == w.hosts.faulty  # the ones left out come next
    per_host = ScheduledActivity.objects.filter(leased_by=w.id).values_list("host", flat=True)
    assert max(list(per_host).count(h) for h in w.hosts.faulty) <= w.config.PER_HOST


def test_rows_held_for_hosts_that_do_not_answer_leave_the_pipeline_room(worker):
    """Counted in, a dead host's rows kept the next claim from coming until every
    healthy delivery was done: the network side ran dry once per batch."""
    from activity_queue.sending.jobs import Job

    with aq_settings(PER_HOST=2, BATCH_SIZE=20, WORKERS=4):
        w = worker()
    w.hosts.pipelined = True
    w.hosts.answering = {"https://live.example"}
    w.hosts.faulty = {"https://dead.example"}
    for i in range(22):
        host = "https://dead.example" if i < 2 else "https://live.example"
        w._held[i] = (Job(i, host + "/inbox", host, 0, False, "Create", str(i), "", b"{}"), 0.0)
        w.hosts.held[host] = w.hosts.held.get(host, 0) + 1
    assert w.max_held == 40
    assert w._stalled() == 2  # room 40 - 22 + 2 = 20: a whole batch, the claim comes now
    w.hosts.faulty = {f"https://dead{i}.example" for i in range(30)}
    w.hosts.held = {host: 2 for host in w.hosts.faulty}
    assert w._stalled() == w.max_held // 4  # many dead hosts: bounded


def test_defer_backlog_moves_only_the_due_rows_nobody_holds():
    from datetime import timedelta

    from django.utils import timezone

    backlog("dead.example", 6)
    backlog("live.example", 2)
    held = store.claim("w", 2, 30, per_host=2, room={"https://live.example": 0})
    assert {j.host for j in held} == {"https://dead.example"}
    until = timezone.now() + timedelta(seconds=60)
    assert hosts.defer_backlog(["https://dead.example"], until, limit=3) == 3
    dead = ScheduledActivity.objects.filter(host="https://dead.example")
    assert dead.filter(next_attempt_at=until).count() == 3
    assert {r.id for r in dead.filter(next_attempt_at=until)}.isdisjoint(j.id for j in held)
    assert dead.filter(next_attempt_at__lt=until).count() == 3  # 2 held, 1 past the limit
    assert not ScheduledActivity.objects.filter(host="https://live.example",
                                                next_attempt_at=until).exists()


def test_defer_backlog_leaves_the_oldest_rows_due_and_moves_each_row_once():
    from datetime import timedelta

    from django.utils import timezone

    backlog("dead.example", 6)
    dead = ScheduledActivity.objects.filter(host="https://dead.example").order_by("id")
    now = timezone.now()
    for age, row in enumerate(reversed(dead)):  # the first row is the oldest
        ScheduledActivity.objects.filter(id=row.id).update(
            next_attempt_at=now - timedelta(seconds=age + 1))
    oldest = [r.id for r in dead[:2]]
    until = now + timedelta(seconds=60)
    assert hosts.defer_backlog(["https://dead.example"], until, keep=2) == 4
    assert set(dead.exclude(next_attempt_at=until).values_list("id", flat=True)) == set(oldest)
    assert hosts.defer_backlog(["https://dead.example"], until, keep=2) == 0  # nothing new


def test_defer_paused_moves_what_waits_for_the_pause_out_of_the_claims_way():
    from datetime import timedelta

    from django.utils import timezone

    backlog("down.example", 6)
    backlog("live.example", 2)
    now = timezone.now()
    until = now + timedelta(minutes=10)
    Host.objects.create(host="https://down.example", consecutive_failures=5, trips=1,
                        paused_until=until)
    down = ScheduledActivity.objects.filter(host="https://down.example").order_by("id")
    held, late = down[0].id, down[1].id
    ScheduledActivity.objects.filter(id=held).update(leased_by="other",
                                                     leased_until=now + timedelta(minutes=1))
    ScheduledActivity.objects.filter(id=late).update(next_attempt_at=until + timedelta(hours=1))
    assert hosts.defer_paused(limit=3) == 3
    assert hosts.defer_paused(limit=3) == 1  # the rest, in a later call
    assert hosts.defer_paused() == 0
    assert down.filter(next_attempt_at=until).count() == 4
    assert down.get(id=held).next_attempt_at < until
    assert down.get(id=late).next_attempt_at == until + timedelta(hours=1)
    assert set(down.values_list("attempts", flat=True)) == {0}
    assert not ScheduledActivity.objects.filter(host="https://live.example",
                                                next_attempt_at=until).exists()
    # Once the pause is over (its end moved back here), they are the host's backlog again.
    Host.objects.update(paused_until=None, consecutive_failures=0)
    assert hosts.defer_paused() == 0
    # 4 moved, the one that was held (its lease is over by then) and the 2 live rows.
    assert len(store.claim("w", 10, 30, per_host=10, now=until)) == 7


def test_on_sqlite_undefer_reads_only_its_hosts_rows_however_many_share_its_time():
    """The hosts of a batch that failed together wait until one time; bringing back one
    of them must not read the others' rows at that time."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    if connection.vendor != "sqlite":
        pytest.skip("a plan of SQLite's")
    backlog("many.example", 2000)
    backlog("few.example", 5)
    until = timezone.now() + timedelta(minutes=5)
    ScheduledActivity.objects.update(next_attempt_at=until)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    with recorded_statements() as statements:
        assert hosts.undefer([("https://few.example", until)]) == 5
    (sql, params), = statements
    plan = sqlite_plan(sql, params)
    assert any("aq_sched_host_due (host=? AND next_attempt_at=?)" in p for p in plan), plan
