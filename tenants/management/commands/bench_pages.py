"""Benchmark the server time of three pages on a platform with many tenants.

    python manage.py bench_pages --tenants 10000 --runs 5000 --requests 200

Pages: a tenant's dashboard ("/"), its run history ("/runs/"), both on the
tenant's host, and the operators' tenant list ("/admin/tenants/tenant/") on
BASE_DOMAIN. Each is requested in-process through django.test.Client, so the
figure is Django's own time (middleware, views, queries, templates) without a
network or a WSGI server in front.

Nothing touches the developer's database: the bench runs in a database of its
own, `<database>_bench_pages` on the same server, created and migrated with the
project's `migrate`, and dropped at the end (also on an error or Ctrl-C)
unless --keep is given. It holds one real tenant ("bench", with its schema,
users and --runs sync runs) and --tenants tenant rows in all, the others
without schemas but with their domains, sync tasks and task links, so the
public tables are the size they would be.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_beat.models import PeriodicTask, PeriodicTasks
from django_tenants.utils import schema_context

from scheduling.jobs import SYNC
from scheduling.management.commands.bench_beat import signals_ignored
from scheduling.models import SyncRun, UserSchedule
from scheduling.platform.models import SyncFailure, TenantTask
from scheduling.platform.services import (
    digest_dispatcher_ensure,
    interval_schedule_get,
    tenant_headers,
    tenant_task_name,
)
from tenants.accounts.models import User
from tenants.models import Domain, Tenant
from tenants.services import tenant_create

SUFFIX = "_bench_pages"
BATCH = 2000
REAL_SLUG = "bench"
REAL_NAME = "Bench Co"  # sorts before "Tenant 00001": first on the admin list's first page
NEWEST_ERROR = "bench: the newest run failed (HTTP 503)"
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
ERRORS = ("The source answered HTTP 503.", "The feed is not valid JSON (line 1, column 1).")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _count(text: str) -> int:
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got {text!r}")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def percentile(values: list[float], fraction: float) -> float:
    """Nearest rank: the smallest value with at least `fraction` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# --- The bench database -----------------------------------------------------------


def _drop(name: str) -> None:
    with connection._nodb_cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {connection.ops.quote_name(name)} WITH (FORCE)")


def _switch(name: str) -> None:
    """Point the default connection at database `name` (the next query reconnects)."""
    connection.close()
    settings.DATABASES["default"]["NAME"] = name
    connection.settings_dict["NAME"] = name
    connection.set_schema_to_public()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def bench_database(*, keep: bool, say: Callable[[str], None]) -> Iterator[str]:
    """A fresh, migrated `<database>_bench_pages`, the default connection's for the block."""
    original = settings.DATABASES["default"]["NAME"]
    name = f"{original}{SUFFIX}"
    if len(name.encode()) > 63:  # PostgreSQL's identifier limit
        raise CommandError(f"The bench database name {name!r} is longer than 63 bytes.")
    _drop(name)  # left over from a run that was killed outright, or kept
    with connection._nodb_cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {connection.ops.quote_name(name)} TEMPLATE template0")
    previous_term = signal.signal(signal.SIGTERM, _interrupt)  # a kill also drops it
    try:
        _switch(name)
        yield name
    finally:
        with signals_ignored():
            _switch(original)
            if keep:
                say(f"kept the bench database {name}")
            else:
                _drop(name)
                say(f"dropped the bench database {name}")
        signal.signal(signal.SIGTERM, previous_term)


# --- Seeding ----------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    tenant: Tenant
    admin: User
    operator: User


def _run_outcome(index: int) -> tuple[str, str]:
    """Mostly ok; about one run in nine failed, a few of them in any 24 hours."""
    if index == 0:
        return SyncRun.Status.FAILED, NEWEST_ERROR
    if index % 13 == 5 or index % 29 == 3:
        return SyncRun.Status.FAILED, ERRORS[index % 2]
    return SyncRun.Status.OK, ""


def _runs_create(*, tenant: Tenant, count: int, now: datetime) -> None:
    """`count` runs, one per sync interval back from now, and the public copies of failures."""
    runs = []
    for index in range(count):
        started = now - tenant.sync_interval * index - timedelta(seconds=30)
        status, error = _run_outcome(index)
        ok = status == SyncRun.Status.OK
        runs.append(
            SyncRun(
                task_id=f"bench-{index}",
                nominal_start=started,
                started_at=started,
                finished_at=started + timedelta(seconds=1 + index % 5),
                status=status,
                created_count=index % 3 if ok else 0,
                updated_count=index % 7 if ok else 0,
                unchanged_count=120 if ok else 0,
                error=error,
            )
        )
    SyncRun.objects.bulk_create(runs, batch_size=BATCH)
    failures = [
        SyncFailure(
            tenant=tenant,
            run_public_id=run.public_id,
            started_at=run.started_at,
            finished_at=run.finished_at,
            error=run.error,
        )
        for run in runs
        if run.status == SyncRun.Status.FAILED
    ]
    SyncFailure.objects.bulk_create(failures, batch_size=BATCH)


