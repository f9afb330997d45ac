"""The daemon's trust boundaries against hostile inputs, on the real daemon and real sockets:
publishers (a real Mosquitto), device clocks, the city platform (a TCP stand-in), HTTP
clients and config files. Each test is one boundary of SECURITY.md, *Boundaries*."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from telemetry.hj212.codec import Packet
from telemetry.sim.platform import Receiver
from tests.daemon import Observed, RunningDaemon, start_daemon
from tests.services import Mosquitto, free_port, telemetry_cli
from tests.test_hj212_commands import MN, Platform, codes
from tests.test_mqtt import publish

pytestmark = pytest.mark.service
NS = 1_000_000_000
TOKEN = "boundary-token-7f3a"


def config(tmp: Path, unique: str, broker: Mosquitto, http_port: int = 0, platform: int = 0, rules: str = "") -> Path:
    metrics = f'{{listen: "127.0.0.1:{http_port}", ack_token: {TOKEN}}}' if http_port else "{enabled: false}"
    hj212 = (
        f"""hj212:
  - {{name: city, host: 127.0.0.1, port: {platform}, site: diaoyushan, mn: {MN}, pw: "123456", send: [rtd]}}
"""
        if platform
        else ""
    )
    path = tmp / "site.yaml"
    path.write_text(
        f"""
sites: [{{id: diaoyushan}}]
metrics: {metrics}
outbox: {{path: "{tmp}/outbox.sqlite"}}
devices:
  - id: broker
    kind: mqtt
    host: {broker.host}
    port: {broker.port}
    client_id: {unique}
    subscriptions:
      - {{topic: "{unique}/{{site}}/{{device}}/{{quantity}}", devices: [an-1]}}
      - {{topic: "{unique}/{{site}}/{{device}}", format: batch, devices: [gw], quantities: [cod, nh3n]}}
