"""Write the platform's and every tenant's schedules as JSON, for schedules_import.

manage.py schedules_export [--output FILE]
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from scheduling.platform.transfer import schedules_export


class Command(BaseCommand):
    help = "Write platform and tenant schedules, with each tenant's settings, as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--output", metavar="FILE", help="write here instead of stdout")

    def handle(self, *args, **options):
        export = schedules_export()
        text = json.dumps(export.document, indent=2) + "\n"
        for name in export.orphans:
            self.stderr.write(f"left out {name}: its _schema_name header names no tenant")
        if options["output"] is None:
            self.stdout.write(text, ending="")
            return
        try:
            with open(options["output"], "w", encoding="utf-8") as out:
                out.write(text)
        except OSError as exc:
            raise CommandError(f"{options['output']}: {exc.strerror}.", returncode=2) from None
