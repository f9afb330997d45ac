"""The station's answers to a platform's commands over real TCP: 1013, 1072, 2021/2022, 2041,
2081 and 3011-3021 (refused, or one allowed Modbus write on a real pymodbus server)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from telemetry.hj212.codec import Packet
from telemetry.model import AlertEvent, Reading
from telemetry.sim.plant import RegisterServer
from telemetry.sim.platform import Receiver
from tests.daemon import RunningDaemon, start_daemon

BJ = timezone(timedelta(hours=8))
NS = 1_000_000_000
MN = "010000A8900016F000169DC0"


@pytest.fixture
def analyzers() -> Iterator[RegisterServer]:
    server = RegisterServer(units=(1,)).start()
    server.set(1, "holding", 10, [1])  # the pump's status register: running
    yield server
    server.stop()


def config(tmp: Path, port: int, modbus: int, pw: str = "123456") -> Path:
    path = tmp / "site.yaml"
    path.write_text(
        f"""
sites: [{{id: s}}]
metrics: {{enabled: false}}
outbox: {{path: "{tmp}/outbox.sqlite"}}
aggregation: {{grace: 0s}}
devices:
  - {{id: an, kind: modbus, site: s, host: 127.0.0.1, port: {modbus}, unit_id: 1, interval: 500ms, timeout: 200ms, retries: 0,
     points: [{{quantity: cod, address: 0, type: uint16, unit: mg/L}}, {{quantity: pump, address: 10, type: uint16}}]}}
hj212:
  - {{name: city, host: 127.0.0.1, port: {port}, site: s, mn: {MN}, pw: "{pw}", rtd_interval: 1s, send: [rtd],
     equipment: [{{id: SB1, device: an, quantity: pump}}],
     controls: {{"3012": {{device: an, address: 30, value: 1}}}}}}