def _members_create(*, tenant: Tenant, count: int, now: datetime) -> None:
    """Members without a usable password; every other one with a daily digest."""
    password = make_password(None)
    members = User.objects.bulk_create(
        User(email=f"member{n:04d}@{REAL_SLUG}.test", role=User.Role.MEMBER, password=password)
        for n in range(count)
    )
    UserSchedule.objects.bulk_create(
        UserSchedule(
            user=member,
            frequency=UserSchedule.Frequency.DAILY,
            hour=8,
            timezone=tenant.timezone,
            next_due_at=now + timedelta(hours=1 + n % 24),
        )
        for n, member in enumerate(members)
        if n % 2 == 0
    )
    digest_dispatcher_ensure(tenant=tenant)


def _others_create(*, count: int) -> None:
    """`count` tenant rows without schemas, with a primary domain, a sync task and its link."""
    interval = interval_schedule_get(
        seconds=int(settings.TENANT_SYNC_INTERVAL_DEFAULT.total_seconds())
    )
    width = max(5, len(str(count)))
    for start in range(1, count + 1, BATCH):
        numbers = range(start, min(start + BATCH, count + 1))
        tenants = Tenant.objects.bulk_create(
            Tenant(
                name=f"Tenant {n:0{width}d}",
                schema_name=f"t{n:0{width}d}",
                timezone=ZONES[n % len(ZONES)],
                status=Tenant.Status.PAUSED if n % 20 == 0 else Tenant.Status.ACTIVE,
            )
            for n in numbers
        )
        Domain.objects.bulk_create(
            Domain(domain=tenant.primary_host, tenant=tenant, is_primary=True) for tenant in tenants
        )
        tasks = PeriodicTask.objects.bulk_create(
            PeriodicTask(
                name=tenant_task_name(tenant=tenant, kind=TenantTask.Kind.SYNC),
                task=SYNC.task_name,
                headers=tenant_headers(tenant=tenant),
                description=SYNC.description,
                interval=interval,
                enabled=tenant.is_active,
            )
            for tenant in tenants
        )
        TenantTask.objects.bulk_create(
            TenantTask(tenant=tenant, periodic_task=task, kind=TenantTask.Kind.SYNC)
            for tenant, task in zip(tenants, tasks, strict=True)
        )
    PeriodicTasks.update_changed()  # a bulk write must tell beat (DESIGN.md)


def seed(*, tenants: int, runs: int, users: int) -> Seeded:
    now = timezone.now()
    created = tenant_create(
        name=REAL_NAME,
        slug=REAL_SLUG,
        admin_email=f"admin@{REAL_SLUG}.test",
        timezone_name="Europe/Berlin",
    )
    tenant = created.tenant
    with schema_context(tenant.schema_name):
        _members_create(tenant=tenant, count=users - 1, now=now)
        _runs_create(tenant=tenant, count=runs, now=now)
    _others_create(count=tenants - 1)
    operator = User.objects.create_superuser(f"operator@{settings.BASE_DOMAIN}")
    return Seeded(tenant=tenant, admin=created.admin, operator=operator)


# --- Measuring --------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    label: str
    client: Client
    host: str
    path: str
    expected: tuple[str, ...]  # each must appear in the response

    @property
    def url(self) -> str:
        return f"{self.host}{self.path}"


@dataclass
class Result:
    page: Page
    times_ms: list[float]
    queries: list[int]

    def queries_shown(self) -> str:
        low, high = min(self.queries), max(self.queries)
        return str(low) if low == high else f"{low}-{high}"


def _signed_in(host: str, user: User, schema: str) -> Client:
    client = Client(HTTP_HOST=host)
    with schema_context(schema):  # each schema keeps its own sessions
        client.force_login(user)
    return client


def pages_for(seeded: Seeded, *, tenants: int) -> list[Page]:
    host = seeded.tenant.primary_host
    tenant_client = _signed_in(host, seeded.admin, seeded.tenant.schema_name)
    operator_client = _signed_in(settings.BASE_DOMAIN, seeded.operator, "public")
    count = f"{tenants} tenant"  # "10000 tenants", "1 tenant"
    return [
        Page("dashboard", tenant_client, host, "/", (REAL_NAME,)),
        Page("run_history", tenant_client, host, "/runs/", (NEWEST_ERROR,)),
        Page(
            "admin_tenants",
            operator_client,
            settings.BASE_DOMAIN,
            "/admin/tenants/tenant/",
            (REAL_NAME, count),
        ),
    ]


