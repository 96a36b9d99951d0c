"""The leader lease of the scheduler processes, with the epoch as a fencing token.

Any number of scheduler processes may run. Each one starts a `LeaderLease`. The
process that holds the lease acts, and the others stand by, polling, until the
lease is released or runs out:

    lease = LeaderLease("beat").start()
    while running:
        epoch = lease.epoch                   # None while standing by
        if epoch is None:
            wait(); continue
        with lease.fenced(epoch):             # one transaction
            ...read due rows, record occurrences, advance them...
        ...publish...

The lease is one row of `SchedulerLease`: name, holder, epoch, renewed_at and
expires_at. Every acquisition adds one to the epoch.

Why a lease row and not a session advisory lock
-----------------------------------------------
An advisory lock lasts as long as the holder's database session, and nothing
bounds that in time:
- a leader that is paused or hung but still connected keeps the lock forever;
- when a machine vanishes, the server holds its session until TCP keepalive gives
  up, two hours by default;
- a transaction-pooling proxy such as PgBouncer breaks session locks altogether.
A row with an expiry bounds all of these the same way. Whatever happens to the
leader, its lease ends `ttl` seconds after its last renewal, by the database
clock. The same row carries the epoch that fences a deposed leader's writes, and
anyone who can read a table sees who leads.

The price is that after a crash the standbys wait out the lease instead of taking
over at once. With the defaults (ttl 10 s, renewal every 2 s, poll 0.5 s), a
standby takes over 8-10.5 s after the leader is killed. After a clean release it
takes over within one poll.

Time
----
PostgreSQL makes every expiry decision. Acquire and renew are single UPDATE
statements, and they and the fence compare expires_at with clock_timestamp(). That
is the database's time at the moment the row is examined, even when the statement
first had to wait for a row lock (now() would be the time the statement began).
No wall-clock time leaves this process, so machines whose clocks disagree by any
amount still agree on who leads.

The holder also has to know when to stop without asking the database. It counts
its lease from the moment it *sent* the renewal, on time.monotonic(), which clock
steps and skew don't move. The database writes the new expiry as its own time plus
`ttl`, and that time is later than the moment of sending, so the database keeps the
lease for at least `ttl` from it. The holder stops acting at LOCAL_SHARE of that
time. The rest of the lease covers drift between the two clocks' rates (parts per
million) and a batch begun just before the deadline.

Fencing, and why READ COMMITTED is enough
-----------------------------------------
`fence` runs one statement inside the caller's transaction:

    SELECT ... FROM lease WHERE name = %s AND epoch = %s
                             AND expires_at > clock_timestamp() FOR SHARE

A takeover is an UPDATE of that row. There are three cases:
1. The takeover committed before the fence's statement began. The statement's
   snapshot shows the new epoch, so no row matches. fence raises LeaseLost and the
   transaction rolls back.
2. The takeover is in flight: the row is locked by its uncommitted UPDATE.
   FOR SHARE waits for it. If it commits, READ COMMITTED's rule for locking reads
   applies: PostgreSQL fetches the newest version of the row and checks the WHERE
   clause against that version, not against the statement's snapshot. The epoch
   no longer matches, so the result is LeaseLost again. If the takeover rolls back,
   the old row still matches.
3. The fence got there first. Its share lock conflicts with the lock an UPDATE
   needs (FOR NO KEY UPDATE), and it is held until the caller's transaction ends.
   The takeover waits, and then checks its own WHERE clause against the row as it
   stands.
In every case, a transaction that passed the fence for epoch E has committed, or
rolled back, before epoch E+1 is committed. The new leader's statements all come
later, so they see everything the old leader committed. Nothing here relies on a
snapshot staying fixed, which READ COMMITTED doesn't promise. It relies on a row
lock held to the end of the transaction, and on the check against the newest row
version that READ COMMITTED makes for locking reads. Under REPEATABLE READ, case 2
raises a serialization failure instead, which is safe too.

The fence may come anywhere in the transaction. Writes made before it are not
yet committed, and they roll back with the transaction. Coming first is cheapest:
there is nothing to undo.

What the share lock costs: the holder's own renewal updates the row, so it waits
for any fenced transaction in progress. Keep fenced transactions far shorter than
the ttl. A leader that stalls inside a fenced transaction (paused or hung) would
hold off the takeover. So the fence also sets that transaction's
idle_in_transaction_session_timeout to the lease's ttl: the server then ends the
stalled session and rolls its transaction back.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import NamedTuple

import psycopg
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from psycopg.conninfo import make_conninfo

logger = logging.getLogger(__name__)

TABLE = "public.scheduling_platform_schedulerlease"  # scheduling.platform.models.SchedulerLease
# The holder stops acting after this share of the ttl since it sent its last renewal.
LOCAL_SHARE = 0.8
# Renewals per ttl: a holder whose database stops answering gets four tries before
# its deadline at LOCAL_SHARE.
RENEWALS_PER_TTL = 5

_ENSURE = f"""
    INSERT INTO {TABLE} (name, holder, epoch, renewed_at, expires_at)
    VALUES (%(name)s, '', 0, now(), now())
    ON CONFLICT (name) DO NOTHING
