"""HJ 212 frames published by DTUs over MQTT (``format: hj212``): the station table of the MQTT
device says whose data each frame is; refusals and garbage are dead-lettered, the rest stored."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import CollectorRegistry

from telemetry.metrics import Metrics
from telemetry.model import Aggregate, Reading, Rejected
from tests.dau import Dau, period_cp, rtd_cp
from tests.services import Mosquitto
from tests.test_mqtt import make, publish

pytestmark = pytest.mark.service
BJ = timezone(timedelta(hours=8))
PW = "dtu-pw1"


async def test_dtu_frames_over_mqtt_become_readings_and_windows_of_their_station(
    mosquitto: Mosquitto, unique: str
) -> None:
    stations = [
        {"mn": "41050022000017", "pw": PW, "site": "diaoyushan", "device": "outlet-dau"},
        {"mn": "41050022000018", "pw": PW, "site": "haizhou", "codes": {"cod_total": "w01018"}},
    ]
    subscription = {"topic": f"{unique}/dtu/+/hj212", "format": "hj212", "lenient": True}
    registry = CollectorRegistry()
    driver = make(mosquitto, unique, Metrics(registry), subscriptions=[subscription], stations=stations)
    records: list[Reading | Aggregate] = []
    letters: list[Rejected] = []
    done = asyncio.Event()

    async def emit(readings: Sequence[Reading | Aggregate], rejected: Sequence[Rejected] = ()) -> None:
        records.extend(readings)
        letters.extend(rejected)
        if len(records) >= 6 and len(letters) >= 2:
            done.set()

    when = datetime.now(BJ).replace(microsecond=0) - timedelta(seconds=5)
    period = (when - timedelta(hours=1)).replace(minute=0, second=0)
    outlet = Dau("127.0.0.1", 0, "41050022000017", PW)
    haizhou = Dau("127.0.0.1", 0, "41050022000018", PW, variant="modbus_swapped")
    stranger = Dau("127.0.0.1", 0, "41050022000018", "wrong-pw")
    frames = [
        outlet.frame("2011", rtd_cp(when, {"w01018": (41.5, "N"), "w00000": (0.5, "N")}))[1],
        outlet.frame("2061", period_cp(period, {"w01018": (40.0, 42.0, 44.0, "N")}))[1],
        # two frames in one message, the second with CRC-16/MODBUS low byte first (lenient)
        haizhou.frame("2011", rtd_cp(when, {"w01018": (88.0, "T")}))[1]
        + outlet.frame("2011", rtd_cp(when, {"w21003": (3.0, "N")}))[1],
        stranger.frame("2011", rtd_cp(when, {"w01018": (1.0, "N")}))[1],
        b"not a frame at all",
    ]
    stop = asyncio.Event()
    task = asyncio.create_task(driver.run(emit, stop))
    try:
        await asyncio.wait_for(driver.subscribed.wait(), 10)
        messages = [(f"{unique}/dtu/{i}/hj212", frame) for i, frame in enumerate(frames)]
        await asyncio.to_thread(publish, mosquitto, messages)
        await asyncio.wait_for(done.wait(), 20)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    readings = sorted(
        (r.site, r.device, r.quantity, r.value, r.unit, r.flag.value) for r in records if isinstance(r, Reading)
    )
    assert readings == [
        ("diaoyushan", "outlet-dau", "cod", 41.5, "mg/L", "N"),
        ("diaoyushan", "outlet-dau", "cod", 42.0, "mg/L", "N"),  # the hour's average: nothing finer came in it
        ("diaoyushan", "outlet-dau", "flow", 0.5, "L/s", "N"),
        ("diaoyushan", "outlet-dau", "nh3n", 3.0, "mg/L", "N"),
        ("haizhou", "broker", "cod_total", 88.0, "mg/L", "T"),  # the station's own code mapping
    ]
    stamps = {r.ts for r in records if isinstance(r, Reading)}
    assert stamps == {int(t.timestamp()) * 1_000_000_000 for t in (when, period)}
    [hour] = [r for r in records if isinstance(r, Aggregate)]
    assert (hour.window, hour.quantity, hour.avg, hour.method) == ("1h", "cod", 42.0, "station")
    assert sorted(letter.reason for letter in letters) == ["not_hj212", "wrong_pw"]
    assert all(b"wrong-pw" not in letter.payload for letter in letters)
    swapped = registry.get_sample_value(
        "telemetry_hj212_lenient_total", {"device": "broker", "deviation": "crc_modbus_swapped"}
    )
    assert swapped == 1
