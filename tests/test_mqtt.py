"""MQTT driver against a real Mosquitto: sessions, ack after commit, formats, TLS, auth, restarts."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from drivers.mqtt import MqttConfig, MqttDriver
from telemetry.metrics import Metrics
from telemetry.model import Aggregate, Flag, Reading, Rejected
from tests import services
from tests.services import Mosquitto

pytestmark = pytest.mark.service


def make(broker: Mosquitto, client_id: str, metrics: Metrics | None = None, **kw: Any) -> MqttDriver:
    cfg = MqttConfig.model_validate(
        {
            "id": "broker",
            "kind": "mqtt",
            "host": broker.host,
            "port": broker.port,
            "client_id": client_id,
            "subscriptions": kw.pop(
                "subscriptions",
                [
                    {"topic": f"{client_id}/{{site}}/{{device}}/{{quantity}}", "devices": ["*"]},
                    {
                        "topic": f"{client_id}/fixed/level",
                        "site": "pond",
                        "device": "radar",
                        "quantity": "level",
                        "unit": "m",
                    },
                ],
            ),
        }
        | kw
    )
    return MqttDriver(cfg, metrics or Metrics(CollectorRegistry()))


def publish(broker: Mosquitto, messages: Sequence[tuple[str, bytes]], **tls: Any) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.ca_file:
        client.tls_set(ca_certs=broker.ca_file)
    client.connect(broker.host, broker.port)
    client.loop_start()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


class Collector:
    """An ``emit`` that records readings and dead letters; optionally fails like a failed commit."""

    def __init__(
        self,
        want: int,
        fail: bool = False,
        want_rejected: int = 0,
        changed: asyncio.Condition | None = None,
        fail_first: int = 0,
    ) -> None:
        self.readings: list[Reading] = []
        self.rejected: list[Rejected] = []
        self.want = want
        self.want_rejected = want_rejected
        self.fail = fail
        self.fail_first = fail_first  # this many calls fail, then commits work again (a disk freed)
        self.done = asyncio.Event()
        self.calls = 0
        self._changed = changed or asyncio.Condition()  # shared, to wait on several collectors at once

    async def __call__(self, readings: Sequence[Reading | Aggregate], rejected: Sequence[Rejected] = ()) -> None:
        self.calls += 1
        if self.fail:
            self.done.set()
            raise OSError("disk full")
        if self.calls <= self.fail_first:
            raise OSError("disk full")
        self.readings += [r for r in readings if isinstance(r, Reading)]
        self.rejected += rejected
        if len(self.readings) >= self.want and len(self.rejected) >= self.want_rejected:
            self.done.set()
        async with self._changed:
            self._changed.notify_all()

    async def until(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)


async def run_until(driver: MqttDriver, emit: Collector, after_subscribe: Callable[[], None] | None = None) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(driver.run(emit, stop))
    try:
        if after_subscribe is not None:
            await asyncio.wait_for(driver.subscribed.wait(), 10)
            await asyncio.to_thread(after_subscribe)
        await asyncio.wait_for(emit.done.wait(), 20)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_topic_template_and_fixed_mapping(mosquitto: Mosquitto, unique: str) -> None:
    emit = Collector(want=2)
    msgs = [
        (f"{unique}/diaoyushan/an-1/cod", b'{"value": 41.5, "unit": "mg/L", "flag": "N"}'),
        (f"{unique}/fixed/level", b"3.25"),
    ]
    await run_until(make(mosquitto, unique), emit, lambda: publish(mosquitto, msgs))
    got = sorted((r.site, r.device, r.quantity, r.value, r.unit) for r in emit.readings)
    assert got == [("diaoyushan", "an-1", "cod", 41.5, "mg/L"), ("pond", "radar", "level", 3.25, "m")]


async def test_formats_paths_and_a_batch_message(mosquitto: Mosquitto, unique: str) -> None:
    subs = [
        {"topic": f"{unique}/{{site}}/{{device}}/batch", "format": "batch", "devices": ["*"]},
        {
            "topic": f"{unique}/{{site}}/{{device}}/{{quantity}}",
            "devices": ["*"],
            "format": "json",
            "value_path": "d.v",
            "ts_path": "d.t",
        },
    ]
    batch = {"ts": "2025-11-24T23:59:50+08:00", **{f"q{i}": i for i in range(50)}}
    msgs = [
        (f"{unique}/s/gw/batch", json.dumps(batch).encode()),
        (f"{unique}/s/an/cod", b'{"d": {"v": 41.5, "t": 1763999990000}}'),
    ]
    emit = Collector(want=51)
    await run_until(make(mosquitto, unique, subscriptions=subs), emit, lambda: publish(mosquitto, msgs))
    by_quantity = {r.quantity: r for r in emit.readings}
    assert sorted(by_quantity) == sorted([f"q{i}" for i in range(50)] + ["cod"])
    assert {by_quantity[f"q{i}"].value for i in range(50)} == {float(i) for i in range(50)}
    assert {r.ts for r in emit.readings} == {1_763_999_990 * 10**9}


async def test_session_persists_so_messages_sent_while_down_arrive(mosquitto: Mosquitto, unique: str) -> None:
    first = Collector(want=1)
    await run_until(make(mosquitto, unique), first, lambda: publish(mosquitto, [(f"{unique}/s/d/q", b"1")]))
    # Daemon down: the broker keeps QoS 1 messages for the persistent session.
    await asyncio.to_thread(publish, mosquitto, [(f"{unique}/s/d/q", str(v).encode()) for v in (2, 3, 4)])
    second = Collector(want=3)
    await run_until(make(mosquitto, unique), second)
    assert [r.value for r in second.readings] == [2, 3, 4]


async def test_mqtt5_session_expiry_keeps_messages_too(mosquitto: Mosquitto, unique: str) -> None:
    first = Collector(want=1)
    v5: dict[str, Any] = {"protocol": "5", "session_expiry": "1h"}
    await run_until(make(mosquitto, unique, **v5), first, lambda: publish(mosquitto, [(f"{unique}/s/d/q", b"1")]))
    await asyncio.to_thread(publish, mosquitto, [(f"{unique}/s/d/q", b"2")])
    second = Collector(want=1)
    await run_until(make(mosquitto, unique, **v5), second)
    assert [r.value for r in second.readings] == [2]


async def test_message_not_committed_is_not_acked_and_comes_back(mosquitto: Mosquitto, unique: str) -> None:
    failing = Collector(want=1, fail=True)
    await run_until(make(mosquitto, unique), failing, lambda: publish(mosquitto, [(f"{unique}/s/d/q", b"7")]))
    assert failing.calls == 1
    again = Collector(want=1)
    await run_until(make(mosquitto, unique), again)  # new connection, same session: redelivery
    assert [r.value for r in again.readings] == [7]


async def test_a_failed_commit_is_retried_in_place_and_acked_once_it_succeeds(
    mosquitto: Mosquitto, unique: str
) -> None:
    """No reconnect needed: the batch waits in memory, unacknowledged, until a commit works."""
    recovering = Collector(want=2, fail_first=2)
    topic = f"{unique}/s/d/q"
    await run_until(make(mosquitto, unique), recovering, lambda: publish(mosquitto, [(topic, b"8"), (topic, b"9")]))
    assert recovering.calls >= 3
    assert sorted(r.value for r in recovering.readings) == [8, 9]
    await asyncio.to_thread(publish, mosquitto, [(topic, b"10")])
    after = Collector(want=1)
    await run_until(make(mosquitto, unique), after)  # same session: only the new message, nothing redelivered
    assert [r.value for r in after.readings] == [10]


async def test_bad_payloads_are_counted_dead_lettered_logged_once_and_the_stream_goes_on(
    mosquitto: Mosquitto, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics(CollectorRegistry())
    topic = f"{unique}/s/d/q"
    bad = [
        b"garbage",
        b"{not json",
        b'{"value": "x"}',
        b"NaN",
        b'{"value": NaN}',
        b"1" * (1024 * 1024),
        b'"str"',
    ]
    msgs = [(topic, p) for p in bad] + [(topic, json.dumps({"value": 5}).encode())]
    emit = Collector(want=1, want_rejected=len(bad))
    with caplog.at_level(logging.WARNING, logger="drivers.mqtt"):
        await run_until(make(mosquitto, unique, metrics), emit, lambda: publish(mosquitto, msgs))
    assert [r.value for r in emit.readings] == [5]
    assert [r.reason for r in emit.rejected] == [
        "not_a_number",
        "bad_json",
        "bad_value",
        "not_finite",
        "bad_json",
        "too_large",
        "not_a_number",
    ]
    assert all(r.topic == topic and r.source == "broker" for r in emit.rejected)
    assert emit.rejected[0].payload == b"garbage"
    sample = metrics.registry.get_sample_value
    sub = f"{unique}/{{site}}/{{device}}/{{quantity}}"
    assert (
        sample(
            "telemetry_mqtt_rejected_total",
            {"device": "broker", "subscription": sub, "error_type": "bad_json"},
        )
        == 2
    )
    rejected = [m for m in caplog.messages if "rejected payload" in m]
    assert len(rejected) == 1  # once per topic per minute, with a sample
    assert "garbage" in rejected[0]
    # Rejected messages were acked after their dead letters were committed: a reconnect gets none back.
    again = Collector(want=1)
    await run_until(make(mosquitto, unique), again, lambda: publish(mosquitto, [(topic, b"6")]))
    assert [r.value for r in again.readings] == [6]
    assert again.rejected == []


async def test_a_stopped_driver_leaves_only_once_a_busy_broker_has_processed_its_acks(
    tmp_path: Path, unique: str
) -> None:
    """A PUBACK on the wire is not one the broker has read: a busy Mosquitto that reads the next
    run's CONNECT for the client id first takes the session over and sends the rest again (16
    of 20 messages came back when this was tried without the wait). The broker is frozen
    (SIGSTOP) as the last commit completes, before the acks go out: the driver must not finish
    its shutdown until the broker, thawed, confirms it processed them; then a new run of the
    same session gets only the new message."""
    with services.mosquitto(tmp_path) as broker:
        topic = f"{unique}/s/d/q"
        first = Collector(want=20)

        async def commit_then_freeze(
            readings: Sequence[Reading | Aggregate], rejected: Sequence[Rejected] = ()
        ) -> None:
            await first(readings, rejected)
            if first.done.is_set():
                os.kill(broker.proc.pid, signal.SIGSTOP)

        driver, stop = make(broker, unique), asyncio.Event()
        task = asyncio.create_task(driver.run(commit_then_freeze, stop))
        try:
            await asyncio.wait_for(driver.subscribed.wait(), 10)
            await asyncio.to_thread(publish, broker, [(topic, str(i).encode()) for i in range(20)])
            await asyncio.wait_for(first.done.wait(), 20)
            stop.set()
            # Something must not happen while the broker is frozen: a bounded look, not a sync.
            finished, _ = await asyncio.wait({task}, timeout=2)
            assert not finished, "the driver disconnected before the broker had read its acks"
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
            await asyncio.wait_for(task, 15)
        again = Collector(want=1)
        await run_until(make(broker, unique), again, lambda: publish(broker, [(topic, b"20")]))
    assert sorted(r.value for r in first.readings) == [float(i) for i in range(20)]
    assert [r.value for r in again.readings] == [20]


async def test_shared_subscription_splits_one_stream_between_two_daemons(mosquitto: Mosquitto, unique: str) -> None:
    subs = [{"topic": f"{unique}/{{site}}/{{device}}/{{quantity}}", "devices": ["*"]}]
    a = make(mosquitto, f"{unique}-a", subscriptions=subs, share_group="plant")
    b = make(mosquitto, f"{unique}-b", subscriptions=subs, share_group="plant")
    changed = asyncio.Condition()
    got_a, got_b = Collector(want=10**9, changed=changed), Collector(want=10**9, changed=changed)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(a.run(got_a, stop)), asyncio.create_task(b.run(got_b, stop))]
    try:
        await asyncio.wait_for(asyncio.gather(a.subscribed.wait(), b.subscribed.wait()), 10)
        await asyncio.to_thread(publish, mosquitto, [(f"{unique}/s/d/q", str(i).encode()) for i in range(200)])
        await got_a.until(lambda: len(got_a.readings) + len(got_b.readings) >= 200, 20)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    values = sorted(r.value for r in got_a.readings + got_b.readings)
    assert values == [float(i) for i in range(200)]  # each message to exactly one of them
    assert got_a.readings
    assert got_b.readings


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[Mosquitto]:
    with services.mosquitto(tmp_path) as broker:
        yield broker


async def test_broker_restart_loses_nothing_the_broker_kept(restartable: Mosquitto, unique: str) -> None:
    broker = restartable
    first = Collector(want=1)
    await run_until(make(broker, unique), first, lambda: publish(broker, [(f"{unique}/s/d/q", b"0")]))
    # Daemon down; the broker queues 500 messages for its session, then restarts from its persistence file.
    await asyncio.to_thread(publish, broker, [(f"{unique}/s/d/q", str(i).encode()) for i in range(1, 501)])
    await asyncio.to_thread(broker.stop)
    await asyncio.to_thread(broker.start)
    # The daemon comes back while publishing goes on, and rides through a second broker restart.
    emit = Collector(want=10**9)
    driver = make(broker, unique)
    driver._backoff.initial = 0.1  # reconnect promptly: the test is about loss, not back-off timing
    stop = asyncio.Event()
    task = asyncio.create_task(driver.run(emit, stop))
    try:
        await asyncio.wait_for(driver.subscribed.wait(), 10)
        await asyncio.to_thread(publish, broker, [(f"{unique}/s/d/q", str(i).encode()) for i in range(501, 751)])
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)
        await asyncio.wait_for(driver.subscribed.wait(), 20)
        await asyncio.to_thread(publish, broker, [(f"{unique}/s/d/q", str(i).encode()) for i in range(751, 1001)])
        # Redeliveries of messages in flight at a restart are expected (at-least-once): count distinct values.
        await emit.until(lambda: {int(r.value) for r in emit.readings} >= set(range(1, 1001)), 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert sorted({int(r.value) for r in emit.readings}) == list(range(1, 1001))


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[Mosquitto]:
    with services.mosquitto(tmp_path, tls=True, user=("plant", "s3cret-pass")) as broker:
        yield broker


async def test_tls_with_the_right_ca_and_password_connects(secure: Mosquitto, unique: str, tmp_path: Path) -> None:
    password_file = tmp_path / "mqtt.pw"
    password_file.write_text("s3cret-pass\n")
    emit = Collector(want=1)
    driver = make(secure, unique, username="plant", password_file=str(password_file), tls={"ca_file": secure.ca_file})
    await run_until(driver, emit, lambda: publish(secure, [(f"{unique}/s/d/q", b"1.5")]))
    assert [r.value for r in emit.readings] == [1.5]


async def first_failure(driver: MqttDriver) -> str:
    """Run the driver until its first connection failure; returns the reason it gives."""
    stop = asyncio.Event()
    task = asyncio.create_task(driver.run(Collector(want=1), stop))
    try:
        await asyncio.wait_for(driver.failed.wait(), 20)
        assert driver.last_error is not None
        return driver.last_error
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_tls_with_a_wrong_ca_refuses_with_a_clear_error(
    secure: Mosquitto, unique: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    wrong_ca, _, _ = services.make_certificates(other)
    driver = make(secure, unique, username="plant", password="s3cret-pass", tls={"ca_file": wrong_ca})
    with caplog.at_level(logging.ERROR, logger="drivers.mqtt"):
        reason = await first_failure(driver)
    assert reason.startswith("TLS certificate verification failed:")
    assert any(reason in m for m in caplog.messages)  # logged, with the reason


async def test_wrong_password_is_refused_and_never_logged(
    secure: Mosquitto, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    driver = make(secure, unique, username="plant", password="wrong-horse", tls={"ca_file": secure.ca_file})
    with caplog.at_level(logging.DEBUG):
        reason = await first_failure(driver)
    assert reason.startswith("broker refused the connection")
    assert "authori" in reason.lower()
    assert not any("wrong-horse" in r.getMessage() for r in caplog.records)


async def test_calibration_flag_travels_from_the_payload(mosquitto: Mosquitto, unique: str) -> None:
    emit = Collector(want=1)
    await run_until(
        make(mosquitto, unique),
        emit,
        lambda: publish(mosquitto, [(f"{unique}/s/d/cod", b'{"value": 3, "flag": "C"}')]),
    )
    assert [r.flag for r in emit.readings] == [Flag.C]


async def test_a_topic_naming_an_unconfigured_site_is_refused_and_counted_by_subscription(
    mosquitto: Mosquitto, unique: str
) -> None:
    metrics = Metrics(CollectorRegistry())
    cfg = make(mosquitto, unique).cfg
    driver = MqttDriver(cfg, metrics, {"sites": frozenset({"diaoyushan", "pond"})})
    emit = Collector(want=1, want_rejected=3)
    msgs = [(f"{unique}/spoof-{i}/dev/cod", b"41.5") for i in range(3)]
    msgs.append((f"{unique}/diaoyushan/an-1/cod", b"41.5"))
    await run_until(driver, emit, lambda: publish(mosquitto, msgs))
    assert [(r.site, r.device) for r in emit.readings] == [("diaoyushan", "an-1")]
    assert sorted(r.reason for r in emit.rejected) == ["unknown_site"] * 3
    assert "site 'spoof-0' is not in the configuration" in {r.detail for r in emit.rejected}
    # Counted on the subscription as configured: never a label a publisher chose.
    labels = {
        "device": "broker",
        "subscription": f"{unique}/{{site}}/{{device}}/{{quantity}}",
        "error_type": "unknown_site",
    }
    assert metrics.registry.get_sample_value("telemetry_mqtt_rejected_total", labels) == 3


async def test_a_batch_of_invented_keys_and_invented_devices_stop_at_the_caps(
    mosquitto: Mosquitto, unique: str
) -> None:
    metrics = Metrics(CollectorRegistry())
    cfg = make(mosquitto, unique, max_devices=3, max_series_per_device=5).cfg
    driver = MqttDriver(cfg, metrics)
    keys = {f"k{i}": float(i) for i in range(1000)}  # a batch: each key becomes a quantity
    msgs = [(f"{unique}/s/dev-0/batch", json.dumps(keys).encode())]
    msgs += [(f"{unique}/s/dev-{i}/cod", b"41.5") for i in range(1, 6)]  # five more devices: two too many
    emit = Collector(want=7, want_rejected=4)
    await run_until(driver, emit, lambda: publish(mosquitto, msgs))
    per_device: dict[str, set[str]] = {}
    for r in emit.readings:
        per_device.setdefault(r.device, set()).add(r.quantity)
    assert {d: len(q) for d, q in per_device.items()} == {"dev-0": 5, "dev-1": 1, "dev-2": 1}
    assert [r.reason for r in emit.rejected] == ["series_cap"] * 4  # the batch's message, and dev-3 to dev-5
    assert emit.rejected[0].detail == "995 readings of devices or quantities beyond the caps refused, 5 kept"
    counted = metrics.registry.get_sample_value(
        "telemetry_mqtt_rejected_total",
        {"device": "broker", "subscription": f"{unique}/{{site}}/{{device}}/{{quantity}}", "error_type": "series_cap"},
    )
    assert counted == 4


@pytest.mark.parametrize("mode", ["refuse", "restamp"])
async def test_a_payload_stamped_ahead_of_its_arrival_is_refused_or_restamped(
    mosquitto: Mosquitto, unique: str, mode: str
) -> None:
    import time  # noqa: PLC0415 - only here

    metrics = Metrics(CollectorRegistry())
    driver = MqttDriver(make(mosquitto, f"{unique}-{mode}", clock_ahead=mode).cfg, metrics)
    now_ms = int(time.time() * 1000)
    ahead = int(23.9 * 3600 * 1000)
    msgs = [
        (
            f"{unique}-{mode}/s/an/cod",
            json.dumps({"value": 41.5, "ts": now_ms + ahead}).encode(),
        ),  # a clock a day ahead
        (f"{unique}-{mode}/s/an/nh3n", json.dumps({"value": 5.0, "ts": now_ms + 60_000}).encode()),  # a minute: fine
    ]
    emit = Collector(want=1 if mode == "refuse" else 2, want_rejected=1 if mode == "refuse" else 0)
    await run_until(driver, emit, lambda: publish(mosquitto, msgs))
    by = {r.quantity: r for r in emit.readings}
    assert by["nh3n"].ts == (now_ms + 60_000) * 1_000_000
    if mode == "refuse":
        assert "cod" not in by
        assert [r.reason for r in emit.rejected] == ["clock_ahead"]
    else:
        assert by["cod"].ts < (now_ms + 300_000) * 1_000_000  # taken as arriving now, not a day ahead
        assert emit.rejected == []


@pytest.mark.parametrize("backfill", [False, True])
async def test_a_reading_older_than_its_series_by_more_than_the_window_needs_backfill(
    mosquitto: Mosquitto, unique: str, backfill: bool
) -> None:
    import time  # noqa: PLC0415 - only here

    name = f"{unique}-{backfill}"
    driver = MqttDriver(
        make(mosquitto, name, backfill_window="10m", backfill=backfill).cfg, Metrics(CollectorRegistry())
    )
    now_ms = int(time.time() * 1000)
    stamps = [now_ms, now_ms - 599_000, now_ms - 3_600_000, 946_771_200_000]  # now, 10 min less 1 s, 1 h, 2000
    msgs = [(f"{name}/s/an/cod", json.dumps({"value": i, "ts": ts}).encode()) for i, ts in enumerate(stamps)]
    emit = Collector(want=4 if backfill else 2, want_rejected=0 if backfill else 2)
    await run_until(driver, emit, lambda: publish(mosquitto, msgs))
    assert [r.value for r in emit.readings] == ([0, 1, 2, 3] if backfill else [0, 1])
    assert [r.reason for r in emit.rejected] == ([] if backfill else ["clock_behind", "clock_behind"])


async def test_a_gateways_zone_less_local_time_is_read_in_its_sites_zone(mosquitto: Mosquitto, unique: str) -> None:
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415 - only here

    zones = {"s": "Asia/Shanghai", "u": "UTC"}
    driver = MqttDriver(
        make(mosquitto, unique).cfg, Metrics(CollectorRegistry()), {"sites": frozenset(zones), "zones": zones}
    )
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    beijing = (now + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M:%S")  # what the gateway's clock shows
    msgs = [
        (f"{unique}/s/gw/cod", json.dumps({"value": 1, "ts": beijing}).encode()),
        (f"{unique}/u/gw/cod", json.dumps({"value": 2, "ts": now.strftime("%Y%m%d%H%M%S")}).encode()),
    ]
    emit = Collector(want=2)
    await run_until(driver, emit, lambda: publish(mosquitto, msgs))
    assert {r.site: r.ts for r in emit.readings} == {
        "s": int(now.timestamp()) * 10**9,
        "u": int(now.timestamp()) * 10**9,
    }


async def test_a_subscription_that_hears_nothing_is_warned_of_once_and_flagged(
    mosquitto: Mosquitto, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics(CollectorRegistry())
    typo = f"{unique}/typo/{{device}}/{{quantity}}"  # nobody publishes here
    subs: list[dict[str, Any]] = [
        {"topic": typo, "site": "s", "devices": ["*"]},
        {"topic": f"{unique}/s/{{device}}/{{quantity}}", "site": "s", "devices": ["*"], "silent_after": "1h"},
    ]
    driver = make(mosquitto, unique, metrics, subscriptions=subs, silent_after="1s")
    labels = {"device": "broker", "subscription": typo}
    stop = asyncio.Event()
    emit = Collector(want=1)
    with caplog.at_level(logging.INFO, logger="drivers.mqtt"):
        task = asyncio.create_task(driver.run(emit, stop))
        await asyncio.wait_for(driver.subscribed.wait(), 10)
        await asyncio.to_thread(publish, mosquitto, [(f"{unique}/s/an/cod", b"1")])
        await asyncio.wait_for(driver.silence_changed.wait(), 10)
        driver.silence_changed.clear()
        assert driver.silent == {typo}  # the busy one is not silent
        assert metrics.registry.get_sample_value("telemetry_mqtt_subscription_silent", labels) == 1
        await asyncio.to_thread(publish, mosquitto, [(f"{unique}/typo/an/cod", b"2")])
        await asyncio.wait_for(driver.silence_changed.wait(), 10)
        assert driver.silent == set()
        assert metrics.registry.get_sample_value("telemetry_mqtt_subscription_silent", labels) == 0
        stop.set()
        await task
    warned = [m for m in caplog.messages if "no message at all since subscribing" in m]
    assert len(warned) == 1
    assert typo in warned[0]
    assert any("receives messages again" in m for m in caplog.messages)
    assert metrics.registry.get_sample_value("telemetry_mqtt_last_message_timestamp_seconds", labels) is not None
