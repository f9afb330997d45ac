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
from tests.services import Influx1, eventually

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "config" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
NS = 1_000_000_000


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    out = [(f"panel {p['id']} {p['title']}", t["query"]) for p in dashboard["panels"] for t in p["targets"]]
    out += [(f"variable {v['name']}", v["query"]) for v in dashboard["templating"]["list"]]
    out += [(f"annotation {a['name']}", a["query"]) for a in dashboard["annotations"]["list"]]
    return out


def test_dashboards_have_the_structure_grafana_provisioning_loads() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "influxdb.yaml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "plant.yaml").read_text())
    assert provider["providers"][0]["type"] == "file"
    assert len(DASHBOARDS) == 3
    seen_uids = set()
    for path in DASHBOARDS:
        board = load(path)
        assert board["uid"] not in seen_uids
        seen_uids.add(board["uid"])
        assert isinstance(board["schemaVersion"], int)
        assert board["schemaVersion"] >= 36
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for p in board["panels"]:
            assert p["datasource"]["uid"] in uids, f"{path.name} panel {p['id']}: unknown datasource"
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
    for path in DASHBOARDS:
        for where, query in queries(load(path)):
            rows = await asyncio.to_thread(influx1.query, unique, expand(query))
            if not rows:
                empty.append(f"{path.name} {where}: {expand(query)}")
    assert empty == []
