"""System checks: every bad setting is reported with a stable id, an exact message and a hint."""

import sys
import warnings
from io import StringIO

import django
import pytest
from django.conf import settings
from django.core.checks import ERROR, WARNING, run_checks
from django.core.management import call_command
from django.test import override_settings

from activity_queue.checks import RULES, SQLITE_OPTIONS, _bad_value, describe, refusals
from activity_queue.conf import DEFAULTS, Config, default_user_agent, get_config

from .support.keys import pem, rsa_key

# Django 6 hands every database alias to the model checks, which may look at the connection.
pytestmark = pytest.mark.django_db

KNOWN = ", ".join(sorted(DEFAULTS))


def default_config() -> Config:
    """The defaults, with the User-Agent that USER_AGENT=None stands for."""
    return Config(**{**DEFAULTS, "USER_AGENT": default_user_agent()})


def ours() -> list[tuple[str, int, str, str]]:
    return [(m.id, m.level, m.msg, m.hint) for m in run_checks()
            if (m.id or "").startswith("activity_queue.")]


def with_queue(value):
    return override_settings(ACTIVITY_QUEUE=value)


def test_test_settings_are_clean():
    assert ours() == []


def test_defaults_follow_their_own_rules():
    assert set(RULES) == set(DEFAULTS) == {f for f in Config.__slots__}
    assert [key for key, value in DEFAULTS.items() if _bad_value(key, value)] == []


@pytest.mark.parametrize("value", [["WORKERS", 4], "WORKERS=4", 4])
def test_not_a_dict(value):
    with with_queue(value):
        assert ours() == [(
            "activity_queue.E001", ERROR,
            f"ACTIVITY_QUEUE must be a dict, not {type(value).__name__}.",
            "Set ACTIVITY_QUEUE = {'WORKERS': 64, ...} or leave it out for the defaults.",
        )]
        assert get_config() == default_config(), "a bad dict never breaks the import"


@pytest.mark.parametrize("value", [None, {}])
def test_absent_or_empty_means_defaults(value):
    with with_queue(value):
        assert ours() == []
        assert get_config() == default_config()


def test_unknown_keys_are_warned_about_and_ignored():
    with with_queue({"WORKER": 4, 7: "x", "WORKERS": 4, "PER_HOST": 2}):
        assert ours() == [
            ("activity_queue.W001", WARNING,
             "ACTIVITY_QUEUE has an unknown key 7; it is ignored.", f"Known keys: {KNOWN}."),
            ("activity_queue.W001", WARNING,
             "ACTIVITY_QUEUE has an unknown key 'WORKER'; it is ignored.",
             f"Did you mean 'WORKERS'? Known keys: {KNOWN}."),
        ]
        assert get_config().WORKERS == 4


@pytest.mark.parametrize("typo, meant", [
    ("ALLOW_PRIVATE_ADRESSES", "ALLOW_PRIVATE_ADDRESSES"),
    ("max_attempts", "MAX_ATTEMPTS"),
    ("SIGNING_KEYS", "SIGNING_KEY"),
])
def test_a_misspelt_key_is_named_in_the_hint(typo, meant):
    with with_queue({typo: 1}):
        assert ours() == [
            ("activity_queue.W001", WARNING,
             f"ACTIVITY_QUEUE has an unknown key {typo!r}; it is ignored.",
             f"Did you mean {meant!r}? Known keys: {KNOWN}."),
        ]


UA = "a string of Latin-1 characters without control characters (CR, LF, NUL…), or None"
AK = "the dotted path of a callable f(actor_id) -> (private_key_pem, key_id) | None, or None"

