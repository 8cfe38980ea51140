"""System checks for the ``ACTIVITY_QUEUE`` settings (``manage.py check``).

Bad values are reported here, with a stable id and a hint, rather than by a
crash at import or a worker that silently misbehaves.
"""

from __future__ import annotations

import math
import os
from difflib import get_close_matches
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import connections, router
from django.utils.module_loading import import_string

from .conf import DEFAULTS, INBOX_UNSIGNED_MODES, header_problem, import_failure, user_settings
from .sending.backends import BACKENDS

# key -> (accepted type(s), minimum, description)
RULES: dict[str, tuple[type | tuple[type, ...], float | None, str]] = {
    "AUTOSTART": (bool, None, "True or False"),
    "WORKERS": (int, 1, "an integer >= 1"),
    "PER_HOST": (int, 1, "an integer >= 1"),
    "MAX_ATTEMPTS": (int, 1, "an integer >= 1"),
    "BACKOFF_FACTOR": ((int, float), 0, "a number of seconds >= 0"),
    "BACKOFF_MAX": ((int, float), 0, "a number of seconds >= 0"),
    "TIMEOUT": ((int, float), 0.001, "a number of seconds > 0"),
    "LEASE": ((int, float), 1, "a number of seconds >= 1"),
    "ALLOW_PRIVATE_ADDRESSES": (bool, None, "True or False"),
    "RETRY_AFTER_MAX": ((int, float), 0, "a number of seconds >= 0"),
    "MAX_RESPONSE_BYTES": (int, 0, "an integer >= 0"),
    "RESPONSE_EXCERPT": (int, 0, "an integer >= 0"),
    "CIRCUIT_THRESHOLD": (int, 1, "an integer >= 1"),
    "CIRCUIT_COOLDOWN": ((int, float), 0, "a number of seconds >= 0"),
    "UNAVAILABLE_AFTER": ((int, float, type(None)), 1, "a number of seconds >= 1, or None "
                          "(never)"),
    "BATCH_SIZE": (int, 1, "an integer >= 1"),
    "POLL_INTERVAL": ((int, float), 0.001, "a number of seconds > 0"),
    "BACKEND": (str, None, f"one of {', '.join(sorted(BACKENDS))}"),
    "USER_AGENT": ((str, type(None)), None, "a string of Latin-1 characters without control "
                   "characters (CR, LF, NUL…), or None"),
    "INBOX_MAX_BYTES": (int, 1, "a number of bytes >= 1"),
    "INBOX_AUTHENTICATION": ((list, tuple), None, "a list of dotted paths of DRF "
                             "authentication classes"),
    "INBOX_PERMISSIONS": ((list, tuple), None, "a list of dotted paths of DRF permission classes"),
    "INBOX_REQUIRE_SIGNATURE": (bool, None, "True or False"),
    "INBOX_UNSIGNED": (str, None, "one of 'verify', 'require', 'trust'"),
    "INBOX_DEDUP_WINDOW": ((int, float), 0, "a number of seconds >= 0"),
    "SIGNING_KEY": ((str, os.PathLike, type(None)), None, "a PEM private key, the path of one "
                    "(a str or a Path), or None"),
    "SIGNING_KEY_ID": ((str, type(None)), None, "the URL of our public key, or None"),
    "SIGNATURE_SCHEME": ((str, type(None)), None, "'cavage', 'rfc9421' or None (by key type)"),
    "SIGNING_THREADS": ((int, type(None)), 0, "an integer >= 0, or None (two per core)"),
    "SIGNATURE_MAX_AGE": ((int, float), 1, "a number of seconds >= 1"),
    "SIGNATURE_KEY_TTL": ((int, float), 0, "a number of seconds >= 0"),
    "ACTOR_KEYS": ((str, type(None)), None, "the dotted path of a callable "
                   "f(actor_id) -> (private_key_pem, key_id) | None, or None"),
    "METRICS": (bool, None, "True or False"),
    "RETENTION_SENT_DAYS": ((int, type(None)), 1, "a number of days >= 1, or None"),
    "RETENTION_FAILED_DAYS": ((int, type(None)), 1, "a number of days >= 1, or None"),
    "RETENTION_RECEIVED_DAYS": ((int, type(None)), 1, "a number of days >= 1, or None"),
    "BACKLINKS": (bool, None, "True or False"),
    "LD_CONTEXT": (str, None, "a URL string"),
    "DISCOVERY_TTL": ((int, float), 0, "a number of seconds >= 0"),
    "DISCOVERY_CACHE": (str, None, "the alias of a configured cache"),
    "DISCOVERY_MAX_BYTES": (int, 1, "an integer >= 1"),
    "DROP_REDUNDANT": (bool, None, "True or False"),
}


