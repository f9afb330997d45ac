"""A kill -9 in the afternoon: the day's tonnage so far and a running ``for`` timer survive it.

Rule state is snapshotted with the open windows every ``outbox.snapshot_interval``; before,
it was saved only when an alert changed, so a crash at 18:00 gave a false "under capacity"
at midnight and restarted every ``for`` from zero.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from telemetry.outbox import read_state
from tests.faults.harness import Daemon, mqtt_device, publish_lines
from tests.services import Mosquitto, eventually, free_port

pytestmark = pytest.mark.service
BJ = timezone(timedelta(hours=8))


def lines(values: list[tuple[float, int]]) -> list[str]:
    return [f'{{"value": {v}, "ts": {ms}}}' for v, ms in values]


def rule_state(outbox: Path, rule: str) -> dict[str, Any]:
    state = read_state(str(outbox), "rules") or {}
    saved: dict[str, Any] = state.get(rule, {}).get("state", {})
    return saved


def test_a_kill_keeps_the_days_tonnage_and_a_running_for_timer(
    tmp_path: Path, unique: str, mosquitto: Mosquitto
) -> None:
    port = free_port()
    outbox = tmp_path / "outbox.sqlite"
    cfg = tmp_path / "site.yaml"
    cfg.write_text(
        f"""
sites: [{{id: {unique}}}]
devices:
  - {mqtt_device(unique, mosquitto)}
rules:
  - {{kind: capacity, name: cap, site: {unique}, quantity: throughput_total, source: totalizer, design: 750,
     under_percent: 60, project_after: 30h}}
  - {{kind: limit, name: cod_for, site: {unique}, quantity: cod, above: 100, for: 10m}}
metrics: {{listen: "127.0.0.1:{port}"}}
outbox: {{path: "{outbox}", snapshot_interval: 1s}}
"""
    )
    now = datetime.now(BJ)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = max(midnight + timedelta(minutes=1), now - timedelta(hours=1))  # all of it today, Beijing time
    step = (now - timedelta(minutes=1) - start) / 20

    def ms(i: int) -> int:
        return int((start + step * i).timestamp() * 1000)

    cod_base = int(time.time() * 1000) - 30 * 60 * 1000  # a breach from half an hour ago, a reading a minute
    daemon = Daemon(cfg, port)
    try:
        daemon.wait("telemetry_device_up", timeout=30)
        publish_lines(
            mosquitto, f"{unique}/{unique}/scale/throughput_total", lines([(100.0 + 10 * i, ms(i)) for i in range(11)])
        )
        publish_lines(mosquitto, f"{unique}/{unique}/an/cod", lines([(150.0, cod_base + m * 60_000) for m in range(7)]))

        def saved() -> bool:
            days = rule_state(outbox, "cap").get("days", {})
            since = rule_state(outbox, "cod_for").get("since", {})
            return any(abs(d[1] - 100.0) < 1e-6 for d in days.values()) and bool(since)

        eventually(saved, 30, "the day's 100 t and the running timer in the rules snapshot")
        daemon.kill9()
        daemon.wait("telemetry_device_up", timeout=30)
        publish_lines(
            mosquitto,
            f"{unique}/{unique}/scale/throughput_total",
            lines([(100.0 + 10 * i, ms(i)) for i in range(11, 21)]),
        )
        publish_lines(
            mosquitto, f"{unique}/{unique}/an/cod", lines([(150.0, cod_base + m * 60_000) for m in range(7, 12)])
        )
        fired = daemon.wait("telemetry_alert_events_total", rule="cod_for", state="firing", timeout=30)

        def tonnage() -> float:
            days = rule_state(outbox, "cap").get("days", {})
            return max((float(d[1]) for d in days.values()), default=0.0)

        total = eventually(lambda: (t := tonnage()) >= 200.0 - 1e-6 and t, 30, "the day's 200 t")
    finally:
        code = daemon.stop()
    assert fired == 1  # 10 minutes after the first breach, counted across the kill (not 10 min after restart)
    assert total == pytest.approx(200.0)  # 100 t before the kill and 100 t after: the day kept its tonnage
    assert daemon.kills == 1
    assert code == 0