BAD_VALUES = [
    ("AUTOSTART", "yes", "has type str", "True or False"),
    ("AUTOSTART", 1, "has type int", "True or False"),
    ("WORKERS", True, "has type bool", "an integer >= 1"),
    ("WORKERS", 2.5, "has type float", "an integer >= 1"),
    ("WORKERS", "8", "has type str", "an integer >= 1"),
    ("WORKERS", 0, "is too small", "an integer >= 1"),
    ("PER_HOST", False, "has type bool", "an integer >= 1"),
    ("PER_HOST", -1, "is too small", "an integer >= 1"),
    ("MAX_ATTEMPTS", None, "has type NoneType", "an integer >= 1"),
    ("MAX_ATTEMPTS", 0, "is too small", "an integer >= 1"),
    ("BACKOFF_FACTOR", "30", "has type str", "a number of seconds >= 0"),
    ("BACKOFF_FACTOR", True, "has type bool", "a number of seconds >= 0"),
    ("BACKOFF_FACTOR", -1, "is too small", "a number of seconds >= 0"),
    ("BACKOFF_FACTOR", float("nan"), "is not a finite number", "a number of seconds >= 0"),
    ("BACKOFF_MAX", float("inf"), "is not a finite number", "a number of seconds >= 0"),
    ("TIMEOUT", 0, "is too small", "a number of seconds > 0"),
    ("TIMEOUT", [10], "has type list", "a number of seconds > 0"),
    ("TIMEOUT", float("nan"), "is not a finite number", "a number of seconds > 0"),
    ("LEASE", 0.5, "is too small", "a number of seconds >= 1"),
    ("ALLOW_PRIVATE_ADDRESSES", "False", "has type str", "True or False"),
    ("RETRY_AFTER_MAX", -5.0, "is too small", "a number of seconds >= 0"),
    ("MAX_RESPONSE_BYTES", 1.5, "has type float", "an integer >= 0"),
    ("MAX_RESPONSE_BYTES", -1, "is too small", "an integer >= 0"),
    ("RESPONSE_EXCERPT", True, "has type bool", "an integer >= 0"),
    ("CIRCUIT_THRESHOLD", 0, "is too small", "an integer >= 1"),
    ("CIRCUIT_COOLDOWN", "60", "has type str", "a number of seconds >= 0"),
    ("UNAVAILABLE_AFTER", 0, "is too small", "a number of seconds >= 1, or None (never)"),
    ("UNAVAILABLE_AFTER", "7d", "has type str", "a number of seconds >= 1, or None (never)"),
    ("BATCH_SIZE", 0, "is too small", "an integer >= 1"),
    ("POLL_INTERVAL", 0, "is too small", "a number of seconds > 0"),
    ("BACKEND", "redis", "is not a known backend", "one of celery, tasks, thread"),
    ("BACKEND", 3, "has type int", "one of celery, tasks, thread"),
    ("USER_AGENT", b"bot", "has type bytes", UA),
    ("USER_AGENT", "bot\r\nX-Injected: 1", "contains control characters", UA),
    ("USER_AGENT", "bot\n", "contains control characters", UA),
    ("USER_AGENT", "bot\x00", "contains control characters", UA),
    ("USER_AGENT", "bot\tnot/1.0", "contains control characters", UA),
    ("USER_AGENT", "bot\x1b[31m", "contains control characters", UA),
    ("USER_AGENT", "bot\x7f", "contains control characters", UA),
    ("USER_AGENT", "bot\x85", "contains control characters", UA),
    ("USER_AGENT", "сайт-bot/1.0", "has characters outside Latin-1, which an HTTP header "
     "cannot carry", UA),
    ("INBOX_MAX_BYTES", 0, "is too small", "a number of bytes >= 1"),
    ("INBOX_AUTHENTICATION", "a.B", "has type str",
     "a list of dotted paths of DRF authentication classes"),
    ("INBOX_PERMISSIONS", None, "has type NoneType",
     "a list of dotted paths of DRF permission classes"),
    ("INBOX_REQUIRE_SIGNATURE", 1, "has type int", "True or False"),
    ("INBOX_UNSIGNED", True, "has type bool", "one of 'verify', 'require', 'trust'"),
    ("INBOX_UNSIGNED", None, "has type NoneType", "one of 'verify', 'require', 'trust'"),
    ("INBOX_DEDUP_WINDOW", float("inf"), "is not a finite number", "a number of seconds >= 0"),
    ("SIGNING_KEY", 5, "has type int", "a PEM private key, the path of one (a str or a Path), "
     "or None"),
    ("SIGNING_KEY_ID", ["https://here.example/key"], "has type list",
     "the URL of our public key, or None"),
    ("SIGNATURE_SCHEME", "rfc9421-first", "is not a signature scheme",
     "'cavage', 'rfc9421' or None (by key type)"),
    ("SIGNING_THREADS", -1, "is too small", "an integer >= 0, or None (two per core)"),
    ("SIGNATURE_MAX_AGE", 0, "is too small", "a number of seconds >= 1"),
    ("SIGNATURE_KEY_TTL", -1, "is too small", "a number of seconds >= 0"),
    ("RETENTION_SENT_DAYS", 0, "is too small", "a number of days >= 1, or None"),
    ("RETENTION_FAILED_DAYS", "90", "has type str", "a number of days >= 1, or None"),
    ("RETENTION_RECEIVED_DAYS", 2.5, "has type float", "a number of days >= 1, or None"),
    ("BACKLINKS", "yes", "has type str", "True or False"),
    ("LD_CONTEXT", None, "has type NoneType", "a URL string"),
    ("DISCOVERY_TTL", -1, "is too small", "a number of seconds >= 0"),
    ("DISCOVERY_TTL", float("nan"), "is not a finite number", "a number of seconds >= 0"),
    ("DISCOVERY_CACHE", "nowhere", "is not in CACHES", "the alias of a configured cache"),
    ("DISCOVERY_CACHE", 1, "has type int", "the alias of a configured cache"),
    ("DISCOVERY_MAX_BYTES", 0, "is too small", "an integer >= 1"),
    ("DROP_REDUNDANT", 0, "has type int", "True or False"),
    ("METRICS", "yes", "has type str", "True or False"),
    ("ACTOR_KEYS", ["mysite.keys.actor_key"], "has type list", AK),
    ("ACTOR_KEYS", len, "has type builtin_function_or_method", AK),
]


