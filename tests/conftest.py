"""Session fixtures for real services; see tests/services.py.

Under CI (the ``CI`` variable set), a missing service binary fails the test
instead of skipping it.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from telemetry.sim.notifications import NotificationReceiver
from telemetry.sim.platform import Receiver
from tests import services

IN_CI = bool(os.environ.get("CI"))


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Mosquitto]:
    with services.mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture(scope="session")
def influx1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Influx1]:
    with services.influxd(tmp_path_factory.mktemp("influxd")) as server:
        yield server


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Victoria]:
    with services.victoria(tmp_path_factory.mktemp("victoria")) as server:
        yield server


@pytest.fixture
async def hj212_platform() -> AsyncIterator[Receiver]:
    """The HJ 212 platform stand-in (``receiver`` is the notification one)."""
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def receiver() -> Iterator[NotificationReceiver]:
    server = NotificationReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def smtp() -> Iterator[tuple[int, list[Any]]]:
    """A real SMTP server (aiosmtpd) on a free port: its port and the envelopes it received."""
    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=services.free_port())
    controller.start()
    yield controller.port, received
    controller.stop()


@pytest.fixture
def unique() -> str:
    """A run-unique name, so tests sharing a service never see each other's data."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """Fail a test that leaves threads running (a driver or sink not shut down)."""
    before = set(threading.enumerate())
    yield
    leftover = []
    for thread in set(threading.enumerate()) - before - _apprise_pool_threads():
        thread.join(timeout=5)  # a stopping thread gets a moment; a forgotten one does not stop
        if thread.is_alive() and not thread.name.startswith("asyncio_"):
            leftover.append(thread.name)
    assert not leftover, f"threads left running: {leftover}"


def _apprise_pool_threads() -> set[threading.Thread]:
    """apprise keeps one process-wide worker pool for its plugins, by design: not a leak."""
    import apprise.apprise as core  # noqa: PLC0415 - only to name its pool's threads

    pools = (getattr(core, "_shared_executor", None), getattr(core, "_coordinator_executor", None))
    return {t for pool in pools if pool is not None for t in getattr(pool, "_threads", ())}
