"""A local HTTP receiver for apprise ``json://`` notifications.

Stands in for a chat robot in the demo and in the tests: it stores every JSON
body it receives (with the request path under ``_path`` and its arrival on
``time.perf_counter`` under ``_received``) and lets a caller wait
for a number of them. ``answer`` makes it reply with that JSON body, as the
DingTalk, WeCom and Feishu robots do (``{"errcode": 0, ...}``).

With ``robot_limits`` it refuses a robot message over its service's size the way the service
does, with HTTP 200 and an error code, and keeps it apart (``refused``): a request to
DingTalk's path of more than 20,000 bytes (errcode 460101), a WeCom text whose content is more
than 2,048 bytes of UTF-8 (errcode 40058), a request to Feishu's path of more than 20 KB
(code 9499, read as 20,000 bytes).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from telemetry.http import ClosingThreads

# path prefix -> (what is measured, bytes allowed, the refusal), as the services document and answer
ROBOT_LIMITS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "/robot/send": ("request", 20_000, {"errcode": 460101, "errmsg": "message too long, exceed 20000 bytes"}),
    "/cgi-bin/webhook/send": (
        "content",
        2_048,
        {"errcode": 40058, "errmsg": "text.content exceed max length 2048. invalid Request Parameter"},
    ),
    "/open-apis/bot/v2/hook/": ("request", 20_000, {"code": 9499, "msg": "Bad Request", "data": {}}),
}


def robot_refusal(path: str, raw: bytes, body: dict[str, Any]) -> dict[str, Any] | None:
    """The refusal a robot service gives a message over its size, or None."""
    for prefix, (measured, allowed, refusal) in ROBOT_LIMITS.items():
        if path.startswith(prefix):
            text = body.get("text") if measured == "content" else None
            content = text.get("content", "") if isinstance(text, dict) else ""
            size = len(str(content).encode()) if measured == "content" else len(raw)
            return refusal if size > allowed else None
    return None


class StoppableHTTPServer(ClosingThreads, HTTPServer):
    """A threading HTTP server whose ``stop`` ends every open connection and joins every
    handler thread (``telemetry.http.ClosingThreads``)."""


class NotificationReceiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, status: int = 200, robot_limits: bool = False) -> None:
        self.messages: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []  # robot messages over their service's size
        self.status = status
        self.answer: dict[str, Any] | None = None
        self.robot_limits = robot_limits
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"raw": raw.decode(errors="replace")}
                refusal = robot_refusal(self.path, raw, body) if receiver.robot_limits else None
                body["_path"] = self.path
                body["_received"] = time.perf_counter()  # for latency benches in the same process
                body["_bytes"] = len(raw)
                if refusal is not None:
                    receiver.refused.append(body)
                elif receiver.status < 300:
                    with receiver._cond:
                        receiver.messages.append(body)
                        receiver._cond.notify_all()
                answer = refusal if refusal is not None else receiver.answer
                data = json.dumps(answer).encode() if answer is not None else b""
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = StoppableHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/alerts"

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT, for a route's ``robot_base_url``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NotificationReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        self._thread.join(timeout=5)

    def wait_for(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """Block until at least ``count`` messages arrived (or ``timeout``); returns them all."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)
