"""Settings for the test suite. ``AQ_TEST_DB=postgres`` runs it on the local PostgreSQL,
``AQ_TEST_DB=mysql`` on the local MariaDB (or MySQL)."""

import os
from importlib.util import find_spec
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
SITE_URL = "http://testserver"
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "activity_queue",
    "example_project.circles",
    # The Tasks backend's tests: django-tasks-db's task table and its db_worker.
    "django_tasks_db",
]
if find_spec("django.tasks") is None:  # Django 5.2: the backport
    INSTALLED_APPS.append("django_tasks")
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]

if os.environ.get("AQ_TEST_DB") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("AQ_PG_NAME", "test"),
            "USER": os.environ.get("AQ_PG_USER", "postgres"),
            "HOST": os.environ.get("AQ_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("AQ_PG_PORT", "5432"),
            "TEST": {"NAME": os.environ.get("AQ_PG_TEST_NAME", "test_activity_queue")},
        }
    }
elif os.environ.get("AQ_TEST_DB") == "mysql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": os.environ.get("AQ_MYSQL_NAME", "test"),
            "USER": os.environ.get("AQ_MYSQL_USER", "root"),
            "PASSWORD": os.environ.get("AQ_MYSQL_PASSWORD", ""),
            "HOST": os.environ.get("AQ_MYSQL_HOST", "127.0.0.1"),
            "PORT": os.environ.get("AQ_MYSQL_PORT", "3306"),
            "OPTIONS": {"charset": "utf8mb4"},
            "TEST": {"NAME": os.environ.get("AQ_MYSQL_TEST_NAME", "test_activity_queue"),
                     "CHARSET": "utf8mb4"},
        }
    }
else:
    # A file, not :memory:, so the worker thread and worker subprocesses see the same data.
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(BASE_DIR / "db.sqlite3"),
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20,
                        "init_command": "PRAGMA journal_mode=WAL;"},
            "TEST": {"NAME": os.environ.get("AQ_SQLITE_TEST_NAME",
                                            str(BASE_DIR / f"test-{os.getpid()}.sqlite3"))},
        }
    }

ACTIVITY_QUEUE = {
    "ALLOW_PRIVATE_ADDRESSES": True,
    "TIMEOUT": 2.0,
    "BACKOFF_FACTOR": 1.0,
    "LEASE": 30.0,
}
STATIC_URL = "static/"
