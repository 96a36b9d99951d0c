"""The deploy files (deploy/): the compose file parses and wires the services as meant,
every process command in them is one the project accepts, the worker may finish its
tasks when stopped, exactly one beat runs, and no credential is written in them."""

from __future__ import annotations

import os
import re
import runpy
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import time_machine
import yaml
from django.conf import settings
from django.utils import timezone

from scheduling import metrics
from scheduling.jobs import JOBS
from tests.deploy.commands import (
    COMPOSE_FILE,
    DEPLOY,
    DOCKERFILE,
    ROOT,
    SYSTEMD,
    Command,
    CommandRejected,
    all_commands,
    check,
    compose_commands,
    compose_file,
    compose_processes,
    process_kind,
    supervisor_processes,
    supervisor_programs,
    systemd_processes,
    unit_files,
    unit_settings,
)
from tests.helpers import run_manage
from tests.processes import celery_process, wait_until

APP_SERVICES = {"migrate", "web", "worker", "beat", "flower"}


def _compose_cli() -> list[str] | None:
    """`docker compose` (v2) where the plugin is installed, else docker-compose (1.29)."""
    for cli in (["docker", "compose"], ["docker-compose"]):
        if (
            shutil.which(cli[0])
            and subprocess.run([*cli, "version"], capture_output=True).returncode == 0
        ):
            return cli
    return None


@pytest.fixture(scope="module")
def compose_config(tmp_path_factory) -> dict:
    """`docker compose config` of the committed file, set up as deploy/README.md says:
    app.env copied from env.example, and the three secret files."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip(
            "neither `docker compose` nor `docker-compose` is installed (.ci/run installs one)"
        )
    root = tmp_path_factory.mktemp("compose")
    deploy = root / "deploy"
    (deploy / "secrets").mkdir(parents=True)
    for name in ("docker-compose.yml", "Dockerfile"):
        shutil.copy(DEPLOY / name, deploy / name)
    shutil.copy(DEPLOY / "env.example", deploy / "app.env")
    password = secrets.token_urlsafe(32)
    (deploy / "secrets" / "postgres_password").write_text(password + "\n")
    (deploy / "secrets" / "database_url").write_text(
        f"postgres://scheduler:{password}@postgres:5432/scheduler\n"
    )
    (deploy / "secrets" / "secret_key").write_text(secrets.token_urlsafe(50) + "\n")
    result = subprocess.run(
        [*cli, "-f", str(deploy / "docker-compose.yml"), "--profile", "flower", "config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_the_compose_file_parses_and_wires_the_services(compose_config):
    services = compose_config["services"]

    assert set(services) == {"postgres", "redis"} | APP_SERVICES
    assert "version" not in compose_file()  # the Compose Specification has none
    for name in set(services) - {"migrate"}:
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
        assert services[name]["restart"] == "unless-stopped", name
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("web", "worker", "beat"):
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully"
        assert depends_on["postgres"]["condition"] == "service_healthy"
        assert depends_on["redis"]["condition"] == "service_healthy"
    assert services["flower"]["profiles"] == ["flower"]
    for name in APP_SERVICES:
        environment = services[name]["environment"]
        assert environment["BASE_DOMAIN"] == "scheduler.example.com"  # app.env reached it
        assert environment["DATABASE_URL_FILE"] == "/run/secrets/database_url"
        assert {s["source"] for s in services[name]["secrets"]} == {"database_url", "secret_key"}
    assert {s["source"] for s in services["postgres"]["secrets"]} == {"postgres_password"}
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip = port["host_ip"] if isinstance(port, dict) else port.split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def test_the_compose_environment_and_secrets_make_a_valid_production_configuration(
    compose_config,
):
    """The web service's environment as compose builds it, with its secret files, passes
    Django's deployment checks with nothing else set."""
    config = compose_config
    mounted = {f"/run/secrets/{name}": secret["file"] for name, secret in config["secrets"].items()}
    environment = {
        name: mounted.get(str(value), str(value))
        for name, value in config["services"]["web"]["environment"].items()
    }

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], **environment},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "ERRORS" not in result.stderr


COMMANDS = all_commands()


