"""The daemon between a data acquisition unit and two platforms: what the unit sends reaches two
``telemetry hj212 receiver`` processes with the unit's DataTime, values, flags, SampleTime and
EFlag, its minute and hour data as the unit computed them."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from drivers.hj212 import Hj212Driver
from telemetry.hj212.codec import Packet, decode_frame
from tests.daemon import start_daemon
from tests.dau import Dau, period_cp, rtd_cp
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[1]
BJ = timezone(timedelta(hours=8))
DAU_MN, PW = "41050022000017", "dau-pw1"


class Platform:
    """``telemetry hj212 receiver`` as a process; the packets it prints, decoded."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process, self.port = process, port
        self.packets: list[Packet] = []

    async def until(self, cn: str, timeout: float = 30) -> Packet:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while not (found := [p for p in self.packets if p.cn == cn]):
                line = (await self.process.stdout.readline()).decode()
                if " <- ##" in line:
                    self.packets.append(decode_frame(line.split(" <- ", 1)[1].strip().encode()))
        return found[0]


@asynccontextmanager
async def platform() -> AsyncIterator[Platform]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "telemetry.cli", "hj212", "receiver", "--listen", "127.0.0.1", "--port", str(port)),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None
    assert "HJ 212 receiver on" in (await process.stdout.readline()).decode()
    try:
        yield Platform(process, port)
    finally:
        process.terminate()
        await process.wait()


def config(tmp: Path, listen: int, city: int, province: int) -> Path:
    path = tmp / "site.yaml"
    common = "site: s, pw: '123456', rtd_interval: 1s, grace: 0s, overtime: 2s, send: [rtd, min, hour]"
    path.write_text(
        f"""
sites: [{{id: s}}]
metrics: {{enabled: false}}
outbox: {{path: "{tmp}/outbox.sqlite"}}
aggregation: {{grace: 0s}}
devices:
  - {{id: dau, kind: hj212, listen: "127.0.0.1:{listen}", stations: [{{mn: "{DAU_MN}", pw: "{PW}", site: s}}]}}
hj212:
  - {{name: city, host: 127.0.0.1, port: {city}, mn: "41050022000099", {common}}}
  - {{name: province, host: 127.0.0.1, port: {province}, mn: "32070000000001", {common}}}
"""
    )
    return path


async def test_a_units_data_is_relayed_to_two_platforms_as_the_unit_sent_it(tmp_path: Path) -> None:
    async with platform() as city, platform() as province:
        daemon = await start_daemon(config(tmp_path, free_port(), city.port, province.port))
        driver = daemon.pipeline.drivers[0]
        assert isinstance(driver, Hj212Driver)
        await asyncio.wait_for(driver.listening.wait(), 10)
        dau = Dau("127.0.0.1", driver.port, DAU_MN, PW)
        when = datetime.now(BJ).replace(microsecond=0) - timedelta(seconds=3)
        period = (datetime.now(BJ) - timedelta(hours=1)).replace(minute=20, second=0, microsecond=0)
        hour = period.replace(minute=0) - timedelta(hours=1)
        try:
            await dau.connect()
            sample = f"w01018-SampleTime={when - timedelta(minutes=20):%Y%m%d%H%M%S},w01018-EFlag=A"
            await dau.upload("2011", rtd_cp(when, {"w01018": (41.5, "N"), "w21003": (2.5, "C")}, sample))
            await dau.upload(
                "2051", period_cp(period, {"w01018": (40.0, 41.0, 43.5, "N"), "w21011": (0.1, 0.2, 0.3, "M")})
            )
            await dau.upload("2061", period_cp(hour, {"w01018": (39.0, 42.25, 44.0, "N")}))
            got = {}
            for name, receiver in (("city", city), ("province", province)):
                got[name] = [await receiver.until(cn) for cn in ("2011", "2051", "2061")]
        finally:
            await dau.close()
            await daemon.close()
    assert {p.mn for p in got["city"]} == {"41050022000099"}
    assert {p.mn for p in got["province"]} == {"32070000000001"}
    for rtd, minute, hourly in got.values():
        assert rtd.get("DataTime") == f"{when:%Y%m%d%H%M%S}"  # the unit's time, not the relay's
        assert (rtd.get("w01018-Rtd"), rtd.get("w01018-Flag")) == ("41.5", "N")
        assert (rtd.get("w21003-Rtd"), rtd.get("w21003-Flag")) == ("2.5", "C")
        assert rtd.get("w01018-SampleTime") == f"{when - timedelta(minutes=20):%Y%m%d%H%M%S}"
        assert rtd.get("w01018-EFlag") == "A"
        assert minute.get("DataTime") == f"{period:%Y%m%d%H%M%S}"
        assert [minute.get(f"w01018-{k}") for k in ("Min", "Avg", "Max", "Flag")] == ["40", "41", "43.5", "N"]
        assert (minute.get("w21011-Avg"), minute.get("w21011-Flag")) == ("0.2", "M")  # its flag, not re-judged
        assert hourly.get("DataTime") == f"{hour:%Y%m%d%H%M%S}"
        assert [hourly.get(f"w01018-{k}") for k in ("Avg", "Flag")] == ["42.25", "N"]
