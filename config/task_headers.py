"""Reading a custom header of the Celery message a task was sent with.

The worker copies custom message headers (`_schema_name`, `periodic_task_name`,
`nominal_time`) onto the task's request as attributes; a task run eagerly with
`apply(headers=...)` keeps them in `request.headers` instead. Readers look in
both, as tenant-schemas-celery does for `_schema_name`.
"""

from __future__ import annotations

from typing import Any


def task_header(request: Any, name: str) -> Any:
    """The value of header `name` on a Celery task request, or None."""
    headers = getattr(request, "headers", None)
    if isinstance(headers, dict) and name in headers:
        return headers[name]
    return getattr(request, name, None)
