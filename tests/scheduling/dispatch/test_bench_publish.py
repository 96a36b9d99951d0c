"""bench_publish: on a small N it prints a row per way, each with LLEN checked, and leaves
nothing in Redis. Speed is measured by the command, never asserted here."""

from __future__ import annotations

import re
import uuid

import pytest
import redis
from django.conf import settings
from django.core.management import CommandError, call_command

from tests.helpers import run_manage

NUMBER = r"\d+(?:\.\d+)?"
# way, messages, seconds, msg/s, CPU s, peak RSS, +RSS, LLEN, check
ROW = re.compile(rf"^(\w+)\s+250(?:\s+-?{NUMBER}){{5}}\s+250\s+ok$", re.MULTILINE)


@pytest.mark.slow
@pytest.mark.django_db
def test_it_publishes_n_messages_each_way_and_removes_its_queue():
    queue = f"bench_publish_test_{uuid.uuid4().hex[:6]}"

    result = run_manage(
        "bench_publish", "--messages", "250", "--chunk-size", "100", "--queue", queue
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert ROW.findall(result.stdout) == ["apply_async", "kombu", "redis"], result.stdout
    broker = redis.Redis.from_url(settings.REDIS.client)
    assert not list(broker.scan_iter(match=f"{queue}*"))
    assert not list(broker.scan_iter(match=f"_kombu.binding*.{queue}"))


def test_it_refuses_a_count_below_one():
    with pytest.raises(CommandError, match="at least 1"):
        call_command("bench_publish", "--messages", "0")