def _bad_value(key: str, value: Any) -> str | None:
    kinds, minimum, _ = RULES[key]
    if value is None and isinstance(kinds, tuple) and type(None) in kinds:
        return None
    if isinstance(value, bool) and kinds is not bool:
        return "has type bool"
    if not isinstance(value, kinds):
        return f"has type {type(value).__name__}"
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    if minimum is not None and value < minimum:
        return "is too small"
    if key == "BACKEND" and value not in BACKENDS:
        return "is not a known backend"
    if key == "SIGNATURE_SCHEME" and value not in ("cavage", "rfc9421", None):
        return "is not a signature scheme"
    if key == "DISCOVERY_CACHE" and value not in settings.CACHES:
        return "is not in CACHES"
    if key == "USER_AGENT":
        return header_problem(value)
    return None


def refusals() -> list[CheckMessage]:
    """The errors among this app's own checks: a configuration no worker may run with.

    Servers such as gunicorn run no system checks, so the in-process worker and
    ``activity_worker`` ask for these before they start, rather than dying on a
    bad value while the site keeps serving.
    """
    return [m for m in check_settings() if m.is_serious()]


def describe(messages: list[CheckMessage]) -> str:
    """Check messages on one line each: ``(id) message HINT: hint``."""
    return "\n".join(f"({m.id}) {m.msg}" + (f" HINT: {m.hint}" if m.hint else "")
                     for m in messages)


def _unknown_key_hint(key: Any) -> str:
    """A misspelt key leaves its setting at the default without a word, so name the
    likeliest intended key before the list of all of them."""
    known = f"Known keys: {', '.join(sorted(DEFAULTS))}."
    close = get_close_matches(str(key).upper(), DEFAULTS, n=1, cutoff=0.8)
    return f"Did you mean {close[0]!r}? {known}" if close else known


@register(Tags.compatibility)
def check_settings(app_configs=None, **kwargs) -> list:
    raw = user_settings()
    if not isinstance(raw, dict):
        return [Error(
            f"ACTIVITY_QUEUE must be a dict, not {type(raw).__name__}.",
            hint="Set ACTIVITY_QUEUE = {'WORKERS': 64, ...} or leave it out for the defaults.",
            id="activity_queue.E001",
        )]
    messages: list = []
    for key in sorted(raw, key=str):
        if key not in DEFAULTS:
            messages.append(Warning(
                f"ACTIVITY_QUEUE has an unknown key {key!r}; it is ignored.",
                hint=_unknown_key_hint(key),
                id="activity_queue.W001",
            ))
            continue
        problem = _bad_value(key, raw[key])
        if problem:
            messages.append(Error(
                f"ACTIVITY_QUEUE[{key!r}] = {raw[key]!r} {problem}.",
                hint=f"{key} must be {RULES[key][2]} (default {DEFAULTS[key]!r}).",
                id="activity_queue.E002",
            ))
    merged = {**DEFAULTS, **{k: v for k, v in raw.items() if k in DEFAULTS}}
    valid = not any(isinstance(m, Error) for m in messages)
    if valid and merged["PER_HOST"] > merged["WORKERS"]:
        messages.append(Warning(
            f"ACTIVITY_QUEUE['PER_HOST'] ({merged['PER_HOST']}) is larger than WORKERS "
            f"({merged['WORKERS']}); one host could take every slot.",
            hint="Keep PER_HOST below WORKERS so one slow host cannot block the others.",
            id="activity_queue.W002",
        ))
    messages += _check_site_url()
    if valid:
        messages += check_backend(merged)
    if not any(m.id == "activity_queue.E002" for m in messages):
        messages += check_inbox(merged) + check_signing(merged) + check_actor_keys(merged)
    return messages


