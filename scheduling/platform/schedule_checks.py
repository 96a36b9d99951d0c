"""What an operator schedule may be: the `when` values, and the checks run before any write.

Forms check and convert, services save (STYLE.md 6): spec_clean turns a
ScheduleSpec into a checked and normalised one, or raises one ValidationError
that names every bad argument. scheduling.platform.schedules does the writing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from celery import current_app
from celery.schedules import ParseException
from celery.schedules import crontab as celery_crontab
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_celery_beat.models import SOLAR_SCHEDULES, CrontabSchedule, PeriodicTask

from scheduling.jobs import JOBS, Job
from tenants.models import Tenant
from tenants.validators import iana_time_zones

RESERVED_PREFIX = "tenant:"
_NAME_MAX = PeriodicTask._meta.get_field("name").max_length
_QUEUE_MAX = PeriodicTask._meta.get_field("queue").max_length
_INT32_MAX = 2**31 - 1  # IntervalSchedule.every and the PositiveIntegerFields are 32-bit
_COORDINATE_STEP = Decimal("0.000001")  # SolarSchedule keeps six decimal places
CRON_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
# A crontab is valid only if a next run follows this fixed date (STYLE.md 6).
_CRON_PROBE = datetime(2024, 1, 1, tzinfo=UTC)  # its wall time is read in the crontab's zone


# --- When a task runs ----------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    seconds: int


@dataclass(frozen=True)
class Crontab:
    minute: str = "*"
    hour: str = "*"
    day_of_week: str = "*"
    day_of_month: str = "*"
    month_of_year: str = "*"
    timezone: str = "UTC"


@dataclass(frozen=True)
class Solar:
    event: str
    latitude: float | Decimal
    longitude: float | Decimal


@dataclass(frozen=True)
class Clocked:
    """Once, at an aware datetime; the task is one-off."""

    at: datetime


When = Interval | Crontab | Solar | Clocked


@dataclass(frozen=True)
class ScheduleSpec:
    """Everything this API manages on a PeriodicTask, in the caller's terms."""

    task_name: str
    when: When | None
    tenant: Tenant | None = None
    args: Any = ()
    kwargs: Any = None
    queue: str | None = None
    priority: int | None = None
    expires: datetime | None = None
    expire_seconds: int | None = None
    enabled: bool = True
    description: str = ""


SPEC_FIELDS = frozenset(field.name for field in dataclasses.fields(ScheduleSpec))


@dataclass(frozen=True)
class _Context:
    job: Job | None
    fresh: frozenset[str]  # arguments given in this call: only these must lie in the future
    now: datetime


# --- Checks --------------------------------------------------------------------


def name_errors(name: Any) -> dict[str, list[str]]:
    """Problems with a new schedule's name, keyed "name"; empty when it may be used."""
    if not isinstance(name, str) or not name.strip():
        problem = "A schedule needs a name."
    elif len(name) > _NAME_MAX:
        problem = f"A name has at most {_NAME_MAX} characters."
    elif name.startswith(RESERVED_PREFIX):
        problem = _reserved_message(name)
    elif PeriodicTask.objects.filter(name=name).exists():
        problem = f"A schedule named {name!r} already exists."
    else:
        return {}
    return {"name": [problem]}


def _reserved_message(name: str) -> str:
    return (
        f"Names starting with {RESERVED_PREFIX!r} belong to the platform's per-tenant tasks, "
        f"which follow their tenant; {name!r} cannot be managed here (pause or resume the "
        "tenant instead)."
    )


def reserved_refuse(name: str) -> None:
    if isinstance(name, str) and name.startswith(RESERVED_PREFIX):
        raise ValidationError({"name": [_reserved_message(name)]})


def spec_clean(spec: ScheduleSpec, *, fresh: frozenset[str], now: datetime) -> ScheduleSpec:
    """The spec with every value checked and normalised, or one ValidationError for all."""
    job = JOBS.get(spec.task_name) if isinstance(spec.task_name, str) else None
    context = _Context(job=job, fresh=fresh, now=now)
    cleaned: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, check in _CHECKS.items():
        try:
            cleaned[name] = check(getattr(spec, name), context)
        except ValidationError as exc:
            errors[name] = exc.messages
    if not errors:
        _cross_check(cleaned, context, errors)
    if errors:
        raise ValidationError(errors)
    return ScheduleSpec(**cleaned)


