"""The test suite. Its directories mirror the package: ``tests/sending/`` tests
``activity_queue/sending/``, and so on; what concerns the whole app sits at the top.

- ``support/``: what the tests share besides fixtures (a loopback HTTP receiver, scripted
  raw-socket peers, subprocesses on the test database, row builders, ``wait_until`` and
  ``aq_settings``). Fixtures live in ``conftest.py``.
- ``settings.py``, ``proc_settings.py`` (for subprocesses), ``urls.py`` and ``celery_app.py``
  stay here: they are named by dotted path (``tests.settings``, ``celery -A tests.celery_app``).

The tests run on SQLite by default and on the local PostgreSQL with ``AQ_TEST_DB=postgres``;
``scripts/test`` runs both databases on both Django lines. Build a worker inside
``aq_settings(...)``: it reads its config when it is created. Receiver rules (``Rule``) set the
status, headers, body and delay for each path; ``hold=`` keeps an answer back until a condition
is true, and receivers given the same ``events`` list record one shared timeline, so a test can
check the order of events without relying on timing.
"""
