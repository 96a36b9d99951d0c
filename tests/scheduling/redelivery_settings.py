"""Settings of the workers in test_redelivery: Redis hands a killed worker's message to
another one after seconds, not the production's two hours, and kombu looks for such
messages every second instead of every 100 s.

Set here, past the check in config/settings/base.py that refuses so short a
CELERY_VISIBILITY_TIMEOUT: in production it would run long tasks and waiting retries
twice. The test's task is short and never retried.
"""

from config.settings.test import *  # noqa: F403

CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 4,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
    # A worker killed while sweeping keeps the sweep's lock this long.
    "unacked_mutex_expire": 2,
}
