"""Real services for the tests, each on a free loopback port in a temp dir.

A missing binary skips the test locally and fails it when ``CI`` is set: CI must
never pass by skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

T = TypeVar("T")


def telemetry_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``telemetry ARGS`` as a user runs it: its own process, its own stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "telemetry.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require(binary: str) -> str:
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.path.exists(p)), None
    )
    if path is None:
        message = f"{binary} is not installed (run .ci/setup)"
        if os.environ.get("CI"):
            pytest.fail(message + "; under CI a missing service fails the test")
        pytest.skip(message)
    return path


def eventually(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll an external service until ``probe`` returns something truthy.

    Only for state inside a real server (a database, a broker) that offers no
    notification; in-process events are awaited directly.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def _process(cmd: list[str], log: Path, port: int, name: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        eventually(
            lambda: _port_open(port) or (proc.poll() is not None and _died(proc, log, name)),
            30,
            f"{name} to listen on {port}",
        )
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _died(proc: subprocess.Popen[bytes], log: Path, name: str) -> bool:
    raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read_text()[-2000:]}")


@dataclass
class Mosquitto:
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    cmd: list[str]
    log: Path
    ca_file: str = ""
    username: str = ""
    password: str = ""

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file (queued QoS 1 messages) and exits."""
        self.proc.terminate()
        self.proc.wait(10)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT)
        eventually(lambda: _port_open(self.port), 30, f"mosquitto to listen on {self.port} again")


@contextmanager
def mosquitto(
    tmp: Path,
    tls: bool = False,
    user: tuple[str, str] | None = None,
    default_limits: bool = False,
    extra: Sequence[str] = (),
) -> Iterator[Mosquitto]:
    """A broker with persistence (queued messages survive a restart); optionally TLS with a
    self-signed CA and a password file instead of anonymous access. Its queue limits are
    raised for the tests' bursts unless ``default_limits`` (Mosquitto's: 1000 queued, 20 in flight);
    ``extra`` lines go last (the benches' limits)."""
    binary = require("mosquitto")
    port = free_port()
    conf = tmp / "mosquitto.conf"
    lines = [
        f"listener {port} 127.0.0.1",
        f"allow_anonymous {'false' if user else 'true'}",
        "persistence true",
        "user root",  # when started as root, keep root: the temp dir is root's (else: ignored)
        f"persistence_location {tmp}/",
    ]
    if not default_limits:
        lines += ["max_queued_messages 1000000", "max_inflight_messages 100"]
    ca = ""
    if tls:
        ca, cert, key = make_certificates(tmp)
        lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
    if user:
        passwd = tmp / "passwd"
        passwd.touch()
        subprocess.run([require("mosquitto_passwd"), "-b", str(passwd), *user], check=True, capture_output=True)
        lines.append(f"password_file {passwd}")
    lines += extra
    conf.write_text("\n".join(lines) + "\n")
    cmd = [binary, "-c", str(conf)]
    log = tmp / "mosquitto.log"
    with _process(cmd, log, port, "mosquitto") as proc:
        broker = Mosquitto("127.0.0.1", port, proc, cmd, log, ca, *(user or ("", "")))
        try:
            yield broker
        finally:
            if broker.proc.poll() is None:
                broker.proc.terminate()
                broker.proc.wait(10)


def register_session(broker: Mosquitto, client_id: str, topic: str, v5: bool = False) -> None:
    """Subscribe once with a persistent session (MQTT 5: with a week's session expiry), so the
    broker queues for ``client_id`` while it is away: the benches' backlogs."""
    done = threading.Event()
    if v5:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 7 * 86400
        client.connect(broker.host, broker.port, clean_start=False, properties=props)
    else:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        client.connect(broker.host, broker.port)
    client.on_subscribe = lambda *_: done.set()
    client.loop_start()
    client.subscribe(topic, qos=1)
    done.wait(10)
    client.disconnect()
    client.loop_stop()


def make_certificates(tmp: Path) -> tuple[str, str, str]:
    """A throw-away CA and a server certificate for 127.0.0.1 / localhost (openssl CLI)."""
    openssl = require("openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=tmp)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    )
    return str(tmp / "ca.crt"), str(tmp / "server.crt"), str(tmp / "server.key")


@dataclass
class Server:
    """A service process the test can stop and start again on the same port and data."""

    url: str
    proc: subprocess.Popen[bytes] | None = None
    cmd: list[str] | None = None
    log: Path | None = None
    port: int = 0

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(20)

    def start(self) -> None:
        assert self.cmd is not None
        assert self.log is not None
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT)
        eventually(lambda: _port_open(self.port), 30, f"{self.cmd[0]} to listen on {self.port} again")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@dataclass
