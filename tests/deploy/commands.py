"""The process commands written in deploy/, read out of the files, and each checked by the
parser of the program that would run it.

Reading the files (not a list kept beside them) means a command added or changed there is
checked too. A check fails (CommandRejected) where the program would refuse the command,
or would take it otherwise than meant: an unknown manage.py command or option, a celery
option with a typo, a beat scheduler that does not import, a Flower option (which Flower
itself would silently drop), a health probe of a path no endpoint answers.
"""

from __future__ import annotations

import configparser
import itertools
import json
import os
import re
import runpy
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import click
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
SYSTEMD = DEPLOY / "systemd"
SUPERVISOR = DEPLOY / "supervisor" / "scheduler.conf"
README = DEPLOY / "README.md"

# Images of others, and the programs their own healthchecks and commands may run.
THIRD_PARTY_PROGRAMS = {"postgres": {"pg_isready"}, "redis": {"redis-server", "redis-cli"}}
PROJECT_PROGRAMS = {"manage.py", "celery", "gunicorn"}
SHELL_SEPARATORS = {"&&", "||", ";", "|"}
REDIRECTIONS = {">", ">>", "<", "&>"}
SHELL_BUILTINS = {"set", ".", "source", "cd", "export"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PYTHON = re.compile(r"^python(3(\.\d+)?)?$")


class CommandRejected(Exception):
    """The program a deploy file names would not accept the command as it is written."""


@dataclass(frozen=True)
class Command:
    where: str  # the file and the place in it
    argv: tuple[str, ...]
    image: str | None = None  # the other party's image it runs in; None: the project's image
    serves: tuple[str, ...] = field(default=(), compare=False)  # a probe: what it probes


# --- Reading commands out of the files ------------------------------------------------


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell line: split at &&, ||, ; and |, without redirections,
    leading VAR=value, `sudo`, `exec` and the builtins, with `sh -c SCRIPT` opened up."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    skip_next = False
    for token in lexer:
        if skip_next:
            skip_next = False
        elif token in SHELL_SEPARATORS:
            segments.append([])
        elif token in REDIRECTIONS:
            skip_next = True  # the redirection's file
        else:
            segments[-1].append(token)
    commands = []
    for words in segments:
        words = _without_prefixes(words)
        if words and words[0] not in SHELL_BUILTINS:
            commands.extend(opened_up(words))
    return commands


def _without_prefixes(words: list[str]) -> list[str]:
    while words:
        if ASSIGNMENT.match(words[0]) or words[0] == "exec":
            words = words[1:]
        elif words[0] == "sudo":
            words = words[1:]
            while words and words[0].startswith("-"):
                words = words[2:] if words[0] == "-u" else words[1:]
        else:
            return words
    return words


def opened_up(argv: list[str]) -> list[list[str]]:
    """`sh -c SCRIPT` is the commands of SCRIPT; anything else is itself."""
    if Path(argv[0]).name in {"sh", "bash"} and argv[1:2] == ["-c"] and len(argv) >= 3:
        return shell_commands(argv[2])
    return [argv]


def program_of(argv: tuple[str, ...] | list[str]) -> tuple[str, list[str]]:
    """The program a command runs and its arguments: `python manage.py x` is manage.py's."""
    argv = list(argv)
    name = Path(argv[0]).name
    if PYTHON.match(name) and argv[1:2] == ["manage.py"]:
        return "manage.py", argv[2:]
    if PYTHON.match(name) and argv[1:3] == ["-m", "celery"]:
        return "celery", argv[3:]
    if name == "docker" and argv[1:2] == ["compose"]:
        return "docker compose", argv[2:]
    return name, argv[1:]


def _compose_argvs(value: str | list[str]) -> list[list[str]]:
    if isinstance(value, str):
        return shell_commands(value.replace("$$", "$"))
    return opened_up([item.replace("$$", "$") for item in value])


def _healthcheck_argvs(test: str | list[str]) -> list[list[str]]:
    if isinstance(test, str):
        return shell_commands(test.replace("$$", "$"))
    kind, *rest = test
    if kind == "NONE":
        return []
    if kind == "CMD-SHELL":
        return shell_commands(rest[0].replace("$$", "$"))
    return _compose_argvs(rest)


def compose_file() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_commands() -> list[Command]:
    found = []
    for name, service in compose_file()["services"].items():
        image = None if "build" in service else service["image"]
        where = f"docker-compose.yml:{name}"
        for key in ("entrypoint", "command"):
            for argv in _compose_argvs(service[key]) if key in service else []:
                found.append(Command(f"{where}:{key}", tuple(argv), image))
        test = service.get("healthcheck", {}).get("test", [])
        main = tuple(compose_processes()[name])
        for argv in _healthcheck_argvs(test) if test else []:
            found.append(Command(f"{where}:healthcheck", tuple(argv), image, main))
    return found


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", "")  # Docker joins continued lines
    lines = (line.strip() for line in text.splitlines())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _dockerfile_argvs(arguments: str) -> list[list[str]]:
    if arguments.startswith("["):  # exec form
        return opened_up(json.loads(arguments))
    return shell_commands(arguments)  # shell form: run by /bin/sh -c


def dockerfile_cmd() -> list[str]:
    (cmd,) = [args for name, args in dockerfile_instructions() if name == "CMD"]
    (argv,) = _dockerfile_argvs(cmd)
    return argv


def dockerfile_commands() -> list[Command]:
    """CMD and ENTRYPOINT, and what RUN steps ask of the project (collectstatic); the other
    RUN steps are the build's own tools (apt-get, pip, useradd)."""
    found = []
    for name, arguments in dockerfile_instructions():
        if name not in {"CMD", "ENTRYPOINT", "RUN"}:
            continue
        for argv in _dockerfile_argvs(arguments):
            if name != "RUN" or program_of(argv)[0] in PROJECT_PROGRAMS:
                found.append(Command(f"Dockerfile:{name}", tuple(argv)))
    return found


def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit's sections, each key with all its values (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in path.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_files() -> list[Path]:
    return sorted(SYSTEMD.glob("*.service"))


def systemd_commands() -> list[Command]:
    found = []
    for path in unit_files():
        for key, values in unit_settings(path).get("Service", {}).items():
            if not key.startswith("Exec"):
                continue
            for value in values:
                # Prefixes such as "-" (failure ignored); "%%" is a literal "%".
                argv = shlex.split(value.lstrip("-@:+!").replace("%%", "%"))
                found += [Command(f"{path.name}:{key}", tuple(a)) for a in opened_up(argv)]
    return found


def supervisor_programs() -> dict[str, configparser.SectionProxy]:
    parser = configparser.RawConfigParser()
    parser.read_string(SUPERVISOR.read_text())
    return {
        section.removeprefix("program:"): parser[section]
        for section in parser.sections()
        if section.startswith("program:")
    }


def supervisor_commands() -> list[Command]:
    return [
        Command(f"scheduler.conf:{name}", tuple(argv))
        for name, program in supervisor_programs().items()
        for argv in opened_up(shlex.split(program["command"]))
    ]


def readme_commands() -> list[Command]:
    """The project's commands in deploy/README.md's shell blocks (cp, mkdir and the like
    are left alone)."""
    found = []
    in_block = False
    for line in README.read_text().replace("\\\n", " ").splitlines():
        if line.startswith("```"):
            in_block = line.strip() in {"```sh", "```bash"}
            continue
        if in_block:
            for argv in shell_commands(line):
                if program_of(argv)[0] in CHECKERS:
                    found.append(Command("deploy/README.md", tuple(argv)))
    return found


def all_commands() -> list[Command]:
    return [
        *compose_commands(),
        *dockerfile_commands(),
        *systemd_commands(),
        *supervisor_commands(),
        *readme_commands(),
    ]


# --- Checking them ---------------------------------------------------------------------


def check(command: Command) -> None:
    """Raise CommandRejected unless the command's program accepts it as written."""
    program, args = program_of(command.argv)
    if command.image is not None:
        allowed = THIRD_PARTY_PROGRAMS.get(command.image.split(":")[0], set())
        if program not in allowed:
            raise CommandRejected(f"{program!r} is not one of {command.image}'s programs")
        return
    checker = CHECKERS.get(program)
    if checker is None:
        raise CommandRejected(f"{program!r} is not a program this project runs")
    checker(args, command)


def _check_manage(args: list[str], command: Command) -> None:
    from django.core.management import get_commands, load_command_class
    from django.core.management.base import CommandError

    if not args:
        raise CommandRejected("manage.py needs a command")
    name, *options = args
    app = get_commands().get(name)
    if app is None:
        raise CommandRejected(f"manage.py has no command {name!r}")
    parser = load_command_class(app, name).create_parser("manage.py", name)
    try:
        parsed = parser.parse_args(options)
    except CommandError as exc:
        raise CommandRejected(f"manage.py {name}: {exc}") from None
    if name == "shell" and parsed.command:
        try:
            compile(parsed.command, command.where, "exec")
        except SyntaxError as exc:
            raise CommandRejected(f"manage.py shell --command: {exc}") from None


def _check_celery(args: list[str], command: Command) -> None:
    from celery.app.utils import find_app
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery

    try:
        context = celery.make_context("celery", list(args))
        if context.params["app"] != "config":
            raise CommandRejected("celery must be told the app: -A config")
        context.obj = CLIContext(app=find_app("config"), no_color=True, workdir=None, quiet=True)
        # What make_context left for a subcommand (click keeps it in _protected_args).
        name, subcommand, rest = celery.resolve_command(
            context, [*context._protected_args, *context.args]
        )
        params = subcommand.make_context(name, list(rest), parent=context).params
        SUBCOMMAND_CHECKS.get(name, lambda params, rest: None)(params, rest)
    except click.ClickException as exc:
        raise CommandRejected(f"celery: {exc.format_message()}") from None


def _check_beat(params: dict, rest: list[str]) -> None:
    from django.conf import settings
    from kombu.utils.imports import symbol_by_name

    # Unnamed, beat would take the settings' scheduler; the command lines name it, so that
    # what runs is plain to see (and no older default can creep in).
    if not any(arg.split("=")[0] in {"--scheduler", "-S"} for arg in rest):
        raise CommandRejected("beat must name its scheduler: --scheduler")
    scheduler = params["scheduler"]
    try:
        scheduler_class = symbol_by_name(scheduler)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CommandRejected(f"beat --scheduler {scheduler}: {exc!r}") from None
    if scheduler_class is not symbol_by_name(settings.CELERY_BEAT_SCHEDULER):
        raise CommandRejected(
            f"beat --scheduler {scheduler} is not the platform's {settings.CELERY_BEAT_SCHEDULER}"
        )


def _check_remote_control(kind: str) -> Callable[[dict, list[str]], None]:
    def check_command(params: dict, rest: list[str]) -> None:
        from celery.bin.control import _verify_command_name

        _verify_command_name(kind, params["command"])  # click.UsageError when unknown

    return check_command


def _check_flower(params: dict, rest: list[str]) -> None:
    from flower.command import is_flower_option
    from tornado.options import Error, options

    argv = list(params["tornado_argv"])
    for arg in argv:
        if not (arg.startswith("--") and is_flower_option(arg)):
            raise CommandRejected(f"flower has no option {arg!r} (it would ignore it)")
    try:
        options.parse_command_line(["flower", *argv], final=False)
    except Error as exc:
        raise CommandRejected(f"flower: {exc}") from None


SUBCOMMAND_CHECKS: dict[str, Callable[[dict, list[str]], None]] = {
    "beat": _check_beat,
    "inspect": _check_remote_control("inspect"),
    "control": _check_remote_control("control"),
    "flower": _check_flower,
}


def production_env() -> dict[str, str]:
    """The process environment of a production start, on this machine's servers."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DEBUG": "false",
        "SECRET_KEY": "deploy-test-only-secret-key",
    }


@cache
def gunicorn_check_config(args: tuple[str, ...]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "gunicorn"), "--check-config", *args],
        cwd=ROOT,
        env=production_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _check_gunicorn(args: list[str], command: Command) -> None:
    result = gunicorn_check_config(tuple(args))
    if result.returncode != 0:
        raise CommandRejected(f"gunicorn --check-config: {result.stderr[-2000:]}")


def _gunicorn_port(args: list[str]) -> int:
    options = dict(itertools.pairwise(args))
    bind = options.get("--bind") or options.get("-b")
    if bind is None:
        config = options.get("--config") or options.get("-c")
        bind = runpy.run_path(str(ROOT / config))["bind"][0]
    return int(bind.rsplit(":", 1)[1])


def _flower_port(args: list[str]) -> int:
    ports = [arg.split("=", 1)[1] for arg in args if arg.startswith("--port=")]
    return int(ports[-1]) if ports else 5555  # Flower's default


def _check_probe(args: list[str], command: Command) -> None:
    """A healthcheck's HTTP request must reach an endpoint of the process it checks."""
    from flower.urls import handlers
    from flower.views.monitor import Healthcheck

    from scheduling.platform.health import CHECKS

    urls = [urlsplit(arg) for arg in args if arg.startswith(("http://", "https://"))]
    if len(urls) != 1:
        raise CommandRejected("a probe fetches exactly one URL")
    (url,) = urls
    program, served_args = program_of(command.serves) if command.serves else ("", [])
    if program == "gunicorn":
        port, known = _gunicorn_port(served_args), url.path in CHECKS
    elif program == "celery" and "flower" in served_args:
        port = _flower_port(served_args)
        # The one Flower page that answers without Flower's basic auth.
        known = any(
            isinstance(handler, tuple)
            and handler[1] is Healthcheck
            and re.fullmatch(handler[0], url.path)
            for handler in handlers
        )
    else:
        raise CommandRejected(f"{command.where} probes over HTTP a process that serves none")
    if not known:
        raise CommandRejected(f"no health endpoint answers {url.path!r}")
    if url.port != port:
        raise CommandRejected(f"the probe asks port {url.port}, the process listens on {port}")


def _check_kill(args: list[str], command: Command) -> None:
    """systemd's ExecReload: a known signal to the service's main process."""
    if len(args) != 3 or args[0] != "-s" or args[2] != "$MAINPID":
        raise CommandRejected("expected kill -s SIGNAL $MAINPID")
    if f"SIG{args[1]}" not in signal.Signals.__members__:
        raise CommandRejected(f"no signal {args[1]!r}")


COMPOSE_GLOBAL_VALUES = {"-f", "--file", "-p", "--project-name", "--profile", "--env-file"}
COMPOSE_VALUES = {"--scale", "-e", "--env", "-u", "--user", "-w", "--workdir", "-t", "--tail"}


def _check_compose(args: list[str], command: Command) -> None:
    """A README's docker compose line: services that exist, and a project command inside."""
    services = set(compose_file()["services"])
    words = iter(args)
    subcommand = next(word for word in words if not _skipped(word, words, COMPOSE_GLOBAL_VALUES))
    named: list[str] = []
    for word in words:
        if word == "--scale":
            named.append(next(words).split("=", 1)[0])
        elif not _skipped(word, words, COMPOSE_VALUES):
            named.append(word)
            if subcommand in {"exec", "run"}:  # the rest is the command run in the service
                check(Command(command.where, tuple(words)))
                break
    unknown = set(named) - services
    if unknown:
        raise CommandRejected(f"docker compose {subcommand}: no service {sorted(unknown)}")


def _skipped(word: str, words: Iterator[str], takes_value: set[str]) -> bool:
    """An option (its value consumed from `words` when it takes one)."""
    if word in takes_value:
        next(words)
    return word.startswith("-")


def _check_systemctl(args: list[str], command: Command) -> None:
    units = {path.name for path in SYSTEMD.iterdir()}
    named = [arg for arg in args if arg.endswith((".service", ".target"))]
    unknown = set(named) - units
    if unknown:
        raise CommandRejected(f"systemctl names units deploy/systemd lacks: {sorted(unknown)}")


CHECKERS: dict[str, Callable[[list[str], Command], None]] = {
    "manage.py": _check_manage,
    "celery": _check_celery,
    "gunicorn": _check_gunicorn,
    "curl": _check_probe,
    "kill": _check_kill,
    "docker compose": _check_compose,
    "docker-compose": _check_compose,
    "systemctl": _check_systemctl,
}


# --- Which process each file starts ----------------------------------------------------


def process_kind(argv: list[str] | tuple[str, ...]) -> str | None:
    """web, worker or beat, for the long-running processes of the platform."""
    program, args = program_of(argv)
    if program == "gunicorn":
        return "web"
    if program == "celery":
        return next((arg for arg in args if arg in {"worker", "beat"}), None)
    return None


def compose_processes() -> dict[str, list[str]]:
    """Each compose service's main process (the image's CMD where it names none)."""
    return {name: _compose_process(service) for name, service in compose_file()["services"].items()}


def _compose_process(service: dict) -> list[str]:
    if "command" in service:
        return _compose_argvs(service["command"])[-1]
    if "build" in service:
        return dockerfile_cmd()
    return [service["image"]]  # the other party's image, with its own default command


def systemd_processes() -> dict[str, list[str]]:
    return {
        path.name: opened_up(shlex.split(unit_settings(path)["Service"]["ExecStart"][0]))[-1]
        for path in unit_files()
    }


def supervisor_processes() -> dict[str, list[str]]:
    return {
        name: opened_up(shlex.split(program["command"]))[-1]
        for name, program in supervisor_programs().items()
    }
