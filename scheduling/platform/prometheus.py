"""/metrics: the platform's metrics in Prometheus' text format, for Prometheus and operators.

Workers on many machines record into Redis (scheduling.metrics); this web view
reads it all back at each scrape, with the broker's queue lengths, and a custom
collector turns that one reading into metric families in a fresh
CollectorRegistry, so the web process keeps no metric state of its own.
Every name starts with `scheduler_`; see the README's "Metrics" section.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime

import redis
from celery import current_app
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from django_celery_beat.models import PeriodicTask
from kombu.exceptions import OperationalError
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from scheduling import metrics
from scheduling.jobs import JOBS
from scheduling.platform.ops_auth import operator_api
from tenants.models import Tenant


class MetricsUnavailable(Exception):
    """Redis or the broker did not answer: no numbers rather than wrong ones."""


@dataclass(frozen=True)
class Reading:
    runs: dict[tuple[str, str, str], int]
    sync_last_success: dict[str, float]
    lags: dict[str, metrics.LagHistogram]
    heartbeat_last: datetime | None
    queue_depths: dict[str, int]
    refused: int
    now: datetime


def metrics_read() -> Reading:
    """Everything a scrape shows, read once; raises MetricsUnavailable."""
    try:
        reading = Reading(
            runs=metrics.job_runs(),
            sync_last_success=metrics.sync_last_successes(),
            lags=metrics.dispatch_lags(sorted({job.kind for job in JOBS.values()})),
            heartbeat_last=metrics.beat_heartbeat_last(),
            queue_depths=metrics.queue_depths(_queue_names()),
            refused=metrics.refused_task_count(),
            now=timezone.now(),
        )
    except (redis.RedisError, OperationalError) as exc:
        raise MetricsUnavailable(type(exc).__name__) from exc
    return _without_deleted_tenants(reading)


def _queue_names() -> list[str]:
    """The queues tasks are sent to: Celery's default and declared ones, and any that a
    periodic task names (an operator may route a schedule elsewhere)."""
    conf = current_app.conf
    names = {conf.task_default_queue, *(queue.name for queue in conf.task_queues or ())}
    names.update(
        PeriodicTask.objects.exclude(queue=None).exclude(queue="").values_list("queue", flat=True)
    )
    return sorted(names)


def _without_deleted_tenants(reading: Reading) -> Reading:
    """Drop series of tenants that no longer exist: a deleted tenant's last sync must not
    look stale forever. Their fields stay in Redis and count on if the slug comes back."""
    known = {"", *Tenant.objects.values_list("schema_name", flat=True)}
    return replace(
        reading,
        runs={key: count for key, count in reading.runs.items() if key[0] in known},
        sync_last_success={
            tenant: moment
            for tenant, moment in reading.sync_last_success.items()
            if tenant in known
        },
    )


class SchedulerCollector:
    """A prometheus_client collector over one Reading."""

    def __init__(self, reading: Reading) -> None:
        self.reading = reading

    def collect(self) -> Iterator[Metric]:
        yield self._runs()
        yield _gauges(
            "scheduler_sync_last_success_timestamp_seconds",
            "Unix time at which the tenant's last successful sync finished; no sample "
            "before its first.",
            "tenant",
            self.reading.sync_last_success,
        )
        yield self._dispatch_lag()
        yield self._heartbeat_age()
        yield _gauges(
            "scheduler_queue_depth_messages",
            "Messages waiting in the Celery queue on the Redis broker, all priorities; "
            "messages already reserved by a worker are not counted.",
            "queue",
            self.reading.queue_depths,
        )
        yield CounterMetricFamily(
            "scheduler_tasks_refused_without_tenant",
            "Tenant tasks a worker refused because their _schema_name header named no "
            "tenant (missing, public or unknown); they never ran.",
            value=self.reading.refused,
        )

    def _runs(self) -> Metric:
        family = CounterMetricFamily(
            "scheduler_job_runs",
            "Job runs by tenant, kind and status. A sync's status is its SyncRun's (ok, "
            "failed); other kinds': ok, failed, retried, refused (no tenant), skipped "
            "(tenant paused). tenant is empty for platform jobs, refused tasks and tasks "
            "killed by their hard time limit.",
            labels=["tenant", "kind", "status"],
        )
        for labels, count in sorted(self.reading.runs.items()):
            family.add_metric(labels, count)
        return family

    def _dispatch_lag(self) -> Metric:
        family = HistogramMetricFamily(
            "scheduler_dispatch_lag_seconds",
            "How late a task beat sent started on a worker: its start minus the nominal "
            "time its schedule was due (first deliveries only).",
            labels=["kind"],
        )
        for kind, lag in sorted(self.reading.lags.items()):
            buckets = [(_bound(bound), count) for bound, count in lag.buckets.items()]
            family.add_metric([kind], [*buckets, ("+Inf", lag.count)], lag.sum)
        return family

    def _heartbeat_age(self) -> Metric:
        family = GaugeMetricFamily(
            "scheduler_beat_heartbeat_age_seconds",
            "Seconds since beat's heartbeat task (every minute) last ran on a worker; no "
            "sample when it never ran.",
        )
        if self.reading.heartbeat_last is not None:
            age = (self.reading.now - self.reading.heartbeat_last).total_seconds()
            family.add_metric([], age)
        return family


def _gauges(name: str, documentation: str, label: str, values: dict[str, float]) -> Metric:
    """A gauge family with one sample per entry of `values`, labelled by its key."""
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _bound(bound: float) -> str:
    return str(float(bound))


# A read-only GET answered to bearer tokens: a CSRF refusal would only hide the 405.
@csrf_exempt
@require_GET
@operator_api()
def metrics_view(request: HttpRequest) -> HttpResponse:
    try:
        reading = metrics_read()
    except MetricsUnavailable as exc:
        return HttpResponse(
            f"Metrics unavailable: Redis did not answer ({exc}).\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
    registry = CollectorRegistry()
    registry.register(SchedulerCollector(reading))
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encode(registry), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
