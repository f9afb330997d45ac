"""The code stays ruff-clean and mypy --strict clean: part of the suite, so CI enforces it."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_lint() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run("mypy", "telemetry", "drivers", "alerts", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_dependencies_have_a_floor_and_a_next_major_ceiling() -> None:
    """Security releases install freely; an API break never arrives unseen (see SECURITY.md)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    requirements = [r for r in cfg["options"]["install_requires"].splitlines() if r.strip()]
    assert len(requirements) >= 10
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+),<([0-9]+)", requirement.strip())
        assert match, f"{requirement!r}: expected NAME>=FLOOR,<NEXT_MAJOR"
        assert int(match.group(3)) > int(match.group(2).split(".")[0]), requirement