"""
# The holder may take its own lease again, under a new epoch, after stepping down
# locally (for example when a renewal came back too late).
_ACQUIRE = f"""
    UPDATE {TABLE}
    SET holder = %(holder)s, epoch = epoch + 1,
        renewed_at = clock_timestamp(), expires_at = clock_timestamp() + %(ttl)s
    WHERE name = %(name)s AND (expires_at <= clock_timestamp() OR holder = %(holder)s)
    RETURNING epoch
"""
# A lease that has run out is not renewed, even if nobody took it: its holder has
# stopped acting by then, and taking the lease again starts a new epoch.
_RENEW = f"""
    UPDATE {TABLE} SET renewed_at = clock_timestamp(), expires_at = clock_timestamp() + %(ttl)s
    WHERE name = %(name)s AND holder = %(holder)s AND epoch = %(epoch)s
      AND expires_at > clock_timestamp()
"""
# Released: run out as of its last renewal.
_RELEASE = f"""
    UPDATE {TABLE} SET holder = '', expires_at = renewed_at
    WHERE name = %(name)s AND holder = %(holder)s
"""
# expires_at - renewed_at is the holder's ttl.
_FENCE = f"""
    SELECT set_config(
        'idle_in_transaction_session_timeout',
        ceil(extract(epoch FROM expires_at - renewed_at) * 1000)::bigint::text,
        true
    )
    FROM {TABLE}
    WHERE name = %(name)s AND epoch = %(epoch)s AND expires_at > clock_timestamp()
    FOR SHARE
