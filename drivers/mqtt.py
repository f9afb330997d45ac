"""MQTT subscription (paho-mqtt 2.x) bridged into asyncio.

Guarantee: with QoS 1, a message is acknowledged to the broker only after its
readings are committed to the outbox (manual ack, persistent session). A kill
before the commit means the broker redelivers; a redelivery after the commit is
harmless because InfluxDB writes are idempotent. Acks go out in the order the
messages arrived, as MQTT 3.1.1 requires. A bad payload is counted, logged at
most once a minute per topic, and acked so it does not loop forever.

paho runs its network loop in its own thread; its callbacks only hand messages
to the event loop with ``call_soon_threadsafe`` (the aiomqtt pattern). The
broker's in-flight window bounds how many un-acked messages can be queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Annotated, Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import Field, SecretStr, model_validator
from pydantic_core import PydanticCustomError

from drivers.mqtt_decode import PayloadError, decode
from telemetry.config import DeviceConfig, Duration, Model, Name
from telemetry.metrics import Metrics
from telemetry.model import InvalidReading, Reading
from telemetry.protocols import Emit

log = logging.getLogger(__name__)

_FIELDS = ("site", "device", "quantity")
_LOG_EVERY_S = 60.0


class Subscription(Model):
    """A topic filter; ``{site}``, ``{device}`` and ``{quantity}`` segments capture tags."""

    topic: str
    site: Name | None = None
    device: Name | None = None
    quantity: Name | None = None
    unit: str = ""
    qos: Literal[0, 1] = 1

    @model_validator(mode="after")
    def _template(self) -> Subscription:
        parts = self.topic.split("/")
        for i, part in enumerate(parts):
            if "#" in part and (part != "#" or i != len(parts) - 1):
                raise PydanticCustomError("topic", "expected '#' only as the last level of the topic")
            if part.startswith("{") and part.strip("{}") not in _FIELDS:
                raise PydanticCustomError(
                    "topic", "expected placeholders {names}", {"names": "{site}, {device} or {quantity}"}
                )
        for name in _FIELDS:
            if getattr(self, name) is None and f"{{{name}}}" not in parts:
                raise PydanticCustomError(
                    "topic",
                    "expected {field} set, or a {placeholder} level in the topic",
                    {"field": name, "placeholder": f"{{{name}}}"},
                )
        return self

    @property
    def filter(self) -> str:
        return "/".join("+" if p.startswith("{") else p for p in self.topic.split("/"))

    def tags(self, topic: str) -> dict[str, str]:
        """site/device/quantity for a topic this subscription matched."""
        levels = topic.split("/")
        out = {name: getattr(self, name) for name in _FIELDS if getattr(self, name) is not None}
        for i, part in enumerate(self.topic.split("/")):
            if part.startswith("{"):
                out.setdefault(part.strip("{}"), levels[i])
        return out


class MqttConfig(DeviceConfig):
    """One broker connection and what to subscribe on it."""

    kind: Literal["mqtt"]
    host: str
    port: Annotated[int, Field(gt=0, lt=65536)] = 1883
    username: str = ""
    password: SecretStr = SecretStr("")
    client_id: str = ""
    keepalive: Duration = 30.0
    subscriptions: Annotated[list[Subscription], Field(min_length=1)]

    def describe(self) -> str:
        return f"mqtt {self.host}:{self.port}, topics " + ", ".join(s.topic for s in self.subscriptions)


class MqttDriver:
    def __init__(self, cfg: MqttConfig, metrics: Metrics, shared: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.id
        self._metrics = metrics
        self._queue: asyncio.Queue[paho.MQTTMessage] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.subscribed = asyncio.Event()  # set when the broker confirmed the subscriptions
        self._was_down = False
        self._last_logged: dict[str, float] = {}
        client_id = cfg.client_id or f"telemetry-{cfg.id}"
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=paho.MQTTv311,
            manual_ack=True,
        )
        if cfg.username:
            self._client.username_pw_set(cfg.username, cfg.password.get_secret_value() or None)
        self._client.reconnect_delay_set(1, 60)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    @property
    def where(self) -> str:
        return f"mqtt {self.cfg.id} ({self.cfg.host}:{self.cfg.port})"

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=int(self.cfg.keepalive))
        self._client.loop_start()
        pending: asyncio.Queue[tuple[asyncio.Future[None] | None, paho.MQTTMessage]] = asyncio.Queue()
        acker = asyncio.create_task(self._ack_in_order(pending))
        stopping = asyncio.create_task(stop.wait())
        try:
            while True:
                getter = asyncio.create_task(self._queue.get())
                done, _ = await asyncio.wait({getter, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                msg = getter.result()
                readings = self._readings(msg)
                # The task enqueues at once, so commits (and acks) keep arrival order.
                future = asyncio.ensure_future(emit(readings)) if readings else None
                pending.put_nowait((future, msg))
        finally:
            stopping.cancel()
            pending.put_nowait((None, None))  # type: ignore[arg-type]
            await acker
            await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    async def _ack_in_order(
        self, pending: asyncio.Queue[tuple[asyncio.Future[None] | None, paho.MQTTMessage]]
    ) -> None:
        while True:
            future, msg = await pending.get()
            if msg is None:
                return
            if future is not None:
                try:
                    await future
                except Exception:
                    # Not committed: no ack, so the broker redelivers after reconnecting.
                    log.exception(
                        "%s: could not commit a message from %s; not acknowledged", self.where, msg.topic
                    )
                    self._metrics.errors.labels("mqtt", "commit", "outbox").inc()
                    continue
            if msg.qos > 0:
                self._client.ack(msg.mid, msg.qos)

    def _readings(self, msg: paho.MQTTMessage) -> list[Reading]:
        sub = next((s for s in self.cfg.subscriptions if paho.topic_matches_sub(s.filter, msg.topic)), None)
        if sub is None:
            return []
        try:
            decoded = decode(bytes(msg.payload), time.time_ns())
            tags = sub.tags(msg.topic)
            return [
                Reading(
                    ts=decoded.ts,
                    site=tags["site"],
                    device=tags["device"],
                    quantity=tags["quantity"],
                    value=decoded.value,
                    unit=decoded.unit if decoded.unit is not None else sub.unit,
                    flag=decoded.flag,
                ).check()
            ]
        except PayloadError as err:
            self._bad(msg, err.reason, err)
        except InvalidReading as err:
            self._bad(msg, "invalid_reading", err)
        return []

    def _bad(self, msg: paho.MQTTMessage, reason: str, err: Exception) -> None:
        self._metrics.rejected.labels(self.cfg.id, reason).inc()
        now = time.monotonic()
        if now - self._last_logged.get(msg.topic, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            if len(self._last_logged) > 10_000:
                self._last_logged.clear()
            self._last_logged[msg.topic] = now
            sample = msg.payload[:80].decode("utf-8", errors="replace")
            log.warning("%s: rejected payload on %s: %s (sample: %r)", self.where, msg.topic, err, sample)

    # paho callbacks: run in paho's thread, so they only hand over to the event loop.

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._metrics.errors.labels("mqtt", "connect", "refused").inc()
            if not self._was_down:
                log.error("%s: broker refused the connection: %s", self.where, reason)
                self._was_down = True
            return
        topics: list[tuple[str, int]] = [(s.filter, s.qos) for s in self.cfg.subscriptions]
        client.subscribe(topics)
        self._metrics.device_up.labels(self.cfg.id).set(1)
        if self._was_down:
            log.info("%s: connected again", self.where)
        else:
            log.info("%s: connected", self.where)
        self._was_down = False

    def _on_connect_fail(self, _c: paho.Client, _u: Any) -> None:
        self._metrics.errors.labels("mqtt", "connect", "unreachable").inc()
        self._metrics.device_up.labels(self.cfg.id).set(0)
        if not self._was_down:
            log.error("%s: broker unreachable; retrying with back-off", self.where)
            self._was_down = True

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._metrics.device_up.labels(self.cfg.id).set(0)
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.subscribed.clear)
        if not self._was_down and reason.value != 0:
            log.error("%s: connection lost: %s; reconnecting", self.where, reason)
            self._was_down = True

    def _on_subscribe(self, _c: paho.Client, _u: Any, _mid: int, _codes: Any, _p: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.subscribed.set)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                loop.call_soon_threadsafe(self._queue.put_nowait, msg)
