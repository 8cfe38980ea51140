"""The Django Tasks backend with a real task worker: ``django-tasks-db``'s ``db_worker``.

The worker is a subprocess on the test database (``tests.proc_settings``); its
tasks are rows of ``django_tasks_db``'s table, which the tests read to see what
was sent. Deliveries go over loopback HTTP to
:class:`tests.support.receiver.Receiver`.
"""

import json
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from activity_queue.models import ScheduledActivity
from activity_queue.sending.backends import tasks as tasks_backend
from activity_queue.sending.backends.marks import CacheMarks, LocalMarks

from ..support.helpers import aq_settings, send, sent, wait_until
from ..support.processes import ROOT
from ..support.receiver import Rule

pytestmark = pytest.mark.django_db(transaction=True)

TASK_PATH = "activity_queue.sending.backends.tasks.deliver_due"
SHARED_CACHE = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache",
                            "LOCATION": "aq_test_cache"}}


@pytest.fixture
def tasks():
    """The Tasks backend, with no task rows and no marks left from another test."""
    with aq_settings(BACKEND="tasks"):
        tasks_backend.runs.marks("default").forget()
        yield DBTaskResult.objects.filter(task_path=TASK_PATH)
        tasks_backend.runs.marks("default").forget()


@pytest.fixture
def db_worker(spawn):
    def start(caches: dict | None = None):
        env = {"AQ_PROC_CACHES": json.dumps(caches)} if caches else {}
        return spawn("db_worker", "--interval", "0.05", "--no-startup-delay",
                     queue={"BACKEND": "tasks"}, env=env)

    return start


@pytest.fixture
def shared_cache():
    """A cache every process shares (the database's), as a site running several processes
    would configure."""
    from django.core.management import call_command

    with override_settings(CACHES=SHARED_CACHE):
        call_command("createcachetable", verbosity=0)
        yield


def test_an_enqueue_is_delivered_by_a_task_worker_and_logged(receiver, tasks, db_worker):
    proc = db_worker()
    activity_id = send(receiver.url("/inbox/"))
    assert wait_until(lambda: sent(activity_id), timeout=30), proc.stderr()
    assert [body["id"] for body in receiver.bodies("/inbox/")] == [activity_id]
    assert sent(activity_id).attempts == 1
    assert not ScheduledActivity.objects.exists()
    assert wait_until(lambda: tasks.filter(status="SUCCESSFUL").exists(), timeout=10)
    later = send(receiver.url("/inbox/"))  # the same process's worker, kept between tasks
    assert wait_until(lambda: sent(later), timeout=30), proc.stderr()
    proc.send(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.stderr()
    assert not tasks.filter(status="FAILED").exists()


def test_a_rolled_back_enqueue_sends_no_task(receiver, tasks):
    send(receiver.url("/rolled-back/"), rollback=True)
    assert not ScheduledActivity.objects.exists()
    assert not tasks.exists(), "a task was sent for a rolled-back enqueue"
    send(receiver.url("/committed/"))
    assert tasks.count() == 1


def test_a_retry_due_later_runs_from_the_task_s_own_timer(receiver, tasks, db_worker):
    receiver.rules["/flaky/"] = Rule(sequence=[503, 202])
    proc = db_worker()
    activity_id = send(receiver.url("/flaky/"))
    assert wait_until(lambda: sent(activity_id), timeout=30), proc.stderr()
    assert sent(activity_id).attempts == 2
    assert receiver.calls["/flaky/"] == 2
    # One task from the commit, one the run sent itself for the retry, to run later.
    first, timer = tasks.order_by("enqueued_at")
    assert timer.run_after > first.enqueued_at + timedelta(seconds=0.5)


def test_a_lost_task_is_recovered_by_the_next_enqueue(receiver, tasks, db_worker):
    lost = send(receiver.url("/inbox/"))
    tasks.delete()  # the task runner lost it
    proc = db_worker()
    assert not wait_until(lambda: sent(lost), timeout=1)
    later = send(receiver.url("/inbox/"))
    assert wait_until(lambda: sent(lost) and sent(later), timeout=30), proc.stderr()


def test_a_burst_of_enqueues_sends_one_task_with_a_shared_cache(receiver, tasks, shared_cache,
                                                                 db_worker):
    assert isinstance(tasks_backend.runs.marks("default"), CacheMarks)
    ids = [send(receiver.url("/burst/")) for _ in range(20)]  # 20 commits
    assert tasks.count() == 1
    proc = db_worker(caches=SHARED_CACHE)
    assert wait_until(lambda: all(sent(i) for i in ids), timeout=30), proc.stderr()
    # The run cleared the mark before claiming: the next commit sends again.
    assert wait_until(lambda: tasks.filter(status="SUCCESSFUL").count() == 1, timeout=10)
    send(receiver.url("/burst/"))
    assert tasks.count() == 2


def test_with_a_cache_of_one_process_every_commit_sends_a_task(receiver, tasks):
    """A mark the task worker's process could not clear would hold the next commit back."""
    assert isinstance(tasks_backend.runs.marks("default"), LocalMarks)
    for _ in range(3):
        send(receiver.url("/inbox/"))
    assert tasks.count() == 3


def test_the_immediate_backend_delivers_at_commit_and_sets_no_timer(receiver, tasks):
    receiver.rules["/flaky/"] = Rule(sequence=[503, 202])
    immediate = {"default": {"BACKEND": _immediate_backend()}}
    try:
        with override_settings(TASKS=immediate):
            activity_id = send(receiver.url("/flaky/"))  # delivered inside the commit
            assert receiver.calls == {"/flaky/": 1}
            row = ScheduledActivity.objects.get(payload__activity_id=activity_id)
            assert row.attempts == 1 and row.last_status == 503
            assert row.next_attempt_at > timezone.now()
    finally:
        tasks_backend.runs.shut_down()
    assert not tasks.exists()


def _immediate_backend() -> str:
    try:
        import django.tasks  # noqa: F401
    except ImportError:
        return "django_tasks.backends.immediate.ImmediateBackend"
    return "django.tasks.backends.immediate.ImmediateBackend"


def test_task_discovery_imports_activity_queue_tasks_without_celery():
    """Task runners import every app's ``tasks`` module; Celery may not be installed."""
    code = (
        "import sys; sys.modules['celery'] = None\n"  # as if Celery were not installed
        "import django; django.setup()\n"
        "from django.utils.module_loading import autodiscover_modules\n"
        "autodiscover_modules('tasks')\n"
        "import activity_queue.tasks as t; print(sorted(vars(t).get('__all__')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60,
                            env={"DJANGO_SETTINGS_MODULE": "tests.settings",
                                 "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
