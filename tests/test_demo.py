"""``python manage.py demo`` runs end to end, from the repository root, and cleans up."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent

@pytest.mark.timeout(90)
def test_demo_runs_and_leaves_nothing_running(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "example_project.settings",
           "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "manage.py", "demo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=80)
    out = done.stdout
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "B received Create" in out and "B received Add" in out
    assert "failed attempt(s)" in out  # retries while B was down
    assert "B never heard of Pop-up: True" in out
    assert "replaced by a newer Update" in out
    assert "Create and Delete of the same object were both still pending" in out
    assert "failed: HTTP 410 (not retried)" in out and "(HTTP 410, not retried)" not in out
    assert "short demo backoff" in out and "the demo retries fast: backoff 0.25 s" in out
    here = Path(sys.executable)
    python = str(here.relative_to(ROOT)) if here.is_relative_to(ROOT) else None
    assert f"({python or ''}" in out and " manage.py demo --keep keeps both databases" in out
    assert "(python manage.py" not in out
    for line in ("site A sent", "site A retried", "site A dropped", "site A failed",
                 "site B received"):
        assert line in out
    assert "nothing is left running" in out
    assert list(tmp_path.iterdir()) == []  # the temporary databases are gone
    for url in re.findall(r"^site [AB]  (http://\S+)", out, re.M):
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/demo/state/", timeout=2)
