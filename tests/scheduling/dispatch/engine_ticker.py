"""One tick of the dispatcher in a process of its own, for test_engine.py.

    python -m tests.scheduling.dispatch.engine_ticker --lease NAME --at 2030-01-01T00:00:00+00:00

It takes the lease NAME (waiting up to 10 s for it), runs one Dispatcher tick with its
clock stopped at --at, prints the tick's report as one JSON line, and releases the lease.
Another process, with its own hash seed, computes what the test process computed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import datetime

import django

LEADER_WAIT = 10.0


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lease", required=True)
    parser.add_argument("--at", required=True, type=datetime.fromisoformat)
    args = parser.parse_args(argv)

    django.setup()
    from scheduling.dispatch.engine import Dispatcher
    from scheduling.dispatch.lease import LeaderLease

    with LeaderLease(args.lease, ttl=30, poll=0.05) as lease:
        deadline = time.monotonic() + LEADER_WAIT
        while not lease.is_leader():
            if time.monotonic() > deadline:
                raise SystemExit(f"lease {args.lease} not taken within {LEADER_WAIT} s")
            time.sleep(0.05)
        report = Dispatcher(lease, clock=lambda: args.at).tick()
    print(json.dumps(dataclasses.asdict(report)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