def check_backend(merged: dict[str, Any]) -> list:
    """A task backend needs its task runner, and metrics their library: say so at ``check``,
    not at the first enqueue or scrape."""
    messages = []
    if merged["BACKEND"] == "celery" and (error := _import_error("celery")):
        messages.append(Error(
            f"ACTIVITY_QUEUE['BACKEND'] is 'celery' but Celery cannot be imported ({error}).",
            hint="pip install 'celery[redis]>=5.3' (the activity_queue[celery] extra), or "
                 "set BACKEND to 'thread'.",
            id="activity_queue.E020",
        ))
    if (merged["BACKEND"] == "tasks" and _import_error("django.tasks")
            and (error := _import_error("django_tasks"))):
        messages.append(Error(
            "ACTIVITY_QUEUE['BACKEND'] is 'tasks' but Django's Tasks framework cannot be "
            f"imported ({error}); django.tasks comes with Django 6.0.",
            hint="On Django 5.2, pip install 'django-tasks>=0.12' (the backport; the "
                 "activity_queue[tasks] extra), or set BACKEND to 'thread'.",
            id="activity_queue.E021",
        ))
    if merged["METRICS"] is True and (error := _import_error("prometheus_client")):
        messages.append(Error(
            f"ACTIVITY_QUEUE['METRICS'] is True but prometheus_client cannot be imported "
            f"({error}).",
            hint="pip install 'prometheus-client>=0.20' (the activity_queue[metrics] extra), "
                 "or set METRICS to False.",
            id="activity_queue.E022",
        ))
    return messages


def _import_error(module: str) -> ImportError | None:
    try:
        import_module(module)
    except ImportError as error:
        return error
    return None


def _is_http_url(url: Any) -> bool:
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port or bracket)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _check_site_url() -> list:
    site = getattr(settings, "SITE_URL", None)
    if site is None:
        from .federation.registry import registered

        if registered():
            return [Warning(
                "Linked-data models are registered but SITE_URL is not set: local objects "
                "get no absolute urlid, so remote servers cannot link back to them.",
                hint="Set SITE_URL to this site's origin, e.g. 'https://example.org'.",
                id="activity_queue.W004",
            )]
        return []
    if _is_http_url(site):
        return []
    return [Error(
        f"SITE_URL = {site!r} is not an absolute http(s) URL.",
        hint="Set SITE_URL to this site's origin, e.g. 'https://example.org'.",
        id="activity_queue.E003",
    )]


#: The ``OPTIONS`` of a SQLite database that serves requests while the worker writes (the
#: README's): each transaction takes the write lock at ``BEGIN`` and waits up to ``timeout``
#: seconds for it, readers never wait for the writer (WAL), and a commit does not wait for
#: the disk (the last commits may be lost on power loss, never half of one).
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
#: Seconds of busy timeout below which W005 warns (Python's default is 5).
SQLITE_MIN_TIMEOUT = 10


@register(Tags.compatibility)
def check_sqlite(app_configs=None, **kwargs) -> list:
    """SQLite with a web process and a worker writing beside it needs these options, or
    requests meet "database is locked".

    It reads settings only, so it is not tagged ``database``: since Django 6.0
    ``check`` and ``runserver`` skip database checks unless ``--database`` is given.
    """
    hint = f"Set the database's 'OPTIONS' to {SQLITE_OPTIONS!r}."
    messages = []
    for alias, conf in settings.DATABASES.items():
        if conf.get("ENGINE") != "django.db.backends.sqlite3":
            continue
        options = conf.get("OPTIONS", {})
        if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
            messages.append(Warning(
                f"Database {alias!r} is SQLite without transaction_mode 'IMMEDIATE'; "
                "a request that reads then writes while the worker writes can fail with "
                "'database is locked'.",
                hint=hint, id="activity_queue.W003",
            ))
        timeout = options.get("timeout", 5)
        if not isinstance(timeout, int | float) or timeout < SQLITE_MIN_TIMEOUT:
            messages.append(Warning(
                f"Database {alias!r} is SQLite with a busy timeout of {timeout!r} s (Python's "
                f"default is 5); under load a request that waits longer for the write lock "
                "fails with 'database is locked'.",
                hint=hint, id="activity_queue.W005",
            ))
        init = "".join(str(options.get("init_command", "")).split()).lower()
        if "journal_mode=wal" not in init:
            messages.append(Warning(
                f"Database {alias!r} is SQLite without 'PRAGMA journal_mode=WAL' in its "
                "init_command; without WAL, readers and the writer block each other.",
                hint=hint, id="activity_queue.W006",
            ))
    return messages


#: Database vendors the queue's SQL is written for (``DatabaseWrapper.vendor``).
SUPPORTED_VENDORS = ("sqlite", "postgresql", "mysql")
#: The oldest servers with ``FOR UPDATE SKIP LOCKED`` (and, on MySQL, the functional key
#: parts of the followers' unique key).
MARIADB_MIN, MYSQL_MIN = (10, 6), (8, 0, 13)


