"""One reading from a real Modbus analyzer and a real MQTT broker all the way to
InfluxDB 1.x (v1 API), VictoriaMetrics (v2 API via influxdb-client) and an alert
at a real HTTP receiver through apprise."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts.desk import AlertDesk
from drivers.mqtt import MqttDriver
from telemetry.errors import OutboxError
from telemetry.model import AlertEvent, Reading
from telemetry.pipeline import Pipeline
from telemetry.sim.notifications import NotificationReceiver
from telemetry.sim.plant import LeachateStation, ModbusAnalyzer
from tests.daemon import start_daemon
from tests.services import Influx1, Mosquitto, Victoria, eventually, free_port

pytestmark = pytest.mark.service


class Observed:
    """Counts committed readings and alert events, and lets a test await more of them."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.events: list[AlertEvent] = []
        self._changed = asyncio.Condition()
        self._loop = asyncio.get_running_loop()

    def __call__(self, readings: Sequence[Reading], events: Sequence[AlertEvent]) -> None:
        self.readings += readings
        self.events += events
        self._loop.create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, predicate: Callable[[], bool], timeout: float = 20) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)


@dataclass
class Plant:
    site: str
    station: LeachateStation
    pipeline: Pipeline
    observed: Observed
    metrics_port: int
    db: str


CONFIG = """
sites:
  - id: {site}
devices:
  - id: analyzer
    kind: modbus
    site: {site}
    host: 127.0.0.1
    port: {modbus_port}
    interval: 300ms
    timeout: 140ms
    points:
      - {{quantity: cod, address: 0, unit: mg/L}}
      - {{quantity: flow, address: 8, unit: m3/h}}
  - id: broker
    kind: mqtt
    host: {mqtt_host}
    port: {mqtt_port}
    client_id: {site}-daemon
    subscriptions:
      - topic: plants/{{site}}/{{device}}/{{quantity}}
        devices: ["*"]
influxdb:
  - name: influx1
    api: v1
    url: {influx1}
    database: {site}
    create_database: true
    flush_interval: 100ms
  - name: victoria
    api: v2
    url: {victoria}
    bucket: plant
    token: ${{VM_TOKEN:-unused}}
    flush_interval: 100ms
rules:
  - kind: limit
    name: cod_limit
    site: {site}
    quantity: cod
    above: 100
    severity: critical
notify:
  routes:
    - name: supervisors
      urls: ["{receiver}"]
      group_wait: 0s
      group_interval: 0s
metrics:
  listen: 127.0.0.1:{metrics_port}
  ack_token: {site}-ack-token
outbox:
  path: {state}/outbox.sqlite
"""


def write_config(
    tmp_path: Path,
    site: str,
    modbus_port: int,
    broker: Mosquitto,
    influx1: Influx1,
    victoria: Victoria,
    receiver: NotificationReceiver,
    metrics_port: int,
) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(
        CONFIG.format(
            site=site,
            modbus_port=modbus_port,
            mqtt_host=broker.host,
            mqtt_port=broker.port,
            influx1=influx1.url,
            victoria=victoria.url,
            receiver=receiver.url,
            metrics_port=metrics_port,
            state=tmp_path,
        )
    )
    return path


async def _start_daemon(path: Path) -> tuple[asyncio.Event, asyncio.Task[None], Pipeline, Observed]:
    observed = Observed()
    daemon = await start_daemon(path, observed)
    return daemon.stop, daemon.task, daemon.pipeline, observed


@pytest.fixture
async def plant(
    tmp_path: Path,
    unique: str,
    mosquitto: Mosquitto,
    influx1: Influx1,
    victoria: Victoria,
    receiver: NotificationReceiver,
) -> AsyncIterator[Plant]:
    station = LeachateStation(excursion_at=1e9)  # no scripted excursion: the tests drive COD
    analyzer = ModbusAnalyzer(station, port=free_port())
    await analyzer.start()
    metrics_port = free_port()
    path = write_config(tmp_path, unique, analyzer.port, mosquitto, influx1, victoria, receiver, metrics_port)
    stop, daemon, pipeline, observed = await _start_daemon(path)
    try:
        yield Plant(unique, station, pipeline, observed, metrics_port, unique)
    finally:
        stop.set()
        await asyncio.wait_for(daemon, 30)
        await analyzer.stop()


