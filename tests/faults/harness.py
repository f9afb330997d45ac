"""Fault injection: the daemon as a real process (so it can be SIGKILLed), an HTTP proxy
in front of InfluxDB that misbehaves on demand, and ground truth to check against.

Every reading a scenario publishes has a unique value and timestamp, so "every
committed reading is in InfluxDB exactly once" is checked as: the values InfluxDB
holds are exactly the values published (minus what a scenario deliberately had
quarantined), no more, no fewer.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar

from telemetry.sim.notifications import StoppableHTTPServer
from tests.services import Influx1, Mosquitto, eventually, require

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


SINK = ", create_database: true, flush_interval: 100ms"


def mqtt_device(unique: str, broker: Mosquitto, extra: str = "") -> str:
    """The scenarios' MQTT device: one reading per message on ``UNIQUE/{site}/{device}/{quantity}``."""
    return (
        f"{{id: broker, kind: mqtt, host: {broker.host}, port: {broker.port}, client_id: {unique}{extra},\n"
        f'     subscriptions: [{{topic: "{unique}/{{site}}/{{device}}/{{quantity}}", devices: ["*"]}}]}}'
    )


def site_config(
    tmp: Path,
    unique: str,
    port: int,
    device: str,
    influx_url: str,
    *,
    sink: str = SINK,
    sections: str = "",
    outbox: str = "",
    site: str = "",
) -> Path:
    """A scenario's config: site ``unique``, one device, one InfluxDB 1.x sink (database
    ``unique``, ``sink`` added to its options), ``sections`` (YAML lines), /metrics on ``port``,
    the outbox in ``tmp`` unless ``outbox`` gives its options."""
    path = tmp / "site.yaml"
    path.write_text(
        f"""
sites: [{{id: {unique}{site}}}]
devices:
  - {device}
influxdb:
  - {{name: local, api: v1, url: "{influx_url}", database: {unique}{sink}}}
{sections}
metrics: {{listen: "127.0.0.1:{port}"}}
outbox: {{{outbox or f'path: "{tmp}/outbox.sqlite"'}}}
"""
    )
    return path