def _cross_check(cleaned: dict[str, Any], context: _Context, errors: dict) -> None:
    if cleaned["expires"] is not None and cleaned["expire_seconds"] is not None:
        errors["expires"] = ["Set expires or expire_seconds, not both."]
    problem = _arguments_problem(context.job, cleaned["args"], cleaned["kwargs"])
    if problem:
        errors["args"] = [problem]


def _job_check(value: Any, context: _Context) -> str:
    if context.job is None:
        registered = ", ".join(sorted(JOBS))
        raise ValidationError(f"{value!r} is not a registered job; choose one of: {registered}.")
    return value


def _tenant_check(value: Any, context: _Context) -> Tenant | None:
    job = context.job
    if value is not None and (not isinstance(value, Tenant) or value.pk is None):
        raise ValidationError("tenant must be a saved Tenant, or None.")
    if job is None:
        return value  # the task name's own error says enough
    if job.scope == "tenant" and value is None:
        raise ValidationError(f"{job.task_name} runs in a tenant's schema: give a tenant.")
    if job.scope == "platform" and value is not None:
        raise ValidationError(
            f"{job.task_name} is a platform job and runs in the public schema: give no tenant."
        )
    return value


def _when_check(value: Any, context: _Context) -> When:
    if isinstance(value, Interval):
        return _interval_check(value)
    if isinstance(value, Crontab):
        return _crontab_check(value)
    if isinstance(value, Solar):
        return _solar_check(value)
    if isinstance(value, Clocked):
        return _clocked_check(value, must_be_future="when" in context.fresh, now=context.now)
    raise ValidationError("when must be an Interval, Crontab, Solar or Clocked.")


def _interval_check(value: Interval) -> Interval:
    if not _is_int(value.seconds) or not 1 <= value.seconds <= _INT32_MAX:
        raise ValidationError(
            f"An interval is a whole number of seconds, at least 1; got {value.seconds!r}."
        )
    return value


def _crontab_check(value: Crontab) -> Crontab:
    parts = {name: _cron_field(name, getattr(value, name)) for name in CRON_FIELDS}
    zone = _zone_check(value.timezone)
    try:
        schedule = celery_crontab(**parts)  # what beat will run
    except (ValueError, ParseException) as exc:
        raise ValidationError(f"Not a valid crontab: {exc}") from None
    try:
        CrontabSchedule(**parts, timezone=zone).clean_fields()  # what the admin will accept
    except ValidationError as exc:
        problems = "; ".join(f"{f}: {' '.join(m)}" for f, m in exc.message_dict.items())
        raise ValidationError(f"Not a valid crontab: {problems}") from None
    probe = _CRON_PROBE.replace(tzinfo=zone)
    nxt = crontab_next_after(schedule, zone=zone, after=probe)
    if nxt is None or nxt <= probe:
        raise ValidationError("Not a valid crontab: no next run can be computed.")
    return Crontab(**parts, timezone=zone.key)


def _cron_field(name: str, value: Any) -> str:
    if _is_int(value):
        value = str(value)
    if not isinstance(value, str) or not value or any(char.isspace() for char in value):
        raise ValidationError(
            f"crontab {name} must be one cron field such as '*', '5' or '*/15'; got {value!r}."
        )
    return value


def _zone_check(value: Any) -> ZoneInfo:
    if not isinstance(value, str) or value not in iana_time_zones():
        raise ValidationError(f"{value!r} is not an IANA time zone such as 'Europe/Berlin'.")
    return ZoneInfo(value)


def _solar_check(value: Solar) -> Solar:
    events = dict(SOLAR_SCHEDULES)
    if value.event not in events:
        raise ValidationError(
            f"Solar event {value.event!r} is not one of: {', '.join(sorted(events))}."
        )
    latitude = _coordinate(value.latitude, name="latitude", limit=90)
    longitude = _coordinate(value.longitude, name="longitude", limit=180)
    if importlib.util.find_spec("ephem") is None:
        # celery's solar schedule imports ephem; without it beat fails to load every schedule.
        raise ValidationError("Solar schedules need the ephem package, which is not installed.")
    return Solar(event=value.event, latitude=latitude, longitude=longitude)


def _coordinate(value: Any, *, name: str, limit: int) -> Decimal:
    try:
        number = Decimal(str(value)) if _is_number(value) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or not -limit <= number <= limit:
        raise ValidationError(
            f"Solar {name} must be a number from -{limit} to {limit}; got {value!r}."
        )
    return number.quantize(_COORDINATE_STEP)