def _queue_aliases() -> list[str]:
    """The databases activity_queue's models are written to."""
    models = apps.get_app_config("activity_queue").get_models()
    return sorted({router.db_for_write(model) for model in models})


@register(Tags.compatibility)
def check_database_vendor(app_configs=None, **kwargs) -> list:
    """The queue's statements exist for SQLite, PostgreSQL and MySQL/MariaDB only.

    It reads settings only (no connection), so ``check`` reports it without ``--database``.
    """
    messages = []
    for alias in _queue_aliases():
        vendor = connections[alias].vendor
        if vendor not in SUPPORTED_VENDORS:
            messages.append(Error(
                f"Database {alias!r} is {connections[alias].display_name} "
                f"({connections[alias].settings_dict['ENGINE']}); activity_queue supports SQLite, "
                "PostgreSQL, MySQL 8.0.13+ and MariaDB 10.6+.",
                hint="Keep activity_queue's tables on a supported database: change "
                     f"DATABASES[{alias!r}], or route the activity_queue app to another "
                     "database with a database router.",
                id="activity_queue.E030",
            ))
    return messages


@register(Tags.database)
def check_database_version(app_configs=None, databases=None, **kwargs) -> list:
    """Several workers claim rows with ``FOR UPDATE SKIP LOCKED``: MySQL and MariaDB have it
    from the versions above. Tagged ``database``: it asks the server its version, so it
    runs with ``migrate`` and ``check --database``."""
    messages = []
    for alias in _queue_aliases():
        if alias not in (databases or ()) or connections[alias].vendor != "mysql":
            continue
        connection = connections[alias]
        name, least = (("MariaDB", MARIADB_MIN) if connection.mysql_is_mariadb
                       else ("MySQL", MYSQL_MIN))
        version = tuple(connection.mysql_version)
        if version < least:
            messages.append(Error(
                f"Database {alias!r} is {name} {'.'.join(map(str, version))}; activity_queue "
                f"needs {name} {'.'.join(map(str, least))} or later (FOR UPDATE SKIP LOCKED).",
                hint=f"Upgrade the {name} server, or keep activity_queue's tables on another "
                     "database with a database router.",
                id="activity_queue.E031",
            ))
    return messages


def check_inbox(merged: dict[str, Any]) -> list:
    """The inbox's DRF classes import, and requiring signatures can work well."""
    messages: list = []
    for key, needed in (("INBOX_AUTHENTICATION", "authenticate"),
                        ("INBOX_PERMISSIONS", "has_permission")):
        for path in merged[key]:
            try:
                found = import_string(path) if isinstance(path, str) else None
            except Exception as exc:  # the module itself raised: see import_failure()
                found, reason = None, f"cannot be imported ({import_failure(exc)})"
            else:
                reason = "is not a dotted path to a class"
            if found is not None and not hasattr(found, needed):
                found, reason = None, f"has no {needed}() method"
            if found is None:
                messages.append(Error(
                    f"ACTIVITY_QUEUE[{key!r}] entry {path!r} {reason}.",
                    hint=f"List dotted paths of DRF classes with {needed}(), e.g. "
                         "'activity_queue.inbox.authentication.HTTPSignatureAuthentication'.",
                    id="activity_queue.E010",
                ))
    if merged["INBOX_UNSIGNED"] not in INBOX_UNSIGNED_MODES:
        messages.append(Error(
            f"ACTIVITY_QUEUE['INBOX_UNSIGNED'] = {merged['INBOX_UNSIGNED']!r} is not one of "
            f"{', '.join(map(repr, INBOX_UNSIGNED_MODES))}.",
            hint="'verify' (the default) applies an unsigned activity as its object's origin "
                 "serves it; 'require' refuses unsigned activities with 401; 'trust' applies "
                 "them as sent, which lets any sender change the record of any remote object "
                 "(closed networks only).",
            id="activity_queue.E060",
        ))
    required = ("INBOX_REQUIRE_SIGNATURE is on" if merged["INBOX_REQUIRE_SIGNATURE"] else
                "INBOX_UNSIGNED is 'require'" if merged["INBOX_UNSIGNED"] == "require" else None)
    if required:
        backend = settings.CACHES.get("default", {}).get("BACKEND", "") if isinstance(
            getattr(settings, "CACHES", None), dict) else ""
        if backend.endswith("DummyCache"):
            messages.append(Warning(
                f"{required} but the default cache is a DummyCache: "
                "every signed request fetches its sender's key again.",
                hint="Configure a real cache (local memory, Redis, the database…).",
                id="activity_queue.W010",
            ))
        if not merged["SIGNING_KEY"]:
            messages.append(Warning(
                f"{required} but SIGNING_KEY is not set: this site "
                "requires signatures from others but does not sign its own deliveries, "
                "so peers with the same setting refuse them.",
                hint="Set ACTIVITY_QUEUE['SIGNING_KEY'] to an RSA or Ed25519 private key (PEM "
                     "or path).",
                id="activity_queue.W011",
            ))
    return messages


