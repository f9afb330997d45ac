"""The ``telemetry`` command as an operator runs it: run + SIGTERM, demo, --version."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from telemetry import cli_parser
from telemetry.sim.plant import LeachateStation, ModbusAnalyzer
from tests.services import Influx1, Mosquitto, eventually, free_port

ROOT = Path(__file__).resolve().parents[1]


async def telemetry(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telemetry.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


async def test_version() -> None:
    proc = await telemetry("--version")
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert out.decode().startswith("telemetry ")


@pytest.mark.service
async def test_run_writes_to_influxdb_and_stops_cleanly_on_sigterm(
    tmp_path: Path, unique: str, influx1: Influx1
) -> None:
    analyzer = ModbusAnalyzer(LeachateStation(excursion_at=1e9), port=free_port())
    await analyzer.start()
    config = tmp_path / "site.yaml"
    config.write_text(
        f"""
sites: [{{id: {unique}}}]
devices:
  - {{id: an, kind: modbus, site: {unique}, host: 127.0.0.1, port: {analyzer.port}, interval: 200ms,
     timeout: 80ms, points: [{{quantity: cod, address: 0}}]}}
influxdb:
  - {{name: local, api: v1, url: "{influx1.url}", database: {unique}, create_database: true, flush_interval: 50ms}}
metrics: {{enabled: false}}
outbox: {{path: "{tmp_path}/outbox.sqlite"}}
"""
    )
    proc = await telemetry("run", "-c", str(config))
    try:

        def written() -> list[dict[str, object]]:
            assert proc.returncode is None, "telemetry run exited early"
            return influx1.query(unique, "SELECT count(value) FROM telemetry")

        await asyncio.to_thread(eventually, written, 30, "readings")
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
        await analyzer.stop()
    assert proc.returncode == 0, err.decode()
    log = err.decode()
    assert "Traceback" not in log
    assert "telemetry stopped" in log
    # Everything committed before SIGTERM reached InfluxDB in the final flush: the outbox is empty.
    import sqlite3  # noqa: PLC0415 - only this test opens the file directly

    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 0


def quiet_site(tmp_path: Path) -> Path:
    """A site with no devices, sinks or metrics port: the daemon's own tasks only."""
    config = tmp_path / "site.yaml"
    config.write_text(
        f"""
sites: [{{id: s}}]
metrics: {{enabled: false}}
outbox: {{path: "{tmp_path}/outbox.sqlite"}}
"""
    )
    return config