class Influx1(Server):
    def query(self, db: str, q: str) -> list[dict[str, Any]]:
        """Rows of the first series of an InfluxQL query, as dicts."""
        params = urllib.parse.urlencode({"db": db, "q": q, "epoch": "ns"})
        with urllib.request.urlopen(f"{self.url}/query?{params}", timeout=10) as resp:
            body = json.load(resp)
        rows: list[dict[str, Any]] = []
        for result in body.get("results", []):
            if "error" in result:
                if result["error"].startswith("database not found"):
                    return []  # not created yet: nothing written so far
                raise AssertionError(result["error"])
            for series in result.get("series", []):
                tags = series.get("tags", {})
                rows += [dict(zip(series["columns"], values, strict=True)) | tags for values in series["values"]]
        return rows

    def write(self, db: str, body: str) -> None:
        request = urllib.request.Request(f"{self.url}/write?db={db}", data=body.encode(), method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def create(self, db: str) -> None:
        """CREATE DATABASE, with its answer read to the end: influxd answers 200 before the
        statement has run and cancels it when the client closes first (6 of 400 databases
        were then missing when the next write came; 0 of 600 with the answer read)."""
        data = urllib.parse.urlencode({"q": f'CREATE DATABASE "{db}"'}).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=10) as resp:
            body = json.load(resp)
        errors = [r["error"] for r in body.get("results", []) if "error" in r]
        if errors:
            raise AssertionError(f"CREATE DATABASE {db}: {errors}")


@contextmanager
def influxd(tmp: Path) -> Iterator[Influx1]:
    binary = require("influxd")
    port, rpc = free_port(), free_port()
    conf = tmp / "influxdb.conf"
    conf.write_text(
        f"""reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{tmp}/meta"
[data]
  dir = "{tmp}/data"
  wal-dir = "{tmp}/wal"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"""
    )
    cmd = [binary, "-config", str(conf)]
    with _process(cmd, tmp / "influxd.log", port, "influxd") as proc:
        server = Influx1(f"http://127.0.0.1:{port}", proc, cmd, tmp / "influxd.log", port)
        try:
            yield server
        finally:
            server.close()


@dataclass
class Victoria(Server):
    def export(self, match: str) -> list[dict[str, Any]]:
        """Raw samples of every series matching ``match`` (flushes first, so nothing hides)."""
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).close()
        params = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{params}", timeout=10) as resp:
            return [json.loads(line) for line in resp.read().splitlines() if line.strip()]

    def promql(self, expr: str) -> list[dict[str, Any]]:
        """The series an instant query returns, through the Prometheus query API Grafana uses."""
        params = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=10) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise AssertionError(f"{expr}: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        params = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/label/{label}/values?{params}", timeout=10) as resp:
            values: list[str] = json.load(resp)["data"]
        return values


@contextmanager
def victoria(tmp: Path, scrape: Sequence[str] = ()) -> Iterator[Victoria]:
    """VictoriaMetrics; with ``scrape`` (host:port targets) it also scrapes their /metrics
    every second, as Prometheus would, and answers the Prometheus query API.

    Run as the README says a site must run it: with deduplication on, so a batch the
    daemon sends again (it was in flight when the server stalled) leaves one sample per
    series and timestamp, as InfluxDB's overwrite does. Without it VictoriaMetrics keeps
    both copies."""
    binary = require("victoria-metrics")
    port = free_port()
    cmd = [
        binary,
        f"-storageDataPath={tmp}/vm",
        f"-httpListenAddr=127.0.0.1:{port}",
        "-retentionPeriod=100y",
        "-search.latencyOffset=0s",
        "-dedup.minScrapeInterval=1ms",
        "-loggerLevel=ERROR",
    ]
    if scrape:
        targets = ", ".join(f'"{t}"' for t in scrape)
        config = tmp / "scrape.yaml"
        config.write_text(
            "global: {scrape_interval: 1s}\n"
            f"scrape_configs: [{{job_name: telemetry, static_configs: [{{targets: [{targets}]}}]}}]\n"
        )
        cmd.append(f"-promscrape.config={config}")
    with _process(cmd, tmp / "victoria.log", port, "victoria-metrics") as proc:
        server = Victoria(f"http://127.0.0.1:{port}", proc, cmd, tmp / "victoria.log", port)
        try:
            yield server
        finally:
            server.close()
