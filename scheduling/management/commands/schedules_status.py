"""Every periodic task with its tenant, kind, schedule, runs and next run.

manage.py schedules_status [--tenant SLUG] [--json]
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from scheduling.platform.schedules import OverviewJSONEncoder, schedules_overview

COLUMNS = (
    ("NAME", lambda row: row["name"]),
    ("TENANT", lambda row: row["tenant"] or "-"),
    ("KIND", lambda row: row["kind"] or "-"),
    ("ENABLED", lambda row: "yes" if row["enabled"] else "no"),
    ("SCHEDULE", lambda row: row["schedule"]),
    ("LAST RUN (UTC)", lambda row: _when(row["last_run_at"])),
    ("RUNS", lambda row: str(row["total_run_count"])),
    ("NEXT RUN (UTC)", lambda row: _when(row["next_run_at"])),
    ("SYNC RUNS", lambda row: _sync_runs(row["sync_runs"])),
)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _sync_runs(summary: dict | None) -> str:
    if summary is None:
        return "-"
    return f"{summary['ok']} ok, {summary['failed']} failed, last {summary['last_status'] or '-'}"


class Command(BaseCommand):
    help = "List every periodic task: tenant, kind, schedule, last and next run, sync run counts."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", metavar="SLUG", help="only this tenant's tasks")
        parser.add_argument("--json", action="store_true", help="a JSON array, one object a task")

    def handle(self, *args, **options):
        try:
            rows = schedules_overview(tenant_slug=options["tenant"])
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages), returncode=2) from None
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2, cls=OverviewJSONEncoder))
        else:
            self.stdout.write(self._table(rows))

    def _table(self, rows: list[dict]) -> str:
        cells = [[header for header, _ in COLUMNS]]
        cells += [[cell(row) for _, cell in COLUMNS] for row in rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in cells]
        lines = [line.rstrip() for line in lines]
        return "\n".join([*lines, f"{len(rows)} task(s)."])
