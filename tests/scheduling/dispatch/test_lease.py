"""The scheduler's leader lease (scheduling/dispatch/lease.py), on the real database.

In this process: the fence commits under the current epoch and refuses and rolls
back under any other; a standby takes over on release; a holder that can't renew
stops acting before its lease runs out; expiry follows the database clock; and a
fenced transaction's row lock holds a takeover back, but a stalled one not for
long.

As real processes (lease_contender.py), contending as schedulers would: one leader
among three whose clocks are an hour apart and a takeover after SIGKILL; a leader
paused past its lease, whose fenced write is refused; a release on SIGTERM. Gaps
are printed, never asserted: the assertions are about the order of events.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models.functions import Now

from scheduling.dispatch.lease import LeaderLease, LeaseLost, fence
from scheduling.platform.models import SchedulerLease
from tests.helpers import ROOT, run_manage
from tests.processes import celery_env, wait_until
from tests.scheduling.dispatch.lease_contender import WRITES_TABLE


@pytest.fixture
def name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def _lease_row(name: str, *, epoch: int, expires_in: float, ttl: float = 1.0) -> None:
    """A lease held by a process that isn't here, timed by the database clock."""
    expires = Now() + timedelta(seconds=expires_in)
    SchedulerLease.objects.create(
        name=name,
        holder="elsewhere:1:0",
        epoch=epoch,
        renewed_at=expires - timedelta(seconds=ttl),
        expires_at=expires,
    )


def _probe(name: str) -> None:
    """A write of the transaction under test: any row will do."""
    SchedulerLease.objects.create(name=f"{name}-probe", renewed_at=Now(), expires_at=Now())


def _probe_written(name: str) -> bool:
    return SchedulerLease.objects.filter(name=f"{name}-probe").exists()


def _expired(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT expires_at <= clock_timestamp() FROM scheduling_platform_schedulerlease"
            " WHERE name = %s",
            [name],
        )
        return cursor.fetchone()[0]


# --- The fence -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_fenced_write_commits_under_the_current_epoch(name):
    _lease_row(name, epoch=3, expires_in=60)

    with transaction.atomic():
        fence(connection, name=name, epoch=3)
        _probe(name)

    assert _probe_written(name)


@pytest.mark.django_db
def test_a_write_under_an_older_epoch_is_refused_and_rolled_back(name):
    _lease_row(name, epoch=4, expires_in=60)

    with pytest.raises(LeaseLost), transaction.atomic():
        _probe(name)  # written before the fence: it must go too
        with connection.cursor() as cursor:
            fence(cursor, name=name, epoch=3)

    assert not _probe_written(name)


@pytest.mark.django_db
def test_a_lease_that_ran_out_refuses_its_own_epoch_even_if_nobody_took_it(name):
    _lease_row(name, epoch=3, expires_in=-1)

    with pytest.raises(LeaseLost), transaction.atomic():
        fence(connection, name=name, epoch=3)


@pytest.mark.django_db
def test_a_block_that_swallows_lease_lost_still_writes_nothing(name):
    _lease_row(name, epoch=4, expires_in=60)

    with transaction.atomic():
        _probe(name)
        with contextlib.suppress(LeaseLost):
            fence(connection, name=name, epoch=3)

    assert not _probe_written(name)


@pytest.mark.django_db(transaction=True)
def test_the_fence_refuses_to_run_outside_a_transaction(name):
    _lease_row(name, epoch=3, expires_in=60)

    with pytest.raises(transaction.TransactionManagementError, match="atomic"):
        fence(connection, name=name, epoch=3)


# --- Holding, standing by, stepping down: the keeper thread ------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_standby_takes_over_with_the_next_epoch_once_the_leader_releases(name):
    first = LeaderLease(name, ttl=30, poll=0.05).start()
    second = LeaderLease(name, ttl=30, poll=0.05).start()
    try:
        assert (first.epoch, second.epoch) == (1, None)

        first.stop()

        wait_until(second.is_leader, timeout=5, interval=0.01, what="the standby to take over")
        assert second.epoch == 2
        assert SchedulerLease.objects.get(name=name).holder == second.holder
    finally:
        first.stop()
        second.stop()


