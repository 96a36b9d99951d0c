"""Create or update tenants and schedules from a schedules_export file; idempotent.

manage.py schedules_import FILE [--dry-run]     (FILE "-" reads stdin)
"""

from __future__ import annotations

import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from scheduling.platform.transfer import schedules_import


class Command(BaseCommand):
    help = "Import a schedules_export file: everything is checked first, then applied at once."

    def add_arguments(self, parser):
        parser.add_argument("file", help="a schedules_export file, or - for stdin")
        parser.add_argument("--dry-run", action="store_true", help="report, change nothing")

    def handle(self, *args, **options):
        text = self._read(options["file"])
        try:
            report = schedules_import(text=text, dry_run=options["dry_run"])
        except ValidationError as exc:
            problems = "\n".join(exc.messages)
            raise CommandError(
                f"{len(exc.messages)} problem(s); nothing was changed:\n{problems}", returncode=2
            ) from None
        for line in report.lines:
            self.stdout.write(line)
        self.stdout.write(report.summary())
        if options["dry_run"]:
            self.stdout.write("Dry run: nothing was changed.")

    def _read(self, name: str) -> str:
        try:
            if name == "-":  # bytes, decoded here: the terminal's encoding is no promise
                stdin = getattr(sys.stdin, "buffer", None)
                return stdin.read().decode() if stdin is not None else sys.stdin.read()
            with open(name, encoding="utf-8") as source:
                return source.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise CommandError(f"{name}: {reason}.", returncode=2) from None
