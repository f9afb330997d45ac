"""The daemon's HTTP endpoint: Prometheus metrics and the alert desk for people.

- ``GET /metrics``: Prometheus exposition.
- ``GET /healthz``: 200 while the process serves requests.
- ``GET /readyz``: 200 when drivers are started, the outbox takes commits and no sink
  keeps a record waiting longer than ``metrics.ready_sink_age`` after its commit (on the
  daemon's clock, whatever the reading's own timestamp); 503 with the reasons otherwise.
- ``GET /alerts``: current alerts and silences as JSON (what ``telemetry alerts list`` shows).
- ``POST /alerts/ID/ack``: acknowledge an alert (stops repeats and escalation); needs
  ``Authorization: Bearer TOKEN`` with ``metrics.ack_token`` (from the environment);
  without a configured token the endpoint refuses every ack (403): anyone who can
  reach the port must not be able to silence a regulated alarm.

- ``POST /furnaces/ID/marks``: set a furnace's operating mark, ``{"kind": "fault", "start":
  ISO or epoch (default now), "end": ..., "note": ..., "by": ...}``; ``POST
  /furnaces/ID/marks/end`` ends its open mark (``{"at": ...}``); same token as acks.
  ``GET /furnaces/marks``: the marks the daemon holds.

Acks and marks go through the same command table as the CLI, so both take the same path.
Listens on loopback by default; put it behind the plant's reverse proxy to expose it.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from telemetry.config_base import host_port
from telemetry.console import Console
from telemetry.errors import OutboxError
from telemetry.marks import STATE_KEY, check_times, mark_kind
from telemetry.metrics import Metrics
from telemetry.outbox import add_command, read_state
from telemetry.times import TimeError, parse_timestamp

log = logging.getLogger(__name__)
StartResponse = Callable[..., Any]


class ClosingThreads(socketserver.ThreadingMixIn):
    """A thread per connection, and a ``stop`` that ends every open connection and joins every
    handler thread: one slow or idle client never holds the others (a scrape, a probe), and a
    keep-alive connection neither outlives the server nor holds its shutdown.

    A connection (one request: wsgiref closes after each) has ``deadline`` seconds to send its
    request and be answered, however slowly it trickles bytes in; at ``max_connections`` open,
    a new one ends the oldest rather than being turned away, so clients that hang connections
    open cannot keep a scrape or a probe out."""

    daemon_threads = False
    block_on_close = True
    max_connections = 32
    deadline = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._open: dict[socket.socket, float] = {}  # connection -> when it was accepted (monotonic)
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            if len(self._open) >= self.max_connections:
                self._end(min(self._open, key=self._open.__getitem__))
            self._open[request] = time.monotonic()
        super().process_request(request, client_address)

    def service_actions(self) -> None:
        """Between accepts (every poll of ``serve_forever``): end connections past their deadline."""
        late = time.monotonic() - self.deadline
        with self._open_lock:
            for sock in [s for s, at in self._open.items() if at < late]:
                self._end(sock)

    def _end(self, sock: socket.socket) -> None:
        """Wake the handler blocked on this connection; it closes it and is forgotten then."""
        del self._open[sock]
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.pop(request, None)
        super().shutdown_request(request)  # type: ignore[misc]

    def stop(self) -> None:
        """Stop accepting, wake handlers blocked reading from a client, and wait for them."""
        self.shutdown()  # type: ignore[attr-defined]
        with self._open_lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self.server_close()


class _Server(ClosingThreads, WSGIServer):
    pass


class _QuietHandler(WSGIRequestHandler):
    timeout = 10.0  # a connection that sends nothing for this long is closed (and see ``deadline``)

    def log_message(self, format: str, *args: Any) -> None:
        return


Readiness = Callable[[], tuple[bool, dict[str, Any]]]


MAX_BODY = 64 * 1024


Reply = tuple[str, Any]


class _Desk:
    """The /alerts and /furnaces endpoints: reads answer anyone who reaches the listener,
    changes need the Bearer token and go to the daemon through the command table."""

    def __init__(self, outbox_path: str, token: str, furnaces: Iterable[str]) -> None:
        self.outbox_path = outbox_path
        self.token = token
        self.furnaces = frozenset(furnaces)

    def __call__(self, environ: dict[str, Any], path: str, method: str) -> Reply:
        if method == "GET" and path in ("/alerts", "/furnaces/marks"):
            return "200 OK", self._read(path)
        parts = path.strip("/").split("/")
        ack = len(parts) == 3 and parts[0] == "alerts" and parts[2] == "ack"
        mark = len(parts) in (3, 4) and parts[0] == "furnaces" and parts[2] == "marks" and parts[3:] in ([], ["end"])
        if method != "POST" or not (ack or mark):
            return "404 Not Found", {"error": "not found"}
        refused, body = self._request(environ)
        if refused is not None:
            return refused
        by = str(body.get("by", "http"))[:64]
        if ack:
            return self._ack(parts[1], by)
        if parts[1] not in self.furnaces:
            return "404 Not Found", {"error": f"no furnace {parts[1][:64]!r}"}
        return self._mark(parts[1], parts[3:] == ["end"], body, by)

    def _ack(self, alert_id: str, by: str) -> Reply:
        """An alert the daemon holds is acknowledged; any other id is 404, never "queued"."""
        alerts = {a.get("id") for a in (read_state(self.outbox_path, "alerts") or {}).get("alerts", [])}
        if alert_id not in alerts:
            return "404 Not Found", {"error": f"no alert {alert_id[:64]!r}"}
        add_command(self.outbox_path, "ack", {"id": alert_id, "by": by})
        return "202 Accepted", {"queued": True, "id": alert_id}

    def _read(self, path: str) -> Any:
        if path == "/alerts":
            return read_state(self.outbox_path, "alerts") or {"alerts": [], "silences": []}
        saved = (read_state(self.outbox_path, "rules") or {}).get(STATE_KEY) or {}
        return {"marks": saved.get("marks", {})}

    def _request(self, environ: dict[str, Any]) -> tuple[Reply | None, dict[str, Any]]:
        """(a refusal, or None; the JSON body of an authorised change)."""
        if not self.token:
            off = "changes over HTTP are off: set metrics.ack_token, or use the `telemetry` command"
            return ("403 Forbidden", {"error": off}), {}
        header = str(environ.get("HTTP_AUTHORIZATION", ""))
        given = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            return ("401 Unauthorized", {"error": "expected Authorization: Bearer TOKEN"}), {}
        length = str(environ.get("CONTENT_LENGTH", "")).strip()
        # Required, a count in ASCII digits, bounded: nothing else is read.
        if not (length.isascii() and length.isdigit()) or int(length) > MAX_BODY:
            return ("400 Bad Request", {"error": f"expected a Content-Length of 0 to {MAX_BODY} bytes"}), {}
        size = int(length)
        try:
            body = json.loads(environ["wsgi.input"].read(size) or b"{}") if size else {}
        except ValueError:
            return ("400 Bad Request", {"error": "expected a JSON object"}), {}
        if not isinstance(body, dict):
            return ("400 Bad Request", {"error": "expected a JSON object"}), {}
        return None, body

    def _mark(self, furnace: str, end: bool, body: dict[str, Any], by: str) -> Reply:
        command: dict[str, Any] = {"furnace": furnace, "by": by}
        try:
            if end:
                if body.get("at") is not None:
                    command["at_ns"] = parse_timestamp(str(body["at"]))
                check_times(time.time_ns(), end=command.get("at_ns"))
            else:
                command["kind"] = mark_kind(str(body.get("kind", "")))
                command["note"] = str(body.get("note", ""))[:200]
                for key in ("start", "end"):
                    if body.get(key) is not None:
                        command[f"{key}_ns"] = parse_timestamp(str(body[key]))
                check_times(time.time_ns(), command.get("start_ns"), command.get("end_ns"))
        except (TimeError, ValueError, OverflowError) as err:
            return "400 Bad Request", {"error": str(err)[:300]}
        add_command(self.outbox_path, "mark_end" if end else "mark", command)
        return "202 Accepted", {"queued": True, "furnace": furnace, **({"kind": command["kind"]} if not end else {})}


def app(
    metrics: Metrics,
    outbox_path: str,
    ack_token: str = "",
    readiness: Readiness | None = None,
    furnaces: Iterable[str] = (),
    zones: Mapping[str, str] | None = None,
    status: Callable[[], dict[str, Any] | None] | None = None,
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    prometheus = make_wsgi_app(metrics.registry)
    current = status
    desk = _Desk(outbox_path, ack_token, furnaces)
    console = Console(outbox_path, ack_token, zones)

    def reply(start: StartResponse, status: str, body: Any) -> list[bytes]:
        data = json.dumps(body, ensure_ascii=False).encode()
        start(status, [("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(data)))])
        return [data]

    def handle(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        if path == "/metrics":
            return prometheus(environ, start)  # type: ignore[no-any-return]
        if path == "/ui" or path.startswith("/ui/"):
            try:
                status, headers, page = console(environ, path, method)
            except OutboxError as err:
                log.error("http %s %s: %s", method, path[:100], err)
                return reply(start, "503 Service Unavailable", {"error": "the daemon's state cannot be read now"})
            start(status, [*headers, ("Content-Length", str(len(page)))])
            return [page]
        body: Any
        if path == "/healthz":
            status, body = "200 OK", {"status": "ok"}
        elif path == "/readyz":
            ready, detail = readiness() if readiness is not None else (False, {"pipeline": "starting"})
            status, body = ("200 OK" if ready else "503 Service Unavailable"), {"ready": ready, **detail}
        elif path == "/status" and method == "GET":
            body = current() if current is not None else None
            status, body = ("200 OK", body) if body is not None else ("503 Service Unavailable", {"error": "starting"})
        else:
            try:
                status, body = desk(environ, path, method)
            except OutboxError as err:
                log.error("http %s %s: %s", method, path[:100], err)
                status, body = "503 Service Unavailable", {"error": "the daemon's state cannot be read now"}
        return reply(start, status, body)

    return handle


def serve(
    metrics: Metrics,
    listen: str,
    outbox_path: str,
    ack_token: str = "",
    readiness: Readiness | None = None,
    furnaces: Iterable[str] = (),
    zones: Mapping[str, str] | None = None,
    status: Callable[[], dict[str, Any] | None] | None = None,
) -> Callable[[], None]:
    """Start the endpoint in a thread; returns a function that stops it."""
    host, port = host_port(listen)
    handler = app(metrics, outbox_path, ack_token, readiness, furnaces, zones, status)
    server = make_server(host, port, handler, server_class=_Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()

    def stop() -> None:
        server.stop()
        thread.join(timeout=5)

    return stop