rules:
  - {{kind: nodata, name: silent, for: 1h}}
  - {{kind: limit, name: cod_high, quantity: cod, above: 100, for: 4m}}
{rules}{hj212}"""
    )
    return path


def carrying(marker: float) -> Observed:
    """Done once a commit holds the marker value: everything published before it is through."""
    return Observed(lambda seen: any(r.value == marker for r in seen.readings))


async def running(path: Path, seen: Observed) -> RunningDaemon:
    daemon = await start_daemon(path, seen)
    driver = daemon.pipeline.drivers[0]
    await asyncio.wait_for(driver.subscribed.wait(), 10)  # type: ignore[attr-defined]
    return daemon


def rejected(daemon: RunningDaemon, subscription: str, reason: str) -> float:
    labels = {"device": "broker", "subscription": subscription, "error_type": reason}
    return daemon.sample("telemetry_mqtt_rejected_total", labels)


async def test_publishers_create_no_sites_devices_or_quantities(
    tmp_path: Path, mosquitto: Mosquitto, unique: str
) -> None:
    seen = carrying(7.25)
    # A limit that any spoofed reading (41.5) would fire, on every site: none may reach it.
    any_site = "  - {kind: limit, name: any_cod, quantity: cod, above: 10}\n"
    daemon = await running(config(tmp_path, unique, mosquitto, rules=any_site), seen)
    try:
        await asyncio.to_thread(publish, mosquitto, [(f"{unique}/diaoyushan/an-1/cod", b"5")])
        before = len(generate_latest(daemon.registry))
        spoofed = [(f"{unique}/spoof-{i}/dev/cod", b"41.5") for i in range(1000)]  # sites nobody configured
        spoofed += [(f"{unique}/diaoyushan/dev-{i}/cod", b"41.5") for i in range(1000)]  # a real site's name
        spoofed += [(f"{unique}/diaoyushan/an-1/k{i}", b"1") for i in range(400)]  # {quantity}: any, capped
        keys = {f"k{i}": float(i) for i in range(1000)} | {"cod": 4.0}  # a batch: only listed keys
        spoofed.append((f"{unique}/diaoyushan/gw", json.dumps(keys).encode()))
        spoofed.append((f"{unique}/diaoyushan/an-1/cod", b"7.25"))  # the marker: everything before is done
        await asyncio.to_thread(publish, mosquitto, spoofed)
        await asyncio.wait_for(seen.done.wait(), 60)
        await daemon.pipeline.emit([])  # the committer has passed the marker's batch
        after = generate_latest(daemon.registry)

        stored = {(r.site, r.device, r.quantity) for r in seen.readings}
        assert {(s, d) for s, d, _ in stored} == {("diaoyushan", "an-1"), ("diaoyushan", "gw")}
        assert {q for s, d, q in stored if d == "gw"} == {"cod"}
        assert len({q for s, d, q in stored if d == "an-1"}) == 300  # cod and 299 of the 400: the cap
        assert rejected(daemon, f"{unique}/{{site}}/{{device}}/{{quantity}}", "series_cap") == 101
        sub = f"{unique}/{{site}}/{{device}}/{{quantity}}"
        assert rejected(daemon, sub, "unknown_site") == 1000
        assert rejected(daemon, sub, "unknown_device") == 1000
        assert rejected(daemon, f"{unique}/{{site}}/{{device}}", "unknown_quantity") == 1
        # No label a publisher chose, and the exposition barely grows (new label sets of the
        # refusal counters only).
        assert b"spoof" not in after
        assert b"dev-1" not in after
        assert len(after) - before < 3000, (before, len(after))
        # No rule keeps state, and nothing fires, for a refused name.
        state = json.dumps(daemon.desk().rules.snapshot())
        assert "spoof" not in state
        assert "dev-1" not in state
        assert daemon.desk().rules.firing() == []
        # Dead-lettered with their topic, for whoever investigates.
        with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
            topics = {t for (t,) in db.execute("SELECT topic FROM deadletter")}
        assert {f"{unique}/spoof-0/dev/cod", f"{unique}/diaoyushan/dev-0/cod", f"{unique}/diaoyushan/gw"} <= topics
    finally:
        await daemon.close()


async def test_device_clocks_cannot_meet_a_for_early_silence_nodata_or_rewrite_the_past(
    tmp_path: Path, mosquitto: Mosquitto, unique: str
) -> None:
    seen = carrying(150.5)
    daemon = await running(config(tmp_path, unique, mosquitto), seen)
    try:
        now_ms = int(time.time() * 1000)
        topic = f"{unique}/diaoyushan/an-1/cod"
        messages = [
            (topic, json.dumps({"value": 150.0, "ts": now_ms}).encode()),  # over the limit: pending
            (topic, json.dumps({"value": 150.0, "ts": now_ms + int(23.9 * 3600_000)}).encode()),  # a day ahead
            (topic, json.dumps({"value": 150.0, "ts": 946_771_200_000}).encode()),  # 2000-01-02
            (topic, json.dumps({"value": 150.5, "ts": now_ms + 270_000}).encode()),  # 4.5 min ahead: within skew
        ]
        await asyncio.to_thread(publish, mosquitto, messages)
        await asyncio.wait_for(seen.done.wait(), 30)
        await daemon.pipeline.emit([])
        sub = f"{unique}/{{site}}/{{device}}/{{quantity}}"
        assert rejected(daemon, sub, "clock_ahead") == 1
        assert rejected(daemon, sub, "clock_behind") == 1
        assert [r.value for r in seen.readings] == [150.0, 150.5]  # the two others never stored
        # The reading 4.5 min ahead is stored with its own stamp, but judged at the daemon's
        # clock: the limit's ``for: 4m`` has not been met in the seconds this took.
        assert seen.readings[1].ts == (now_ms + 270_000) * 1_000_000
        assert daemon.desk().rules.firing() == []
    finally:
        await daemon.close()


async def test_platform_values_out_of_range_are_refused_and_the_daemon_goes_on(
    tmp_path: Path, mosquitto: Mosquitto, unique: str, hj212_platform: Receiver
) -> None:
    seen = carrying(3.5)
    daemon = await running(config(tmp_path, unique, mosquitto, platform=hj212_platform.port), seen)
    try:
        await asyncio.wait_for(daemon.uplink().connected.wait(), 10)
        platform = Platform(hj212_platform)
        for cn, cp in [
            ("1062", {"RtdInterval": "inf"}),
            ("1062", {"RtdInterval": "nan"}),
            ("1062", {"RtdInterval": "-30"}),
            ("1064", {"MinInterval": "7"}),
            ("1000", {"OverTime": "-5", "ReCount": "3"}),
            ("1000", {"OverTime": "5", "ReCount": "1000000"}),
        ]:
            assert codes(await platform.ask(cn, [cp])) == [("9011", "1"), ("9012", "3")], (cn, cp)
        # The commit loop lives on: a reading after the commands is committed and observed.
        await asyncio.to_thread(publish, mosquitto, [(f"{unique}/diaoyushan/an-1/cod", b"3.5")])
        await asyncio.wait_for(seen.done.wait(), 20)
        assert not daemon.task.done()
        # History: one request is answered at a time; a second sent with it gets QnRtn 2.
        history = [{"BeginTime": "20260101000000", "EndTime": "20261231235959"}]
        one, two = (Packet(f"2026010100000{n}999", "32", "2061", "123456", MN, 5, None, None, history) for n in (1, 2))
        await hj212_platform.send(one, two)
        packets = await hj212_platform.wait_for(
            lambda ps: (
                any(p.qn == one.qn and p.cn == "9012" for p in ps)
                and any(p.qn == two.qn and p.cn == "9011" for p in ps)
            ),
            20,
        )
        assert codes([p for p in packets if p.qn == one.qn]) == [("9011", "1"), ("9012", "100")]
        assert codes([p for p in packets if p.qn == two.qn]) == [("9011", "2")]
        assert (
            daemon.sample(
                "telemetry_errors_total", {"component": "hj212", "stage": "command", "error_type": "history_busy"}
            )
            == 1
        )
    finally:
        await daemon.close()


def _hold(port: int, n: int, partial: bytes) -> list[socket.socket]:
    """``n`` connections that send ``partial`` (nothing, or half a request) and then hang."""
    held = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if partial:
            sock.sendall(partial)
        held.append(sock)
    return held


def _get(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return int(response.status)


async def test_hanging_http_clients_do_not_starve_metrics_or_health(
    tmp_path: Path, mosquitto: Mosquitto, unique: str
) -> None:
    port = free_port()
    daemon = await running(config(tmp_path, unique, mosquitto, http_port=port), carrying(0.0))
    held: list[socket.socket] = []
    try:
        # 40 idle connections and 40 half-sent requests: more than the listener's cap.
        held += await asyncio.to_thread(_hold, port, 40, b"")
        held += await asyncio.to_thread(_hold, port, 40, b"POST /alerts/x/ack HTTP/1.1\r\nContent-Le")
        for path in ("/metrics", "/healthz", "/metrics"):
            assert await asyncio.to_thread(_get, port, path) == 200
        # A POST without Content-Length, or with a negative or huge one: 400 and one line of JSON.
        for length in (None, "-1", str(1 << 30)):
            head = "" if length is None else f"Content-Length: {length}\r\n"
            request = f"POST /alerts/x/ack HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{head}\r\n"
            reply = await asyncio.to_thread(_exchange, port, request.encode())
            status, _, body = reply.partition(b"\r\n\r\n")
            assert status.startswith(b"HTTP/1.0 400"), reply
            assert json.loads(body) == {"error": "expected a Content-Length of 0 to 65536 bytes"}
    finally:
        for sock in held:
            sock.close()
        await daemon.close()


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


BOMB = """\
a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
sites: [*h]
"""


NESTED = "sites: " + "[" * 600 + "]" * 600 + "\n"
LONG_ALIASES = "x: &x '" + "y" * 1_000_000 + "'\nsites: [" + ", ".join(["*x"] * 60) + "]\n"


@pytest.mark.parametrize(
    ("text", "command", "expected"),
    [
        (BOMB, "check", "expected a configuration of at most 200,000 values"),
        (BOMB, "run", "expected a configuration of at most 200,000 values"),
        (NESTED, "check", "nested levels"),
        (LONG_ALIASES, "check", "characters of values"),
    ],
)
def test_a_config_that_would_expand_without_bound_is_refused_with_one_line(
    tmp_path: Path, text: str, command: str, expected: str
) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    done = telemetry_cli(command, "-c", str(path))
    assert done.returncode == 2, done
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    # One problem, at its file and line, and the count check always ends with.
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{path}:1: (size): expected")
    assert expected in lines[0]
    assert lines[1] == f"1 problem(s) in {path}"
