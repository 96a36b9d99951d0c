from datetime import timedelta

import pytest

from scheduling.intervals import (
    IntervalSyntaxError,
    describe_interval,
    format_interval,
    parse_interval,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1w", 604800),
        ("300", 300),
        (" 1h 5m ", 3900),
        ("2H", 7200),
    ],
)
def test_it_parses_what_people_write(text, seconds):
    assert parse_interval(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "soon", "5x", "1.5h", "-5m", "0s", "m15", "0"])
def test_it_refuses_what_is_not_a_positive_interval(text):
    with pytest.raises(IntervalSyntaxError):
        parse_interval(text)


@pytest.mark.parametrize(
    ("seconds", "compact", "words"),
    [
        (60, "1m", "every minute"),
        (900, "15m", "every 15 minutes"),
        (5400, "1h30m", "every 1 hour 30 minutes"),
        (86400, "1d", "every day"),
        (90061, "1d1h1m1s", "every 1 day 1 hour 1 minute 1 second"),
    ],
)
def test_it_formats_for_machines_and_people(seconds, compact, words):
    interval = timedelta(seconds=seconds)
    assert format_interval(interval) == compact
    assert parse_interval(compact) == interval
    assert describe_interval(interval) == words
