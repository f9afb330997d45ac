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

Acks go through the same command table as the CLI, so both take the same path.
Listens on loopback by default; put it behind the plant's reverse proxy to expose it.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from telemetry.config_base import host_port
from telemetry.errors import OutboxError
from telemetry.metrics import Metrics
from telemetry.outbox import add_command, read_state

StartResponse = Callable[..., Any]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


Readiness = Callable[[], tuple[bool, dict[str, Any]]]


def app(
    metrics: Metrics, outbox_path: str, ack_token: str = "", readiness: Readiness | None = None
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    prometheus = make_wsgi_app(metrics.registry)

    def reply(start: StartResponse, status: str, body: Any) -> list[bytes]:
        data = json.dumps(body, ensure_ascii=False).encode()
        start(status, [("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(data)))])
        return [data]

    def alerts_api(environ: dict[str, Any], path: str, method: str) -> tuple[str, Any]:
        """(status, body) for the /alerts endpoints."""
        if path == "/alerts" and method == "GET":
            return "200 OK", read_state(outbox_path, "alerts") or {"alerts": [], "silences": []}
        parts = path.strip("/").split("/")
        if not (len(parts) == 3 and parts[0] == "alerts" and parts[2] == "ack" and method == "POST"):
            return "404 Not Found", {"error": "not found"}
        if not ack_token:
            off = "acks over HTTP are off: set metrics.ack_token, or use `telemetry alerts ack`"
            return "403 Forbidden", {"error": off}
        given = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), ack_token.encode()):
            return "401 Unauthorized", {"error": "bearer token required"}
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(size) or b"{}") if size else {}
        by = str(body.get("by", "http"))[:64] if isinstance(body, dict) else "http"
        add_command(outbox_path, "ack", {"id": parts[1], "by": by})
        return "202 Accepted", {"queued": True, "id": parts[1]}

    def handle(environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        if path == "/metrics":
            return prometheus(environ, start)  # type: ignore[no-any-return]
        body: Any
        if path == "/healthz":
            status, body = "200 OK", {"status": "ok"}
        elif path == "/readyz":
            ready, detail = readiness() if readiness is not None else (False, {"pipeline": "starting"})
            status, body = ("200 OK" if ready else "503 Service Unavailable"), {"ready": ready, **detail}
        else:
            try:
                status, body = alerts_api(environ, path, method)
            except (OutboxError, ValueError) as err:
                status, body = "503 Service Unavailable", {"error": str(err)}
        return reply(start, status, body)

    return handle


def serve(
    metrics: Metrics, listen: str, outbox_path: str, ack_token: str = "", readiness: Readiness | None = None
) -> Callable[[], None]:
    """Start the endpoint in a thread; returns a function that stops it."""
    host, port = host_port(listen)
    handler = app(metrics, outbox_path, ack_token, readiness)
    server: WSGIServer = make_server(host, port, handler, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