"""
    )
    return path


class Platform:
    """Commands to the station through a receiver, and the packets that answer each."""

    def __init__(self, hj212_platform: Receiver) -> None:
        self.receiver = hj212_platform
        self.n = 0

    async def ask(
        self, cn: str, cp: list[dict[str, str]] | None = None, pw: str = "123456", mn: str = MN
    ) -> list[Packet]:
        """Send a command; every packet from then until its 9012 (or a 9011 that is no QnRtn 1)."""
        self.n += 1
        qn = f"20260101000000{self.n:03d}"
        before = len(self.receiver.packets)
        await self.receiver.send(Packet(qn, "32", cn, pw, mn, 5, None, None, cp or []))

        def answered(packets: list[Packet]) -> bool:
            mine = [p for p in packets[before:] if p.qn == qn]
            return any(p.cn == "9012" or (p.cn == "9011" and p.get("QnRtn") != "1") for p in mine)

        packets = await self.receiver.wait_for(answered, 20)
        return [p for p in packets[before:] if p.cn != "2011"]


def codes(packets: list[Packet]) -> list[tuple[str, str]]:
    return [(p.cn, p.get("QnRtn") or p.get("ExeRtn") or "") for p in packets if p.cn in ("9011", "9012")]


async def connected(
    path: Path, hj212_platform: Receiver, history: list[Reading] | None = None, polled: asyncio.Event | None = None
) -> RunningDaemon:
    """The daemon, connected to the platform; ``history`` committed and aggregated first (before
    the first tick closes the past: later, readings of closed windows are late); ``polled`` is set
    once a reading of today (a poll of the device) is committed."""
    today = time.time_ns() - 60 * NS

    def observe(readings: Sequence[Reading], _events: Sequence[AlertEvent]) -> None:
        if polled is not None and any(r.ts >= today for r in readings):
            polled.set()

    daemon = await start_daemon(path, observe)
    if history:
        await daemon.pipeline.emit(history)
        daemon.pipeline.tick(time.time_ns())
        await daemon.pipeline.emit([])  # after the tick's windows: the commits are in order
    await asyncio.wait_for(daemon.uplink().connected.wait(), 10)
    await hj212_platform.wait_for(lambda ps: any(p.cn == "2081" for p in ps), 10)  # its restart time, first
    return daemon


async def test_time_status_running_time_restart_and_remote_control_commands(
    tmp_path: Path, hj212_platform: Receiver, analyzers: RegisterServer
) -> None:
    started = time.time_ns()
    yesterday = datetime.now(BJ).replace(hour=10, minute=0, second=0, microsecond=0) - timedelta(days=1)
    t0 = int(yesterday.timestamp()) * NS
    hours = [Reading(t0 + m * 60 * NS, "s", "an", "pump", 1.0) for m in range(60)]  # ran the whole hour
    hours += [Reading(t0 + (60 + m) * 60 * NS, "s", "an", "pump", float(m < 30)) for m in range(60)]  # half
    polled = asyncio.Event()
    daemon = await connected(config(tmp_path, hj212_platform.port, analyzers.port), hj212_platform, hours, polled)
    platform = Platform(hj212_platform)
    try:
        await asyncio.wait_for(polled.wait(), 10)  # the pump's status as polled now, not yesterday's last
        [restart] = [p for p in hj212_platform.packets if p.cn == "2081"]
        calibrate = await platform.ask("1013")
        asked_restart = await platform.ask("2081")
        status_on = await platform.ask("2021")
        await hj212_platform.wait_for(lambda ps: len([p for p in ps if p.cn == "2021"]) >= 2, 10)  # every RtdInterval
        status_off = await platform.ask("2022")
        day = f"{yesterday:%Y%m%d}"
        running = await platform.ask("2041", [{"BeginTime": f"{day}000000", "EndTime": f"{day}235959"}])
        nothing = await platform.ask("2041", [{"BeginTime": "20200101000000", "EndTime": "20200101235959"}])
        # A range to the year 9999 is answered within ask's 20 s: the days looked at are bounded.
        forever = await platform.ask("2041", [{"BeginTime": "20000101000000", "EndTime": "99991231235959"}])
        refused = await platform.ask("3011")
        allowed = await platform.ask("3012")
        unknown = await platform.ask("3099")
    finally:
        await daemon.close()
    local = datetime.fromtimestamp(started / NS, BJ).strftime("%Y%m%d%H%M%S")
    assert (restart.get("RestartTime") or "") >= local[:12]  # when the daemon started
    assert codes(calibrate) == [("9011", "1"), ("9012", "1")]
    [clock] = [p for p in calibrate if p.cn == "1011"]  # the station's time, for the platform to compare
    assert abs(
        datetime.strptime(clock.get("SystemTime") or "", "%Y%m%d%H%M%S").replace(tzinfo=BJ) - datetime.now(BJ)
    ) < timedelta(minutes=1)
    assert codes(asked_restart) == [("9011", "1"), ("9012", "1")]
    assert [p.get("RestartTime") for p in asked_restart if p.cn == "2081"] == [restart.get("RestartTime")]
    assert codes(status_on) == [("9011", "1"), ("9012", "1")]
    assert [p.get("SB1-RS") for p in status_on if p.cn == "2021"] == ["1"]
    assert codes(status_off) == [("9011", "1"), ("9012", "1")]
    assert codes(running) == [("9011", "1"), ("9012", "1")]
    assert [(p.get("DataTime"), p.get("SB1-RT")) for p in running if p.cn == "2041"] == [(f"{day}000000", "1.50")]
    assert codes(nothing) == [("9011", "1"), ("9012", "100")]
    assert codes(forever) == [("9011", "1"), ("9012", "1")]
    assert (f"{day}000000", "1.50") in [(p.get("DataTime"), p.get("SB1-RT")) for p in forever if p.cn == "2041"]
    assert codes(refused) == [("9011", "1"), ("9012", "3")]  # no remote control unless configured
    assert codes(allowed) == [("9011", "1"), ("9012", "1")]
    assert analyzers.writes == [(1, 30, [1])]  # the one write the allow-list names, nothing the platform sent
    assert codes(unknown) == [("9011", "8")]


async def test_a_new_password_from_the_platform_is_stored_used_and_never_logged(
    tmp_path: Path, hj212_platform: Receiver, analyzers: RegisterServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = config(tmp_path, hj212_platform.port, analyzers.port)
    daemon = await connected(path, hj212_platform)
    platform = Platform(hj212_platform)
    try:
        wrong = await platform.ask("1072", [{"NewPW": "abc999"}], pw="guess1")
        unusable = await platform.ask("1072", [{"NewPW": "x" * 17}])
        guessed = await platform.ask("2041", pw="guess1")
        elsewhere = await platform.ask("1011", mn="41050022000099")
        changed = await platform.ask("1072", [{"NewPW": "n3w-PW"}])
        stale = await platform.ask("1013")  # the old password: no longer anyone's
        after = await platform.ask("1011", pw="n3w-PW")
    finally:
        await daemon.close()
    assert codes(wrong) == [("9011", "3")]  # only who knows the current password may change it
    assert codes(guessed) == [("9011", "3")]  # nor ask for anything else
    assert codes(elsewhere) == [("9011", "4")]
    assert codes(stale) == [("9011", "3")]
    assert codes(after) == [("9011", "1"), ("9012", "1")]
    assert codes(unusable) == [("9011", "1"), ("9012", "3")]
    assert codes(changed) == [("9011", "1"), ("9012", "1")]
    assert {p.pw for p in changed} == {"123456"}  # the answers go under the password the request had
    assert {p.pw for p in after} == {"n3w-PW"}
    hj212_platform.packets.clear()
    daemon = await connected(path, hj212_platform)  # restarted: the stored password, over the configured one
    daemon_pw = {p.pw for p in hj212_platform.packets}
    await daemon.close()
    hj212_platform.packets.clear()
    daemon = await connected(config(tmp_path, hj212_platform.port, analyzers.port, pw="op-set7"), hj212_platform)
    operator_pw = {p.pw for p in hj212_platform.packets}  # the operator changed the configured one since: it wins
    await daemon.close()
    assert daemon_pw == {"n3w-PW"}
    assert operator_pw == {"op-set7"}
    assert not [r for r in caplog.records if "n3w-PW" in r.getMessage() or "abc999" in r.getMessage()]
