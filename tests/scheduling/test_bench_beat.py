"""bench_beat: a real beat on a tiny size prints a full row of figures and leaves nothing behind.

Speed is measured by the command, never asserted here.
"""

from __future__ import annotations

import re
import uuid

import pytest
import redis
from django.conf import settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tests.helpers import run_manage

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

NUMBER = r">?-?\d+(?:\.\d+)?"
# N, startup, settle, due/s, sent/s, lag p50/p99/max, sampled, pickup med/max, RSS, completed
ROW = re.compile(rf"^\s*20\s+{NUMBER}(?:\s+{NUMBER}){{10}}\s+yes$", re.MULTILINE)


def test_it_measures_a_real_beat_and_removes_every_bench_row():
    intervals_before = set(IntervalSchedule.objects.values_list("pk", flat=True))
    queue = f"bench_beat_test_{uuid.uuid4().hex[:6]}"

    result = run_manage(
        "bench_beat",
        "--schedules", "20",
        "--budget-seconds", "60",
        "--window-seconds", "5",
        "--pickup-probes", "2",
        "--interval-min", "2",
        "--interval-max", "4",
        "--queue", queue,
        timeout=90,
    )  # fmt: skip

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert ROW.search(result.stdout), output
    assert "django_celery_beat.schedulers:DatabaseScheduler" in result.stdout
    assert re.search(r"\b(\d+) of \1 messages so far carry their _schema_name", result.stdout)
    assert not PeriodicTask.objects.filter(name__startswith="bench:").exists()
    assert set(IntervalSchedule.objects.values_list("pk", flat=True)) == intervals_before
    broker = redis.Redis.from_url(settings.REDIS.client)
    assert not list(broker.scan_iter(match=f"{queue}*"))
    assert not list(broker.scan_iter(match=f"_kombu.binding*.{queue}"))
