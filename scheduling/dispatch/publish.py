"""Publish many Celery task messages at once, exactly as a stock worker of this project reads them.

Beat's stock path sends one message per `apply_async`, a round trip to Redis each: about
1.8k messages a second on a 2-core machine, 55 s for a herd of 100k slots. `publish_batch`
sends a batch in one of two ways (`manage.py bench_publish`, 100k messages, Redis on
loopback):

  redis (70k/s)   the JSON envelope kombu's Redis transport writes, built here and pushed
                  with pipelined LPUSHes: one LPUSH per list and one round trip per chunk.
                  The fastest, so used whenever the broker is Redis;
  kombu (6.5k/s)  Celery's own message (app.amqp.as_task_v2) and publish
                  (send_task_message) through one kombu Producer, batched at the transport
                  (Producer.batch, a Redis pipeline) where the transport can; building
                  each message the Celery way is most of its cost. Used for any other
                  broker (amqp://), and for the odd message the redis way can't write
                  exactly.

Either way a message is what `apply_async` of the same task would have written, field for
field, but its delivery tag and its expiration property (a TTL counted from the moment of
sending): the same protocol-2 headers (built by as_task_v2, once per kind of message in
the redis way), the task's own time limits and default expiry, the queue, priority list
(`<queue>\\x06\\x16<step>`) and routing the PeriodicTask asks for, base64 body, and the
`_schema_name` header tenant-schemas-celery adds when a message lacks one. The tests
compare both ways with apply_async entry by entry. The redis way leaves to kombu what it
can't copy exactly: a message routed through a named exchange, a compressed one, one for
a queue with an expiry, any message when something listens to before/after_task_publish
or Celery sends task-sent events. apply_async's argument check (Task.typing) and shadow
names are not applied. The broker's unacked/visibility bookkeeping starts when a worker
fetches a message, so a message pushed this way is redelivered like any other.

The broker URL is honoured as kombu reads it (redis://, rediss://, a unix socket, the
database number, transport options such as global_keyprefix): the pipeline comes from the
kombu channel's own Redis client.

Failure. A batch goes out in chunks, one pipeline each, never retried by kombu's Redis
client. The report says which messages are published (their chunk was confirmed),
unconfirmed (their chunk failed midway: some may have reached the broker) and unsent. The
caller marks the published ones and sends the others again later: their task ids come
from their occurrence keys, so a copy that did arrive carries the same id as its
re-publish, for the worker's duplicate guard to recognise (until that guard is in place,
a message that arrived twice runs twice).

Signals. A stop signal (SIGTERM, SIGINT) that arrives during a batch is held until the
batch ends, so a handler that raises (celery beat's raises SystemExit) never cuts a chunk
in half; the chunks not yet sent are abandoned. A caller that must record what was
published before such a handler runs holds the signals itself, and checks
`stop_requested()` between batches:

    with signals_held():
        for batch in batches:
            if stop_requested():
                break  # what is left is published again by whoever runs next
            report = publish_batch(batch)
            ...  # mark report.published as sent
    # a SIGTERM that arrived above reaches its handler here
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring_ascii
from typing import Any, Literal, NamedTuple

from celery import signals as celery_signals
from celery.app.task import extract_exec_options
from celery.utils.nodenames import anon_nodename
from django_celery_beat.models import PeriodicTask
from django_tenants.utils import get_public_schema_name
from kombu import Connection, serialization
from kombu.entity import maybe_delivery_mode
from kombu.transport.redis import Transport as RedisTransport
from kombu.utils.json import JSONEncoder
from tenant_schemas_celery.task import headers_with_schema

from config.celery import app
from scheduling.beat import NOMINAL_TIME_HEADER
from scheduling.dispatch import occurrence_key, occurrence_task_id

logger = logging.getLogger(__name__)

OCCURRENCE_HEADER = "occurrence"
SCHEMA_HEADER = "_schema_name"
PERIODIC_TASK_HEADER = "periodic_task_name"
# Messages per pipeline round trip: large enough that the round trip is noise, small
# enough that a failed chunk leaves few messages unconfirmed.
CHUNK_SIZE = 1000
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Send options the redis way reproduces; any other (a task's `compression`, a route's
# extra) leaves the message to kombu.
_PIPELINE_OPTIONS = frozenset(
    {"queue", "exchange", "routing_key", "priority", "expiration", "serializer", "delivery_mode"}
)

Method = Literal["redis", "kombu"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One task message to publish. `headers` are the custom ones (`_schema_name`,
    `periodic_task_name`, `nominal_time`, `occurrence`); `expires` an aware time, or None
    for the task's own expiry; queue, exchange, routing key and priority as on a
    PeriodicTask (None: as Celery routes the task)."""

    task_name: str
    task_id: str
    headers: Mapping[str, Any]
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    expires: datetime | None = None
    queue: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    priority: int | None = None