@pytest.mark.django_db(transaction=True)
def test_a_holder_that_cannot_renew_stops_before_its_lease_runs_out_and_returns_later(name):
    lease = LeaderLease(name, ttl=3, poll=0.05).start()
    try:
        assert lease.epoch == 1
        with transaction.atomic():
            # The row lock keeps the keeper's renewals (and everyone's takeovers) waiting.
            SchedulerLease.objects.select_for_update().get(name=name)
            wait_until(lambda: not lease.is_leader(), timeout=10, interval=0.01, what="step down")
            assert not _expired(name)  # it stopped acting while its lease still ran
            wait_until(lambda: _expired(name), timeout=10, interval=0.05, what="expiry")

        # The renewal that waited comes too late; the holder takes the lease anew.
        wait_until(lease.is_leader, timeout=10, interval=0.01, what="the lease to come back")
        assert lease.epoch == 2
    finally:
        lease.stop()


@pytest.mark.django_db(transaction=True)
def test_expiry_is_judged_by_the_database_clock_whatever_the_local_clock_says(name, time_machine):
    _lease_row(name, epoch=7, expires_in=3600)
    time_machine.move_to(datetime.now(UTC) + timedelta(days=1))  # past that expiry, locally
    ahead = LeaderLease(name, ttl=1, poll=0.05).start()
    ahead.stop()
    assert ahead.epoch is None
    assert SchedulerLease.objects.get(name=name).epoch == 7

    SchedulerLease.objects.filter(name=name).update(expires_at=Now(), renewed_at=Now())
    time_machine.move_to(datetime.now(UTC) - timedelta(days=2))  # long before it, locally
    behind = LeaderLease(name, ttl=1, poll=0.05).start()
    try:
        assert behind.epoch == 8
    finally:
        behind.stop()


# --- What a fenced transaction's row lock does to a takeover -----------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_takeover_waits_until_the_deposed_leaders_fenced_transaction_has_ended(name):
    _lease_row(name, epoch=1, expires_in=0.5)
    standby = LeaderLease(name, ttl=5, poll=0.05)
    taking_over = threading.Thread(target=standby.start)
    try:
        with transaction.atomic():
            fence(connection, name=name, epoch=1)
            wait_until(lambda: _expired(name), timeout=5, interval=0.05, what="expiry")
            taking_over.start()
            taking_over.join(timeout=0.5)
            assert taking_over.is_alive()  # its UPDATE waits for this transaction
            _probe(name)

        taking_over.join(timeout=5)
        assert standby.epoch == 2
        assert _probe_written(name)  # committed before the new epoch existed
    finally:
        taking_over.join()
        standby.stop()


@pytest.mark.django_db(transaction=True)
def test_a_leader_stalled_inside_a_fenced_transaction_is_cut_off_after_one_ttl(name):
    _lease_row(name, epoch=1, expires_in=1, ttl=1)
    fenced, resume, outcome = threading.Event(), threading.Event(), []

    def stalled_leader():
        try:
            with transaction.atomic():
                _probe(name)
                fence(connection, name=name, epoch=1)
                fenced.set()
                resume.wait(timeout=30)  # a long GC pause, a frozen VM
                SchedulerLease.objects.count()
        except DatabaseError as error:
            outcome.append(error)
        finally:
            connection.close()

    leader = threading.Thread(target=stalled_leader)
    leader.start()
    standby = LeaderLease(name, ttl=5, poll=0.05)
    try:
        fenced.wait(timeout=10)
        standby.start()
        wait_until(standby.is_leader, timeout=10, interval=0.01, what="takeover")
        assert leader.is_alive()  # the stalled leader still thinks its transaction is open
        resume.set()
        leader.join(timeout=10)

        assert standby.epoch == 2
        assert outcome and "idle-in-transaction" in str(outcome[0])
        assert not _probe_written(name)
    finally:
        resume.set()
        leader.join()
        standby.stop()


# --- Real processes ------------------------------------------------------------------------------


