"""``telemetry status`` against the running daemon: a Modbus analyzer over RTU framing, an
MQTT flow meter, one subscription nobody publishes to; from HTTP, and from the outbox's
snapshot when the listener is off."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telemetry.sim.plant import RegisterServer
from tests.daemon import Observed, start_daemon
from tests.services import Mosquitto, free_port, telemetry_cli
from tests.test_modbus import wire
from tests.test_mqtt import publish

pytestmark = pytest.mark.service
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def analyzer() -> Iterator[RegisterServer]:
    server = RegisterServer(units=(1,), framer="rtu").start()
    server.set(1, "holding", 0, wire(0.42, "f", "CDAB"))
    server.set(1, "holding", 20, [0])
    yield server
    server.stop()


def config(tmp: Path, unique: str, broker: Mosquitto, analyzer: RegisterServer, listen: str | None) -> Path:
    metrics = f'{{listen: "{listen}"}}' if listen else "{enabled: false}"
    path = tmp / "site.yaml"
    path.write_text(
        f"""
sites: [{{id: outlet, timezone: "${{STATUS_TEST_ZONE:-Asia/Shanghai}}"}}]
metrics: {metrics}
outbox: {{path: "{tmp}/outbox.sqlite", snapshot_interval: 1s}}
devices:
  - {{id: cod-an, kind: modbus, site: outlet, transport: rtu, serial_port: "socket://127.0.0.1:{analyzer.port}",
     unit_id: 1, byte_order: CDAB, interval: 1s, timeout: 400ms,
     points: [{{quantity: cod, address: 0, type: float32, unit: mg/L}}],
     status: [{{address: 20, values: {{1: M, 2: C}}}}]}}
  - id: broker
    kind: mqtt
    host: {broker.host}
    port: {broker.port}
    client_id: {unique}
    subscriptions:
      - {{topic: "{unique}/flow", site: outlet, device: fm, quantity: flow, unit: m3/h}}
      - {{topic: "{unique}/typo", site: outlet, device: fm, quantity: level}}
"""
    )
    return path


def status(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return telemetry_cli("status", "-c", str(path), *args)


@pytest.mark.parametrize("http", [True, False])
async def test_status_shows_each_series_link_and_subscription(
    tmp_path: Path, mosquitto: Mosquitto, unique: str, analyzer: RegisterServer, http: bool
) -> None:
    path = config(tmp_path, unique, mosquitto, analyzer, f"127.0.0.1:{free_port()}" if http else None)
    both = Observed(lambda seen: {"cod", "flow"} <= {r.quantity for r in seen.readings})
    daemon = await start_daemon(path, both)
    try:
        await asyncio.wait_for(daemon.pipeline.drivers[1].subscribed.wait(), 10)  # type: ignore[attr-defined]
        await asyncio.to_thread(publish, mosquitto, [(f"{unique}/flow", b"12.5")])
        await asyncio.wait_for(both.done.wait(), 20)
        if not http:  # the status reaches the outbox with the next snapshot
            await daemon.pipeline._snapshot()
        done = await asyncio.to_thread(status, path, "--json")
        assert done.returncode == 0, done.stderr
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        by = {(r["device"], r["quantity"]): r for r in rows}
        assert set(by) == {("cod-an", "cod"), ("fm", "flow")}
        cod = by[("cod-an", "cod")]
        assert {k: cod[k] for k in ("site", "value", "unit", "flag")} == {
            "site": "outlet",
            "value": 0.42,  # a float32 at its own precision, not 0.41999998688697815
            "unit": "mg/L",
            "flag": "N",
        }
        assert 0 <= cod["age_s"] < 30
        assert cod["link_up"] is True
        assert by[("fm", "flow")]["value"] == 12.5
        text = await asyncio.to_thread(status, path)
        assert text.returncode == 0, text.stderr
        assert ("/status" in text.stdout) is http
        assert "outbox's last snapshot" in text.stdout or http
        assert "cod-an  link up" in text.stdout
        assert f"{unique}/typo  last message never since start" in text.stdout
        assert "+08:00" in text.stdout  # the site's local time, with its offset
    finally:
        await daemon.close()


def test_status_without_a_daemon_says_so(tmp_path: Path, mosquitto: Mosquitto, analyzer: RegisterServer) -> None:
    path = config(tmp_path, "nobody", mosquitto, analyzer, f"127.0.0.1:{free_port()}")
    # A secret only the daemon's environment file holds: status needs none to read what it shows.
    path.write_text(path.read_text() + 'notify: {routes: [{name: ops, urls: ["${STATUS_TEST_ROBOT_URL}"]}]}\n')
    done = status(path)
    assert done.returncode == 1
    assert "not reachable" in done.stderr
    assert "Traceback" not in done.stderr


async def test_an_analyzer_in_maintenance_does_not_page_as_silent(tmp_path: Path, analyzer: RegisterServer) -> None:
    analyzer.set(1, "holding", 20, [1])  # the status word: maintenance
    path = tmp_path / "site.yaml"
    path.write_text(
        f"""
sites: [{{id: outlet}}]
metrics: {{enabled: false}}
outbox: {{path: "{tmp_path}/outbox.sqlite"}}
devices:
  - {{id: cod-an, kind: modbus, site: outlet, transport: rtu, serial_port: "socket://127.0.0.1:{analyzer.port}",
     unit_id: 1, byte_order: CDAB, interval: 200ms, timeout: 150ms, retries: 0,
     points: [{{quantity: cod, address: 0, type: float32, unit: mg/L}}],
     status: [{{address: 20, values: {{1: M, 2: C}}}}]}}
rules:
  - {{kind: nodata, name: quiet_in_maintenance, site: outlet, device: cod-an, quantity: cod, for: 1s}}
  - {{kind: nodata, name: fires_anyway, site: outlet, device: cod-an, quantity: cod, for: 1s, hold_flags: []}}
"""
    )
    fired = Observed(lambda seen: any(e.rule == "fires_anyway" for e in seen.events))
    daemon = await start_daemon(path, fired)
    try:
        await asyncio.wait_for(fired.done.wait(), 20)  # M-flagged readings are no valid data...
    finally:
        await daemon.close()
    # ...but they are the analyzer being serviced, not silence: the default rule stays quiet.
    assert [e.rule for e in fired.events] == ["fires_anyway"]


async def test_status_watch_refreshes_until_interrupted(
    tmp_path: Path, mosquitto: Mosquitto, unique: str, analyzer: RegisterServer
) -> None:
    path = config(tmp_path, unique, mosquitto, analyzer, f"127.0.0.1:{free_port()}")
    daemon = await start_daemon(path)
    try:
        watch = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "telemetry.cli",
            "status",
            "-c",
            str(path),
            "--watch",
            "0.2",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        assert watch.stdout is not None
        headers = 0
        while headers < 3:  # three refreshes, each a full screen that starts with its source
            line = await asyncio.wait_for(watch.stdout.readline(), 20)
            headers += b"status from http://" in line
        watch.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = await asyncio.wait_for(watch.communicate(), 20)
    finally:
        await daemon.close()
    assert watch.returncode == 0
    assert b"Traceback" not in err
