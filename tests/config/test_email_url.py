"""EMAIL_URL: one variable for the email backend, which wins over the EMAIL_* variables."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import email_config
from tests.helpers import run_manage

SMTP = "django.core.mail.backends.smtp.EmailBackend"


def _smtp(config: dict) -> tuple:
    keys = ("EMAIL_HOST", "EMAIL_PORT", "EMAIL_USE_TLS", "EMAIL_USE_SSL")
    return tuple(config[key] for key in keys)


def test_plain_smtp_reads_host_port_and_percent_decoded_credentials():
    config = email_config("smtp://mailer%40acme.test:p%40ss%3Aw%2Frd@mail.example.com:2525")

    assert config == {
        "EMAIL_BACKEND": SMTP,
        "EMAIL_HOST": "mail.example.com",
        "EMAIL_PORT": 2525,
        "EMAIL_HOST_USER": "mailer@acme.test",
        "EMAIL_HOST_PASSWORD": "p@ss:w/rd",
        "EMAIL_USE_TLS": False,
        "EMAIL_USE_SSL": False,
    }


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", ("mail.example.com", 25, False, False)),
        ("smtp+tls://mail.example.com", ("mail.example.com", 587, True, False)),
        ("submission://mail.example.com/", ("mail.example.com", 587, True, False)),
        ("smtps://mail.example.com", ("mail.example.com", 465, False, True)),
        ("SMTP+SSL://Mail.Example.com:1465", ("mail.example.com", 1465, False, True)),
        ("smtp://[::1]:1025", ("::1", 1025, False, False)),
    ],
)
def test_each_smtp_scheme_picks_its_tls_mode_and_default_port(url, expected):
    config = email_config(url)

    assert config["EMAIL_BACKEND"] == SMTP
    assert _smtp(config) == expected
    assert (config["EMAIL_HOST_USER"], config["EMAIL_HOST_PASSWORD"]) == ("", "")
    assert "EMAIL_TIMEOUT" not in config


def test_a_timeout_option_sets_the_smtp_timeout():
    assert email_config("smtps://mail.example.com?timeout=30")["EMAIL_TIMEOUT"] == 30


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("console://", "django.core.mail.backends.console.EmailBackend"),
        ("locmem://", "django.core.mail.backends.locmem.EmailBackend"),
        ("dummy://", "django.core.mail.backends.dummy.EmailBackend"),
    ],
)
def test_local_backends_need_nothing_else(url, backend):
    assert email_config(url) == {"EMAIL_BACKEND": backend}


def test_the_file_backend_takes_an_absolute_folder():
    assert email_config("file:///var/mail/my%20app") == {
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": "/var/mail/my app",
    }


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "must start with one of smtp://, smtp+tls://"),
        ("mailgun://key@api", "got scheme 'mailgun'"),
        ("user:s3cret-pass@mail.example.com", "got no scheme"),
        ("smtp://", "smtp:// needs a host"),
        ("smtp://user:s3cret-pass@", "smtp:// needs a host"),
        ("smtp://mail.example.com:0", "the port must be a number from 1 to 65535"),
        ("smtp://mail.example.com:99999", "the port must be a number from 1 to 65535"),
        ("smtp://user:s3cret#pass@mail.example.com", "the port must be a number"),
        ("smtp://user:s3cret-pass@mail.example.com/inbox", "smtp:// takes no path"),
        ("smtp://mail.example.com?timeout=soon", "timeout must be a whole number"),
        ("smtp://mail.example.com?timeout=0", "timeout must be a whole number"),
        ("smtp://mail.example.com?tls=yes", "unknown option(s) tls; only timeout"),
        ("console://localhost", "console:// takes no host, path or options"),
        ("file://var/mail", "file:// needs an absolute folder"),
        ("file:///var/mail?x=1", "file:// needs an absolute folder"),
    ],
)
def test_an_unusable_url_is_refused_naming_the_problem_but_not_the_password(url, problem):
    with pytest.raises(ImproperlyConfigured) as caught:
        email_config(url)

    message = str(caught.value)
    assert message.startswith("EMAIL_URL")
    assert problem in message
    assert "s3cret" not in message


# --- At start-up: the settings a process gets ------------------------------------------------

PRINT_EMAIL = (
    "from django.conf import settings as s; print(s.EMAIL_BACKEND, s.EMAIL_HOST, s.EMAIL_PORT, "
    "s.EMAIL_HOST_USER, s.EMAIL_HOST_PASSWORD, s.EMAIL_USE_TLS, s.EMAIL_USE_SSL, s.EMAIL_TIMEOUT)"
)
INDIVIDUAL = {
    "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend",
    "EMAIL_HOST": "old.example.com",
    "EMAIL_PORT": "2500",
    "EMAIL_HOST_USER": "old-user",
    "EMAIL_HOST_PASSWORD": "old-pass",
    "EMAIL_USE_SSL": "true",
    "EMAIL_TIMEOUT": "7",
}


def _settings(env: dict[str, str]):
    return run_manage(
        "shell",
        "--verbosity",
        "0",
        "-c",
        PRINT_EMAIL,
        env={
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "SECRET_KEY": "k" * 50,
            "EMAIL_URL": "",
            "EMAIL_URL_FILE": "",
            **env,
        },
    )


def test_email_url_wins_over_the_individual_variables():
    result = _settings({**INDIVIDUAL, "EMAIL_URL": "submission://ops:n%2Fw@smtp.example.com"})

    assert result.returncode == 0, result.stderr
    # Without ?timeout= the URL says nothing of it, so EMAIL_TIMEOUT still applies.
    assert result.stdout.split() == [
        SMTP,
        "smtp.example.com",
        "587",
        "ops",
        "n/w",
        "True",
        "False",
        "7",
    ]


def test_without_email_url_the_individual_variables_apply():
    result = _settings(INDIVIDUAL)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.core.mail.backends.console.EmailBackend",
        "old.example.com",
        "2500",
        "old-user",
        "old-pass",
        "False",
        "True",
        "7",
    ]


def test_email_url_can_come_from_a_secret_file(tmp_path):
    secret = tmp_path / "email_url"
    secret.write_text("smtps://ops:from-file@smtp.example.com?timeout=20\n")

    result = _settings({"EMAIL_URL_FILE": str(secret)})

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        SMTP,
        "smtp.example.com",
        "465",
        "ops",
        "from-file",
        "False",
        "True",
        "20",
    ]


def test_a_bad_email_url_stops_start_up_without_echoing_the_password():
    result = _settings({"EMAIL_URL": "smtp://ops:s3cret-pass@smtp.example.com:smtp"})

    assert result.returncode != 0
    assert "EMAIL_URL: the port must be a number from 1 to 65535" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout
