"""Real celery beat and worker processes for end-to-end tests, on the test database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import ROOT, test_database_url

# A worker of one pool process that starts without waiting for other workers.
ONE_PROCESS_WORKER = ("--concurrency", "1", "--without-mingle", "--without-gossip")


def celery_env() -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": test_database_url(),
        "PYTHONUNBUFFERED": "1",
    }


@contextlib.contextmanager
def celery_process(kind: str, log: Path, *extra: str, env: dict[str, str] | None = None):
    """Run `celery -A config <kind>` until the block ends; its output goes to `log`."""
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", kind, "--loglevel", "INFO", *extra],
            cwd=ROOT,
            env={**celery_env(), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_until(predicate, *, timeout: float, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
