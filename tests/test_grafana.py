"""Grafana provisioning and dashboards: the structure Grafana loads, and every query returns data
from a real InfluxDB 1.x filled by the daemon."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from telemetry.model import Flag, Reading
from tests.daemon import start_daemon
from tests.faults.harness import publish_lines
from tests.services import Influx1, Mosquitto, eventually, free_port, victoria

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "config" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
HEALTH = GRAFANA / "dashboards" / "daemon-health.json"  # Prometheus: the daemon's own metrics
INCINERATOR = GRAFANA / "dashboards" / "incinerator-compliance.json"  # tested in test_incinerator
PLANT = [path for path in DASHBOARDS if path not in (HEALTH, INCINERATOR)]  # InfluxDB: the plants' data
NS = 1_000_000_000


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Every query of a dashboard: InfluxQL (``query``) or PromQL (``expr``) by its datasource."""
    out = [
        (f"panel {p['id']} {p['title']}", t.get("query") or t["expr"])
        for p in dashboard["panels"]
        for t in p["targets"]
    ]
    out += [(f"variable {v['name']}", v["query"]) for v in dashboard["templating"]["list"]]
    out += [(f"annotation {a['name']}", a["query"]) for a in dashboard["annotations"]["list"]]
    return out


def test_dashboards_have_the_structure_grafana_provisioning_loads() -> None:
    uids = {
        d["uid"]
        for path in (GRAFANA / "provisioning" / "datasources").glob("*.yaml")
        for d in yaml.safe_load(path.read_text())["datasources"]
    }
    assert uids == {"influxdb-plant", "prometheus-telemetry"}
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "plant.yaml").read_text())
    assert provider["providers"][0]["type"] == "file"
    assert len(DASHBOARDS) == 5
    seen_uids = set()
    for path in DASHBOARDS:
        board = load(path)
        assert board["uid"] not in seen_uids
        seen_uids.add(board["uid"])
        assert isinstance(board["schemaVersion"], int)
        assert board["schemaVersion"] >= 36
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        wanted = "prometheus-telemetry" if path == HEALTH else "influxdb-plant"
        for p in board["panels"]:
            assert p["datasource"]["uid"] == wanted, f"{path.name} panel {p['id']}: datasource"
            assert all(t["datasource"]["uid"] == wanted for t in p["targets"])
            assert p["targets"], f"{path.name} panel {p['id']}: no query"
            assert set(p["gridPos"]) == {"x", "y", "w", "h"}
            assert re.search(r"[\u4e00-\u9fff]", p["title"]), "titles are Chinese first, English in description"
            assert p["description"].isascii()
        for annotation in board["annotations"]["list"]:
            assert "alerts" in annotation["query"]


def expand(query: str) -> str:
    return (
        query.replace("$timeFilter", "time > now() - 48h")
        .replace("$__interval", "10m")
        .replace("/^$site$/", "/^diaoyushan$/")
        .replace("/^$device$/", "/^.*$/")
    )


@pytest.mark.service
async def test_every_panel_query_returns_data_from_the_daemons_influxdb(
    tmp_path: Path, unique: str, influx1: Influx1
) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(
        f"""
sites: [{{id: diaoyushan}}, {{id: chenxing}}, {{id: donghai}}, {{id: shuangdian}}]
influxdb: [{{name: local, api: v1, url: "{influx1.url}", database: {unique}, create_database: true,
             flush_interval: 100ms}}]
rules: [{{kind: limit, name: cod_limit, site: diaoyushan, quantity: cod, above: 100}}]
metrics: {{enabled: false}}
outbox: {{path: "{tmp_path}/outbox.sqlite"}}
"""
    )
    daemon = await start_daemon(config)
    pipeline = daemon.pipeline
    now = time.time_ns()
    start = now - 30 * 3600 * NS
    readings: list[Reading] = []
    for step in range(30 * 6):
        ts = start + step * 600 * NS
        flag = Flag.C if step % 17 == 0 else Flag.N
        cod = 130.0 if step == 100 else 60.0 + step % 7
        readings += [
            Reading(ts, "diaoyushan", "effluent-analyzers", "cod", cod, "mg/L", flag),
            Reading(ts, "diaoyushan", "effluent-analyzers", "nh3n", 8.0, "mg/L"),
            Reading(ts, "diaoyushan", "effluent-analyzers", "tp", 0.8, "mg/L"),
            Reading(ts, "diaoyushan", "flowmeter", "flow", 2.1, "m3/h"),
            Reading(ts, "chenxing", "weighbridge", "throughput", 31.0, "t/h"),
            Reading(ts, "donghai", "weighbridge", "throughput", 27.0, "t/h"),
            Reading(ts, "shuangdian", "pond", "volume", 36000.0, "m3"),
        ]
    try:
        for i in range(0, len(readings), 500):
            await pipeline.emit(readings[i : i + 500])
        pipeline.tick(now)
        await asyncio.to_thread(
            eventually,
            lambda: (
                influx1.query(unique, 'SELECT count("cou") FROM telemetry_agg WHERE "window" = \'1d\'')
                and influx1.query(unique, 'SELECT count("value") FROM alerts')
                and pipeline.outbox.backlog()["influx:local"] == 0
            ),
            30,
            "aggregates and alerts in InfluxDB",
        )
    finally:
        await daemon.close()
    empty = []
    for path in PLANT:
        for where, query in queries(load(path)):
            rows = await asyncio.to_thread(influx1.query, unique, expand(query))
            if not rows:
                empty.append(f"{path.name} {where}: {expand(query)}")
    assert empty == []


