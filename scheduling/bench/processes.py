"""celery beat as a child process, and what it costs: CPU, memory, database time."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

STOP_GRACE = 10.0  # seconds beat gets to stop on SIGTERM before it is killed
TICKS = os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:
    # Linux: beat gets SIGTERM if this command is killed outright, so it never lingers.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def database_url() -> str:
    """The URL this command's own settings were built from, for the beat subprocess."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    db = settings.DATABASES["default"]
    auth = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else "")
    if db["HOST"].startswith("/"):
        return f"postgresql://{auth}@/{db['NAME']}?host={db['HOST']}"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgresql://{auth}@{db['HOST']}{port}/{db['NAME']}"


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process so far; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


class BeatProcess:
    """`celery -A config beat -S <scheduler>` in its own process group, output to `log`.

    With `profile`, beat runs under cProfile and writes its statistics there when it
    stops on SIGTERM (not after SIGKILL).
    """

    def __init__(
        self, *, scheduler: str, log: Path, env: dict[str, str], profile: Path | None = None
    ) -> None:
        self.scheduler, self.log, self.profile = scheduler, log, profile
        self.appname = env.get("PGAPPNAME", "")
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings.SETTINGS_MODULE,
            "DATABASE_URL": database_url(),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.process: subprocess.Popen | None = None
        self.spawned: float | None = None

    def start(self) -> BeatProcess:
        python = [sys.executable]
        if self.profile is not None:
            python += ["-m", "cProfile", "-o", str(self.profile)]
        command = [*python, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"]
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [*command, "--scheduler", self.scheduler],
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # called before any thread of ours runs
            )
        self.spawned = time.time()
        return self

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu(self) -> float | None:
        return cpu_seconds(self.pid) if self.alive else None

    def peak_rss_mib(self) -> float | None:
        """VmHWM, the peak resident memory so far, in MiB."""
        if not self.alive:
            return None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return None

    def kill(self) -> None:
        """SIGKILL, as a machine that dies: no lease release, nothing written."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> tuple[float, bool]:
        """SIGTERM the group, SIGKILL it after STOP_GRACE; returns (seconds, killed)."""
        if self.process is None or self.process.poll() is not None:
            return 0.0, False
        started, killed = time.monotonic(), False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            killed = True
            self.kill()
        return time.monotonic() - started, killed

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def backend_cpu(appname: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving `appname` (beat's connections,
    named through PGAPPNAME). The server must run on this machine; else empty."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [appname])
        pids = [pid for (pid,) in cursor.fetchall()]
    seconds = {pid: cpu_seconds(pid) for pid in pids}
    return {pid: value for pid, value in seconds.items() if value is not None}


def backend_cpu_spent(before: dict[int, float], after: dict[int, float]) -> float | None:
    """CPU the backends used between two readings; a backend new since `before` counts whole."""
    if not after:
        return None
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())
