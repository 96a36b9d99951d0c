"""config/settings/base.py read afresh in a subprocess, from an environment of the test's."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT


def base_setting(name: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Print setting `name` of config.settings.base as read with `env` over a production-like
    environment (DEBUG false, a real SECRET_KEY); a refused value fails with its message."""
    environment = {key: value for key, value in os.environ.items() if key not in env}
    return subprocess.run(
        [sys.executable, "-c", f"from config.settings import base; print(base.{name})"],
        cwd=ROOT,
        env=environment | {"DEBUG": "false", "SECRET_KEY": "k" * 50} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