def promql(query: str) -> str:
    """A panel's expression as Grafana sends it, for all instances."""
    return query.replace("$__rate_interval", "1m").replace('"$instance"', '".*"')


@pytest.mark.service
async def test_every_health_panel_returns_data_from_a_scraped_daemon(
    tmp_path: Path, unique: str, mosquitto: Mosquitto, influx1: Influx1
) -> None:
    """A real daemon, scraped every second by VictoriaMetrics (the Prometheus query API):
    readings, a rejected payload, a firing alert, a sink that is away, an HJ 212 platform
    that is away — and then every panel of the health dashboard has something to show."""
    metrics_port = free_port()
    config = tmp_path / "site.yaml"
    config.write_text(
        f"""
sites: [{{id: plant}}]
devices:
  - {{id: broker, kind: mqtt, host: {mosquitto.host}, port: {mosquitto.port},
     subscriptions: [{{topic: "{unique}/{{site}}/{{device}}/{{quantity}}", devices: ["*"]}}]}}
influxdb:
  - {{name: local, api: v1, url: "{influx1.url}", database: {unique}, create_database: true, flush_interval: 100ms}}
  - {{name: away, api: v1, url: "http://127.0.0.1:{free_port()}", database: plant, flush_interval: 100ms}}
rules: [{{kind: limit, name: cod_limit, site: plant, quantity: cod, above: 100}}]
hj212: [{{name: city, host: 127.0.0.1, port: {free_port()}, site: plant, mn: "010000A8900016F000169DC0",
          pw: "123456", rtd_interval: 1s}}]
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
outbox: {{path: "{tmp_path}/outbox.sqlite"}}
"""
    )
    board = load(HEALTH)
    daemon = await start_daemon(config)
    try:
        with victoria(tmp_path, scrape=[f"127.0.0.1:{metrics_port}"]) as vm:
            await asyncio.to_thread(
                eventually,
                lambda: daemon.registry.get_sample_value("telemetry_device_up", {"device": "broker"}),
                30,
                "up",
            )
            topic = f"{unique}/plant/analyzer/cod"
            publish_lines(mosquitto, topic, ['{"value": 60}', "not json"])
            panels = queries(board)[:-1]  # the last is the instance variable, checked below

            def without_data() -> list[str]:
                publish_lines(mosquitto, topic, ['{"value": 150}'])  # a live plant: rates need data in their window
                return [f"{where}: {promql(q)}" for where, q in panels if not vm.promql(promql(q))]

            try:
                await asyncio.to_thread(eventually, lambda: not without_data(), 60, "every health panel to have data")
            except AssertionError:
                raise AssertionError(f"panels without data: {without_data()}") from None
            [(where, variable)] = queries(board)[-1:]
            assert variable == "label_values(telemetry_readings_total, instance)", where
            assert f"127.0.0.1:{metrics_port}" in vm.label_values("instance", "telemetry_readings_total")
            firing = vm.promql('telemetry_alerts_firing{rule="cod_limit"}')
            assert [s["value"][1] for s in firing] == ["1"]
            rejected = vm.promql("telemetry_readings_rejected_total")
            assert sum(float(s["value"][1]) for s in rejected) == 1
    finally:
        await daemon.close()
