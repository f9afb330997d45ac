"""MQTT driver against a real Mosquitto: persistent session, ack after commit, bad payloads."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from drivers.mqtt import MqttConfig, MqttDriver
from telemetry.metrics import Metrics
from telemetry.model import Reading
from tests.services import Mosquitto

pytestmark = pytest.mark.service


def make(broker: Mosquitto, client_id: str, metrics: Metrics | None = None) -> MqttDriver:
    cfg = MqttConfig.model_validate(
        {
            "id": "broker",
            "kind": "mqtt",
            "host": broker.host,
            "port": broker.port,
            "client_id": client_id,
            "subscriptions": [
                {"topic": f"{client_id}/{{site}}/{{device}}/{{quantity}}"},
                {
                    "topic": f"{client_id}/fixed/level",
                    "site": "pond",
                    "device": "radar",
                    "quantity": "level",
                    "unit": "m",
                },
            ],
        }
    )
    return MqttDriver(cfg, metrics or Metrics(CollectorRegistry()))


def publish(broker: Mosquitto, messages: Sequence[tuple[str, bytes]]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    for topic, payload in messages:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


class Collector:
    """An ``emit`` that records readings; optionally fails (as a failed outbox commit would)."""

    def __init__(self, want: int, fail: bool = False) -> None:
        self.readings: list[Reading] = []
        self.want = want
        self.fail = fail
        self.done = asyncio.Event()
        self.calls = 0

    async def __call__(self, readings: Sequence[Reading]) -> None:
        self.calls += 1
        if self.fail:
            self.done.set()
            raise OSError("disk full")
        self.readings += readings
        if len(self.readings) >= self.want:
            self.done.set()


async def run_until(driver: MqttDriver, emit: Collector, publish_after_connect: Any = None) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(driver.run(emit, stop))
    if publish_after_connect is not None:
        await subscribed(driver)
        await asyncio.to_thread(publish_after_connect)
    try:
        await asyncio.wait_for(emit.done.wait(), 15)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def subscribed(driver: MqttDriver) -> None:
    await asyncio.wait_for(driver.subscribed.wait(), 10)


async def test_topic_template_and_fixed_mapping(mosquitto: Mosquitto, unique: str) -> None:
    emit = Collector(want=2)
    msgs = [
        (f"{unique}/diaoyushan/an-1/cod", b'{"value": 41.5, "unit": "mg/L", "flag": "N"}'),
        (f"{unique}/fixed/level", b"3.25"),
    ]
    await run_until(make(mosquitto, unique), emit, lambda: publish(mosquitto, msgs))
    got = sorted((r.site, r.device, r.quantity, r.value, r.unit) for r in emit.readings)
    assert got == [("diaoyushan", "an-1", "cod", 41.5, "mg/L"), ("pond", "radar", "level", 3.25, "m")]


async def test_session_persists_so_messages_sent_while_down_arrive(mosquitto: Mosquitto, unique: str) -> None:
    first = Collector(want=1)
    await run_until(make(mosquitto, unique), first, lambda: publish(mosquitto, [(f"{unique}/s/d/q", b"1")]))
    # Daemon down: the broker keeps QoS 1 messages for the persistent session.
    await asyncio.to_thread(publish, mosquitto, [(f"{unique}/s/d/q", str(v).encode()) for v in (2, 3, 4)])
    second = Collector(want=3)
    await run_until(make(mosquitto, unique), second)
    assert [r.value for r in second.readings] == [2, 3, 4]


async def test_message_not_committed_is_not_acked_and_comes_back(mosquitto: Mosquitto, unique: str) -> None:
    failing = Collector(want=1, fail=True)
    await run_until(make(mosquitto, unique), failing, lambda: publish(mosquitto, [(f"{unique}/s/d/q", b"7")]))
    assert failing.calls == 1
    again = Collector(want=1)
    await run_until(make(mosquitto, unique), again)  # new connection, same session: redelivery
    assert [r.value for r in again.readings] == [7]


async def test_bad_payloads_are_counted_logged_once_and_do_not_stop_good_ones(
    mosquitto: Mosquitto, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics(CollectorRegistry())
    emit = Collector(want=1)
    topic = f"{unique}/s/d/q"
    msgs = [
        (topic, b"garbage"),
        (topic, b"{not json"),
        (topic, b'{"value": "x"}'),
        (topic, json.dumps({"value": 5}).encode()),
    ]
    with caplog.at_level(logging.WARNING, logger="drivers.mqtt"):
        await run_until(make(mosquitto, unique, metrics), emit, lambda: publish(mosquitto, msgs))
    assert [r.value for r in emit.readings] == [5]
    sample = metrics.registry.get_sample_value
    assert (
        sample("telemetry_readings_rejected_total", {"device": "broker", "error_type": "not_a_number"}) == 1
    )
    assert sample("telemetry_readings_rejected_total", {"device": "broker", "error_type": "bad_json"}) == 1
    assert sample("telemetry_readings_rejected_total", {"device": "broker", "error_type": "bad_value"}) == 1
    rejected = [m for m in caplog.messages if "rejected payload" in m]
    assert len(rejected) == 1  # once per topic per minute, with a sample
    assert topic in rejected[0]
    assert "garbage" in rejected[0]
    # Rejected messages were acked: the same session, reconnected, gets none of them back.
    fresh = Metrics(CollectorRegistry())
    again = Collector(want=1)
    await run_until(make(mosquitto, unique, fresh), again, lambda: publish(mosquitto, [(topic, b"6")]))
    assert [r.value for r in again.readings] == [6]
    assert not any(
        s.value
        for m in fresh.registry.collect()
        if m.name == "telemetry_readings_rejected"
        for s in m.samples
    )