@pytest.mark.parametrize(("key", "value", "problem", "expected"), BAD_VALUES)
def test_bad_value(key, value, problem, expected):
    with with_queue({key: value}):
        assert ours() == [(
            "activity_queue.E002", ERROR,
            f"ACTIVITY_QUEUE[{key!r}] = {value!r} {problem}.",
            f"{key} must be {expected} (default {DEFAULTS[key]!r}).",
        )]


def test_every_setting_has_a_bad_value_tested():
    assert {key for key, *_ in BAD_VALUES} == set(DEFAULTS)


@pytest.mark.parametrize("value", ["Verify", "sign", ""])
def test_unknown_inbox_unsigned_mode(value):
    with with_queue({"INBOX_UNSIGNED": value}):
        assert ours() == [(
            "activity_queue.E060", ERROR,
            f"ACTIVITY_QUEUE['INBOX_UNSIGNED'] = {value!r} is not one of 'verify', 'require', "
            "'trust'.",
            "'verify' (the default) applies an unsigned activity as its object's origin serves "
            "it; 'require' refuses unsigned activities with 401; 'trust' applies them as sent, "
            "which lets any sender change the record of any remote object (closed networks "
            "only).",
        )]
    for mode in ("verify", "trust"):
        with with_queue({"INBOX_UNSIGNED": mode}):
            assert ours() == []


def test_requiring_signatures_without_a_key_of_our_own():
    with with_queue({"INBOX_UNSIGNED": "require"}):
        assert ours() == [(
            "activity_queue.W011", WARNING,
            "INBOX_UNSIGNED is 'require' but SIGNING_KEY is not set: this site requires "
            "signatures from others but does not sign its own deliveries, so peers with the "
            "same setting refuse them.",
            "Set ACTIVITY_QUEUE['SIGNING_KEY'] to an RSA or Ed25519 private key (PEM or path).",
        )]