#: Seconds of SIGNATURE_MAX_AGE above which W040 warns.
MAX_SIGNATURE_AGE = 86400


def check_signing(merged: dict[str, Any]) -> list:
    """The signing key loads, and receivers have a URL to fetch its public half from."""
    from .net.signatures import load_private_key
    from .net.signing import default_key_id

    value, key_id = merged["SIGNING_KEY"], merged["SIGNING_KEY_ID"]
    if isinstance(value, os.PathLike):
        value = os.fsdecode(value)
    messages: list = []
    if merged["SIGNATURE_MAX_AGE"] > MAX_SIGNATURE_AGE:
        messages.append(Warning(
            f"ACTIVITY_QUEUE['SIGNATURE_MAX_AGE'] is {merged['SIGNATURE_MAX_AGE']:g} s, over a "
            "day: a signed request captured on the way can be replayed to the inbox that long.",
            hint="Keep it at an hour (the default, Mastodon's clock skew) or a few.",
            id="activity_queue.W040",
        ))
    if key_id is not None:
        if not _is_http_url(key_id) or '"' in key_id:
            messages.append(Error(
                f"ACTIVITY_QUEUE['SIGNING_KEY_ID'] = {key_id!r} is not an absolute http(s) URL.",
                hint="Set it to the URL of the document holding the public key, or leave it "
                     "out to use SITE_URL + the app's key URL.",
                id="activity_queue.E012",
            ))
    if not value:
        return messages
    try:
        load_private_key(value)
    except ValueError as exc:
        shown = "<PEM text>" if value.lstrip().startswith("-----") else repr(value)
        messages.append(Error(
            f"ACTIVITY_QUEUE['SIGNING_KEY'] ({shown}) cannot be used: {exc}.",
            hint="Give an unencrypted RSA or Ed25519 private key in PEM form, or the path of "
                 "a file holding one (e.g. openssl genpkey -algorithm RSA -out key.pem).",
            id="activity_queue.E011",
        ))
    if key_id is None and default_key_id() is None:
        messages.append(Error(
            "ACTIVITY_QUEUE['SIGNING_KEY'] is set but receivers cannot find the public key: "
            "SIGNING_KEY_ID is not set and SITE_URL or the app's URLs are missing.",
            hint="Set SIGNING_KEY_ID, or set SITE_URL and add "
                 "path('', include('activity_queue.urls')) to the URLconf.",
            id="activity_queue.E013",
        ))
    return messages


def check_actor_keys(merged: dict[str, Any]) -> list:
    """``ACTOR_KEYS`` names something that imports and can be called: otherwise every
    delivery by an actor would wait for a fix."""
    path = merged["ACTOR_KEYS"]
    if not path:
        return []
    hint = ("Set ACTOR_KEYS to the dotted path of a function f(actor_id) returning "
            "(private_key_pem, key_id) or None, e.g. 'mysite.keys.actor_key'.")
    try:
        found = import_string(path)
    except Exception as exc:  # the module itself raised: see import_failure()
        return [Error(f"ACTIVITY_QUEUE['ACTOR_KEYS'] = {path!r} cannot be imported: "
                      f"{import_failure(exc)}.", hint=hint, id="activity_queue.E050")]
    if not callable(found):
        return [Error(f"ACTIVITY_QUEUE['ACTOR_KEYS'] = {path!r} is not callable (it is of "
                      f"type {type(found).__name__}).", hint=hint, id="activity_queue.E051")]
    if not merged["SIGNING_KEY"]:
        return [Warning(
            "ACTIVITY_QUEUE['ACTOR_KEYS'] is set but SIGNING_KEY is not: an activity whose "
            "actor has no key of its own goes out unsigned, and the instance actor cannot "
            "sign fetches (servers in authorized-fetch mode refuse them).",
            hint="Set ACTIVITY_QUEUE['SIGNING_KEY'] too: it is the instance actor's key and "
                 "the fallback for actors without one.",
            id="activity_queue.W050")]
    return []