"""


class LeaseLost(Exception):
    """The epoch the caller acted under is no longer current: the caller must stop acting."""


class Tenure(NamedTuple):
    """One continuous hold of the lease."""

    epoch: int
    deadline: float  # on time.monotonic(): the holder stops acting then unless renewed


def lease_conninfo(alias: str = "default") -> str:
    """A libpq connection string for the server, database and credentials Django uses.

    The cursor class, adapters and prepare threshold are left out: they are Python
    objects, not connection parameters, and the lease reads only integers.
    """
    params = connections[alias].get_connection_params()
    for python_only in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(python_only, None)
    return make_conninfo(**params)


def fence(
    cursor_or_connection: BaseDatabaseWrapper | CursorWrapper, *, name: str, epoch: int
) -> None:
    """Let the caller's transaction commit only while `epoch` is the current lease epoch.

    Call it inside `transaction.atomic()` on a Django connection or cursor. It
    raises LeaseLost, and marks the atomic block for rollback, when the lease has
    moved on to a newer epoch or has run out. Let LeaseLost propagate out of the
    outermost atomic block: only then does everything the transaction wrote roll
    back. The module docstring explains why this is safe under READ COMMITTED.
    """
    db = cursor_or_connection
    if isinstance(db, CursorWrapper):
        db = db.db
    if not db.in_atomic_block:
        # In autocommit the share lock would end with the statement, and protect nothing.
        raise transaction.TransactionManagementError("fence() must run inside transaction.atomic()")
    with db.cursor() as cursor:
        cursor.execute(_FENCE, {"name": name, "epoch": epoch})
        current = cursor.fetchone() is not None
    if not current:
        transaction.set_rollback(True, using=db.alias)
        raise LeaseLost(f"lease {name!r}: epoch {epoch} is no longer current")


class LeaderLease:
    """One process's claim on the lease `name`: it holds the lease, or it stands by.

    `start()` connects and makes a first attempt. A keeper thread then renews the
    lease every ttl / RENEWALS_PER_TTL while held, and otherwise tries to take it
    every `poll` seconds. The thread uses its own autocommit connection, so the
    renewals never wait for the caller's transactions (only for fenced ones, see
    the module docstring). `stop()` releases the lease; call it on SIGTERM, for
    example from the scheduler's close().
    """

    def __init__(
        self, name: str = "beat", *, ttl: float = 10.0, poll: float = 0.5, conninfo: str = ""
    ):
        """`conninfo` is a libpq connection string; by default, Django's database."""
        if ttl <= 0 or poll <= 0:
            raise ValueError(f"ttl and poll must be positive seconds, got {ttl} and {poll}")
        self.name = name
        self.ttl = ttl
        self.poll = poll
        # The random part tells apart two processes that reuse a pid, as in containers.
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._conninfo = conninfo or lease_conninfo()
        self._db: psycopg.Connection | None = None
        self._tenure: Tenure | None = None
        self._tenure_lock = threading.Lock()
        self._stopping = threading.Event()
        self._keeper: threading.Thread | None = None

    def __enter__(self) -> LeaderLease:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def epoch(self) -> int | None:
        """The epoch to fence this process's work with, or None while it must not act."""
        tenure = self._tenure
        if tenure is None or time.monotonic() >= tenure.deadline:
            return None
        return tenure.epoch

    def is_leader(self) -> bool:
        """Whether this process may act now. Check it before each batch."""
        return self.epoch is not None

    @contextlib.contextmanager
    def fenced(self, epoch: int, *, using: str = "default") -> Iterator[None]:
        """A transaction that commits only if `epoch` is still the current epoch.

        Pass the epoch the batch was begun under. If the lease has moved on, this
        raises LeaseLost before the block runs, and this process steps down.
        """
        with transaction.atomic(using=using):
            try:
                fence(connections[using], name=self.name, epoch=epoch)
            except LeaseLost:
                self._step_down(epoch, "its epoch was refused by the fence")
                raise
            yield

    def start(self) -> LeaderLease:
        """Connect, try once to take the lease, then keep trying or renewing in a thread.

        A database that can't be reached raises here, so a misconfigured process
        fails at start. Later errors are logged and retried.
        """
        self._db = self._connect()
        self._attempt()
        self._keeper = threading.Thread(target=self._keep, name=f"lease-{self.name}", daemon=True)
        self._keeper.start()
        return self

    def stop(self) -> None:
        """Stop the keeper and release the lease, so a standby takes over within one poll."""
        self._stopping.set()
        if self._keeper is not None:
            self._keeper.join()  # each of its statements ends within the ttl
        with self._tenure_lock:
            self._tenure = None
        if self._db is None:
            return
        try:
            self._db.execute(_RELEASE, {"name": self.name, "holder": self.holder})
            logger.info("lease %s: released by %s", self.name, self.holder)
        except psycopg.Error as error:
            logger.warning("lease %s: not released (%s); it runs out by itself", self.name, error)
        finally:
            self._db.close()
            self._db = None

    def _keep(self) -> None:
        while not self._stopping.is_set():
            held = self._tenure is not None
            self._stopping.wait(self.ttl / RENEWALS_PER_TTL if held else self.poll)
            if not self._stopping.is_set():
                self._attempt()

    def _attempt(self) -> None:
        try:
            self._renew_or_acquire()
        except psycopg.Error as error:
            logger.warning("lease %s: database error, retrying: %s", self.name, error)
            self._disconnect()

    def _renew_or_acquire(self) -> None:
        tenure = self._tenure
        if tenure is not None and time.monotonic() >= tenure.deadline:
            self._step_down(tenure.epoch, "it was not renewed in time")
            tenure = None
        if tenure is None:
            self._acquire()
        else:
            self._renew(tenure)

    def _acquire(self) -> None:
        sent = time.monotonic()
        row = self._execute(_ACQUIRE).fetchone()
        if row is not None:
            with self._tenure_lock:
                self._tenure = Tenure(row[0], sent + self.ttl * LOCAL_SHARE)
            logger.info("lease %s: acquired by %s, epoch %d", self.name, self.holder, row[0])

    def _renew(self, tenure: Tenure) -> None:
        sent = time.monotonic()
        if not self._execute(_RENEW, epoch=tenure.epoch).rowcount:
            self._step_down(tenure.epoch, "it was taken over or ended")
            return
        with self._tenure_lock:
            if self._tenure is tenure:  # not stepped down meanwhile by a refused fence
                self._tenure = tenure._replace(deadline=sent + self.ttl * LOCAL_SHARE)

    def _step_down(self, epoch: int, reason: str) -> None:
        with self._tenure_lock:
            if self._tenure is None or self._tenure.epoch != epoch:
                return
            self._tenure = None
        logger.warning(
            "lease %s: %s steps down from epoch %d: %s", self.name, self.holder, epoch, reason
        )

    def _execute(self, sql: str, **params) -> psycopg.Cursor:
        if self._db is None:
            self._db = self._connect()
        ttl = timedelta(seconds=self.ttl)
        return self._db.execute(
            sql, {"name": self.name, "holder": self.holder, "ttl": ttl} | params
        )

    def _connect(self) -> psycopg.Connection:
        """An autocommit connection whose every wait ends within the ttl.

        Statements time out after the ttl, and so does unacknowledged traffic
        (tcp_user_timeout), so a keeper never hangs on a vanished server.
        """
        ttl_ms = math.ceil(self.ttl * 1000)
        db = psycopg.connect(
            make_conninfo(
                self._conninfo,
                connect_timeout=max(2, math.ceil(self.ttl)),
                tcp_user_timeout=ttl_ms,
            ),
            autocommit=True,
            prepare_threshold=None,  # no prepared statements: PgBouncer may sit in between
        )
        try:
            db.execute("SELECT set_config('statement_timeout', %s, false)", (str(ttl_ms),))
            db.execute(_ENSURE, {"name": self.name})
        except psycopg.Error:
            db.close()
            raise
        return db

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
