"""The HJ 212 platform hanging up, never acknowledging, and acknowledging with the wrong QN,
each with a SIGKILL of the daemon during the fault: afterwards every window is acknowledged."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from telemetry.hj212.codec import Packet
from telemetry.sim.platform import Receiver
from tests.faults.harness import Daemon, mqtt_device, publish_lines, site_config
from tests.services import Influx1, Mosquitto, eventually, free_port

pytestmark = pytest.mark.service
BJ = timezone(timedelta(hours=8))
NS = 1_000_000_000


def config(tmp: Path, unique: str, broker: Mosquitto, influx: Influx1, hj212: int, port: int) -> Path:
    sections = f"""hj212:
  - {{name: city, host: 127.0.0.1, port: {hj212}, site: {unique}, mn: "010000A8900016F000169DC0", pw: "123456",
     send: [min, hour], overtime: 300ms, recount: 1, grace: 0s, backfill: 1d}}
aggregation: {{grace: 2s}}"""
    return site_config(tmp, unique, port, mqtt_device(unique, broker), influx.url, sections=sections)


def an_hour_ago(unique: str) -> tuple[datetime, dict[str, list[str]]]:
    """One reading a minute of cod, nh3n and flow for a whole hour that ended an hour ago."""
    hour = datetime.now(BJ).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    t0 = int(hour.timestamp())
    lines: dict[str, list[str]] = {}
    for quantity, device, value in (("cod", "an", 42.0), ("nh3n", "an", 5.0), ("flow", "fm", 2.0)):
        topic = f"{unique}/{unique}/{device}/{quantity}"
        lines[topic] = [json.dumps({"value": value, "ts": t0 + m * 60 + 5}) for m in range(60)]
    return hour, lines


def acked(outbox: Path) -> set[tuple[str, int]]:
    with sqlite3.connect(outbox) as db:
        return {(cn, int(start)) for cn, start in db.execute("SELECT cn, start_ns FROM hj212_acked")}


def data_packets(packets: list[Packet]) -> list[Packet]:
    return [p for p in packets if p.cn in ("2051", "2061")]


@pytest.mark.parametrize("fault", ["hang_up", "no_ack", "wrong_qn"])
async def test_platform_fault_with_a_kill_in_the_middle_ends_with_every_window_acked(
    fault: str, tmp_path: Path, unique: str, mosquitto: Mosquitto, influx1: Influx1
) -> None:
    platform = Receiver()
    await platform.start()
    platform.hang_up, platform.ack, platform.wrong_qn = fault == "hang_up", fault != "no_ack", fault == "wrong_qn"
    port = free_port()
    cfg = config(tmp_path, unique, mosquitto, influx1, platform.port, port)
    daemon = Daemon(cfg, port)
    try:
        await asyncio.to_thread(daemon.wait, "telemetry_device_up", 1, 30)
        daemon.stop()  # the broker now keeps a persistent session for it
        hour, lines = an_hour_ago(unique)
        for topic, messages in lines.items():
            await asyncio.to_thread(publish_lines, mosquitto, topic, messages)
        daemon.start()  # the hour arrives from the broker; its windows close after one grace period
        await platform.wait_for(lambda ps: len(data_packets(ps)) >= 2, 30)
        await asyncio.to_thread(daemon.wait, "telemetry_hj212_pending", 1, 30)
        daemon.kill9()  # during the fault
        seen = len(data_packets(platform.packets))
        await platform.wait_for(lambda ps: len(data_packets(ps)) > seen, 30)  # the new process tries again
        platform.hang_up, platform.ack, platform.wrong_qn = False, True, False
        expected = {("2051", int((hour + timedelta(minutes=m)).timestamp()) * NS) for m in range(0, 60, 10)}
        expected.add(("2061", int(hour.timestamp()) * NS))
        deadline = time.monotonic() + 60
        while not expected <= acked(tmp_path / "outbox.sqlite"):  # state in the daemon's database: polled
            assert time.monotonic() < deadline, f"not acked: {sorted(expected - acked(tmp_path / 'outbox.sqlite'))}"
            await asyncio.sleep(0.2)
        await asyncio.to_thread(
            eventually, lambda: daemon.metric("telemetry_hj212_pending", platform="city") == 0, 30, "nothing pending"
        )
    finally:
        code = daemon.stop()
        await platform.stop()
    assert code == 0, daemon.log.read_text()[-3000:]
