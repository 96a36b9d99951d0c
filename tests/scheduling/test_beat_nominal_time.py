"""The nominal time beat stamps on each message: when the row's schedule said it was due,
as django-celery-beat's ModelEntry reckons it (from last_run_at, else date_changed, and
never before start_time), so the dispatch lag measures beat and the queue, not the rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.conf import settings
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
)
from django_celery_beat.schedulers import ModelEntry

from config.celery import app
from scheduling.beat import NOMINAL_TIME_HEADER, NominalTimeScheduler, entry_nominal_time

pytestmark = pytest.mark.django_db

TASK = "scheduling.cleanup_runs"


def _entry(schedule, *, last_run_at=None, start_time=None, changed=None) -> ModelEntry:
    field = {
        IntervalSchedule: "interval",
        CrontabSchedule: "crontab",
        ClockedSchedule: "clocked",
    }[type(schedule)]
    row = PeriodicTask.objects.create(
        name="nominal-test",
        task=TASK,
        last_run_at=last_run_at,
        start_time=start_time,
        one_off=field == "clocked",
        **{field: schedule},
    )
    if changed is not None:  # date_changed is auto_now: set it behind the model's back
        PeriodicTask.objects.filter(pk=row.pk).update(date_changed=changed)
        row.refresh_from_db()
    return ModelEntry(row, app=app)


def _every(**kwargs) -> IntervalSchedule:
    ((period, every),) = kwargs.items()
    return IntervalSchedule.objects.create(every=every, period=period)


def _nominal(entry: ModelEntry, now: datetime, time_machine) -> datetime | None:
    time_machine.move_to(now, tick=False)
    return entry_nominal_time(entry, entry.default_now())


def test_an_interval_row_was_due_one_period_after_its_last_run(time_machine):
    last = datetime(2025, 1, 10, 12, 0, 0, tzinfo=UTC)
    entry = _entry(_every(minutes=10), last_run_at=last)

    nominal = _nominal(entry, last + timedelta(minutes=10, seconds=3), time_machine)

    assert nominal == last + timedelta(minutes=10)
    assert nominal.tzinfo == UTC


def test_an_interval_row_that_never_ran_counts_from_when_it_was_saved(time_machine):
    saved = datetime(2025, 1, 10, 12, 0, 0, tzinfo=UTC)
    entry = _entry(_every(minutes=5), changed=saved)

    assert _nominal(entry, saved + timedelta(minutes=7), time_machine) == saved + timedelta(
        minutes=5
    )


def test_a_row_that_never_ran_with_a_start_time_was_due_at_the_start_time(time_machine):
    saved = datetime(2025, 1, 10, 12, 0, 0, tzinfo=UTC)
    start = saved + timedelta(hours=2, seconds=17)
    entry = _entry(_every(minutes=5), start_time=start, changed=saved)

    assert _nominal(entry, start + timedelta(seconds=2), time_machine) == start


def test_a_crontab_row_was_due_at_its_next_firing_in_its_own_time_zone(time_machine):
    # 09:00 in Berlin, across the spring change: 08:00 UTC on the 30th, 07:00 UTC on the 31st.
    cron = CrontabSchedule.objects.create(minute="0", hour="9", timezone="Europe/Berlin")
    last = datetime(2024, 3, 30, 8, 0, 0, 120_000, tzinfo=UTC)
    entry = _entry(cron, last_run_at=last)

    nominal = _nominal(entry, datetime(2024, 3, 31, 7, 0, 4, tzinfo=UTC), time_machine)

    assert nominal == datetime(2024, 3, 31, 7, 0, tzinfo=UTC)


def test_a_crontab_row_that_never_ran_was_due_at_its_first_firing_after_it_was_saved(
    time_machine,
):
    cron = CrontabSchedule.objects.create(minute="*/15", hour="*", timezone="UTC")
    saved = datetime(2025, 1, 10, 12, 7, 30, tzinfo=UTC)
    entry = _entry(cron, changed=saved)

    nominal = _nominal(entry, datetime(2025, 1, 10, 12, 15, 1, tzinfo=UTC), time_machine)

    assert nominal == datetime(2025, 1, 10, 12, 15, tzinfo=UTC)


def test_a_crontab_row_with_a_start_time_was_due_at_its_first_firing_from_then(time_machine):
    # Beat holds the row until start_time, then sends it at the crontab's next firing.
    cron = CrontabSchedule.objects.create(minute="0", hour="*", timezone="UTC")
    start = datetime(2025, 1, 10, 10, 30, tzinfo=UTC)
    entry = _entry(cron, start_time=start, changed=start - timedelta(days=1))

    nominal = _nominal(entry, datetime(2025, 1, 10, 11, 0, 2, tzinfo=UTC), time_machine)

    assert nominal == datetime(2025, 1, 10, 11, 0, tzinfo=UTC)


def test_a_clocked_row_was_due_at_its_clocked_time(time_machine):
    at = datetime(2025, 1, 10, 12, 0, 0, tzinfo=UTC)
    entry = _entry(ClockedSchedule.objects.create(clocked_time=at), changed=at - timedelta(days=1))

    assert _nominal(entry, at + timedelta(seconds=30), time_machine) == at


@pytest.mark.django_db(transaction=True)  # the scheduler closes connections inside atomic blocks
def test_each_message_beat_sends_carries_its_own_nominal_time(time_machine, request):
    # Through celery's own tick, which sends the entry it has just reserved.
    broker = redis.Redis.from_url(settings.REDIS.client)
    broker.delete("celery")
    last = datetime(2025, 1, 10, 12, 0, 0, tzinfo=UTC)
    row = _entry(_every(seconds=30), last_run_at=last).model
    row.headers = '{"_schema_name": "acme"}'
    row.save()
    scheduler = NominalTimeScheduler(app=app)
    # Its exit-time sync (multiprocessing Finalize) would run after the test database is gone.
    request.addfinalizer(scheduler._finalize.cancel)
    sent_at = [last + timedelta(seconds=31), last + timedelta(seconds=62)]

    for moment in sent_at:
        time_machine.move_to(moment, tick=False)
        scheduler.tick()
    messages = [json.loads(raw) for raw in reversed(broker.lrange("celery", 0, -1))]
    broker.delete("celery")

    assert [message["headers"].get("periodic_task_name") for message in messages] == [
        "nominal-test",
        "nominal-test",
    ]
    assert [message["headers"].get(NOMINAL_TIME_HEADER) for message in messages] == [
        "2025-01-10T12:00:30+00:00",  # due 30 s after the last run
        "2025-01-10T12:01:01+00:00",  # due 30 s after beat sent the first
    ]
    assert all(message["headers"]["_schema_name"] == "acme" for message in messages)
    # and its own expiry: when the next one is due
    assert [message["headers"]["expires"] for message in messages] == [
        "2025-01-10T12:01:01+00:00",
        "2025-01-10T12:01:32+00:00",
    ]