# `telemetry run` with a bug injected into one of the daemon's tasks: the notifier's loop raises.
BROKEN_NOTIFIER = """
import sys
from alerts.notify import Notifier

async def broken(self, stop):
    raise RuntimeError("injected: the notifier hit a bug")

Notifier.run = broken
from telemetry.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def test_run_exits_1_when_a_task_dies_so_that_the_supervisor_restarts_it(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        BROKEN_NOTIFIER,
        "run",
        "-c",
        str(quiet_site(tmp_path)),
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    log = err.decode()
    assert proc.returncode == 1, log  # systemd's Restart=on-failure and Docker's on-failure restart it
    assert "notifier stopped unexpectedly: RuntimeError('injected: the notifier hit a bug'); shutting down" in log
    assert ", in broken\n" in log  # its traceback says where
    assert log.count("injected: the notifier hit a bug") == 3  # the critical line, the traceback, the exit
    assert "telemetry stopped because notifier stopped unexpectedly" in log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_run_exits_0_when_asked_to_stop(tmp_path: Path, sig: signal.Signals) -> None:
    proc = await telemetry("run", "-c", str(quiet_site(tmp_path)))
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):  # the signal handlers are in place once it says it starts
            while b"starting with" not in (line := await proc.stderr.readline()):
                assert line, "telemetry run ended before it started"
        proc.send_signal(sig)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert "telemetry stopped" in err.decode()


@pytest.mark.service
async def test_demo_shows_readings_the_cod_alert_and_its_notification(
    tmp_path: Path, unique: str, mosquitto: Mosquitto, influx1: Influx1
) -> None:
    env = {
        "DEMO_MODBUS_PORT": str(free_port()),
        "DEMO_MQTT_PORT": str(mosquitto.port),
        "DEMO_RECEIVER_PORT": str(free_port()),
        "METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        "INFLUX_URL": influx1.url,
        "INFLUX_DB": unique,
        "TELEMETRY_STATE": str(tmp_path),
        "DEMO_EXCURSION_AT": "1",
        "DEMO_COD_FOR": "2s",
        "DEMO_POLL": "500ms",
        "DEMO_POLL_TIMEOUT": "200ms",
        "HJ212_PORT": str(free_port()),
        "HJ212_RTD": "2s",
        "DEMO_DAU_LISTEN": f"127.0.0.1:{free_port()}",
    }
    proc = await telemetry("demo", "--minutes", "0.5", env=env)
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not any("notification received" in line and "cod_limit" in line for line in seen):
                line = (await proc.stdout.readline()).decode()
                assert line, "demo ended early:\n" + "".join(seen)
                seen.append(line)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    text = "".join(seen)
    assert "simulated Diaoyushan analyzers" in text
    assert f"writing to InfluxDB at {influx1.url}" in text
    assert "*** ALERT FIRING  diaoyushan cod_limit [critical]" in text
    assert "city platform received: 2011 x" in text  # real-time data reached the HJ 212 stand-in
    assert "【告警】" in next(line for line in seen if "notification received" in line and "cod_limit" in line)
    assert proc.returncode == 0, err.decode()
    rows = await asyncio.to_thread(
        eventually,
        lambda: influx1.query(unique, "SELECT * FROM telemetry WHERE site='chenxing' AND device='weighbridge' LIMIT 1"),
        20,
        "MQTT demo data",
    )
    assert rows[0]["quantity"] in ("throughput", "throughput_total")  # from the MQTT weighbridge
    assert "simulated data acquisition unit of haizhou (HJ 212" in text
    dau = await asyncio.to_thread(
        eventually,
        lambda: influx1.query(unique, "SELECT * FROM telemetry WHERE site='haizhou' AND quantity='cod' LIMIT 1"),
        20,
        "the data acquisition unit's readings",
    )
    assert dau[0]["device"] == "haizhou-dau"
    assert dau[0]["unit"] == "mg/L"


def _parsers(parser: argparse.ArgumentParser, path: str = "telemetry") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command line: the top level, each command, each action."""
    yield path, parser
    for action in parser._actions:  # argparse offers no public walk of its parsers
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{path} {name}")


def test_every_option_of_every_command_and_action_has_help_and_no_markup() -> None:
    """`--unit`, `--count`, `--baudrate`, `--by`, `--cn`, `--st` ... had none; the description showed ``."""
    seen = 0
    for path, parser in _parsers(cli_parser.parser()):
        for action in parser._actions:
            assert (action.help or "").strip(), f"{path}: {action.option_strings or action.dest} has no help"
            for choice in getattr(action, "_choices_actions", []):
                assert choice.help, f"{path} {choice.dest}: no help"
            seen += 1
        # `probe modbus --help` ran probe's custom usage into its own
        assert parser.format_usage().startswith(f"usage: {path} "), (path, parser.format_usage())
        texts = [parser.description, parser.epilog, parser.usage, parser.format_help()]
        assert not any("``" in (text or "") for text in texts), path
        assert parser.description, f"{path}: no description"
    assert seen > 60


@pytest.mark.parametrize(
    ("action", "options"),
    [
        ("crc", set()),
        ("decode", {"--modbus-crc", "--lenient"}),
        ("encode", {"--cn", "--st", "--mn", "--pw", "--qn", "--version", "--ack", "--cp"}),
        ("receiver", {"--listen", "--port", "--request", "--begin", "--end"}),
    ],
)
def test_each_hj212_action_has_only_its_own_options(action: str, options: set[str]) -> None:
    """`hj212` listed the four actions' options together."""
    parsers = dict(_parsers(cli_parser.parser()))
    own = {o for a in parsers[f"telemetry hj212 {action}"]._actions for o in a.option_strings}
    assert own - {"-h", "--help"} == options