class Contender:
    """One lease_contender process, and the events it printed (its logs go to *.stderr)."""

    def __init__(self, process: subprocess.Popen, log: Path, pause_file: Path):
        self.process, self.log, self.pause_file = process, log, pause_file

    def events(self, kind: str | None = None) -> list[dict]:
        found = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line being written
                found.append(json.loads(line))
        return [event for event in found if kind is None or event["event"] == kind]

    @property
    def holder(self) -> str:
        return self.events("ready")[0]["holder"]

    def state(self) -> str | None:
        """leader or standby, as the process last saw itself; None once it is gone."""
        if self.process.poll() is not None:
            return None
        seen = [
            event["event"] for event in self.events() if event["event"] in {"leader", "standby"}
        ]
        return seen[-1] if seen else None

    def elected(self) -> dict:
        return self.events("leader")[-1]


@contextlib.contextmanager
def contenders(tmp_path: Path, name: str, *, ttl: float, offsets: tuple[float, ...]):
    """One contender per clock offset, ready; all of them stopped at the end."""
    group = []
    try:
        for number, offset in enumerate(offsets):
            log = tmp_path / f"contender-{number}.log"
            pause_file = tmp_path / f"pause-{number}"
            command = [sys.executable, "-m", "tests.scheduling.dispatch.lease_contender"]
            command += ["--name", name, "--ttl", str(ttl), "--poll", "0.05"]
            command += ["--pause-file", str(pause_file), "--clock-offset", str(offset)]
            with log.open("w") as out, log.with_suffix(".stderr").open("w") as err:
                process = subprocess.Popen(
                    command, cwd=ROOT, env=celery_env(), stdout=out, stderr=err
                )
            group.append(Contender(process, log, pause_file))
        wait_until(
            lambda: all(contender.events("ready") for contender in group),
            timeout=30,
            what="every contender ready",
        )
        yield group
    finally:
        for contender in group:
            contender.process.send_signal(signal.SIGCONT)
            contender.process.terminate()
        for contender in group:
            try:
                contender.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                contender.process.kill()
                contender.process.wait()


def _sole_leader(group: list[Contender]) -> Contender | None:
    leaders = [contender for contender in group if contender.state() == "leader"]
    standing_by = [contender for contender in group if contender.state() == "standby"]
    live = [contender for contender in group if contender.process.poll() is None]
    return (
        leaders[0] if len(leaders) == 1 and len(leaders) + len(standing_by) == len(live) else None
    )