def _fetch(page: Page):
    response = page.client.get(page.path)
    body = response.content.decode(errors="replace")
    missing = [text for text in page.expected if text not in body]
    if response.status_code != 200 or missing:
        where = f" (to {response.get('Location')})" if response.has_header("Location") else ""
        raise CommandError(
            f"{page.label} {page.url}: HTTP {response.status_code}{where}"
            + (f", missing {missing!r}" if missing else "")
        )
    return response


def measure(page: Page, *, requests: int, warmup: int) -> Result:
    for _ in range(warmup):
        _fetch(page)
    result = Result(page=page, times_ms=[], queries=[])
    for _ in range(requests):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            _fetch(page)
            elapsed = time.perf_counter() - started
        result.times_ms.append(elapsed * 1000)
        result.queries.append(len(captured))
    return result


# --- The command --------------------------------------------------------------------------


class Command(BaseCommand):
    help = "Time the tenant dashboard, run history and admin tenant list with many tenants."

    def add_arguments(self, parser):
        parser.add_argument(
            "--tenants", type=_positive_int, default=10000, help="tenant rows in all"
        )
        parser.add_argument(
            "--runs", type=_positive_int, default=5000, help="sync runs of the real tenant"
        )
        parser.add_argument(
            "--users", type=_positive_int, default=25, help="users of the real tenant"
        )
        parser.add_argument(
            "--requests", type=_positive_int, default=200, help="timed requests per page"
        )
        parser.add_argument("--warmup", type=_count, default=5, help="untimed requests first")
        parser.add_argument(
            "--target-ms", type=_positive_float, default=50.0, help="the p95 to meet"
        )
        parser.add_argument(
            "--keep", action="store_true", help="keep the bench database for a look afterwards"
        )

    def say(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()

    def handle(self, *args, **options):
        try:
            with bench_database(keep=options["keep"], say=self.say) as name:
                results = self._bench(name, options)
        except KeyboardInterrupt:
            raise CommandError("Interrupted.") from None
        self._report(results, options)

    def _bench(self, name: str, options: dict) -> list[Result]:
        started = time.perf_counter()
        call_command("migrate", interactive=False, verbosity=0)
        migrated = time.perf_counter()
        self.say(f"created and migrated {name} in {migrated - started:.1f} s")
        seeded = seed(tenants=options["tenants"], runs=options["runs"], users=options["users"])
        self.say(f"seeded in {time.perf_counter() - migrated:.1f} s: {self._rows()}")
        with connection.cursor() as cursor:
            # Planner statistics, as autovacuum would have them on a real database by now.
            cursor.execute("ANALYZE")
        results = []
        for page in pages_for(seeded, tenants=options["tenants"]):
            results.append(measure(page, requests=options["requests"], warmup=options["warmup"]))
        return results

    @staticmethod
    def _rows() -> str:
        connection.set_schema_to_public()
        with schema_context(REAL_SLUG):
            runs, users = SyncRun.objects.count(), User.objects.count()
        return (
            f"{Tenant.objects.count()} tenants (1 with a schema), {runs} runs and {users} users "
            f"in {REAL_SLUG}, {PeriodicTask.objects.count()} periodic tasks, "
            f"{SyncFailure.objects.count()} sync failures"
        )

    def _report(self, results: list[Result], options: dict) -> None:
        target = options["target_ms"]
        self.say(
            f"\npage server time, in-process (django.test.Client), {options['requests']} "
            f"requests each after {options['warmup']} warm-up; DEBUG={settings.DEBUG}"
        )
        self.say(
            f"{'page':<14}{'url':<36}{'requests':>9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}"
            f"{'queries':>9}"
        )
        for r in results:
            times = r.times_ms
            self.say(
                f"{r.page.label:<14}{r.page.url:<36}{len(times):>9}"
                f"{percentile(times, 0.5):>9.1f}{percentile(times, 0.95):>9.1f}"
                f"{max(times):>9.1f}{r.queries_shown():>9}"
            )
        for r in results:
            p95 = percentile(r.times_ms, 0.95)
            verdict = "met" if p95 < target else "NOT met"
            self.say(f"{r.page.label}: p95 {p95:.1f} ms (target {target:g} ms: {verdict})")
        varied = [r.page.label for r in results if len(set(r.queries)) > 1]
        if varied:
            raise CommandError(f"The number of queries per request varied on: {', '.join(varied)}.")
