"""When does a process start the in-process worker on its own? A pure table over argv."""

import pytest

from activity_queue.sending.backends import thread

RUNSERVER_CHILD = {"RUN_MAIN": "true"}


@pytest.mark.parametrize(("argv", "environ", "mode"), [
    (["manage.py", "migrate"], {}, None),
    (["manage.py", "check"], {}, None),
    (["manage.py", "shell"], {}, None),
    (["manage.py", "makemigrations"], {}, None),
    (["manage.py", "activity_worker"], {}, None),
    (["manage.py", "test"], {}, None),
    (["manage.py"], {}, None),
    (["./manage.py", "runserver"], {}, None),  # the autoreloader's watching parent
    (["manage.py", "migrate"], RUNSERVER_CHILD, None),
    (["manage.py", "runserver"], RUNSERVER_CHILD, "now"),
    (["/srv/site/manage.py", "runserver", "0:8000"], RUNSERVER_CHILD, "now"),
    (["manage.py", "runserver", "--noreload"], {}, "now"),
    (["/venv/bin/django-admin", "runserver", "--noreload"], {}, "now"),
    (["/venv/lib/python3.11/site-packages/django/__main__.py", "runserver"], {}, None),
    (["/venv/lib/python3.11/site-packages/django/__main__.py", "runserver", "--noreload"],
     {}, "now"),
    (["/venv/lib/python3.11/site-packages/django/__main__.py", "shell"], {}, None),
    (["/venv/bin/gunicorn", "site.wsgi", "-w", "4"], {}, "on-request"),
    (["/venv/lib/python3.11/site-packages/gunicorn/__main__.py", "site.wsgi"], {},
     "on-request"),
    (["uwsgi"], {}, "on-request"),
    ([""], {}, "on-request"),
    ([], {}, "on-request"),
    (["/venv/bin/uvicorn", "site.asgi:application"], {}, "on-request"),
    (["/venv/bin/celery", "-A", "site", "worker"], {}, None),
])
def test_autostart_mode(argv, environ, mode):
    assert thread.autostart_mode(argv, environ, testing=False) == mode


@pytest.mark.parametrize("argv", [["manage.py", "runserver", "--noreload"], ["gunicorn"]])
@pytest.mark.parametrize(("autostart", "backend"), [(False, "thread"), (True, "celery")])
def test_autostart_mode_is_off_without_autostart_or_with_celery(argv, autostart, backend):
    """With the Celery backend the Celery workers deliver: no thread in the web processes."""
    assert thread.autostart_mode(argv, RUNSERVER_CHILD, testing=False, autostart=autostart,
                                 backend=backend) is None
    assert thread.autostart_mode(argv, RUNSERVER_CHILD, testing=False) is not None


@pytest.mark.parametrize("argv", [["manage.py", "runserver", "--noreload"], ["gunicorn"]])
def test_autostart_mode_never_starts_under_tests(argv):
    assert thread.autostart_mode(argv, RUNSERVER_CHILD, testing=True) is None
    assert thread.under_tests()