@dataclass(frozen=True)
class PublishReport:
    """What became of a batch, each message in exactly one list, in batch order.

    published    in the broker (its chunk was confirmed);
    unconfirmed  its chunk failed midway: it may or may not be in the broker;
    unsent       never sent: after a failure, or abandoned on a stop signal.
    """

    method: Method
    published: Sequence[Outgoing]
    unconfirmed: Sequence[Outgoing] = ()
    unsent: Sequence[Outgoing] = ()
    error: Exception | None = None

    @property
    def complete(self) -> bool:
        return not self.unconfirmed and not self.unsent


def outgoing_build(
    *,
    periodic_task: PeriodicTask,
    nominal_at: datetime,
    expires: datetime | None,
    due_at: datetime | None = None,
) -> Outgoing:
    """The message of `periodic_task`'s occurrence at `nominal_at`, as beat would send it:
    the row's task, arguments, headers and routing, plus `periodic_task_name`,
    `nominal_time` and `occurrence`, with the task id derived from the occurrence key.

    `due_at` is when the occurrence is due to start, the slot plus the schedule's jitter
    (scheduling.dispatch.engine); the `nominal_time` header carries it, and the key the
    slot. It expires at the row's own expiry when it has one (`expires`, or `expire_seconds`
    counted from the nominal time, so a re-publish expires when the first copy did),
    otherwise at `expires`.
    """
    nominal = nominal_at.astimezone(UTC).replace(microsecond=0)
    key = occurrence_key(periodic_task.pk, nominal)
    if periodic_task.expires is not None:
        expires = periodic_task.expires
    elif periodic_task.expire_seconds is not None:
        expires = nominal + timedelta(seconds=periodic_task.expire_seconds)
    return Outgoing(
        task_name=periodic_task.task,
        task_id=occurrence_task_id(key),
        headers={
            # As tenant-schemas-celery would add it when sending from beat's public schema.
            SCHEMA_HEADER: get_public_schema_name(),
            **_json_parsed(periodic_task.headers or "{}"),
            PERIODIC_TASK_HEADER: periodic_task.name,
            NOMINAL_TIME_HEADER: (due_at or nominal).astimezone(UTC).isoformat(),
            OCCURRENCE_HEADER: key,
        },
        args=_json_parsed(periodic_task.args or "[]"),
        kwargs=_json_parsed(periodic_task.kwargs or "{}"),
        expires=expires,
        queue=periodic_task.queue or None,
        exchange=periodic_task.exchange or None,
        routing_key=periodic_task.routing_key or None,
        priority=periodic_task.priority,
    )


def outgoing_check(periodic_task: PeriodicTask) -> None:
    """Raise ValueError when `periodic_task`'s message can't be built (arguments or
    headers that are no JSON), as outgoing_build would: a caller that builds its messages
    later, after recording them, checks first. Cheap: the parsed fields are cached."""
    _json_parsed(periodic_task.args or "[]")
    _json_parsed(periodic_task.kwargs or "{}")
    {**_json_parsed(periodic_task.headers or "{}")}


@functools.lru_cache(maxsize=4096)
def _json_parsed(text: str) -> Any:
    """A row's JSON field, parsed once: most rows share the same few arguments and
    headers. Shared between messages, so never mutated (Outgoing copies none of it)."""
    return json.loads(text)


