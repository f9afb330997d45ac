"""The layers hold: the core sees drivers, sinks and the alert path only through its protocols;
only the composition root and the command line know the concrete classes; the demo and its
stand-ins live apart. Read from the source (every import, also inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What assembles the parts: the composition root, the command line, and the loader that
# composes each package's configuration section into one deployment.
# The composition: the command line (and its report command, which replays through the rules) and the app.
ASSEMBLERS = {
    "telemetry/app.py",
    "telemetry/cli.py",
    "telemetry/cli_report.py",
    "telemetry/config.py",
    "telemetry/config_refs.py",
}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.update([node.module] + [f"{node.module}.{alias.name}" for alias in node.names])
    return found


def offenders(package: str, forbidden: tuple[str, ...], exempt: set[str] | None = None) -> list[str]:
    """Each import of a module under ``package`` (not in ``exempt``) of one under ``forbidden``."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name in (exempt or set()):
            continue
        for module in sorted(imports(path)):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                found.append(f"{name} imports {module}")
    return found


def test_the_core_knows_no_driver_and_no_alert_class() -> None:
    sim = {p.relative_to(ROOT).as_posix() for p in (ROOT / "telemetry" / "sim").rglob("*.py")}
    assert offenders("telemetry", ("alerts", "drivers"), ASSEMBLERS | sim) == []


def test_the_pipeline_sees_only_protocols() -> None:
    pipeline = imports(ROOT / "telemetry" / "pipeline.py")
    concrete = ("alerts", "drivers", "telemetry.hj212", "telemetry.app", "telemetry.sim")
    assert sorted(m for m in pipeline if any(m == c or m.startswith(c + ".") for c in concrete)) == []
    assert {m for m in pipeline if m.startswith("telemetry.sinks.")} == {"telemetry.sinks.Sink"}  # the protocol


def test_alerts_own_their_configuration_and_know_no_driver() -> None:
    assert (
        offenders("alerts", ("drivers", "telemetry.config", "telemetry.pipeline", "telemetry.app", "telemetry.sim"))
        == []
    )


def test_drivers_know_no_alert_and_no_pipeline() -> None:
    assert offenders("drivers", ("alerts", "telemetry.pipeline", "telemetry.app", "telemetry.sim")) == []


def test_only_the_command_line_starts_the_demo() -> None:
    sim = {p.relative_to(ROOT).as_posix() for p in (ROOT / "telemetry" / "sim").rglob("*.py")}
    users = offenders("telemetry", ("telemetry.sim",), sim)
    assert users
    assert all(u.startswith("telemetry/cli.py ") for u in users), users
    assert offenders("alerts", ("telemetry.sim",)) + offenders("drivers", ("telemetry.sim",)) == []


def test_timestamps_are_parsed_in_one_place() -> None:
    """Payloads, silences and the command line read times with ``telemetry.times``."""
    defined = [
        p.relative_to(ROOT).as_posix()
        for package in ("telemetry", "alerts", "drivers")
        for p in (ROOT / package).rglob("*.py")
        if "def parse_timestamp(" in p.read_text(encoding="utf-8")
    ]
    assert defined == ["telemetry/times.py"]
