"""The code stays ruff clean and ruff formatted (ruff's default rules, no local config)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from servers import ROOT


@pytest.mark.parametrize(
    "command", [["check"], ["format", "--check"]], ids=["lint", "format"]
)
def test_ruff_is_happy(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "."],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
