"""Test overrides: fast hashing, loopback allowed, short intervals."""

import os
from datetime import timedelta

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("DEBUG", "false")

from config.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
TENANT_SYNC_INTERVAL_MIN = timedelta(seconds=1)
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
SITE_SCHEME = "http"
SITE_PORT = 0
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SYNC_FETCH_ALLOW_LOOPBACK = True