class FaultProxy:
    """Forwards HTTP to ``target`` unless ``mode`` says otherwise:

    ``pass``; ``down`` (the connection is closed without an answer); ``slow`` (answers
    after ``delay`` s); ``500``; ``503`` (with ``Retry-After: 1``); ``413`` (a write of
    more than ``max_lines`` lines is refused as too large); ``400`` (a write holding
    ``poison`` is refused as bad data, as InfluxDB does for a type conflict).
    ``seen`` counts what the proxy did, by mode.
    """

    def __init__(self, target: str) -> None:
        self.target = target.removeprefix("http://")
        self.mode = "pass"
        self.delay = 2.0
        self.max_lines = 200
        self.poison = b"value=666.0"
        self.seen: dict[str, int] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy._handle(self, b"")

            def do_POST(self) -> None:
                proxy._handle(self, self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = StoppableHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.stop()
        self._thread.join(5)

    def count(self, what: str) -> int:
        with self._lock:
            return self.seen.get(what, 0)

    def _note(self, what: str) -> None:
        with self._lock:
            self.seen[what] = self.seen.get(what, 0) + 1

    def _handle(self, req: BaseHTTPRequestHandler, body: bytes) -> None:
        mode = self.mode
        is_write = req.path.startswith("/write") or req.path.startswith("/api/v2/write")
        text = gzip.decompress(body) if body and req.headers.get("Content-Encoding") == "gzip" else body
        if is_write and mode == "down":
            self._note("down")
            req.close_connection = True
            req.connection.close()
            return
        if is_write and mode in ("500", "503"):
            self._note(mode)
            self._answer(req, int(mode), b'{"error": "injected"}', {"Retry-After": "1"} if mode == "503" else {})
            return
        if is_write and mode == "413" and text.count(b"\n") + 1 > self.max_lines:
            self._note("413")
            self._answer(req, 413, b'{"error": "Request Entity Too Large"}', {})
            return
        if is_write and mode == "400" and self.poison in text:
            self._note("400")
            self._answer(req, 400, b'{"error": "partial write: field type conflict"}', {})
            return
        if is_write and mode == "slow":
            self._note("slow")
            time.sleep(self.delay)  # the injected fault itself: a server that takes its time
        self._forward(req, body)

    def _forward(self, req: BaseHTTPRequestHandler, body: bytes) -> None:
        conn = http.client.HTTPConnection(self.target, timeout=10)
        headers = {k: v for k, v in req.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(req.command, req.path, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        passthrough = {k: v for k, v in resp.getheaders() if k.lower() not in ("transfer-encoding", "connection")}
        self._answer(req, resp.status, data, passthrough, keep_length=False)
        conn.close()
        if req.path.startswith("/write"):
            self._note(f"forwarded_{resp.status}")

    @staticmethod
    def _answer(
        req: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str], keep_length: bool = False
    ) -> None:
        req.send_response(status)
        for key, value in headers.items():
            if key.lower() != "content-length" or keep_length:
                req.send_header(key, value)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)


class Daemon:
    """``telemetry run`` as a child process: start, SIGKILL, restart, read its /metrics."""

    def __init__(self, cfg: Path, metrics_port: int, env: dict[str, str] | None = None) -> None:
        self.cfg, self.port, self.env = cfg, metrics_port, env
        self.log = cfg.with_suffix(".log")
        self.proc = self.start()
        self.kills = 0

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            cmd = [sys.executable, "-m", "telemetry.cli", "run", "-c", str(self.cfg)]
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=out, env=self.env)
        return self.proc

    def kill9(self) -> None:
        """SIGKILL (no shutdown at all), then start again."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1
        self.start()

    def stop(self) -> int:
        """SIGTERM once the daemon is up; the exit code (0: a clean shutdown). A daemon just
        restarted may still be in the interpreter's start-up, before any program can handle
        a signal; it handles SIGTERM from the moment /metrics answers."""
        if self.proc.poll() is None:
            eventually(lambda: self.proc.poll() is not None or self._listening(), 30, "the daemon to come up")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        return self.proc.returncode

    def _listening(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5):
                return True
        except OSError:
            return False

    def alive(self) -> bool:
        assert self.proc.poll() is None, f"the daemon died: {self.log.read_text()[-3000:]}"
        return True

    def until(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        """``eventually(probe)`` that fails at once, with the daemon's log, if the daemon dies
        meanwhile: a wait on InfluxDB or /readyz would otherwise run out its time (or the
        test's) waiting for readings nobody is sending any more."""
        return eventually(lambda: probe() if self.alive() else None, timeout, what)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of /metrics summed over the labels not given (0 while not listening)."""
        self.alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return 0.0
        total = 0.0
        for line in text.splitlines():
            if not line.startswith((name + "{", name + " ")):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait(
        self, name: str, at_least: float = 1, timeout: float = 60, where: Mapping[str, str] | None = None, **labels: str
    ) -> float:
        """Until the metric reaches ``at_least``; labels as keywords, or a built set as ``where``."""
        labels = {**(where or {}), **labels}
        return eventually(
            lambda: (v := self.metric(name, **labels)) >= at_least and v, timeout, f"{name}{labels} >= {at_least}"
        )


def publish(broker: Mosquitto, topic: str, values: range, base_ms: int, username: str = "", password: str = "") -> None:
    """QoS 1 messages ``{"value": v, "ts": base_ms + v}``, through ``mosquitto_pub -l``."""
    lines = [f'{{"value": {v}, "ts": {base_ms + v}}}' for v in values]
    publish_lines(broker, topic, lines, username, password)


class PacedPublisher:
    """QoS 1 messages ``{"value": v, "ts": base_ms + v}`` through one ``mosquitto_pub -l``, fed
    ``per_second`` lines a second in a thread: a stream that is still flowing when a test acts
    (a daemon that drains 20,000 messages in under a second would otherwise see none of it)."""

    def __init__(self, broker: Mosquitto, topic: str, values: range, base_ms: int, per_second: float) -> None:
        cmd = [require("mosquitto_pub"), "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic, "-l"]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
        self._lines = [f'{{"value": {v}, "ts": {base_ms + v}}}\n'.encode() for v in values]
        self._per_second = per_second
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        assert self._proc.stdin is not None
        step = max(1, int(self._per_second / 100))
        start = time.monotonic()
        for first in range(0, len(self._lines), step):
            self._proc.stdin.write(b"".join(self._lines[first : first + step]))
            self._proc.stdin.flush()
            ahead = start + (first + step) / self._per_second - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing of a load generator
        self._proc.stdin.close()

    @property
    def feeding(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float = 120) -> None:
        self._thread.join(timeout)
        if self._proc.wait(timeout):
            raise RuntimeError(f"mosquitto_pub failed with {self._proc.returncode}")


PUB_CHUNK = 50_000  # mosquitto_pub -l queues what it reads; past 65,535 its message ids wrap and it quits early


def publish_lines(broker: Mosquitto, topic: str, lines: list[str], username: str = "", password: str = "") -> None:
    """QoS 1 messages, one per line, through ``mosquitto_pub -l`` (one process per chunk)."""
    cmd = [require("mosquitto_pub"), "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic, "-l"]
    if username:
        cmd += ["-u", username, "-P", password]
    for start in range(0, len(lines), PUB_CHUNK):
        chunk = "".join(f"{line}\n" for line in lines[start : start + PUB_CHUNK])
        subprocess.run(cmd, input=chunk.encode(), check=True, timeout=60)


def values_in(influx: Influx1, db: str, quantity: str = "flow") -> list[int]:
    rows = influx.query(db, f"SELECT value FROM telemetry WHERE quantity = '{quantity}'")
    return sorted(int(r["value"]) for r in rows)


def count_in(influx: Influx1, db: str) -> int:
    rows = influx.query(db, "SELECT count(value) FROM telemetry")
    return int(rows[0]["count"]) if rows else 0


class ModbusFaultProxy:
    """Modbus TCP between the daemon and a device, misbehaving on demand: ``pass``;
    ``silent`` (requests swallowed: the device times out); ``garbage`` (random bytes for
    an answer); ``cut`` (half of the real answer, then the connection closes)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.mode = "pass"
        self.seen: dict[str, int] = {}
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)  # accept() wakes up to see _stop
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._clients: list[socket.socket] = []
        self._workers: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept, name="modbus-fault-proxy", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        for client in self._clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        for worker in self._workers:
            worker.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self._clients.append(client)
            worker = threading.Thread(target=self._serve, args=(client,), name="modbus-fault-conn", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _serve(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.upstream), timeout=5) as device:
            while True:
                request = _frame(client)
                if request is None:
                    return
                mode = self.mode
                self.seen[mode] = self.seen.get(mode, 0) + 1
                if mode == "silent":
                    continue
                if mode == "garbage":
                    client.sendall(request[:2] + os.urandom(10))
                    continue
                device.sendall(request)
                answer = _frame(device)
                if answer is None:
                    return
                if mode == "cut":
                    client.sendall(answer[: len(answer) // 2])
                    return
                client.sendall(answer)


def _frame(sock: socket.socket) -> bytes | None:
    """One Modbus TCP frame (MBAP header + PDU), or None when the peer closed."""
    header = _exactly(sock, 7)
    if header is None:
        return None
    body = _exactly(sock, int.from_bytes(header[4:6], "big") - 1)
    return None if body is None else header + body


def _exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def committed(outbox: Path) -> int:
    """How many records the outbox ever committed (AUTOINCREMENT's high-water mark): with no
    rules and no aggregation, every one is a reading."""
    with sqlite3.connect(outbox) as db:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
    return int(row[0]) if row else 0


class TcpGate:
    """A TCP proxy to ``target`` that can hang: while held it accepts connections and takes
    what clients send without passing it on or answering (a server that accepts and never
    answers); once released, what it held goes on to ``target`` and the answers come back.
    Without a target it only ever hangs. ``holding`` is set once a client waits on it."""

    def __init__(self, target: tuple[str, int] | None = None, *, held: bool = False) -> None:
        self.target = target
        self.holding = threading.Event()
        self._open = threading.Event()
        if not held:
            self._open.set()
        self._closing = False
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._spawn(self._accept)

    def hold(self) -> None:
        self.holding.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closing = True
        self._open.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes recv()
        for thread in list(self._threads):
            thread.join(5)
        for sock in self._sockets:
            sock.close()

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name="tcp-gate", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)
        if self._closing:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            while data := client.recv(65536):
                if not self._open.is_set():
                    self.holding.set()
                    self._open.wait()
                if self._closing or self.target is None:
                    return
                if upstream is None:
                    upstream = socket.create_connection(self.target, timeout=10)
                    upstream.settimeout(None)
                    self._track(upstream)
                    self._spawn(self._back, upstream, client)
                upstream.sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _back(upstream: socket.socket, client: socket.socket) -> None:
        """Answers back to the client until the server closes; then the client's side closes."""
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)
