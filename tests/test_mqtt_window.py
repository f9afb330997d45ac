"""The broker's in-flight window against a real Mosquitto with its stock limits (20 in flight,
1,000 queued): MQTT 5's Receive Maximum lets acks-after-commit have more than 20 messages in
hand, and ``protocol: auto`` falls back to 3.1.1 on a broker that refuses MQTT 5."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest

from drivers.mqtt import MqttDriver
from telemetry.model import Aggregate, Reading, Rejected
from tests import services
from tests.services import Mosquitto
from tests.test_mqtt import Collector, make, publish

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with services.mosquitto(tmp_path_factory.mktemp("stock"), default_limits=True) as broker:
        yield broker


class HeldCommits:
    """An ``emit`` whose commits all wait for ``release``: nothing is acked meanwhile, so what
    it is handed is what the broker sent without acks."""

    def __init__(self) -> None:
        self.handed = 0
        self.release = asyncio.Event()
        self.changed = asyncio.Condition()

    async def __call__(self, readings: Sequence[Reading | Aggregate], rejected: Sequence[Rejected] = ()) -> None:
        self.handed += len(readings)
        async with self.changed:
            self.changed.notify_all()
        await self.release.wait()


@contextlib.asynccontextmanager
async def running(driver: MqttDriver, emit: HeldCommits | Collector) -> AsyncIterator[None]:
    """The driver connected and subscribed; on the way out its held commits are let go (a
    stopping driver waits for what it handed over) and it stops."""
    stop = asyncio.Event()
    task = asyncio.create_task(driver.run(emit, stop))
    try:
        await asyncio.wait_for(driver.subscribed.wait(), 20)
        yield
    finally:
        if isinstance(emit, HeldCommits):
            emit.release.set()
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_receive_maximum_takes_more_than_the_brokers_default_window(stock: Mosquitto, unique: str) -> None:
    emit = HeldCommits()
    async with running(make(stock, unique), emit):  # protocol auto: MQTT 5 with receive_maximum 1000
        await asyncio.to_thread(publish, stock, [(f"{unique}/s/d/q", str(i).encode()) for i in range(300)])
        async with emit.changed:
            # Mosquitto's max_inflight_messages (20) would stop it at 20 until an ack.
            await asyncio.wait_for(emit.changed.wait_for(lambda: emit.handed == 300), 20)


async def test_receive_maximum_is_what_the_broker_keeps_to(stock: Mosquitto, unique: str) -> None:
    emit = HeldCommits()
    async with running(make(stock, unique, receive_maximum=50), emit):
        await asyncio.to_thread(publish, stock, [(f"{unique}/s/d/q", str(i).encode()) for i in range(120)])
        async with emit.changed:
            await asyncio.wait_for(emit.changed.wait_for(lambda: emit.handed >= 50), 20)
        # The broker sends the 51st only after an ack: one more message through the same
        # broker to a second subscriber marks that it has dealt with everything published before.
        mark = [{"topic": f"{unique}/mark/{{device}}/{{quantity}}", "site": "m", "devices": ["x"]}]
        marked = HeldCommits()
        async with running(make(stock, f"{unique}-probe", subscriptions=mark), marked):
            await asyncio.to_thread(publish, stock, [(f"{unique}/mark/x/q", b"1")])
            async with marked.changed:
                await asyncio.wait_for(marked.changed.wait_for(lambda: marked.handed == 1), 10)
        assert emit.handed == 50


class Mqtt311Only:
    """A broker that speaks MQTT 3.1.1 only: Mosquitto behind a gate that answers an MQTT 5
    CONNECT with return code 1 (unacceptable protocol level), as a 3.1.1 broker must."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.levels: list[int] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Mqtt311Only:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(2)
        length, shift, more = head[1] & 0x7F, 7, head[1] & 0x80
        while more:
            byte = (await reader.readexactly(1))[0]
            head += bytes([byte])
            length, shift, more = length | (byte & 0x7F) << shift, shift + 7, byte & 0x80
        body = await reader.readexactly(length)
        level = body[6]  # after the protocol name "MQTT" with its 2-byte length
        self.levels.append(level)
        if level != 4:
            writer.write(b"\x20\x02\x00\x01")
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(self.broker.host, self.broker.port)
        up_writer.write(head + body)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def old_broker(stock: Mosquitto) -> AsyncIterator[Mqtt311Only]:
    async with Mqtt311Only(stock) as gate:
        yield gate


async def test_auto_falls_back_to_3_1_1_where_mqtt5_is_refused(
    stock: Mosquitto, old_broker: Mqtt311Only, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="drivers.mqtt")
    behind = Mosquitto(stock.host, old_broker.port, stock.proc, stock.cmd, stock.log, "", "", "")
    driver = make(behind, unique)
    emit = Collector(want=2)
    async with running(driver, emit):
        await asyncio.to_thread(publish, stock, [(f"{unique}/s/d/q", b"1"), (f"{unique}/s/d/q", b"2")])
        await asyncio.wait_for(emit.done.wait(), 10)
    assert [r.value for r in emit.readings] == [1, 2]
    assert old_broker.levels[:2] == [5, 4]
    assert set(old_broker.levels[1:]) == {4}  # it stays on 3.1.1
    refused = [r for r in caplog.records if "refused MQTT 5" in r.getMessage()]
    assert len(refused) == 1
    assert driver.cfg.protocol == "auto"
