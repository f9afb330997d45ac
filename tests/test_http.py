"""The HTTP endpoint's ack: refused without a configured token, and without the right one."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from telemetry import http
from telemetry.metrics import Metrics
from telemetry.outbox import Outbox


def post_ack(handler: Any, token: str | None) -> tuple[str, dict[str, Any]]:
    environ = {
        "PATH_INFO": "/alerts/abc123/ack",
        "REQUEST_METHOD": "POST",
        "CONTENT_LENGTH": "15",
        "wsgi.input": io.BytesIO(b'{"by": "zhang"}'),
    }
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    got: list[str] = []
    body = b"".join(handler(environ, lambda status, _headers: got.append(status)))
    return got[0], json.loads(body)


def commands(path: str) -> list[tuple[str, dict[str, Any]]]:
    box = Outbox(path)
    try:
        return box.take_commands()
    finally:
        box.close()


def test_acks_are_refused_without_a_configured_token_and_need_the_right_one(tmp_path: Path) -> None:
    path = str(tmp_path / "outbox.sqlite")
    Outbox(path).close()
    metrics = Metrics(CollectorRegistry())
    closed = http.app(metrics, path, ack_token="")
    assert post_ack(closed, None)[0] == "403 Forbidden"
    assert post_ack(closed, "")[0] == "403 Forbidden"
    guarded = http.app(metrics, path, ack_token="s3cret-令牌")
    assert post_ack(guarded, None)[0] == "401 Unauthorized"
    assert post_ack(guarded, "s3cret")[0] == "401 Unauthorized"
    assert commands(path) == []  # nothing refused reached the alert desk
    assert post_ack(guarded, "s3cret-令牌") == ("202 Accepted", {"queued": True, "id": "abc123"})
    assert commands(path) == [("ack", {"id": "abc123", "by": "zhang"})]
