"""Test overrides: fast hashing, loopback allowed, short intervals."""

import os
from datetime import timedelta

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("DEBUG", "false")

from config.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
TENANT_SYNC_INTERVAL_MIN = timedelta(seconds=1)
# pytest itself always uses locmem; worker subprocesses of the e2e tests may get a file backend.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend")
SITE_SCHEME = "http"
SITE_PORT = 0
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SYNC_FETCH_ALLOW_LOOPBACK = True
DIGEST_DISPATCH_INTERVAL = 2  # the end-to-end test waits for real dispatches
# Static files as in development: plain names, served from the apps' folders, nothing collected.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
