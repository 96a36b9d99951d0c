"""Settings for every environment, read from environment variables.

Every variable is listed in `.env.example` and in the README's Configuration
section. Anything that cannot be parsed stops start-up with an error naming
the variable.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.env import (
    database_config,
    email_config,
    env_bool,
    env_int,
    env_list,
    env_secret,
    env_str,
    redis_urls,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent

DEBUG = env_bool("DEBUG", False)

_DEV_SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"
SECRET_KEY = env_secret("SECRET_KEY") or _DEV_SECRET_KEY
if not DEBUG and SECRET_KEY == _DEV_SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is false.")

# --- Sites and hosts --------------------------------------------------------
# The operator site answers on BASE_DOMAIN, each tenant on <slug>.<BASE_DOMAIN>.
BASE_DOMAIN = (env_str("BASE_DOMAIN", "localhost") or "localhost").lower()
PUBLIC_HOSTS = [BASE_DOMAIN, *env_list("PUBLIC_HOSTS_EXTRA", [])]
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [BASE_DOMAIN, f".{BASE_DOMAIN}"])
SITE_SCHEME = env_str("SITE_SCHEME", "http" if DEBUG else "https")
if SITE_SCHEME not in {"http", "https"}:
    raise ImproperlyConfigured(f"SITE_SCHEME must be http or https, got {SITE_SCHEME!r}.")
SITE_PORT = env_int("SITE_PORT", 0, minimum=0)  # 0: the scheme's default port

# --- Applications -----------------------------------------------------------
SHARED_APPS = [
    # `tenants` precedes django_tenants so that its `migrate` command wins.
    "tenants",
    "django_tenants",
    "tenants.accounts",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_celery_beat",
    # After django_celery_beat: its admin replaces the library's PeriodicTask admin.
    "scheduling.platform",
    "scheduling.audit",
    "notifications.platform",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "tenants.accounts",
    "django.contrib.sessions",
    "scheduling",
    "scheduling.audit",
    "notifications",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Tenant"
# Send `SET search_path` once per schema switch, not before every query: it halves the
# statements of a page. Safe with django-tenants 4.x, which forgets the cached path on
# close, rollback and savepoint rollback, and on every set_tenant()/schema_context().
TENANT_LIMIT_SET_CALLS = True
TENANT_DOMAIN_MODEL = "tenants.Domain"
# A migrated, empty schema that new tenants are cloned from (see tenants/provisioning.py).
TENANT_TEMPLATE_SCHEMA = "_tenant_template"
RESERVED_TENANT_SLUGS = frozenset(
    {
        "public",
        "www",
        "admin",
        "api",
        "app",
        "static",
        "media",
        "mail",
        "smtp",
        "status",
        "help",
        "docs",
        "login",
        "logout",
        "operator",
        "operators",
        "root",
        "postgres",
        "information_schema",
        "default",
        "test",
        "localhost",
    }
)
TENANT_SYNC_INTERVAL_MIN = timedelta(seconds=env_int("TENANT_SYNC_INTERVAL_MIN", 60, minimum=1))
TENANT_SYNC_INTERVAL_MAX = timedelta(
    seconds=env_int("TENANT_SYNC_INTERVAL_MAX", 7 * 24 * 3600, minimum=1)
)
TENANT_SYNC_INTERVAL_DEFAULT = timedelta(minutes=15)
# The sync fetch refuses private, loopback and link-local addresses unless allowed here.
SYNC_FETCH_ALLOW_LOOPBACK = env_bool("SYNC_FETCH_ALLOW_LOOPBACK", DEBUG)
SYNC_FETCH_ALLOW_PRIVATE = env_bool("SYNC_FETCH_ALLOW_PRIVATE", False)
SYNC_FETCH_CONNECT_TIMEOUT = env_int("SYNC_FETCH_CONNECT_TIMEOUT", 5, minimum=1)
SYNC_FETCH_READ_TIMEOUT = env_int("SYNC_FETCH_READ_TIMEOUT", 20, minimum=1)
SYNC_FETCH_MAX_BYTES = env_int("SYNC_FETCH_MAX_BYTES", 5 * 1024 * 1024, minimum=1024)
# Run history (SyncRun rows in every tenant schema) older than this is deleted nightly.
RUN_HISTORY_DAYS = env_int("RUN_HISTORY_DAYS", 90, minimum=1)
# The scheduler's occurrences (one row per slot sent, skipped or missed) are kept this long.
OCCURRENCE_HISTORY_DAYS = env_int("OCCURRENCE_HISTORY_DAYS", 30, minimum=1)
if TENANT_SYNC_INTERVAL_MIN > TENANT_SYNC_INTERVAL_MAX:
    raise ImproperlyConfigured("TENANT_SYNC_INTERVAL_MIN must not exceed TENANT_SYNC_INTERVAL_MAX.")

# Digests: each tenant's dispatcher runs this often (at a per-tenant offset) and
# queues one email per user whose digest is due.
DIGEST_DISPATCH_INTERVAL = env_int("DIGEST_DISPATCH_INTERVAL", 300, minimum=1)
DIGEST_DISPATCH_BATCH = env_int("DIGEST_DISPATCH_BATCH", 500, minimum=1)
DIGEST_MAX_RECORDS = env_int("DIGEST_MAX_RECORDS", 50, minimum=1)  # listed per email

# /healthz/beat answers 503 once beat's heartbeat (a platform task every 60 s) is older.
HEALTH_BEAT_MAX_AGE = env_int("HEALTH_BEAT_MAX_AGE", 120, minimum=1)

# The operator APIs (/metrics, /api/status/schedules) accept `Authorization: Bearer
# <OPS_API_TOKEN>` besides an operator's session; unset, only operators get in.
OPS_API_TOKEN = env_secret("OPS_API_TOKEN")
if OPS_API_TOKEN is not None and len(OPS_API_TOKEN) < 32:
    raise ImproperlyConfigured(
        "OPS_API_TOKEN must be at least 32 characters: make one with "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'."
    )

# Deliveries (digest emails, webhooks): a transient failure (SMTP 4xx, a connection
# error, a webhook 5xx or timeout) is retried after BASE * 2**n seconds, at most MAX
# seconds, up to RETRIES times; a permanent one (SMTP 5xx, webhook 4xx) is not retried.
NOTIFY_MAX_RETRIES = env_int("NOTIFY_MAX_RETRIES", 5, minimum=0)
NOTIFY_RETRY_BASE = env_int("NOTIFY_RETRY_BASE", 30, minimum=1)
# 900 s keeps the broker's visibility timeout (below) short; with the defaults the
# longest wait is 30 * 2**4 = 480 s anyway.
NOTIFY_RETRY_MAX = env_int("NOTIFY_RETRY_MAX", 900, minimum=1)
# Tenant webhooks share the sync fetch's address guard; these bound each POST.
WEBHOOK_CONNECT_TIMEOUT = env_int("WEBHOOK_CONNECT_TIMEOUT", 5, minimum=1)
WEBHOOK_READ_TIMEOUT = env_int("WEBHOOK_READ_TIMEOUT", 10, minimum=1)

# Sign-in throttling: failures counted per account and per client address.
LOGIN_FAILURES_PER_ACCOUNT = env_int("LOGIN_FAILURES_PER_ACCOUNT", 5, minimum=1)
LOGIN_FAILURES_PER_ADDRESS = env_int("LOGIN_FAILURES_PER_ADDRESS", 30, minimum=1)
LOGIN_FAILURE_WINDOW = env_int("LOGIN_FAILURE_WINDOW", 900, minimum=60)  # seconds
# The request.META key holding the client's address: HTTP_X_REAL_IP behind a proxy that sets it.
LOGIN_CLIENT_ADDRESS_KEY = env_str("LOGIN_CLIENT_ADDRESS_KEY", "REMOTE_ADDR")
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

MIDDLEWARE = [
    # First: probes reach the health checks on any host name, with no session or tenant.
    "config.middleware.HealthCheckMiddleware",
    "tenants.middleware.TenantRoutingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files from STATIC_ROOT, on the operator host and every tenant host alike.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "config.middleware.NulCharacterGuardMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "tenants.accounts.middleware.HtmxLoginRedirectMiddleware",
    "scheduling.audit.middleware.AuditActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls_tenant"
PUBLIC_SCHEMA_URLCONF = "config.urls_public"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Data stores ------------------------------------------------------------
# From a file too (DATABASE_URL_FILE): the URL carries the database password.
_database_url = env_secret("DATABASE_URL")
if _database_url is None:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set (nor DATABASE_URL_FILE). `make run` and `make test` start an "
        "embedded PostgreSQL when it is unset; for other commands use "
        "`python -m config.devstack exec -- <command>`."
    )
DATABASES = {
    "default": {
        "ENGINE": "django_tenants.postgresql_backend",
        **database_config(_database_url),
        # Persistent connections: beat and the workers query on every tick.
        "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 300, minimum=0),
        "CONN_HEALTH_CHECKS": True,
    }
}
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_redis_url = env_str("REDIS_URL")
if _redis_url is None:
    raise ImproperlyConfigured(
        "REDIS_URL is not set. `make run` and `make test` start an embedded Redis when it is unset."
    )
REDIS = redis_urls(_redis_url)
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS.client,
        "KEY_FUNCTION": "django_tenants.cache.make_key",
        "REVERSE_KEY_FUNCTION": "django_tenants.cache.reverse_key",
    }
}

# --- Celery -----------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS.broker)
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_RESULT_EXPIRES = None  # no result backend, so no celery.backend_cleanup task in beat
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_BEAT_SCHEDULER = "scheduling.dispatch.scheduler:DueTimeScheduler"  # scheduling/dispatch
CELERY_BEAT_SCHEDULE: dict = {}  # every schedule lives in the database
# The project's scheduler (scheduling.dispatch): one leader among any number of beats.
SCHEDULER_LEASE_NAME = env_str("SCHEDULER_LEASE_NAME", "beat")
SCHEDULER_LEASE_TTL = env_int("SCHEDULER_LEASE_TTL", 10, minimum=2)
# Default policies of a new schedule: slots older than this many seconds after downtime
# are recorded as missed; tenant tasks are spread over up to this many seconds (at most a
# tenth of their period), platform tasks are not.
SCHEDULER_CATCHUP_WINDOW = env_int("SCHEDULER_CATCHUP_WINDOW", 3600, minimum=0)
SCHEDULER_TENANT_JITTER = env_int("SCHEDULER_TENANT_JITTER", 300, minimum=0)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# tenant-schemas-celery: cache Tenant lookups in the worker for this many seconds.
CELERY_TASK_TENANT_CACHE_SECONDS = env_int("CELERY_TENANT_CACHE_SECONDS", 30, minimum=0)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# A message is acknowledged when its task ends, not when a worker takes it, so a worker
# killed mid-task (SIGKILL, OOM, a lost machine) leaves it to be delivered again; each
# worker process holds one message at a time. Every job kind has its own time limits
# (scheduling/jobs.py), none longer than CELERY_TASK_TIME_LIMIT: the deploy files give
# a stopping worker 360 s to finish what it runs.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
# Redis hands an unacknowledged message to another worker once it is this many seconds
# old. Until acknowledged, a message waits out its retry countdown (up to NOTIFY_RETRY_MAX)
# in the worker and then runs (up to the hard time limit); a shorter timeout would run
# such a retry, or a task still running, twice. A longer one delays the redelivery of
# a killed worker's messages: the default is the shortest safe value plus 5 minutes.
CELERY_VISIBILITY_TIMEOUT = env_int(
    "CELERY_VISIBILITY_TIMEOUT", NOTIFY_RETRY_MAX + CELERY_TASK_TIME_LIMIT + 300
)
if CELERY_VISIBILITY_TIMEOUT <= NOTIFY_RETRY_MAX + CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"CELERY_VISIBILITY_TIMEOUT must exceed NOTIFY_RETRY_MAX + the longest task time "
        f"limit ({NOTIFY_RETRY_MAX} + {CELERY_TASK_TIME_LIMIT} s), got "
        f"{CELERY_VISIBILITY_TIMEOUT}: Redis would deliver a waiting retry or a running "
        f"task to a second worker."
    )
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
# With late acknowledgement, a worker that loses the broker cannot acknowledge what it
# runs: stop those tasks, whose messages are delivered again, rather than finish them twice.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True

# --- Auth, sessions, security -----------------------------------------------
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Cookies are host-only (no SESSION_COOKIE_DOMAIN), so a session on one tenant's
# site never reaches another's; each schema also keeps its own session table.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SESSION_COOKIE_HTTPONLY = True
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Email ------------------------------------------------------------------
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are mutually exclusive.")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(BASE_DIR / ".local" / "mail"))
# EMAIL_URL (or EMAIL_URL_FILE) wins over the EMAIL_* variables above for all it says:
# the backend and, for SMTP, host, port, user, password and TLS (and ?timeout=).
_EMAIL_URL = env_secret("EMAIL_URL")
if _EMAIL_URL is not None:
    globals().update(email_config(_EMAIL_URL))
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", f"Scheduler <noreply@{BASE_DOMAIN}>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Internationalisation ---------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where `manage.py collectstatic` writes and WhiteNoise serves from (the image collects at build).
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / ".local" / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Outside DEBUG, names carry a hash of the content, so browsers may keep them for good,
    # and gzip copies are served to clients that accept them. Pages can only name files that
    # collectstatic has hashed: run it before starting web.
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# json: one object per line, for a log pipeline; plain: readable text. Lines written
# inside a Celery task carry its tenant, task, task_id and periodic_task_name (config/logs.py).
LOG_FORMAT = env_str("LOG_FORMAT", "plain" if DEBUG else "json")
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or plain, got {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"task_context": {"()": "config.logs.TaskContextFilter"}},
    "formatters": {
        "plain": {
            "()": "config.logs.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        },
        "json": {"()": "config.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["task_context"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
