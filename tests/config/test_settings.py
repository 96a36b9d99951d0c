"""Settings come from the environment and refuse values they cannot use."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import database_config, env_bool, env_int, env_secret, redis_urls
from tests.helpers import run_manage
from tests.settings_probe import base_setting


@pytest.mark.parametrize("raw", ["true", "TRUE", "1", "yes", "on"])
def test_env_bool_reads_true(monkeypatch, raw):
    monkeypatch.setenv("FLAG", raw)
    assert env_bool("FLAG", False) is True


@pytest.mark.parametrize("raw", ["maybe", "tru", "2", "enabled"])
def test_env_bool_refuses_anything_else_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv("FLAG", raw)
    with pytest.raises(ImproperlyConfigured, match=f"FLAG must be true or false, got '{raw}'"):
        env_bool("FLAG", False)


def test_env_int_refuses_words_and_values_below_the_minimum(monkeypatch):
    monkeypatch.setenv("PORT_X", "eighty")
    with pytest.raises(ImproperlyConfigured, match="PORT_X must be a whole number"):
        env_int("PORT_X", 1)
    monkeypatch.setenv("PORT_X", "-1")
    with pytest.raises(ImproperlyConfigured, match="PORT_X must be at least 0"):
        env_int("PORT_X", 1, minimum=0)


def test_a_secret_can_come_from_a_file(monkeypatch, tmp_path):
    secret = tmp_path / "key"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("TOKEN_FILE", str(secret))
    assert env_secret("TOKEN") == "from-a-file"
    monkeypatch.setenv("TOKEN", "also-set")
    with pytest.raises(ImproperlyConfigured, match="either TOKEN or TOKEN_FILE"):
        env_secret("TOKEN")
    monkeypatch.delenv("TOKEN")
    monkeypatch.setenv("TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="cannot be read"):
        env_secret("TOKEN")


def test_database_urls_parse_tcp_and_socket_forms():
    tcp = database_config("postgres://app:s%40cret@db.internal:6432/platform?sslmode=require")
    assert (tcp["HOST"], tcp["PORT"], tcp["USER"], tcp["PASSWORD"], tcp["NAME"]) == (
        "db.internal",
        "6432",
        "app",
        "s@cret",
        "platform",
    )
    assert tcp["OPTIONS"] == {"sslmode": "require"}
    socket = database_config("postgresql://postgres@/scheduler?host=/run/pg")
    assert (socket["HOST"], socket["NAME"]) == ("/run/pg", "scheduler")
    with pytest.raises(ImproperlyConfigured, match="postgres:// URL"):
        database_config("mysql://db/x")
    with pytest.raises(ImproperlyConfigured, match="must name a database"):
        database_config("postgres://db")


def test_redis_unix_sockets_are_spelled_for_kombu():
    urls = redis_urls("unix:///tmp/r.sock?db=2")
    assert (urls.client, urls.broker) == (
        "unix:///tmp/r.sock?db=2",
        "redis+socket:///tmp/r.sock?db=2",
    )
    assert redis_urls("redis://h:6379/1").broker == "redis://h:6379/1"
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL must be a redis://"):
        redis_urls("http://h")


def _check(env: dict[str, str]):
    return run_manage("check", env={"DJANGO_SETTINGS_MODULE": "config.settings.base", **env})


def test_a_bad_boolean_stops_start_up_naming_the_variable():
    result = _check({"DEBUG": "maybe", "SECRET_KEY": "x" * 50})
    assert result.returncode != 0
    assert "DEBUG must be true or false, got 'maybe'" in result.stderr


def test_production_refuses_the_default_secret_key():
    result = _check({"DEBUG": "false", "SECRET_KEY": ""})
    assert result.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is false" in result.stderr


def test_production_starts_with_a_real_secret_key():
    result = _check({"DEBUG": "false", "SECRET_KEY": "k" * 50})
    assert result.returncode == 0, result.stderr


def test_a_missing_database_url_is_explained():
    result = _check({"DEBUG": "true", "DATABASE_URL": ""})
    assert result.returncode != 0
    assert "DATABASE_URL is not set" in result.stderr


def test_a_short_operator_api_token_is_refused_and_a_long_one_read():
    short = base_setting("OPS_API_TOKEN", {"OPS_API_TOKEN": "guessable"})
    good = base_setting("OPS_API_TOKEN", {"OPS_API_TOKEN": "t" * 32})

    assert short.returncode != 0
    assert "OPS_API_TOKEN must be at least 32 characters" in short.stderr
    assert "guessable" not in short.stderr
    assert good.stdout.strip() == "t" * 32