@pytest.mark.parametrize(
    "command", COMMANDS, ids=[f"{c.where} {' '.join(c.argv)[:60]}" for c in COMMANDS]
)
def test_every_process_command_in_the_deploy_files_is_accepted(command):
    check(command)


@pytest.mark.parametrize(
    "line",
    [
        "celery -A config worker --concurency 4",
        "celery -A config worker --loglevel LOUD",
        "celery -A config beet",
        "celery worker",
        "celery -A config beat",
        "celery -A config beat --scheduler scheduling.beat:NoSuchScheduler",
        "celery -A config beat -S django_celery_beat.schedulers:DatabaseScheduler",
        "celery -A config inspect pong",
        "celery -A config flower --prot=5555",
        "python manage.py migrate_schemas --bogus",
        "python manage.py colectstatic --noinput",
        "python manage.py shell --no-imports --command 'raise SystemExit(('",
        "gunicorn --config deploy/gunicorn.conf.py --wrokers 2 config.wsgi:application",
        "gunicorn --config deploy/gunicorn.conf.py config.wsgi:app",
        "rm -rf /var/lib/scheduler",
        "/bin/kill -s HUPP $MAINPID",
        "docker compose exec wbe python manage.py migrate",
        "docker compose up -d --scale workers=3",
        "systemctl enable scheduler-cron.service",
    ],
)
def test_a_command_the_project_would_refuse_is_rejected(line):
    with pytest.raises(CommandRejected):
        check(Command("a test", tuple(shlex.split(line))))


@pytest.mark.parametrize(
    ("test", "serves"),
    [
        ("curl --fail http://127.0.0.1:8000/healthz/nope", "gunicorn -c deploy/gunicorn.conf.py x"),
        ("curl --fail http://127.0.0.1:8080/healthz", "gunicorn -c deploy/gunicorn.conf.py x"),
        ("curl --fail http://127.0.0.1:5555/metrics", "celery -A config flower --port=5555"),
        ("curl --fail http://127.0.0.1:8000/healthz", "celery -A config worker"),
    ],
)
def test_a_probe_of_no_endpoint_of_its_process_is_rejected(test, serves):
    with pytest.raises(CommandRejected):
        check(Command("a healthcheck", tuple(shlex.split(test)), serves=tuple(shlex.split(serves))))


def test_each_deploy_file_runs_web_and_a_worker_and_exactly_one_beat():
    for processes in (compose_processes(), systemd_processes(), supervisor_processes()):
        kinds = Counter(process_kind(argv) for argv in processes.values())
        assert kinds["web"] >= 1 and kinds["worker"] >= 1, processes
        assert kinds["beat"] == 1, processes
    (beat_unit,) = [u for u, argv in systemd_processes().items() if process_kind(argv) == "beat"]
    assert unit_settings(SYSTEMD / beat_unit)["Service"]["Restart"] == ["always"]
    (beat,) = [n for n, argv in supervisor_processes().items() if process_kind(argv) == "beat"]
    assert supervisor_programs()[beat].get("numprocs", "1") == "1"


def _seconds(value: str | int) -> float:
    """360, "360s", "6m" or "6min" in seconds."""
    number, unit = re.fullmatch(r"(\d+)\s*(s|m|min)?", str(value)).groups()
    return int(number) * (60 if unit in {"m", "min"} else 1)


def _stop_timeouts(kind: str) -> dict[str, float]:
    """How long each deploy file lets a process of `kind` stop before it is killed."""
    services = compose_file()["services"]
    compose = {
        f"compose {name}": _seconds(services[name].get("stop_grace_period", "10s"))
        for name, argv in compose_processes().items()
        if process_kind(argv) == kind
    }
    systemd = {
        f"systemd {unit}": _seconds(unit_settings(SYSTEMD / unit)["Service"]["TimeoutStopSec"][0])
        for unit, argv in systemd_processes().items()
        if process_kind(argv) == kind
    }
    supervisor = {
        f"supervisor {name}": _seconds(supervisor_programs()[name].get("stopwaitsecs", "10"))
        for name, argv in supervisor_processes().items()
        if process_kind(argv) == kind
    }
    return compose | systemd | supervisor


