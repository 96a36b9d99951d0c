"""A scheduler-like process contending for a lease, for test_lease.py.

    python -m tests.scheduling.dispatch.lease_contender --name NAME --ttl 1.5 --poll 0.1 \\
        [--pause-file PATH] [--clock-offset SECONDS]

While it leads, it writes one row per batch (holder, epoch, seq) to WRITES_TABLE through
`lease.fenced(epoch)`, every 50 ms. It prints one JSON line per event, each with `t` on
time.monotonic(), the one clock every process on the machine shares:

  ready    {holder, skew}  started, first attempt made; skew = its wall clock - the database's
  leader   {epoch}         it may act under epoch
  standby  {}              it may not act
  pausing  {epoch, seq}    it found the pause file: it stops itself (SIGSTOP) between taking
                           the epoch for batch seq and that batch's fenced write, as a long
                           GC pause or a frozen VM would
  refused  {epoch, seq}    the fenced write of batch seq under epoch was refused
  stopped  {}              it has left, releasing the lease (SIGTERM)

--clock-offset moves its wall clock (time-machine) before the lease starts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import django

WRITES_TABLE = "public.lease_test_writes"
BATCH_EVERY = 0.05


def _emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(0)


def _skew_seconds() -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        (database_now,) = cursor.fetchone()
    return (datetime.now(UTC) - database_now).total_seconds()


def _write(*, holder: str, epoch: int, seq: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {WRITES_TABLE} (holder, epoch, seq) VALUES (%s, %s, %s)",
            [holder, epoch, seq],
        )


def _lead(lease, pause_file: Path | None) -> None:
    from scheduling.dispatch.lease import LeaseLost

    seen, seq = "nothing yet", 0
    while True:
        epoch = lease.epoch
        if epoch != seen and epoch is None:
            _emit("standby")
        elif epoch != seen:
            _emit("leader", epoch=epoch)
        seen = epoch
        if epoch is not None:
            seq += 1
            if pause_file is not None and pause_file.exists():
                pause_file.unlink()
                _emit("pausing", epoch=epoch, seq=seq)
                os.kill(os.getpid(), signal.SIGSTOP)
            try:
                with lease.fenced(epoch):
                    _write(holder=lease.holder, epoch=epoch, seq=seq)
            except LeaseLost:
                _emit("refused", epoch=epoch, seq=seq)
        time.sleep(BATCH_EVERY)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--ttl", type=float, required=True)
    parser.add_argument("--poll", type=float, required=True)
    parser.add_argument("--pause-file", type=Path)
    parser.add_argument("--clock-offset", type=float, default=0.0)
    args = parser.parse_args(argv)

    django.setup()
    from scheduling.dispatch.lease import LeaderLease

    if args.clock_offset:
        import time_machine

        moved = datetime.now(UTC) + timedelta(seconds=args.clock_offset)
        time_machine.travel(moved, tick=True).start()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with LeaderLease(args.name, ttl=args.ttl, poll=args.poll) as lease:
            _emit("ready", holder=lease.holder, skew=_skew_seconds())
            _lead(lease, args.pause_file)
    finally:
        _emit("stopped")


if __name__ == "__main__":
    main(sys.argv[1:])