def test_several_problems_are_all_reported():
    with with_queue({"WORKERS": 0, "TIMEOUT": "10", "NOPE": 1}):
        assert [(m[0], m[2]) for m in ours()] == [
            ("activity_queue.W001", "ACTIVITY_QUEUE has an unknown key 'NOPE'; it is ignored."),
            ("activity_queue.E002", "ACTIVITY_QUEUE['TIMEOUT'] = '10' has type str."),
            ("activity_queue.E002", "ACTIVITY_QUEUE['WORKERS'] = 0 is too small."),
        ]


@pytest.mark.parametrize(("queue", "per_host", "workers"), [
    ({"PER_HOST": 10, "WORKERS": 4}, 10, 4),
    ({"WORKERS": 4}, 8, 4),  # the default PER_HOST is above these WORKERS
])
def test_per_host_above_workers(queue, per_host, workers):
    with with_queue(queue):
        assert ours() == [(
            "activity_queue.W002", WARNING,
            f"ACTIVITY_QUEUE['PER_HOST'] ({per_host}) is larger than WORKERS ({workers}); "
            "one host could take every slot.",
            "Keep PER_HOST below WORKERS so one slow host cannot block the others.",
        )]


def test_per_host_is_compared_despite_unknown_keys():
    with with_queue({"PER_HOST": 10, "WORKERS": 4, "NOPE": 1}):
        assert [m[0] for m in ours()] == ["activity_queue.W001", "activity_queue.W002"]


def test_per_host_is_not_compared_with_a_bad_value():
    with with_queue({"PER_HOST": 10, "WORKERS": "4"}):
        assert [m[0] for m in ours()] == ["activity_queue.E002"]


def test_celery_backend_without_celery(monkeypatch):
    monkeypatch.setitem(sys.modules, "celery", None)  # as if it were not installed
    with with_queue({"BACKEND": "celery"}):
        assert ours() == [(
            "activity_queue.E020", ERROR,
            "ACTIVITY_QUEUE['BACKEND'] is 'celery' but Celery cannot be imported (import of "
            "celery halted; None in sys.modules).",
            "pip install 'celery[redis]>=5.3' (the activity_queue[celery] extra), or set "
            "BACKEND to 'thread'.",
        )]
    with with_queue({"BACKEND": "thread"}):
        assert ours() == []


def test_celery_backend_with_celery():
    pytest.importorskip("celery")
    with with_queue({"BACKEND": "celery"}):
        assert ours() == []


@pytest.mark.skipif(django.VERSION >= (6, 0), reason="django.tasks is part of Django 6")
def test_tasks_backend_without_django_tasks(monkeypatch):
    monkeypatch.setitem(sys.modules, "django.tasks", None)  # Django 5.2 …
    monkeypatch.setitem(sys.modules, "django_tasks", None)  # … without the backport
    with with_queue({"BACKEND": "tasks"}):
        assert ours() == [(
            "activity_queue.E021", ERROR,
            "ACTIVITY_QUEUE['BACKEND'] is 'tasks' but Django's Tasks framework cannot be "
            "imported (import of django_tasks halted; None in sys.modules); django.tasks comes "
            "with Django 6.0.",
            "On Django 5.2, pip install 'django-tasks>=0.12' (the backport; the "
            "activity_queue[tasks] extra), or set BACKEND to 'thread'.",
        )]


def test_tasks_backend_with_django_tasks():
    with with_queue({"BACKEND": "tasks"}):
        assert ours() == []