@pytest.fixture
def writes():
    """WRITES_TABLE, where contenders write as they lead: (id, holder, epoch, seq, at)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {WRITES_TABLE} (id bigserial PRIMARY KEY, holder text NOT NULL,"
            " epoch bigint NOT NULL, seq integer NOT NULL,"
            " at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
    yield _writes
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {WRITES_TABLE}")


def _writes() -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, holder, epoch, seq, at FROM {WRITES_TABLE} ORDER BY id")
        return cursor.fetchall()


def _write_span(epoch: int) -> float:
    """Seconds between the first and the last write under `epoch`, by the database clock."""
    rows = [row for row in _writes() if row[2] == epoch]
    return (rows[-1][4] - rows[0][4]).total_seconds() if rows else 0.0


def _assert_one_holder_per_epoch_in_order(rows: list[tuple]) -> None:
    """Writes in the order they were made: epochs never go back, and each has one holder."""
    epochs = [row[2] for row in rows]
    assert epochs == sorted(epochs)
    holders = {(row[2], row[1]) for row in rows}
    assert len(holders) == len(set(epochs))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_one_of_three_with_clocks_an_hour_apart_leads_and_a_standby_takes_over_after_sigkill(
    tmp_path, name, writes
):
    ttl = 2
    with contenders(tmp_path, name, ttl=ttl, offsets=(0, 3600, -3600)) as group:
        skews = sorted(round(contender.events("ready")[0]["skew"] / 3600) for contender in group)
        assert skews == [-1, 0, 1]  # hours
        leader = wait_until(lambda: _sole_leader(group), timeout=10, what="one leader")
        first = leader.elected()["epoch"]
        # While the leader lives and renews, nobody else takes the lease, for over two ttls.
        wait_until(lambda: _write_span(first) > 2 * ttl, timeout=20, what="writes over 2 ttls")
        assert _sole_leader(group) is leader
        assert SchedulerLease.objects.get(name=name).epoch == first

        killed_at = time.monotonic()
        leader.process.kill()
        leader.process.wait()
        successor = wait_until(lambda: _sole_leader(group), timeout=15, what="a new leader")
        elected = successor.elected()
        print(f"takeover {elected['t'] - killed_at:.2f} s after SIGKILL, ttl {ttl} s")
        assert elected["epoch"] == first + 1
        assert elected["t"] > killed_at
        assert SchedulerLease.objects.get(name=name).holder == successor.holder
        wait_until(lambda: _write_span(first + 1) > 0, timeout=10, what="the successor's writes")

    _assert_one_holder_per_epoch_in_order(writes())


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_leader_paused_past_its_lease_has_its_fenced_write_refused_and_steps_down(
    tmp_path, name, writes
):
    with contenders(tmp_path, name, ttl=2, offsets=(0, 0)) as group:
        leader = wait_until(lambda: _sole_leader(group), timeout=10, what="one leader")
        (other,) = (contender for contender in group if contender is not leader)
        epoch = leader.elected()["epoch"]

        leader.pause_file.touch()
        paused = wait_until(lambda: leader.events("pausing"), timeout=10, what="pause")[0]
        wait_until(lambda: other.state() == "leader", timeout=15, what="takeover")
        assert other.elected()["epoch"] == epoch + 1
        assert other.elected()["t"] > paused["t"]

        leader.process.send_signal(signal.SIGCONT)
        refused = wait_until(lambda: leader.events("refused"), timeout=10, what="refusal")[0]
        assert (refused["epoch"], refused["seq"]) == (epoch, paused["seq"])
        wait_until(lambda: leader.state() == "standby", timeout=10, what="step down")
        deposed_writes = [row for row in writes() if row[1] == leader.holder]
        successor_writes = len(writes()) - len(deposed_writes)
        wait_until(
            lambda: len(writes()) - len(deposed_writes) >= successor_writes + 5,
            timeout=10,
            what="more writes by the successor",
        )
        assert [row for row in writes() if row[1] == leader.holder] == deposed_writes

    assert {row[2] for row in deposed_writes} == {epoch}
    assert paused["seq"] not in {row[3] for row in deposed_writes}  # the refused batch
    _assert_one_holder_per_epoch_in_order(writes())


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_leader_stopped_by_sigterm_releases_the_lease_to_a_standby_at_once(
    tmp_path, name, writes
):
    ttl = 20  # a standby that waited for the lease to run out would wait 16 s and more
    with contenders(tmp_path, name, ttl=ttl, offsets=(0, 0)) as group:
        leader = wait_until(lambda: _sole_leader(group), timeout=10, what="one leader")
        (other,) = (contender for contender in group if contender is not leader)
        epoch = leader.elected()["epoch"]

        leader.process.terminate()
        assert leader.process.wait(timeout=10) == 0
        wait_until(lambda: other.state() == "leader", timeout=8, what="takeover after release")
        stopped = leader.events("stopped")[0]
        print(f"takeover {other.elected()['t'] - stopped['t']:.2f} s after release, ttl {ttl} s")
        assert other.elected()["epoch"] == epoch + 1
        assert other.elected()["t"] > stopped["t"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_bench_lease_prints_both_kinds_of_takeover_and_leaves_no_lease_behind():
    result = run_manage(
        "bench_lease", "--kills", "1", "--terms", "1", "--ttl", "1", "--poll", "0.1", timeout=90
    )

    assert result.returncode == 0, result.stderr
    number = r"\d+\.\d{3}"
    for kind in ("SIGKILL", "SIGTERM"):
        assert re.search(rf"^\s+\d+\s+{kind}\s+{number}$", result.stdout, re.MULTILINE)
        summary = rf"^{kind}\s+1(?:\s+{number}){{4}}$"
        assert re.search(summary, result.stdout, re.MULTILINE), result.stdout
    assert not SchedulerLease.objects.exists()
