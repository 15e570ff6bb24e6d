"""`rftt doctor`: runs, reports each registration honestly, and fails when the plugin is off."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import clean_env
import pytest

pytestmark = pytest.mark.slow  # fresh interpreters and a local Ray actor


def _doctor(*args, env=None):
    cmd = [sys.executable, "-m", "rftt_plugin.cli", "doctor", "--json", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env or clean_env(), cwd="/")
    payload = json.loads(proc.stdout.strip().splitlines()[-1])
    return proc.returncode, payload


def _row(payload, name, where="driver"):
    rows = [r for r in payload["rows"] if r["name"] == name and r["where"] == where]
    assert rows, f"no row {name!r} in {[r['name'] for r in payload['rows']]}"
    return rows[0]


def test_doctor_reports_versions_and_recipe_rows():
    rc, payload = _doctor("--no-ray")
    assert _row(payload, "verl loads the rftt plugin")["ok"] is True
    assert _row(payload, "recipe rftt: resolvable")["ok"] is True
    assert _row(payload, "recipe rftt: estimator registered")["ok"] is True
    for key in ("python", "verl", "torch", "transformers", "ray", "math-verify", "antlr4-python3-runtime", "vllm"):
        assert key in payload["versions"]
    failed = [r for r in payload["rows"] if r["ok"] is False]
    assert payload["failed"] == len(failed)
    assert rc == (1 if failed else 0)
    for row in failed:
        assert row["fix"], f"failed row without a fix hint: {row}"


def test_doctor_fails_when_plugin_disabled():
    rc, payload = _doctor("--no-ray", env=clean_env(VERL_USE_EXTERNAL_PLUGINS="none"))
    assert rc == 1
    row = _row(payload, "verl loads the rftt plugin")
    assert row["ok"] is False and "VERL_USE_EXTERNAL_PLUGINS=none" in row["detail"]


def test_doctor_checks_inside_ray_actor():
    rc, payload = _doctor()
    assert _row(payload, "verl loads the rftt plugin", where="ray actor")["ok"] is True