def test_the_worker_may_finish_its_longest_task_before_it_is_killed():
    # The hard limits, in seconds; the settings' one applies to any task that sets none.
    longest = max(settings.CELERY_TASK_TIME_LIMIT, *(job.time_limit for job in JOBS.values()))

    timeouts = _stop_timeouts("worker")

    assert len(timeouts) == 3, timeouts
    assert all(seconds > longest for seconds in timeouts.values()), (longest, timeouts)
    # The stop signal reaches the worker's main process only: pool children die on theirs.
    for unit, argv in systemd_processes().items():
        if process_kind(argv) == "worker":
            assert unit_settings(SYSTEMD / unit)["Service"]["KillMode"] == ["mixed"]
    for name, argv in supervisor_processes().items():
        if process_kind(argv) == "worker":
            program = supervisor_programs()[name]
            assert (program["stopasgroup"], program["killasgroup"]) == ("false", "true")


def test_web_may_finish_its_requests_within_gunicorns_graceful_timeout():
    graceful = runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))["graceful_timeout"]

    timeouts = _stop_timeouts("web")

    assert len(timeouts) == 3, timeouts
    assert all(seconds > graceful for seconds in timeouts.values()), (graceful, timeouts)


# --- Credentials ------------------------------------------------------------------------

SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|BASIC_AUTH|API_KEY", re.IGNORECASE)
# NAME=value or NAME: value anywhere for environment names; other keys only where a line
# (a YAML or ini line, commented out or not) starts with them, not in prose.
ENV_ASSIGNED = re.compile(r"\b([A-Z][A-Z0-9_]*)\s*[=:]\s*[\"']?([^\s\"'#,]*)")
KEY_ASSIGNED = re.compile(r"^\s*(?:#\s*)?(?:-\s*)?([A-Za-z_][\w.-]*)\s*[=:]\s*[\"']?([^\s\"'#,]*)")
URL_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/@:\"']*:([^\s/@\"']+)@")
# A value that only stands for one: a shell or printf substitution, or <password>.
PLACEHOLDER = re.compile(r"^(\$.*|%s|<[^>]*>)$")
# The build-time key of the Dockerfile's collectstatic step, which no container sees.
ALLOWED = {("Dockerfile", "SECRET_KEY", "collectstatic-at-build-time-only")}


def credentials_in(name: str, text: str) -> list[str]:
    """Literal passwords, keys and tokens: NAME=value or NAME: value, and user:pass@ in URLs."""
    found = []
    for line in text.splitlines():
        for key, value in {*ENV_ASSIGNED.findall(line), *KEY_ASSIGNED.findall(line)}:
            if (
                SECRET_NAME.search(key)
                and not key.upper().endswith("_FILE")
                and value
                and not PLACEHOLDER.match(value)
                and (name, key, value) not in ALLOWED
            ):
                found.append(line.strip())
        found += [
            line.strip() for value in URL_PASSWORD.findall(line) if not PLACEHOLDER.match(value)
        ]
    return found


def _deploy_files() -> list[Path]:
    return [
        path
        for path in sorted(DEPLOY.rglob("*"))
        if path.is_file() and "secrets" not in path.parts and path.name != "app.env"
    ]


def test_no_deploy_file_holds_a_credential():
    files = [*_deploy_files(), ROOT / ".dockerignore"]
    assert COMPOSE_FILE in files and DOCKERFILE in files

    found = {path.name: credentials_in(path.name, path.read_text()) for path in files}

    assert not any(found.values()), found


@pytest.mark.parametrize(
    "line",
    [
        "      POSTGRES_PASSWORD: hunter2",
        "DATABASE_URL=postgres://scheduler:s3cret@postgres:5432/scheduler",
        "SECRET_KEY=django-insecure-abc123",
        'FLOWER_BASIC_AUTH="admin:admin"',
        "OPS_API_TOKEN=0123456789abcdef",
        "REDIS_URL=redis://:hunter2@redis:6379/0",
        "  password: hunter2",
    ],
)
def test_the_credential_scan_finds_a_literal_one(line):
    assert credentials_in("docker-compose.yml", line) == [line.strip()]