def _clocked_check(value: Clocked, *, must_be_future: bool, now: datetime) -> Clocked:
    if not isinstance(value.at, datetime) or timezone.is_naive(value.at):
        raise ValidationError("A clocked time must be an aware datetime.")
    if must_be_future and value.at <= now:
        raise ValidationError(
            f"A clocked time must be in the future; {value.at.isoformat()} is not."
        )
    return value


def _args_check(value: Any, context: _Context) -> list:
    if not isinstance(value, list | tuple):
        raise ValidationError(f"args must be a list; got {type(value).__name__}.")
    _json_check(list(value), "args")
    return list(value)


def _kwargs_check(value: Any, context: _Context) -> dict:
    value = {} if value is None else value
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ValidationError("kwargs must be a dict with string keys.")
    _json_check(value, "kwargs")
    return value


def _json_check(value: Any, name: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{name} must be JSON-serialisable: {exc}.") from None


def _arguments_problem(job: Job, args: list, kwargs: dict) -> str | None:
    """Whether beat could send these arguments: Celery checks them against the task's."""
    task = _celery_tasks().get(job.task_name)
    if task is None:
        return f"{job.task_name} is a registered job, but no Celery task of that name is loaded."
    try:
        inspect.signature(task.run).bind(*args, **kwargs)
    except TypeError as exc:
        return f"These arguments do not fit {job.task_name}: {exc}."
    return None


def _queue_check(value: Any, context: _Context) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > _QUEUE_MAX or value != value.strip():
        raise ValidationError(f"queue must be a queue name of at most {_QUEUE_MAX} characters.")
    return value


def _priority_check(value: Any, context: _Context) -> int | None:
    if value is not None and (not _is_int(value) or not 0 <= value <= 255):
        raise ValidationError(f"priority must be a whole number from 0 to 255; got {value!r}.")
    return value


def _expires_check(value: Any, context: _Context) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or timezone.is_naive(value):
        raise ValidationError("expires must be an aware datetime.")
    if "expires" in context.fresh and value <= context.now:
        raise ValidationError(f"expires must be in the future; {value.isoformat()} is not.")
    return value


def _expire_seconds_check(value: Any, context: _Context) -> int | None:
    if value is not None and (not _is_int(value) or not 1 <= value <= _INT32_MAX):
        raise ValidationError(f"expire_seconds must be a whole number, at least 1; got {value!r}.")
    return value


def _enabled_check(value: Any, context: _Context) -> bool:
    if not isinstance(value, bool):
        raise ValidationError("enabled must be True or False.")
    return value


def _description_check(value: Any, context: _Context) -> str:
    if not isinstance(value, str):
        raise ValidationError("description must be text.")
    return value


# Checked in this order; the tenant's check reads the job found from task_name.
_CHECKS = {
    "task_name": _job_check,
    "when": _when_check,
    "tenant": _tenant_check,
    "args": _args_check,
    "kwargs": _kwargs_check,
    "queue": _queue_check,
    "priority": _priority_check,
    "expires": _expires_check,
    "expire_seconds": _expire_seconds_check,
    "enabled": _enabled_check,
    "description": _description_check,
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return _is_int(value) or isinstance(value, Decimal)


@cache
def _celery_tasks() -> dict:
    # A web or manage.py process has not imported the task modules; a worker has.
    current_app.loader.import_default_modules()
    return current_app.tasks


def when_key(when: When | None) -> tuple | None:
    """A comparable form: equal keys need the same schedule row."""
    if isinstance(when, Interval):
        return ("interval", when.seconds)
    if isinstance(when, Crontab):
        return ("crontab", *(getattr(when, name) for name in CRON_FIELDS), when.timezone)
    if isinstance(when, Solar):
        coordinates = (Decimal(str(when.latitude)), Decimal(str(when.longitude)))
        return ("solar", when.event, *(c.quantize(_COORDINATE_STEP) for c in coordinates))
    if isinstance(when, Clocked):
        return ("clocked", when.at.astimezone(UTC))
    return None


def crontab_next_after(schedule: Any, *, zone: ZoneInfo, after: datetime) -> datetime | None:
    """The first time after `after` that the crontab fires, in UTC, computed as beat does."""
    try:
        start, delta, _ = schedule.remaining_delta(after, tz=zone)
        return (start + delta).astimezone(UTC)
    except (ValueError, OverflowError, RuntimeError):
        return None
