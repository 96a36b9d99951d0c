"""Scraping /metrics in the tests, parsed by prometheus_client's own parser."""

from __future__ import annotations

import contextlib

from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from scheduling import metrics
from tests.conftest import site_client

TOKEN = "metrics-test-token-0123456789"


@contextlib.contextmanager
def metrics_clean():
    """No counters from other tests: every metrics key goes, before and after; and the
    operator API token is TOKEN meanwhile."""

    def wipe() -> None:
        client = metrics._client()
        keys = [*client.scan_iter("platform:metrics:*"), metrics.REFUSED_KEY, metrics.HEARTBEAT_KEY]
        client.delete(*keys)

    wipe()
    try:
        with override_settings(OPS_API_TOKEN=TOKEN):
            yield
    finally:
        wipe()


class Scrape:
    """One answer of /metrics: its families by name, and its samples by name and labels."""

    def __init__(self, text: str) -> None:
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in self.families.values()
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def labelled(self, name: str) -> dict[frozenset, float]:
        """Every sample called `name`, by its labels."""
        return {labels: value for (sample, labels), value in self.samples.items() if sample == name}

    def runs(self, **labels: str) -> dict[tuple[str, str, str], float]:
        """scheduler_job_runs_total as {(tenant, kind, status): runs}, filtered by `labels`."""
        found = {}
        for labels_set, value in self.labelled("scheduler_job_runs_total").items():
            sample = dict(labels_set)
            if all(sample[name] == wanted for name, wanted in labels.items()):
                found[(sample["tenant"], sample["kind"], sample["status"])] = value
        return found


def scrape(client: Client | None = None) -> Scrape:
    client = client or site_client()
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    return Scrape(response.content.decode())
