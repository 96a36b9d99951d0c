"""Log lines as JSON (production) or readable text (development), with the task they belong to.

LOGGING (config/settings/base.py) puts TaskContextFilter on the one console
handler, so every line a process writes passes through it: web, beat, and the
worker's main process and its prefork children alike. A line written while a
Celery task runs (the task's own lines, and Celery's "Task ... succeeded" and
failure lines, which the child process writes before the task is popped) gets
the task's tenant, name, id and periodic task. Lines of the worker's main
process ("Received task", time limit warnings) run in no task: they name the
task id in their message only.

Project code logs with logging.getLogger(__name__); Celery's get_task_logger
loggers get a handler of Celery's own and would bypass this formatting.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from celery._state import get_current_task

from config.task_headers import task_header

PUBLIC_SCHEMA = "public"  # django-tenants' default; the project does not rename it


def task_context() -> dict[str, Any] | None:
    """The fields of the Celery task running in this process, or None outside a task.

    `tenant` is the `_schema_name` header, which tenant-schemas-celery switched
    the connection to; a platform job (no header) runs in the public schema.
    `periodic_task_name` is set by django-celery-beat on what beat sends.
    """
    task = get_current_task()
    if task is None:
        return None
    request = task.request
    return {
        "tenant": task_header(request, "_schema_name") or PUBLIC_SCHEMA,
        "task": task.name,
        "task_id": request.id,
        "periodic_task_name": task_header(request, "periodic_task_name"),
    }


class TaskContextFilter(logging.Filter):
    """Attach task_context() to each record as `record.task_context`; drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "task_context"):
            record.task_context = task_context()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, exception,
    and the task's fields when the line was written inside a task.

    The output is ASCII (other characters escaped), so it stays valid JSON whatever
    encoding the stream has, and a newline in a message or traceback is escaped,
    never a line break.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        line.update(getattr(record, "task_context", None) or {})
        return json.dumps(line, default=str)


class PlainFormatter(logging.Formatter):
    """The usual text line, ending in `[tenant task task_id]` when written inside a task."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        context = getattr(record, "task_context", None)
        if not context:
            return text
        return f"{text} [{context['tenant']} {context['task']} {context['task_id']}]"