def publish_batch(
    messages: Sequence[Outgoing],
    *,
    connection: Connection | None = None,
    via: Literal["auto", "redis", "kombu"] = "auto",
    chunk_size: int = CHUNK_SIZE,
    finish_on_stop: bool = False,
) -> PublishReport:
    """Publish `messages` to the broker (or over `connection`) and say what became of each.

    `via` picks the way ("auto": redis on a Redis broker, else kombu; see the module
    docstring). An error while publishing (the broker lost, a message that can't be
    encoded) ends the batch and is in the report, never raised; a bad `via` or
    `chunk_size` raises ValueError. Stop signals are held while the batch runs; when one
    arrives the chunks not yet sent are abandoned (unsent), unless `finish_on_stop`:
    then the whole batch goes out first (the scheduler's batches are recorded as sent
    already, and a batch takes a fraction of a second).
    """
    if via not in ("auto", "redis", "kombu"):
        raise ValueError(f"via must be auto, redis or kombu, got {via!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    messages = list(messages)
    done = 0
    given = None if connection is None else app.amqp.Producer(connection, auto_declare=False)
    with signals_held(), app.producer_or_acquire(given) as producer:
        method = _method(producer, via=via)
        try:
            with producer.batch(max_size=chunk_size) as batch:
                publisher = _KombuPublisher(producer, batch)
                if method == "redis":
                    publisher = _RedisPublisher(producer, publisher)
                while done < len(messages) and (finish_on_stop or not stop_requested()):
                    publisher.publish(messages[done : done + chunk_size], now=app.now())
                    done = min(done + chunk_size, len(messages))
        except Exception as exc:
            failed = messages[done : done + chunk_size]
            logger.warning(
                "Publishing %s messages: %s published, then %r; %s unconfirmed",
                len(messages),
                done,
                exc,
                len(failed),
            )
            return PublishReport(
                method, messages[:done], failed, messages[done + chunk_size :], error=exc
            )
    if done < len(messages):
        logger.info(
            "Stop requested: %s of %s messages left unsent", len(messages) - done, len(messages)
        )
    return PublishReport(method, messages[:done], unsent=messages[done:])


# --- Signals --------------------------------------------------------------------

_held: list[int] | None = None  # stop signals received while held; None when not holding


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGTERM and SIGINT until the block ends, then pass them to their own handlers.

    Nested blocks share the outermost one. Only the main thread holds signals: Python runs
    handlers there, so no handler can interrupt work in another thread anyway.
    """
    global _held
    if _held is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda signum, frame: received.append(signum))
        for signum in STOP_SIGNALS
        if signal.getsignal(signum) is not None  # None: set outside Python, can't be restored
    }
    _held = received
    try:
        yield
    finally:
        _held = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)


def stop_requested() -> bool:
    """Whether a stop signal arrived during the current `signals_held` block."""
    return bool(_held)


# --- The two ways ------------------------------------------------------------------


class _Plan(NamedTuple):
    """How Celery's apply_async would send a message: the task's own options under the
    message's, routed."""

    time_limit: float | None
    soft_time_limit: float | None
    expires: datetime | None
    default_expires: datetime | None  # the task's own, for a message without one
    ignore_result: bool | None
    options: dict[str, Any]  # as send_task_message takes them; "queue" is a kombu Queue


def _plan(message: Outgoing, now: datetime) -> _Plan:
    task = _registered_task(message.task_name)
    options = {}
    if task is not None:
        options = {k: v for k, v in extract_exec_options(task).items() if v is not None}
    options |= {
        name: value
        for name in ("queue", "exchange", "routing_key", "priority")
        if (value := getattr(message, name)) is not None
    }
    time_limit = options.pop("time_limit", None)
    soft_time_limit = options.pop("soft_time_limit", None)
    default_expires = _expiry(options.pop("expires", None), now)
    expires = message.expires or default_expires
    if expires is not None:
        options["expiration"] = max((expires - now).total_seconds(), 0)
    options = app.amqp.router.route(options, message.task_name, message.args, message.kwargs, task)
    ignore_result = None if task is None else task.ignore_result
    return _Plan(time_limit, soft_time_limit, expires, default_expires, ignore_result, options)


def _expiry(value: Any, now: datetime) -> datetime | None:
    """A task's own `expires` (seconds from now, or a time) as a time."""
    if isinstance(value, int | float):
        return now + timedelta(seconds=value)
    return value


def _registered_task(name: str):
    if name not in app.tasks:
        _task_modules_import()
    return app.tasks.get(name)


@functools.cache
def _task_modules_import() -> None:
    """Import the project's task modules once, as a worker or beat does on start."""
    app.loader.import_default_modules()


def _method(producer, *, via: str) -> Method:
    """The way to publish through `producer`: redis when what kombu would do on publishing
    is only the LPUSH the redis way does (a Redis broker, and no task-sent events or
    publish signals to send), unless `via` says kombu."""
    pipelined = (
        isinstance(producer.connection.transport, RedisTransport)
        and not app.conf.task_send_sent_event
        and not celery_signals.before_task_publish.receivers
        and not celery_signals.after_task_publish.receivers
        and not celery_signals.task_sent.receivers
    )
    if via == "redis" and not pipelined:
        raise ValueError("The redis way needs a Redis broker, and no publish signals.")
    return "redis" if pipelined and via != "kombu" else "kombu"


class _KombuPublisher:
    """Celery's message, through Celery's publish, into the producer's batch."""

    def __init__(self, producer, batch) -> None:
        self.producer = producer
        self.batch = batch  # the producer's batch context: flush() sends what it holds
        self.origin = anon_nodename()
        self.reply_to = app.thread_oid

    def publish(self, chunk: Sequence[Outgoing], *, now: datetime) -> None:
        for message in chunk:
            self.send(message, now=now)
        self.batch.flush()

    def send(self, message: Outgoing, *, now: datetime) -> None:
        """Build and send `message` as send_task does (into the producer's batch, if any)."""
        plan = _plan(message, now)
        app.amqp.send_task_message(
            self.producer,
            message.task_name,
            self.task_message(message, plan),
            headers=headers_with_schema(message.headers),
            **plan.options,
        )

    def task_message(self, message: Outgoing, plan: _Plan):
        """Celery's protocol-2 message: headers, properties, body and sent event."""
        return app.amqp.as_task_v2(
            message.task_id,
            message.task_name,
            message.args,
            message.kwargs,
            expires=plan.expires,
            time_limit=plan.time_limit,
            soft_time_limit=plan.soft_time_limit,
            reply_to=self.reply_to,
            origin=self.origin,
            ignore_result=plan.ignore_result,
            create_sent_event=app.conf.task_send_sent_event,
            **plan.options,
        )


class _Template(NamedTuple):
    """What the envelopes of one kind of message (task, arguments, routing) share, encoded
    once: JSON encoding is most of a message's cost, and most of an envelope is shared."""

    list_key: str  # the Redis list: the queue, or its priority list
    head: str  # '{"body": …, "content-encoding": …, "content-type": …, "headers": {<shared>'
    middle: str  # '}, "properties": {<shared>'
    header_names: frozenset[str]  # Celery's: a custom header may not replace one
    expires: datetime | None  # of a message without its own


class _RedisPublisher:
    """kombu's Redis envelopes from templates, one pipeline per chunk."""

    def __init__(self, producer, kombu: _KombuPublisher) -> None:
        self.producer = producer
        self.channel = producer.channel
        self.kombu = kombu  # for a message the redis way can't write exactly
        self.templates: dict[tuple, _Template | None] = {}

    def publish(self, chunk: Sequence[Outgoing], *, now: datetime) -> None:
        lists: dict[str, list[str]] = {}
        for message in chunk:
            template = self.template(message, now=now)
            if template is None or not template.header_names.isdisjoint(message.headers):
                self.kombu.send(message, now=now)
            else:
                lists.setdefault(template.list_key, []).append(
                    _envelope(template, message, now=now)
                )
        self.kombu.batch.flush()
        with self.channel.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            for list_key, envelopes in lists.items():
                pipe.lpush(list_key, *envelopes)  # in order: as one LPUSH each would
            pipe.execute()

    def template(self, message: Outgoing, *, now: datetime) -> _Template | None:
        kind = (
            message.task_name,
            message.queue,
            message.exchange,
            message.routing_key,
            message.priority,
            repr(message.args),
            repr(message.kwargs),
        )
        if kind not in self.templates:
            self.templates[kind] = self.template_build(message, now=now)
        return self.templates[kind]

    def template_build(self, message: Outgoing, *, now: datetime) -> _Template | None:
        """Celery's message for `message` (as_task_v2, send_task_message's routing, the
        producer's serialization, the Redis channel's envelope), less what differs from
        one message to the next; None when the redis way can't write it exactly."""
        plan = _plan(message, now)
        options = plan.options
        queue = options["queue"]
        if (
            set(options) - _PIPELINE_OPTIONS
            or app.conf.task_compression
            or queue.exchange.type != "direct"
            or (options.get("exchange") and options.get("routing_key"))  # a named exchange
            or queue.expires is not None
            or "x-expires" in (queue.queue_arguments or {})
        ):
            return None
        headers, properties, body, _ = self.kombu.task_message(message, plan)
        content_type, content_encoding, payload = serialization.dumps(
            body, serializer=options.get("serializer") or app.conf.task_serializer
        )
        body, body_encoding = self.channel.encode_body(payload, self.channel.body_encoding)
        self.producer.maybe_declare(queue)  # as send_task_message does: the binding in Redis
        priority = options.get("priority") or self.channel.default_priority
        step = self.channel.priority(
            max(min(int(priority), self.channel.max_priority), self.channel.min_priority)
        )
        delivery_mode = (
            options.get("delivery_mode")
            or queue.exchange.delivery_mode
            or app.conf.task_default_delivery_mode
        )
        shared_headers = {k: v for k, v in headers.items() if k not in _OWN_HEADERS}
        shared_properties = {
            "reply_to": properties["reply_to"],
            "delivery_mode": maybe_delivery_mode(delivery_mode),
            "delivery_info": {"exchange": "", "routing_key": queue.name},
            "priority": priority,
            "body_encoding": body_encoding,
        }
        envelope = {
            "body": body,
            "content-encoding": content_encoding,
            "content-type": content_type,
        }
        return _Template(
            list_key=f"{queue.name}{self.channel.sep}{step}" if step else queue.name,
            head=f'{_json(envelope)[:-1]}, "headers": {{{_json(shared_headers)[1:-1]}',
            middle=f'}}, "properties": {{{_json(shared_properties)[1:-1]}',
            header_names=frozenset(headers),
            expires=plan.default_expires,
        )


_json = JSONEncoder().encode  # kombu's dumps, without a new encoder per call
_quoted = encode_basestring_ascii  # a str as JSON, as _json writes it
_OWN_HEADERS = frozenset({"id", "root_id", "expires"})  # the headers that differ per message


def _envelope(template: _Template, message: Outgoing, *, now: datetime) -> str:
    """The JSON kombu's Redis channel would LPUSH for `message`: the template's shared
    parts, then the message's own headers and properties."""
    task_id = _quoted(message.task_id)
    expires = message.expires or template.expires
    expiration = ""
    if expires is not None:
        seconds = max((expires - now).total_seconds(), 0)
        expiration = f', "expiration": "{int(seconds * 1000)}"'
    custom = _json(headers_with_schema(message.headers))[1:-1]  # never empty: _schema_name
    return (
        f'{template.head}, "id": {task_id}, "root_id": {task_id}, '
        f'"expires": {_quoted(expires.isoformat()) if expires else "null"}, {custom}'
        f'{template.middle}, "correlation_id": {task_id}, '
        f'"delivery_tag": "{uuid.uuid4()}"{expiration}}}}}'
    )
