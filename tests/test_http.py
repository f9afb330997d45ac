"""The HTTP endpoint's ack: refused without a configured token, and without the right one."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from telemetry import http
from telemetry.metrics import Metrics
from telemetry.outbox import Outbox


def post_ack(
    handler: Any, token: str | None, alert: str = "abc123", length: str = "15", scheme: str = "Bearer "
) -> tuple[str, dict[str, Any]]:
    environ = {
        "PATH_INFO": f"/alerts/{alert}/ack",
        "REQUEST_METHOD": "POST",
        "CONTENT_LENGTH": length,
        "wsgi.input": io.BytesIO(b'{"by": "zhang"}'),
    }
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"{scheme}{token}"
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
    box = Outbox(path)
    box.save_state("alerts", orjson.dumps({"alerts": [{"id": "abc123"}], "silences": []}))  # the alert it holds
    box.close()
    metrics = Metrics(CollectorRegistry())
    closed = http.app(metrics, path, ack_token="")
    assert post_ack(closed, None)[0] == "403 Forbidden"
    assert post_ack(closed, "")[0] == "403 Forbidden"
    guarded = http.app(metrics, path, ack_token="s3cret-令牌")
    assert post_ack(guarded, None)[0] == "401 Unauthorized"
    assert post_ack(guarded, "s3cret")[0] == "401 Unauthorized"
    assert post_ack(guarded, "s3cret-令牌", scheme="")[0] == "401 Unauthorized"  # the token, but not as Bearer
    assert post_ack(guarded, "s3cret-令牌", length="-1") == (
        "400 Bad Request",
        {"error": "expected a Content-Length of 0 to 65536 bytes"},
    )
    assert post_ack(guarded, "s3cret-令牌", length=str(1 << 30))[0] == "400 Bad Request"
    assert post_ack(guarded, "s3cret-令牌", length="")[0] == "400 Bad Request"  # required
    assert post_ack(guarded, "s3cret-令牌", alert="nope") == ("404 Not Found", {"error": "no alert 'nope'"})
    assert commands(path) == []  # nothing refused reached the alert desk
    assert post_ack(guarded, "s3cret-令牌") == ("202 Accepted", {"queued": True, "id": "abc123"})
    assert commands(path) == [("ack", {"id": "abc123", "by": "zhang"})]
