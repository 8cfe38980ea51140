"""Settings of the example linked-data site (and of the demonstration)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000")

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
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "example_project.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB", str(BASE_DIR / "var" / "example.sqlite3")),
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20,
                    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
    }
}
USE_TZ = True
STATIC_URL = "static/"
ACTIVITY_QUEUE = {
    # The demonstration delivers between sites on 127.0.0.1.
    "ALLOW_PRIVATE_ADDRESSES": True,
    "BACKOFF_FACTOR": float(os.environ.get("AQ_BACKOFF", "30")),
    "BACKOFF_MAX": float(os.environ.get("AQ_BACKOFF_MAX", str(6 * 3600))),
    "CIRCUIT_COOLDOWN": float(os.environ.get("AQ_CIRCUIT_COOLDOWN", "60")),
    "MAX_ATTEMPTS": int(os.environ.get("AQ_MAX_ATTEMPTS", "12")),
    "TIMEOUT": float(os.environ.get("AQ_TIMEOUT", "10")),
    "POLL_INTERVAL": 0.2,
}
# The JSON API that `manage.py demo` drives (create circles, link members, read state).
EXAMPLE_DEMO_API = os.environ.get("EXAMPLE_DEMO_API") == "1"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # INFO: the worker's start, besides pauses, recoveries and failures.
    "loggers": {"activity_queue": {"handlers": ["console"], "level": "INFO"}},
}
