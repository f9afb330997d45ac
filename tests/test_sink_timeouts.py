"""The sinks' own requests: a server that accepts and never answers fails them within the
sink's ``timeout`` (start-up check included), and is told from one that refuses connections."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from telemetry import sinks
from telemetry.config import InfluxV1, InfluxV2
from telemetry.errors import SinkError
from tests.faults.harness import TcpGate
from tests.services import free_port


def sink(api: str, url: str) -> sinks.Sink:
    common = {"name": "s", "url": url, "timeout": "500ms"}
    if api == "v1":
        return sinks.build(InfluxV1.model_validate({**common, "api": "v1", "database": "plant"}))
    return sinks.build(InfluxV2.model_validate({**common, "api": "v2", "bucket": "plant"}))


def outcome(call: Callable[[], None]) -> tuple[SinkError | None, float]:
    """What ``call`` raised and how long it took, in a thread the test never waits on for ever."""
    result: list[SinkError | None] = []

    def run() -> None:
        try:
            call()
            result.append(None)
        except SinkError as err:
            result.append(err)

    started = time.monotonic()
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "no answer and no timeout: the request hangs"
    return result[0], time.monotonic() - started


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize("request_", ["healthcheck", "write"])
def test_a_hung_server_times_out(api: str, request_: str) -> None:
    gate = TcpGate(held=True)  # accepts, never answers
    target = sink(api, gate.url)
    try:
        err, took = outcome(target.healthcheck if request_ == "healthcheck" else lambda: target.write(["m v=1 1"]))
    finally:
        gate.close()
        target.close()
    assert err is not None
    assert (err.reason, err.retryable) == ("timeout", True)
    assert took < 5


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_refused_connection_is_a_network_error(api: str) -> None:
    target = sink(api, f"http://127.0.0.1:{free_port()}")
    try:
        err, _ = outcome(target.healthcheck)
    finally:
        target.close()
    assert err is not None
    assert (err.reason, err.retryable) == ("network", True)