def publish(broker: Mosquitto, topic: str, payload: dict[str, Any]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


async def test_modbus_and_mqtt_readings_reach_influxdb_1x_and_victoriametrics(
    plant: Plant, mosquitto: Mosquitto, influx1: Influx1, victoria: Victoria
) -> None:
    site = plant.site
    await plant.observed.until(lambda: any(r.quantity == "cod" for r in plant.observed.readings))
    mqtt = next(d for d in plant.pipeline.drivers if isinstance(d, MqttDriver))
    await asyncio.wait_for(mqtt.subscribed.wait(), 10)
    stamp_ms = int(time.time() * 1000)
    payload = {"value": 31.5, "unit": "t/h", "ts": stamp_ms}
    await asyncio.to_thread(publish, mosquitto, f"plants/{site}/weighbridge/throughput", payload)
    await plant.observed.until(lambda: any(r.quantity == "throughput" for r in plant.observed.readings))

    cod = await asyncio.to_thread(
        eventually,
        lambda: influx1.query(site, f"SELECT * FROM telemetry WHERE quantity='cod' AND site='{site}'"),
        20,
        "Modbus COD in InfluxDB 1.x",
    )
    expected = next(r for r in plant.observed.readings if r.quantity == "cod" and r.ts == cod[0]["time"])
    assert cod[0]["value"] == pytest.approx(expected.value)
    assert (cod[0]["device"], cod[0]["unit"], cod[0]["flag"]) == ("analyzer", "mg/L", "N")

    rows = await asyncio.to_thread(
        eventually,
        lambda: influx1.query(site, "SELECT * FROM telemetry WHERE quantity='throughput'"),
        20,
        "MQTT throughput in InfluxDB 1.x",
    )
    assert (rows[0]["site"], rows[0]["device"], rows[0]["unit"]) == (site, "weighbridge", "t/h")
    assert rows[0]["value"] == 31.5
    assert rows[0]["time"] == stamp_ms * 1_000_000

    def in_victoria() -> list[dict[str, Any]]:
        series = victoria.export(f'{{__name__="telemetry_value",site="{site}"}}')
        return series if {s["metric"]["quantity"] for s in series} >= {"cod", "throughput"} else []

    series = await asyncio.to_thread(eventually, in_victoria, 20, "both readings in VictoriaMetrics")
    throughput = next(s for s in series if s["metric"]["quantity"] == "throughput")
    assert throughput["metric"] | {"__name__": "x"} == {
        "__name__": "x",
        "site": site,
        "device": "weighbridge",
        "quantity": "throughput",
        "unit": "t/h",
    }
    assert throughput["values"] == [31.5]
    assert throughput["timestamps"] == [stamp_ms]
    cod_series = next(s for s in series if s["metric"]["quantity"] == "cod")
    assert cod_series["metric"]["device"] == "analyzer"
    assert cod_series["metric"]["unit"] == "mg/L"

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{plant.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    text = await asyncio.to_thread(scrape)
    assert f'telemetry_readings_total{{device="analyzer",site="{site}"}}' in text
    assert 'telemetry_outbox_backlog{consumer="influx:influx1"}' in text
    assert 'telemetry_sink_points_written_total{sink="victoria"}' in text


async def test_threshold_breach_sends_one_firing_and_one_resolved_notification(
    plant: Plant, receiver: NotificationReceiver, influx1: Influx1
) -> None:
    observed = plant.observed
    await observed.until(lambda: any(r.quantity == "cod" for r in observed.readings))
    plant.station.overrides["cod"] = 150.0
    await observed.until(lambda: len(observed.events) == 1)
    high = len([r for r in observed.readings if r.quantity == "cod" and r.value == 150.0])
    await observed.until(  # several more breaching polls must not notify again
        lambda: len([r for r in observed.readings if r.quantity == "cod" and r.value == 150.0]) >= high + 3
    )
    plant.station.overrides["cod"] = 55.0
    await observed.until(lambda: len(observed.events) == 2)
    low = len(observed.readings)
    await observed.until(lambda: len(observed.readings) >= low + 6)

    messages = await asyncio.to_thread(receiver.wait_for, 2, 20)
    assert len(messages) == 2, messages
    firing, resolved = messages
    assert firing["title"] == f"【告警】 {plant.site} · cod_limit"
    assert "化学需氧量：数值 150 mg/L，限值 100 mg/L" in firing["message"]
    assert firing["type"] == "failure"
    assert resolved["title"] == f"【恢复】 {plant.site} · cod_limit"
    assert "化学需氧量：数值 55 mg/L，限值 100 mg/L" in resolved["message"]
    assert resolved["type"] == "success"

    alerts = await asyncio.to_thread(
        eventually,
        lambda: rows if len(rows := influx1.query(plant.db, "SELECT * FROM alerts")) == 2 else None,
        20,
        "both alert events in InfluxDB",
    )
    assert [(a["state"], a["rule"], a["severity"], a["limit"]) for a in alerts] == [
        ("firing", "cod_limit", "critical", 100.0),
        ("resolved", "cod_limit", "critical", 100.0),
    ]


async def test_restart_while_firing_resends_nothing_and_still_resolves_and_acks_work_over_http(
    tmp_path: Path,
    unique: str,
    mosquitto: Mosquitto,
    influx1: Influx1,
    victoria: Victoria,
    receiver: NotificationReceiver,
) -> None:
    station = LeachateStation(excursion_at=1e9)
    station.overrides["cod"] = 150.0
    analyzer = ModbusAnalyzer(station, port=free_port())
    await analyzer.start()
    metrics_port = free_port()
    path = write_config(tmp_path, unique, analyzer.port, mosquitto, influx1, victoria, receiver, metrics_port)
    try:
        stop, task, pipeline, observed = await _start_daemon(path)
        await observed.until(lambda: len(observed.events) == 1)
        await asyncio.to_thread(receiver.wait_for, 1, 20)
        desk = pipeline.alerts
        assert isinstance(desk, AlertDesk)
        [alert] = [a for a in desk.manager.alerts.values() if a.state == "firing"]

        def ack(token: str) -> tuple[int, dict[str, Any]]:
            request = urllib.request.Request(
                f"http://127.0.0.1:{metrics_port}/alerts/{alert.id}/ack",
                data=b'{"by": "zhang"}',
                method="POST",
                headers={"Authorization": f"Bearer {token}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as resp:
                    return resp.status, json.load(resp)
            except urllib.error.HTTPError as err:
                return err.code, json.load(err)

        assert (await asyncio.to_thread(ack, "guess"))[0] == 401
        await desk.save()  # the endpoint acknowledges alerts the daemon holds in its saved state (within a tick)
        assert await asyncio.to_thread(ack, f"{unique}-ack-token") == (202, {"queued": True, "id": alert.id})
        await desk.save()
        stop.set()
        await asyncio.wait_for(task, 30)
        assert len(receiver.messages) == 1

        # Same outbox, still above the limit: nothing is sent again.
        stop, task, pipeline, observed = await _start_daemon(path)
        polls = len(observed.readings)
        await observed.until(lambda: len([r for r in observed.readings if r.quantity == "cod"]) >= polls + 5)
        assert observed.events == []
        desk = pipeline.alerts
        assert isinstance(desk, AlertDesk)
        restored = desk.manager.alerts[alert.id]
        assert restored.acked_by == "zhang"  # the HTTP ack, applied before the restart, survived it
        station.overrides["cod"] = 40.0
        await observed.until(lambda: any(e.state.value == "resolved" for e in observed.events))
        messages = await asyncio.to_thread(receiver.wait_for, 2, 20)
        stop.set()
        await asyncio.wait_for(task, 30)
    finally:
        await analyzer.stop()
    assert [m["title"].split()[0] for m in messages] == ["【告警】", "【恢复】"]


async def test_health_and_readiness_endpoints(plant: Plant, monkeypatch: pytest.MonkeyPatch) -> None:
    def get(path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{plant.metrics_port}{path}", timeout=5) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    assert await asyncio.to_thread(get, "/healthz") == (200, {"status": "ok"})
    await asyncio.wait_for(plant.pipeline.started.wait(), 10)  # until then /readyz rightly says 503
    status, body = await asyncio.to_thread(get, "/readyz")
    assert status == 200, body
    assert body == {"ready": True, "drivers_started": True, "outbox_ok": True, "sinks_stuck_seconds": {}}
    outbox = plant.pipeline.outbox

    def failing_append(*args: Any) -> None:
        raise OutboxError("disk I/O error")

    monkeypatch.setattr(outbox, "append", failing_append)  # commits fail as on a broken disk
    await asyncio.to_thread(eventually, lambda: get("/readyz")[0] == 503, 10, "/readyz to report the failure")
    assert (await asyncio.to_thread(get, "/readyz"))[1]["outbox_error"] == "disk I/O error"
    monkeypatch.undo()  # the disk is back: the next commit succeeds and readiness with it
    await asyncio.to_thread(eventually, lambda: get("/readyz")[0] == 200, 10, "/readyz to recover")
    assert (await asyncio.to_thread(get, "/nothing"))[0] == 404
