"""Measure how long the scheduler lease takes to change hands.

    python manage.py bench_lease --kills 5 --terms 5 --standbys 2 --ttl 10 --poll 0.5

It starts 1 + --standbys processes contending for a lease of its own
(`bench-<random>`). Then, round after round, it signals whichever process leads:
SIGKILL for --kills rounds (a crash), then SIGTERM for --terms rounds (a clean
release). It measures the gap from the signal to the lease's next epoch in the
database, which it polls every 10 ms. A fresh process replaces each one signalled,
so every round has the same standbys, all connected and polling.

It prints each round, then per signal the rounds, min, median and max gaps, and
the bound the configuration gives: ttl + poll after SIGKILL (the lease runs out,
then the next poll takes it), poll after SIGTERM.

The processes are stopped and the lease row deleted at the end, also on an error
or Ctrl-C.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import statistics
import threading
import time
import uuid
from collections.abc import Callable

import psycopg
from django.core.management.base import BaseCommand, CommandError

from scheduling.dispatch.lease import TABLE, LeaderLease, lease_conninfo

OBSERVE_EVERY = 0.01


def _contend(name: str, ttl: float, poll: float, conninfo: str, ready) -> None:
    """One contender (a spawned process): hold the lease or stand by until signalled."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with LeaderLease(name, ttl=ttl, poll=poll, conninfo=conninfo) as lease:
        ready.put((os.getpid(), lease.holder))
        threading.Event().wait()


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(0)  # leaves the with block, which releases the lease


class Command(BaseCommand):
    help = "Measure the scheduler lease's takeover gap after SIGKILL and after SIGTERM."

    def add_arguments(self, parser):
        parser.add_argument("--kills", type=int, default=5, help="SIGKILL rounds")
        parser.add_argument("--terms", type=int, default=5, help="SIGTERM rounds")
        parser.add_argument("--standbys", type=int, default=2)
        parser.add_argument("--ttl", type=float, default=10.0, help="lease ttl, seconds")
        parser.add_argument("--poll", type=float, default=0.5, help="standby poll, seconds")

    def handle(self, *args, kills, terms, standbys, ttl, poll, **options):
        if min(kills, terms) < 0 or standbys < 1:
            raise CommandError("--kills and --terms must be >= 0, --standbys >= 1")
        self.name = f"bench-{uuid.uuid4().hex[:8]}"
        self.lease_args = (ttl, poll, lease_conninfo())
        self.spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no shared sockets
        self.ready = self.spawn.Queue()
        self.contenders: dict[str, multiprocessing.Process] = {}  # by holder
        self.timeout = 3 * ttl + 30
        gaps: dict[str, list[float]] = {"SIGKILL": [], "SIGTERM": []}
        with psycopg.connect(self.lease_args[2], autocommit=True) as self.db:
            try:
                self.db.execute(f"SELECT FROM {TABLE} LIMIT 1")
            except psycopg.errors.UndefinedTable:
                raise CommandError("no lease table: run `python manage.py migrate` first") from None
            self.stdout.write(f"lease {self.name}: ttl {ttl} s, poll {poll} s, {standbys} standbys")
            self.stdout.write(f"{'round':>5}  {'signal':<8} {'gap s':>7}")
            try:
                for _ in range(1 + standbys):
                    self._start_contender()
                rounds = [signal.SIGKILL] * kills + [signal.SIGTERM] * terms
                for number, signum in enumerate(rounds, start=1):
                    gap = self._round(signum)
                    gaps[signum.name].append(gap)
                    self.stdout.write(f"{number:>5}  {signum.name:<8} {gap:>7.3f}")
            finally:
                self._stop_all()
        self._summary(gaps, bounds={"SIGKILL": ttl + poll, "SIGTERM": poll})

    def _start_contender(self) -> None:
        process = self.spawn.Process(
            target=_contend, args=(self.name, *self.lease_args, self.ready), daemon=True
        )
        process.start()
        while True:
            try:
                pid, holder = self.ready.get(timeout=0.5)
                break
            except queue.Empty:
                if not process.is_alive():
                    raise CommandError(
                        f"a contender exited ({process.exitcode}) before it was ready;"
                        " its error is above"
                    ) from None
        if pid != process.pid:
            raise CommandError(f"contender {pid} reported for {process.pid}")
        self.contenders[holder] = process

    def _await_lease(self, accept: Callable[[int, str], bool], what: str) -> tuple[int, str]:
        """Read the lease row every OBSERVE_EVERY until `accept(epoch, holder)`; that row."""
        give_up = time.monotonic() + self.timeout
        query = f"SELECT epoch, holder FROM {TABLE} WHERE name = %s"
        while (row := self.db.execute(query, (self.name,)).fetchone()) is None or not accept(*row):
            if time.monotonic() > give_up:
                raise CommandError(f"no {what} within {self.timeout:.0f} s")
            time.sleep(OBSERVE_EVERY)
        return row

    def _round(self, signum: signal.Signals) -> float:
        """Signal the leader; seconds until the next epoch is taken."""
        epoch, holder = self._await_lease(lambda _, holder: holder in self.contenders, "leader")
        leader = self.contenders.pop(holder)
        signalled = time.monotonic()
        os.kill(leader.pid, signum)
        self._await_lease(lambda taken, _: taken > epoch, "takeover")
        gap = time.monotonic() - signalled
        leader.join()
        self._start_contender()
        return gap

    def _stop_all(self) -> None:
        for process in self.contenders.values():
            process.terminate()
        for process in self.contenders.values():
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        self.db.execute(f"DELETE FROM {TABLE} WHERE name = %s", (self.name,))

    def _summary(self, gaps: dict[str, list[float]], *, bounds: dict[str, float]) -> None:
        self.stdout.write(
            f"{'signal':<8} {'rounds':>6} {'min':>7} {'median':>7} {'max':>7} {'bound':>7}"
        )
        for name, values in gaps.items():
            if values:
                figures = (min(values), statistics.median(values), max(values), bounds[name])
                cells = " ".join(f"{value:>7.3f}" for value in figures)
                self.stdout.write(f"{name:<8} {len(values):>6} {cells}")