@pytest.mark.parametrize(
    "line",
    [
        "      POSTGRES_PASSWORD_FILE: /run/secrets/postgres_password",
        "printf 'postgres://scheduler:%s@postgres:5432/scheduler' \"$(cat pw)\"",
        "# OPS_API_TOKEN=",
        "REDIS_URL=redis://:<password>@host:6379/0",
        "SESSION_COOKIE_SECURE=true",
        "# Keep the build context free of secrets: nothing local.",
    ],
)
def test_the_credential_scan_lets_references_and_placeholders_be(line):
    assert credentials_in("env.example", line) == []


def test_the_secret_files_stay_out_of_git_and_out_of_the_image():
    made_on_the_server = [
        "deploy/app.env",
        "deploy/secrets/database_url",
        "deploy/secrets/secret_key",
    ]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *made_on_the_server],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert ignored.stdout.split() == made_on_the_server

    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in made_on_the_server:
        assert any(path == p or path.startswith(f"{p}/") for p in patterns), path


def test_the_database_url_can_come_from_a_file(tmp_path):
    """For docker secrets: DATABASE_URL_FILE names a file holding the URL (and its password)."""
    secret = tmp_path / "database_url"
    secret.write_text("postgres://scheduler:pw@db.internal:5432/from_a_file\n")
    show = "from django.conf import settings; print(settings.DATABASES['default']['NAME'])"

    from_file = run_manage(
        "shell",
        "--no-imports",
        "-c",
        show,
        env={"DATABASE_URL": "", "DATABASE_URL_FILE": str(secret)},
    )
    both = run_manage("shell", "-c", show, env={"DATABASE_URL_FILE": str(secret)})

    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout.strip() == "from_a_file"
    assert both.returncode != 0
    assert "Set either DATABASE_URL or DATABASE_URL_FILE, not both." in both.stderr


# --- The healthchecks, run for real -----------------------------------------------------


def _healthcheck(service: str) -> list[str]:
    (command,) = [
        c for c in compose_commands() if c.where == f"docker-compose.yml:{service}:healthcheck"
    ]
    return list(command.argv)


def _run_in_image_place(argv: list[str], env: dict[str, str] | None = None):
    """Run a healthcheck as the container would, with this machine's Python and servers."""
    program = argv[0]
    if program == "python":
        argv = [sys.executable, *argv[1:]]
    elif program == "celery":
        argv = [sys.executable, "-m", "celery", *argv[1:]]
    return subprocess.run(
        argv,
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def heartbeat_cleared():
    yield
    redis.Redis.from_url(settings.REDIS.client).delete(metrics.HEARTBEAT_KEY)


def test_the_beat_healthcheck_fails_once_the_heartbeat_is_stale(heartbeat_cleared):
    with time_machine.travel(timezone.now() - timedelta(minutes=10)):
        metrics.beat_heartbeat_record()
    stale = _run_in_image_place(_healthcheck("beat"))
    metrics.beat_heartbeat_record()
    fresh = _run_in_image_place(_healthcheck("beat"))

    assert stale.returncode == 1, stale.stderr
    assert fresh.returncode == 0, fresh.stderr


@pytest.mark.slow
@pytest.mark.django_db
def test_the_worker_healthcheck_is_answered_by_that_worker_only(tmp_path):
    """In a container the worker's name is celery@$HOSTNAME; the healthcheck pings that name,
    so another worker that answers does not make this one healthy."""
    healthcheck = _healthcheck("worker")
    assert "celery@$HOSTNAME" in healthcheck

    with celery_process("worker", tmp_path / "worker.log", "--concurrency", "1", "--pool", "solo"):
        wait_until(
            lambda: "ready" in (tmp_path / "worker.log").read_text(), timeout=60, what="the worker"
        )
        this_host = _run_in_image_place(
            [a.replace("$HOSTNAME", socket.gethostname()) for a in healthcheck]
        )
        other_host = _run_in_image_place([a.replace("$HOSTNAME", "elsewhere") for a in healthcheck])

    assert this_host.returncode == 0, this_host.stdout + this_host.stderr
    assert other_host.returncode != 0


def test_the_systemd_units_pass_systemd_analyze_verify():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    for path in [*unit_files(), SYSTEMD / "scheduler.target"]:
        result = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True
        )
        # Only what this machine lacks may be reported: /opt/scheduler is not installed here.
        problems = [
            line
            for line in result.stderr.splitlines()
            if line.strip() and "/opt/scheduler/.venv/bin/" not in line
        ]
        assert problems == [], path.name
