"""Settings of the beat and worker processes of test_scheduler_e2e.py: the test settings,
with the INFO lines of the scheduler's modules (the worker's duplicate guard, the lease's
takeovers) and the worker's start in the logs the tests read."""

from config.settings.test import *  # noqa: F403

LOGGING["loggers"] |= {  # noqa: F405
    "scheduling.dispatch": {"level": "INFO"},
    "scheduling.dispatch.sent": {"level": "WARNING"},  # a line per message: 20k in the herd
    "celery.apps.worker": {"level": "INFO"},
    "celery.worker.consumer": {"level": "INFO"},
}