@pytest.mark.parametrize(
    "argv",
    [  # every command line the README and the tests use
        ["run", "-c", "f.yaml", "--log-format", "json"],
        ["check", "-c", "f.yaml"],
        ["schema"],
        ["probe", "-c", "f.yaml"],
        ["probe", "modbus", "127.0.0.1:502", "--unit", "1", "--address", "100", "--count", "4", "--timeout", "0.3"],
        ["probe", "modbus", "/dev/ttyUSB0", "--rtu", "--baudrate", "19200", "--parity", "E", "--type", "float32"],
        ["alerts", "list", "-c", "f.yaml"],
        ["alerts", "ack", "abc123", "-c", "f.yaml", "--by", "zhang"],
        [
            "silence",
            "add",
            "-c",
            "f.yaml",
            "--site",
            "s",
            "--device",
            "d",
            "--rule",
            "r",
            "--for",
            "2h",
            "--reason",
            "x",
        ],
        ["silence", "list", "-c", "f.yaml"],
        ["silence", "expire", "abc", "-c", "f.yaml"],
        ["rules", "test", "-c", "f.yaml", "--input", "in.csv", "--at", "1", "--windows", "1h,1d", "--hj212", "city"],
        ["hj212", "crc", "QN=1"],
        ["hj212", "decode", "##0101QN=1", "--modbus-crc"],
        ["hj212", "encode", "--cn", "2011", "--mn", "M", "--ack", "--qn", "1", "--cp", "a=1", "--version", "2025"],
        [
            "hj212",
            "receiver",
            "--listen",
            "127.0.0.1",
            "--port",
            "9",
            "--request",
            "2061",
            "--begin",
            "1",
            "--end",
            "2",
        ],
        ["outbox", "status", "-c", "f.yaml"],
        ["outbox", "quarantine", "list", "-c", "f.yaml", "--limit", "5"],
        ["deadletter", "list", "-c", "f.yaml", "--limit", "5"],
        ["demo", "--minutes", "0.5"],
    ],
)
def test_existing_command_lines_still_parse(argv: list[str]) -> None:
    cli_parser.parser().parse_args(argv)  # no SystemExit


def test_an_option_of_another_action_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_parser.parser().parse_args(["hj212", "encode", "--port", "9"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --port 9" in capsys.readouterr().err


async def test_help_is_readable() -> None:
    proc = await telemetry("--help")
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    text = out.decode()
    assert text.startswith("usage: telemetry [-h] [--version] COMMAND ...\n\nPlant telemetry daemon: reads analyzers")
    assert "``" not in text
    assert "Exit codes: 0 success; 2 invalid configuration or usage" in text
    proc = await telemetry("hj212", "receiver", "--help")
    out, _ = await proc.communicate()
    assert "--port PORT           TCP port to listen on (default: any free port)" in out.decode()
    assert "--cn" not in out.decode()


def test_output_piped_into_head_ends_without_a_traceback(tmp_path: Path) -> None:
    pipeline = subprocess.run(  # noqa: S602 - the shell pipe is what is tested
        f"{sys.executable} -m telemetry.cli schema | head -3",
        shell=True,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert len(pipeline.stdout.splitlines()) == 3
    assert pipeline.stderr == ""  # no BrokenPipeError traceback


def test_the_systemd_unit_runs_what_the_readme_installs() -> None:
    unit = (ROOT / "config" / "systemd" / "telemetry.service").read_text()
    starts = [line.split("=", 1)[1].split()[0] for line in unit.splitlines() if line.startswith("ExecStart")]
    assert starts == ["/opt/telemetry/bin/telemetry"] * 2
    readme = (ROOT / "README.md").read_text()
    assert "python3 -m venv /opt/telemetry && /opt/telemetry/bin/pip install ." in readme