def test_metrics_without_prometheus_client(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with with_queue({"METRICS": True}):
        assert ours() == [(
            "activity_queue.E022", ERROR,
            "ACTIVITY_QUEUE['METRICS'] is True but prometheus_client cannot be imported "
            "(import of prometheus_client halted; None in sys.modules).",
            "pip install 'prometheus-client>=0.20' (the activity_queue[metrics] extra), or set "
            "METRICS to False.",
        )]
    with with_queue({"METRICS": False}):
        assert ours() == []


def test_metrics_with_prometheus_client():
    pytest.importorskip("prometheus_client")
    with with_queue({"METRICS": True}):
        assert ours() == []


@pytest.mark.parametrize("site", ["example.org", "ftp://example.org", "http://", "/local/",
                                  5, "http://[::1"])
def test_bad_site_url(site):
    with override_settings(SITE_URL=site):
        assert ours() == [(
            "activity_queue.E003", ERROR,
            f"SITE_URL = {site!r} is not an absolute http(s) URL.",
            "Set SITE_URL to this site's origin, e.g. 'https://example.org'.",
        )]


@pytest.mark.parametrize("site", ["https://example.org", "http://127.0.0.1:8000"])
def test_good_site_url(site):
    with override_settings(SITE_URL=site):
        assert ours() == []


@pytest.mark.parametrize("key_id", ["key-1", "http://[::1", "https://:80/key"])
def test_bad_signing_key_id(key_id):
    with with_queue({**settings.ACTIVITY_QUEUE, "SIGNING_KEY_ID": key_id}):
        assert [(m[0], m[2]) for m in ours()] == [(
            "activity_queue.E012",
            f"ACTIVITY_QUEUE['SIGNING_KEY_ID'] = {key_id!r} is not an absolute http(s) URL.",
        )]


def sqlite(**options):
    database = {**settings.DATABASES["default"], "ENGINE": "django.db.backends.sqlite3",
                "OPTIONS": options}
    return override_settings(DATABASES={"default": database})


SQLITE_HINT = ("Set the database's 'OPTIONS' to {'transaction_mode': 'IMMEDIATE', 'timeout': 20, "
               "'init_command': 'PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;'}.")


def sqlite_warnings(**options) -> list[tuple[str, int, str, str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Django warns that DATABASES is overridden
        with sqlite(**options):
            return ours()


def test_the_recommended_sqlite_options_are_clean():
    assert sqlite_warnings(**SQLITE_OPTIONS) == []
    assert sqlite_warnings(**{**SQLITE_OPTIONS, "transaction_mode": "immediate", "timeout": 10,
                              "init_command": "pragma journal_mode = wal"}) == []


@pytest.mark.parametrize("mode", [None, "DEFERRED", "EXCLUSIVE"])
def test_sqlite_without_immediate_transactions(mode):
    options = {**SQLITE_OPTIONS, "transaction_mode": mode}
    assert sqlite_warnings(**options) == [(
        "activity_queue.W003", WARNING,
        "Database 'default' is SQLite without transaction_mode 'IMMEDIATE'; a request "
        "that reads then writes while the worker writes can fail with "
        "'database is locked'.",
        SQLITE_HINT,
    )]


@pytest.mark.parametrize("timeout", [None, 5, 9.5, "20"])
def test_sqlite_with_a_short_busy_timeout(timeout):
    options = {k: v for k, v in SQLITE_OPTIONS.items() if k != "timeout"}
    if timeout is not None:
        options["timeout"] = timeout
    shown = 5 if timeout is None else timeout
    assert sqlite_warnings(**options) == [(
        "activity_queue.W005", WARNING,
        f"Database 'default' is SQLite with a busy timeout of {shown!r} s (Python's default "
        "is 5); under load a request that waits longer for the write lock fails with "
        "'database is locked'.",
        SQLITE_HINT,
    )]


@pytest.mark.parametrize("init", [None, "PRAGMA synchronous=NORMAL;", "PRAGMA journal_mode=DELETE"])
def test_sqlite_without_wal(init):
    options = {**SQLITE_OPTIONS, "init_command": init}
    if init is None:
        del options["init_command"]
    assert sqlite_warnings(**options) == [(
        "activity_queue.W006", WARNING,
        "Database 'default' is SQLite without 'PRAGMA journal_mode=WAL' in its init_command; "
        "without WAL, readers and the writer block each other.",
        SQLITE_HINT,
    )]


def test_manage_py_check_shows_the_sqlite_warning():
    """Not only run_checks(): the command users run must show it, on every Django line."""
    output = StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with sqlite():
            call_command("check", stdout=output, stderr=output)
    assert "activity_queue.W003" in output.getvalue()


@pytest.mark.parametrize("value", [None, 3600, 1.5])
def test_unavailable_after_accepts_none_and_seconds(value):
    with with_queue({"UNAVAILABLE_AFTER": value}):
        assert ours() == []
        assert get_config().UNAVAILABLE_AFTER == value


ACTOR_KEYS_HINT = ("Set ACTOR_KEYS to the dotted path of a function f(actor_id) returning "
                   "(private_key_pem, key_id) or None, e.g. 'mysite.keys.actor_key'.")


@pytest.mark.parametrize(("path", "message"), [
    ("nowhere.keys.actor_key", "ACTIVITY_QUEUE['ACTOR_KEYS'] = 'nowhere.keys.actor_key' cannot "
     "be imported: No module named 'nowhere'."),
    ("activity_queue.conf.missing", "ACTIVITY_QUEUE['ACTOR_KEYS'] = "
     "'activity_queue.conf.missing' cannot be imported: Module \"activity_queue.conf\" does "
     "not define a \"missing\" attribute/class."),
    ("nodots", "ACTIVITY_QUEUE['ACTOR_KEYS'] = 'nodots' cannot be imported: nodots doesn't "
     "look like a module path."),
])
def test_actor_keys_that_cannot_be_imported(path, message):
    with with_queue({"ACTOR_KEYS": path}):
        assert ours() == [("activity_queue.E050", ERROR, message, ACTOR_KEYS_HINT)]


def test_actor_keys_whose_module_raises_as_it_is_imported():
    """Reported like a missing module, never raised: refusals() runs in the first request
    of a server that runs no checks, and would make every request fail."""
    path = "tests.support.failing_module.actor_key"
    expected = [("activity_queue.E050", ERROR, f"ACTIVITY_QUEUE['ACTOR_KEYS'] = {path!r} cannot "
                 "be imported: RuntimeError: the module is broken.", ACTOR_KEYS_HINT)]
    with with_queue({"ACTOR_KEYS": path}):
        assert ours() == expected
        assert [(m.id, m.level, m.msg, m.hint) for m in refusals()] == expected


def test_an_inbox_class_whose_module_raises_as_it_is_imported():
    path = "tests.support.failing_module.Authentication"
    with with_queue({"INBOX_AUTHENTICATION": [path]}):
        assert [(m.id, m.msg) for m in refusals()] == [(
            "activity_queue.E010", f"ACTIVITY_QUEUE['INBOX_AUTHENTICATION'] entry {path!r} "
            "cannot be imported (RuntimeError: the module is broken).")]


def test_actor_keys_that_is_not_callable():
    with with_queue({"ACTOR_KEYS": "activity_queue.conf.DEFAULTS"}):
        assert ours() == [(
            "activity_queue.E051", ERROR,
            "ACTIVITY_QUEUE['ACTOR_KEYS'] = 'activity_queue.conf.DEFAULTS' is not callable "
            "(it is of type dict).", ACTOR_KEYS_HINT,
        )]


def test_actor_keys_that_is_a_function():
    with with_queue({"ACTOR_KEYS": "tests.support.strict_peer.no_actor_key",
                     "SIGNING_KEY": pem(rsa_key(0))}):
        assert ours() == []


def test_actor_keys_without_a_site_key():
    with with_queue({"ACTOR_KEYS": "tests.support.strict_peer.no_actor_key"}):
        assert ours() == [(
            "activity_queue.W050", WARNING,
            "ACTIVITY_QUEUE['ACTOR_KEYS'] is set but SIGNING_KEY is not: an activity whose "
            "actor has no key of its own goes out unsigned, and the instance actor cannot "
            "sign fetches (servers in authorized-fetch mode refuse them).",
            "Set ACTIVITY_QUEUE['SIGNING_KEY'] too: it is the instance actor's key and the "
            "fallback for actors without one.",
        )]


def test_refusals_are_the_errors_of_our_own_checks_only():
    """Warnings (PER_HOST above WORKERS) never keep a worker down; errors do."""
    with override_settings(ACTIVITY_QUEUE={"PER_HOST": 100, "WORKERS": 10}):
        assert refusals() == []
    with override_settings(ACTIVITY_QUEUE={"WORKERS": "64", "PER_HOST": 0}):
        refused = refusals()
    assert [m.id for m in refused] == ["activity_queue.E002", "activity_queue.E002"]
    assert describe(refused).splitlines() == [
        "(activity_queue.E002) ACTIVITY_QUEUE['PER_HOST'] = 0 is too small. "
        "HINT: PER_HOST must be an integer >= 1 (default 8).",
        "(activity_queue.E002) ACTIVITY_QUEUE['WORKERS'] = '64' has type str. "
        "HINT: WORKERS must be an integer >= 1 (default 64)."]


def _database_checks(alias: str = "default") -> list[tuple[str, int, str, str]]:
    return [(m.id, m.level, m.msg, m.hint) for m in run_checks(databases=[alias])
            if (m.id or "").startswith("activity_queue.E03")]


def test_a_database_of_an_unsupported_vendor_is_an_error(monkeypatch):
    from django.db import connections

    fake = connections["default"]
    monkeypatch.setattr(fake, "vendor", "oracle")
    monkeypatch.setattr(fake, "display_name", "Oracle")
    monkeypatch.setitem(fake.settings_dict, "ENGINE", "django.db.backends.oracle")
    assert _database_checks() == [(
        "activity_queue.E030", ERROR,
        "Database 'default' is Oracle (django.db.backends.oracle); activity_queue supports "
        "SQLite, PostgreSQL, MySQL 8.0.13+ and MariaDB 10.6+.",
        "Keep activity_queue's tables on a supported database: change DATABASES['default'], "
        "or route the activity_queue app to another database with a database router.",
    )]


@pytest.mark.parametrize(("mariadb", "version", "expected"), [
    (True, (10, 5, 26), "MariaDB 10.5.26; activity_queue needs MariaDB 10.6 or later"),
    (False, (8, 0, 12), "MySQL 8.0.12; activity_queue needs MySQL 8.0.13 or later"),
    (True, (10, 6, 0), None),
    (True, (11, 4, 2), None),
    (False, (8, 0, 13), None),
    (False, (8, 4, 0), None),
])
def test_a_mysql_or_mariadb_server_without_skip_locked_is_an_error(monkeypatch, mariadb,
                                                                   version, expected):
    from django.db import connections

    fake = connections["default"]
    monkeypatch.setattr(fake, "vendor", "mysql")
    monkeypatch.setattr(fake, "mysql_is_mariadb", mariadb, raising=False)
    monkeypatch.setattr(fake, "mysql_version", version, raising=False)
    name = "MariaDB" if mariadb else "MySQL"
    assert _database_checks() == ([] if expected is None else [(
        "activity_queue.E031", ERROR,
        f"Database 'default' is {expected} (FOR UPDATE SKIP LOCKED).",
        f"Upgrade the {name} server, or keep activity_queue's tables on another database "
        "with a database router.",
    )])


def test_our_models_raise_no_database_warning_on_this_database():
    """On MySQL the partial index of delivered rows holds every row; Django does not warn
    at each ``migrate`` that its condition is ignored."""
    from activity_queue.models import Activity

    assert [m.id for m in run_checks(databases=["default"])
            if getattr(m.obj, "_meta", None) is Activity._meta] == []
