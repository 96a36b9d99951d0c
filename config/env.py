"""Typed readers for settings that come from the environment.

Every reader fails loudly: a value that cannot be converted raises
ImproperlyConfigured naming the variable, so a typo in a deployment stops the
process at start-up instead of silently falling back to a default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value


def env_secret(name: str, default: str | None = None) -> str | None:
    """Read NAME, or the contents of the file named by NAME_FILE (Docker/systemd secrets)."""
    path = env_str(f"{name}_FILE")
    if path is not None and env_str(name) is not None:
        raise ImproperlyConfigured(f"Set either {name} or {name}_FILE, not both.")
    if path is None:
        return env_str(name, default)
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"{name}_FILE={path!r} cannot be read: {exc}") from exc


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {value!r}.")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = env_str(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {value!r}.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {number}.")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = env_str(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def database_config(url: str, *, name: str = "DATABASE_URL") -> dict[str, object]:
    """Turn postgres://user:pass@host:port/db?host=/socket/dir into a DATABASES entry."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ImproperlyConfigured(
            f"{name} must be a postgres:// URL, got scheme {parts.scheme!r}."
        )
    query = parse_qs(parts.query)
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ImproperlyConfigured(f"{name} must name a database, e.g. postgres://host/app.")
    host = query.pop("host", [parts.hostname or ""])[0]
    options = {key: values[-1] for key, values in query.items()}
    return {
        "NAME": database,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
        "OPTIONS": options,
    }


@dataclass(frozen=True)
class RedisUrls:
    """One Redis URL, spelled for each client that uses it."""

    client: str  # redis-py and Django's cache: redis://, rediss:// or unix://
    broker: str  # kombu: redis://, rediss:// or redis+socket://


def redis_urls(url: str, *, name: str = "REDIS_URL") -> RedisUrls:
    parts = urlsplit(url)
    if parts.scheme in {"redis", "rediss"}:
        return RedisUrls(client=url, broker=url)
    if parts.scheme in {"unix", "redis+socket"}:
        if not parts.path:
            raise ImproperlyConfigured(f"{name} must name a socket path, got {url!r}.")
        query = f"?{parts.query}" if parts.query else ""
        return RedisUrls(
            client=f"unix://{parts.path}{query}",
            broker=f"redis+socket://{parts.path}{query}",
        )
    raise ImproperlyConfigured(
        f"{name} must be a redis://, rediss:// or unix:// URL, got scheme {parts.scheme!r}."
    )


_SMTP = "django.core.mail.backends.smtp.EmailBackend"
# scheme: (default port, EMAIL_USE_TLS (STARTTLS), EMAIL_USE_SSL (implicit TLS))
_EMAIL_SMTP_SCHEMES = {
    "smtp": (25, False, False),
    "smtp+tls": (587, True, False),
    "submission": (587, True, False),
    "smtps": (465, False, True),
    "smtp+ssl": (465, False, True),
}
_EMAIL_LOCAL_SCHEMES = {
    "console": "django.core.mail.backends.console.EmailBackend",
    "locmem": "django.core.mail.backends.locmem.EmailBackend",
    "dummy": "django.core.mail.backends.dummy.EmailBackend",
}


def email_config(url: str, *, name: str = "EMAIL_URL") -> dict[str, object]:
    """The EMAIL_* settings that `url` decides, such as smtp+tls://user:pass@host or file:///dir.

    The URL usually carries a password, so no error message repeats the URL.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme in _EMAIL_SMTP_SCHEMES:
        return _email_smtp(parts, scheme=scheme, name=name)
    if scheme in _EMAIL_LOCAL_SCHEMES:
        if parts.netloc or parts.path.strip("/") or parts.query:
            raise ImproperlyConfigured(f"{name}: {scheme}:// takes no host, path or options.")
        return {"EMAIL_BACKEND": _EMAIL_LOCAL_SCHEMES[scheme]}
    if scheme == "file":
        path = unquote(parts.path)
        if parts.netloc or parts.query or not path.startswith("/"):
            raise ImproperlyConfigured(
                f"{name}: file:// needs an absolute folder and nothing else, "
                "such as file:///var/mail/app."
            )
        return {
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": path,
        }
    known = ", ".join(f"{s}://" for s in [*_EMAIL_SMTP_SCHEMES, *_EMAIL_LOCAL_SCHEMES, "file"])
    # Without "://" what urlsplit calls the scheme may be a user name: don't repeat it.
    got = f"got scheme {parts.scheme!r}" if "://" in url else "got no scheme"
    raise ImproperlyConfigured(f"{name} must start with one of {known}; {got}.")


def _email_smtp(parts, *, scheme: str, name: str) -> dict[str, object]:
    default_port, use_tls, use_ssl = _EMAIL_SMTP_SCHEMES[scheme]
    try:
        port = default_port if parts.port is None else parts.port
    except ValueError:
        port = 0  # not a number: urlsplit may have split an unencoded password at a ':'
    if not 1 <= port <= 65535:
        raise ImproperlyConfigured(
            f"{name}: the port must be a number from 1 to 65535 "
            "(percent-encode any ':', '@' or '/' in the user name or password)."
        )
    if not parts.hostname:
        raise ImproperlyConfigured(
            f"{name}: {scheme}:// needs a host, such as {scheme}://mail.example.com."
        )
    if parts.path not in {"", "/"} or parts.fragment:
        raise ImproperlyConfigured(
            f"{name}: {scheme}:// takes no path or fragment "
            "(percent-encode any '/' or '#' in the user name or password)."
        )
    config: dict[str, object] = {
        "EMAIL_BACKEND": _SMTP,
        "EMAIL_HOST": parts.hostname,
        "EMAIL_PORT": port,
        "EMAIL_HOST_USER": unquote(parts.username or ""),
        "EMAIL_HOST_PASSWORD": unquote(parts.password or ""),
        "EMAIL_USE_TLS": use_tls,
        "EMAIL_USE_SSL": use_ssl,
    }
    return config | _email_options(parts.query, name=name)


def _email_options(query: str, *, name: str) -> dict[str, object]:
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - {"timeout"})
    if unknown:
        raise ImproperlyConfigured(f"{name}: unknown option(s) {', '.join(unknown)}; only timeout.")
    if "timeout" not in options:
        return {}
    value = options["timeout"][-1]
    if not value.isdigit() or int(value) < 1:
        raise ImproperlyConfigured(
            f"{name}: timeout must be a whole number of seconds, at least 1; got {value!r}."
        )
    return {"EMAIL_TIMEOUT": int(value)}
