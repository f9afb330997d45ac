"""MQTT subscription (paho-mqtt 2.x, MQTT 3.1.1 or 5) bridged into asyncio.

Guarantee: with QoS 1, a message is acknowledged to the broker only after its
readings (or, for a bad payload, its dead letter) are committed to the outbox,
on a persistent session (clean_session false / clean_start false with a
session expiry), so a kill before the commit means the broker redelivers; a
redelivery after the commit is harmless because InfluxDB writes are idempotent.
Acks go out in the order the messages arrived. A bad payload is counted per
subscription, logged at most once a minute per subscription with a sample, written to
the dead-letter table, and acked so it does not loop forever. At shutdown the
driver waits until the broker confirms it has processed the acks (``_shutdown``),
so a restart is not sent again what was already committed.

paho runs the network loop in its own thread; callbacks only hand over to the
event loop (the aiomqtt pattern; the shutdown waits on a threading.Event the
UNSUBACK sets). Connecting and reconnecting is done here, with
back-off and jitter, so a refusal is logged with its reason (TLS verification,
bad password, unreachable) once, and again only when it comes back. The broker's
in-flight window bounds how many un-acked messages can be queued: with acks after the
commit, a window of 20 (Mosquitto's default) caps the rate at 20 messages per commit round
trip, so MQTT 5 asks for ``receive_maximum`` (1000) by default and falls back to 3.1.1 only
where the broker refuses 5.

HJ 212 frames a DTU publishes (``format: hj212``, with the device's ``stations``) are
decoded as the HJ 212 listener decodes them: ``drivers.mqtt_hj212``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fnmatch
import logging
import ssl
import threading
import time
import zoneinfo
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import Field, SecretStr, model_validator
from pydantic_core import PydanticCustomError

from drivers.mqtt_client import Client, Message
from drivers.mqtt_decode import MAX_PAYLOAD, FormatName, Paths, PayloadError, decode
from drivers.mqtt_hj212 import Hj212Payloads, StationTable
from telemetry.config import Duration, KnownSeries, Model, Name
from telemetry.config_base import TimeZone, loopback
from telemetry.hj212.stations import station_series
from telemetry.metrics import Metrics
from telemetry.model import Aggregate, InvalidReading, Reading, Rejected
from telemetry.protocols import Emit
from telemetry.timing import Backoff, until_committed, wait_event

log = logging.getLogger(__name__)

_FIELDS = ("site", "device", "quantity")
_LOG_EVERY_S = 60.0
MAX_BATCH_READINGS = 1000  # a commit takes messages until it holds this many readings
_ACKS_CONFIRMED_S = 10.0  # at shutdown, how long to wait for the broker to confirm it processed the acks
SILENCE_CHECK_S = 5.0  # how often subscriptions are checked for silence
_ROUTE_CACHE_MAX = 100_000  # topics remembered with their subscription and tags
Inbound = Message | paho.MQTTMessage  # the lean client's message, or paho's off its fast path
_REFUSED = {"unknown_site": "site", "unknown_device": "device", "unknown_quantity": "quantity"}  # the tag refused
_REFUSALS = {
    "series_cap": "of devices or quantities beyond the caps",
    "unknown_quantity": "of quantities not in the subscription's list",
    "clock_behind": "stamped before their series' latest by more than the back-fill window",
}


@dataclass
class _Pending:
    """Messages handed over in one emit, waiting for their commit before they are acked."""

    future: asyncio.Future[None] | None
    batch: list[Inbound]
    readings: list[Reading | Aggregate]
    rejected: list[Rejected]


NamePattern = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.*?\[\]!-]{1,64}$")]


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


class Subscription(Model):
    """A topic filter; ``{site}``, ``{device}`` and ``{quantity}`` levels capture tags."""

    topic: str
    site: Name | None = None
    device: Name | None = None
    quantity: Name | None = None
    unit: str = ""
    qos: Literal[0, 1] = 1
    format: FormatName = "auto"
    value_path: str = "value"
    ts_path: str = "ts"
    flag_path: str = "flag"
    unit_path: str = "unit"
    quantity_path: str = "quantity"
    lenient: bool = False  # format hj212: accept what an HJ 212 listener's lenient accepts
    # What a {device} level may take: names or shell patterns ("wb-*"); required with such a
    # level, ["*"] takes any (still capped by max_devices). Publishers do not invent devices.
    devices: list[NamePattern] = []
    # What a {quantity} level or a batch's keys may take; empty: any, capped per device by
    # max_series_per_device.
    quantities: list[NamePattern] = []
    # A timestamp without a zone (``2026-12-01 08:00:00`` from a gateway) is local time here;
    # default: the site's zone.
    timezone: TimeZone | None = None
    units: dict[Name, str] = {}  # a batch field's unit, where the payload gives none
    ignore: list[str] = []  # batch fields that are not readings (a gateway's status text, its id)
    silent_after: Duration | None = None  # default: the device's

    @model_validator(mode="after")
    def _template(self) -> Subscription:
        parts = self.topic.split("/")
        for i, part in enumerate(parts):
            if "#" in part and (part != "#" or i != len(parts) - 1):
                raise PydanticCustomError("topic", "expected '#' only as the last level of the topic")
            if ("{" in part or "}" in part) and (
                not (part.startswith("{") and part.endswith("}")) or part[1:-1] not in _FIELDS
            ):
                raise PydanticCustomError(
                    "topic",
                    "expected a whole topic level {names}, found '{part}'",
                    {"names": "{site}, {device} or {quantity}", "part": part},
                )
        if "{device}" in parts and not self.devices:
            raise PydanticCustomError(
                "devices",
                "expected devices: the names or patterns ('wb-*') the {level} level may take, "
                "or ['*'] for any (capped by max_devices)",
                {"level": "{device}"},
            )
        needed: tuple[str, ...] = _FIELDS if self.format not in ("batch", "auto") else ("site", "device")
        if self.format == "hj212":
            needed = ()  # the station table says whose data a frame is
        for name in needed:
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

    def paths(self, site_zone: str | None) -> Paths:
        """Where the payload keeps each part, and the zone of its zone-less timestamps."""
        zone = self.timezone or site_zone
        return Paths(
            self.value_path,
            self.ts_path,
            self.flag_path,
            self.unit_path,
            self.quantity_path,
            zoneinfo.ZoneInfo(zone) if zone else None,
            dict(self.units),
            frozenset(self.ignore),
        )

    def admits(self, tags: dict[str, str]) -> str | None:
        """Why a topic's captured device or quantity is refused, or None when the lists admit it."""
        if self.device is None and not _matches(tags["device"], self.devices):
            return "unknown_device"
        quantity = tags.get("quantity")
        if self.quantity is None and quantity is not None and not _matches(quantity, self.quantities or ["*"]):
            return "unknown_quantity"
        return None

    def tags(self, topic: str) -> dict[str, str]:
        """site/device/quantity for a topic this subscription matched."""
        levels = topic.split("/")
        out = {name: getattr(self, name) for name in _FIELDS if getattr(self, name) is not None}
        for i, part in enumerate(self.topic.split("/")):
            if part.startswith("{"):
                out.setdefault(part.strip("{}"), levels[i])
        return out


class Tls(Model):
    """TLS to the broker. Verification is on unless ``verify: false`` (with ``insecure: true``)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    verify: bool = True


class MqttConfig(StationTable):
    """One broker connection and what to subscribe on it."""

    kind: Literal["mqtt"]
    host: str
    port: Annotated[int, Field(gt=0, lt=65536)] = 1883
    # auto: MQTT 5 with a Receive Maximum (the broker's default window, 20 on Mosquitto, would
    # hold acks-after-commit to 20 messages a round trip), 3.1.1 where the broker refuses 5.
    protocol: Literal["auto", "3.1.1", "5"] = "auto"
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] = 1000
    username: str = ""
    password: SecretStr = SecretStr("")
    password_file: str = ""
    client_id: str = ""
    keepalive: Duration = 30.0
    session_expiry: Duration = 7 * 86400.0
    tls: Tls | None = None
    # A topic level of $share/GROUP/...: no '/', '+' or '#' that would change what is subscribed.
    share_group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None
    insecure: bool = False  # required for a plain connection off this machine, or TLS without verification
    max_payload_bytes: Annotated[int, Field(gt=0, le=16 * 1024 * 1024)] = MAX_PAYLOAD
    # What topics and payloads may create: at most this many devices, and quantities per device
    # (a batch's keys, a {quantity} level); beyond, new names are refused and counted.
    max_devices: Annotated[int, Field(ge=1, le=100_000)] = 1000
    max_series_per_device: Annotated[int, Field(ge=1, le=10_000)] = 300
    # A payload's timestamp ahead of its arrival by more than this: refused (``refuse``), or taken
    # as arriving now and flagged nothing (``restamp``). Device clocks are not trusted.
    max_clock_skew: Annotated[Duration, Field(ge=0, le=86400)] = 300.0
    clock_ahead: Literal["refuse", "restamp"] = "refuse"
    # A subscription that receives nothing for this long (from the subscribe on) is warned of and
    # flagged on telemetry_mqtt_subscription_silent, with no rule needed: a typo'd topic is silent.
    silent_after: Annotated[Duration, Field(ge=0)] = 600.0
    # A reading stamped more than this before its series' latest is refused (``clock_behind``):
    # one stamp from 2000 would otherwise reopen closed hours. ``backfill: true`` takes any age
    # (a gateway that replays its own store after an outage, out of order).
    backfill_window: Annotated[Duration, Field(ge=0)] = 3600.0
    backfill: bool = False
    subscriptions: Annotated[list[Subscription], Field(min_length=1)]

    @model_validator(mode="after")
    def _stations_for_hj212(self) -> MqttConfig:
        if self.carries_hj212 and not self.stations:
            raise PydanticCustomError(
                "stations", "expected 'stations' (MN, PW, site) for a format: hj212 subscription", {"at": "stations"}
            )
        return self

    @property
    def carries_hj212(self) -> bool:
        """Some subscription takes HJ 212 frames: the stations' series are this device's."""
        return any(sub.format == "hj212" for sub in self.subscriptions)

    @model_validator(mode="after")
    def _locked_down(self) -> MqttConfig:
        if self.insecure:
            return self
        if self.tls is None and not loopback(self.host):
            raise PydanticCustomError(
                "insecure",
                "expected a tls section for a broker off this machine, or insecure: true to send "
                "credentials and readings in clear text",
            )
        if self.tls is not None and not self.tls.verify:
            raise PydanticCustomError(
                "insecure", "expected insecure: true with tls.verify: false (anyone in the path can pose as the broker)"
            )
        return self

    def known_series(self) -> list[KnownSeries]:
        return [
            KnownSeries(sub.site, sub.device, sub.quantity, sub.unit or None, ("subscriptions", i))
            for i, sub in enumerate(self.subscriptions)
            if sub.site and sub.device and sub.quantity
        ]

    def produces(self) -> list[tuple[str | None, str | None]]:
        """(site, device) of each subscription, of each station for HJ 212 frames; None where a
        ``{site}``/``{device}`` level names it."""
        plain = [(sub.site, sub.device) for sub in self.subscriptions if sub.format != "hj212"]
        return plain + (station_series(self.stations, self.id) if self.carries_hj212 else [])

    def open_quantities(self) -> list[str | None]:
        plain = [sub.site for sub in self.subscriptions if sub.format != "hj212" and sub.quantity is None]
        return plain + ([s.site for s in self.stations] if self.carries_hj212 else [])

    def describe(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        share = f" (shared as {self.share_group})" if self.share_group else ""
        return f"{scheme} {self.host}:{self.port}, topics " + ", ".join(s.topic for s in self.subscriptions) + share

    def secret(self) -> str | None:
        """The password, from ``password`` or ``password_file`` (first line)."""
        if self.password_file:
            lines = Path(self.password_file).read_text(encoding="utf-8").splitlines()
            return lines[0] if lines else ""
        return self.password.get_secret_value() or None

    def subscribe_filter(self, sub: Subscription) -> str:
        return f"$share/{self.share_group}/{sub.filter}" if self.share_group else sub.filter


class MqttDriver:
    def __init__(self, cfg: MqttConfig, metrics: Metrics, shared: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.id
        self._metrics = metrics
        # paho's thread appends here and wakes the event loop only when it may be asleep:
        # one wake-up per burst rather than one call_soon_threadsafe per message.
        self._inbox: collections.deque[Inbound] = collections.deque()
        self._wake = asyncio.Event()
        self._wake_pending = False
        self._routes: dict[str, tuple[Subscription, dict[str, str], None]] = {}  # admitted topics only
        self._loop: asyncio.AbstractEventLoop | None = None
        self.hj212 = Hj212Payloads(cfg, metrics, shared)
        # The configured sites (from the composition root): a {site} level must name one of them.
        self._sites: frozenset[str] | None = (shared or {}).get("sites")
        self._zones: dict[str, str] = (shared or {}).get("zones", {})  # site -> its zone
        self._paths: dict[tuple[str, str], Paths] = {}
        self.heard: dict[str, int] = {}  # subscription -> when it last received a message (ns)
        self.silent: set[str] = set()  # subscriptions warned of as silent
        self.silence_changed = asyncio.Event()  # set when a subscription falls silent or hears again
        self._listening_since: int | None = None  # when the subscriptions were first confirmed
        # (site, device) -> its quantities (capped), each with its latest stamp (the back-fill window)
        self._series: dict[tuple[str, str], dict[str, int]] = {}
        self.subscribed = asyncio.Event()  # set when the broker confirmed the subscriptions
        self._lost = asyncio.Event()
        self._down_reason: str | None = None
        self._session_up = False  # paho thread: CONNACK accepted on the current connection
        self._confirmed = threading.Event()  # paho thread: the shutdown's UNSUBACK, or the connection gone
        self.failed = asyncio.Event()  # set on each connection failure; ``last_error`` says why
        self.last_error: str | None = None
        self._last_logged: dict[str, float] = {}
        self._backoff = Backoff(initial=1.0, maximum=60.0)
        self._v5 = cfg.protocol != "3.1.1"  # auto starts with 5 and falls back once refused
        self._client = self._make_client()
        self._renew = False

    def _make_client(self) -> Client:
        cfg = self.cfg
        client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"telemetry-{cfg.id}",
            clean_session=None if self._v5 else False,
            protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311,
            manual_ack=True,
            reconnect_on_failure=False,  # reconnecting is ours: back-off, reasons, metrics
        )
        if cfg.tls is not None:
            client.tls_set(
                ca_certs=cfg.tls.ca_file or None,
                certfile=cfg.tls.cert_file or None,
                keyfile=cfg.tls.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED if cfg.tls.verify else ssl.CERT_NONE,
            )
            client.tls_insecure_set(not cfg.tls.verify)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        return client

    @property
    def where(self) -> str:
        return f"mqtt {self.cfg.id} ({self.cfg.host}:{self.cfg.port})"

    @property
    def on_alert(self) -> Any:
        return self.hj212.gate.on_alert

    @on_alert.setter
    def on_alert(self, hook: Any) -> None:
        """Refused HJ 212 stations raise alerts through this (the pipeline sets it)."""
        self.hj212.gate.on_alert = hook

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        pending: asyncio.Queue[_Pending] = asyncio.Queue()
        acker = asyncio.create_task(self._ack_in_order(pending, emit, stop))
        connection = asyncio.create_task(self._keep_connected(stop))
        watch = asyncio.create_task(self._watch_silence(stop))
        stopping = asyncio.create_task(stop.wait())
        inbox = self._inbox
        try:
            while not stop.is_set():
                self._wake.clear()
                self._wake_pending = False  # before draining: a message appended after this wakes us
                # Everything that arrived meanwhile goes into commits of up to MAX_BATCH_READINGS:
                # one future and one fsync for the lot, and the acks still in arrival order.
                while inbox:
                    batch: list[Inbound] = []
                    readings: list[Reading | Aggregate] = []
                    rejected: list[Rejected] = []
                    while inbox and len(readings) < MAX_BATCH_READINGS:
                        msg = inbox.popleft()
                        good, bad = self._decode(msg)
                        batch.append(msg)
                        readings += good
                        rejected += bad
                    future = asyncio.ensure_future(emit(readings, rejected)) if readings or rejected else None
                    pending.put_nowait(_Pending(future, batch, readings, rejected))
                woken = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({woken, stopping}, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
        finally:
            stopping.cancel()
            pending.put_nowait(_Pending(None, [], [], []))
            await acker
            while not pending.empty():  # left unacknowledged for the next run; their failures are known
                left = pending.get_nowait().future
                if left is not None:
                    left.add_done_callback(_retrieved)
            await connection
            await watch
            await asyncio.to_thread(self._shutdown)

    async def _keep_connected(self, stop: asyncio.Event) -> None:
        """Connect, and after every loss reconnect with back-off; paho resubscribes via on_connect."""
        while not stop.is_set():
            self._lost.clear()
            try:
                await asyncio.to_thread(self._connect)
            except (OSError, ValueError) as err:
                self._went_down("connect", *_reason(err))
                await wait_event(stop, self._backoff.next())
                continue
            self._client.loop_start()
            stopping = asyncio.ensure_future(stop.wait())
            lost = asyncio.ensure_future(self._lost.wait())
            await asyncio.wait({stopping, lost}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            lost.cancel()
            if stop.is_set():
                return
            await asyncio.to_thread(self._client.loop_stop)
            if self._renew:
                self._client, self._renew = self._make_client(), False
            await wait_event(stop, self._backoff.next())

    def _connect(self) -> None:
        self._session_up = False
        if self.cfg.username:  # read again each time: a rotated password_file needs no restart
            self._client.username_pw_set(self.cfg.username, self.cfg.secret())
        if self._v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = int(self.cfg.session_expiry)
            # How many un-acked messages the broker may send: Mosquitto takes it in place of its
            # max_inflight_messages; EMQX takes the smaller of the two.
            props.ReceiveMaximum = self.cfg.receive_maximum
            self._client.connect(
                self.cfg.host, self.cfg.port, int(self.cfg.keepalive), clean_start=False, properties=props
            )
        else:
            self._client.connect(self.cfg.host, self.cfg.port, int(self.cfg.keepalive))

    def _shutdown(self) -> None:
        """Leave the broker once it has processed every ack sent. A PUBACK written to the socket
        is not yet processed: Mosquitto reads one packet per connection per turn of its loop, and
        a busy one that reads the next run's CONNECT for this client id first takes the session
        over, drops the rest of the old connection's input and sends those messages again. An
        UNSUBSCRIBE (of a filter never subscribed) sent after the acks is answered only once the
        broker has read everything before it on this connection."""
        if self._client.is_connected():
            self._confirmed.clear()
            rc, _ = self._client.unsubscribe(f"telemetry/ack-barrier/{self.cfg.id}")
            if rc == paho.MQTT_ERR_SUCCESS and not self._confirmed.wait(_ACKS_CONFIRMED_S):
                log.warning(
                    "%s: the broker did not confirm the last acks within %.0f s; it may send those messages again",
                    self.where,
                    _ACKS_CONFIRMED_S,
                )
        self._client.disconnect()
        self._client.loop_stop()

    async def _ack_in_order(self, pending: asyncio.Queue[_Pending], emit: Emit, stop: asyncio.Event) -> None:
        """Ack each batch once committed, in arrival order. A failed commit (a full disk) is
        retried with back-off, holding the acks behind it: the broker's in-flight window then
        holds back further messages, and nothing waits for a reconnect to be redelivered."""
        while True:
            item = await pending.get()
            if not item.batch:
                return
            if item.future is not None:
                # On a clean stop this still waits: what gets committed gets acknowledged. A
                # commit waiting for disk space fails at shutdown instead (Pipeline._append).
                commit = partial(emit, item.readings, item.rejected)
                failures = await until_committed(commit, stop, partial(self._commit_failed, item), item.future)
                if failures is None:
                    return  # not acknowledged: the broker sends them again to the next run
                if failures:
                    log.info("%s: committed again after %d failed attempts", self.where, failures)
            self._client.ack_many([msg.mid for msg in item.batch if msg.qos == 1])

    def _commit_failed(self, item: _Pending, err: BaseException, attempt: int) -> None:
        self._metrics.errors.labels("mqtt", "commit", "outbox").inc()
        if attempt == 1:
            log.error("%s: could not commit %d messages (%s); retrying", self.where, len(item.batch), err)

    def _route(self, topic: str) -> tuple[Subscription, dict[str, str], str | None] | None:
        """The subscription a topic matched, the tags it yields and why they are refused (None:
        admitted), remembered per admitted topic: matching filters is most of the cost of a small
        message, and nothing is remembered of names the configuration does not admit."""
        try:
            return self._routes[topic]
        except KeyError:
            pass
        sub = next((s for s in self.cfg.subscriptions if paho.topic_matches_sub(s.filter, topic)), None)
        if sub is None:
            return None
        tags = sub.tags(topic)
        why = None
        if sub.format != "hj212":
            if self._sites is not None and sub.site is None and tags["site"] not in self._sites:
                why = "unknown_site"  # anyone who can publish could otherwise create sites and alerts
            else:
                why = sub.admits(tags)
        return sub, tags, why

    def _remember(self, topic: str, sub: Subscription, tags: dict[str, str]) -> None:
        """Cache a topic's route once it gave readings that were kept: the topics remembered are
        at most the series admitted (within the caps), never a refused publisher's inventions."""
        if len(self._routes) >= _ROUTE_CACHE_MAX:
            self._routes.clear()
        self._routes[topic] = (sub, tags, None)

    def _decode(self, msg: Inbound) -> tuple[list[Reading | Aggregate], list[Rejected]]:
        route = self._route(msg.topic)
        if route is None:
            return [], []
        sub, tags, why = route
        now = time.time_ns()
        self.heard[sub.topic] = now
        if sub.topic in self.silent:
            self._heard_again(sub)
        payload = bytes(msg.payload)
        if sub.format == "hj212":
            bad = partial(self._bad, sub, msg.topic, now)
            return self.hj212.decode(payload, sub.lenient, now, self.cfg.max_payload_bytes, bad)
        if why is not None:
            name = _REFUSED[why]
            detail = f"{name} {tags[name][:64]!r} is not in the configuration"
            return [], [self._bad(sub, msg.topic, now, payload, why, detail)]
        try:
            result = decode(payload, now, sub.format, self._paths_of(sub, tags["site"]), self.cfg.max_payload_bytes)
            site, device, quantity = tags["site"], tags["device"], tags.get("quantity") or ""
            readings: list[Reading | Aggregate] = [  # positional: keywords double the cost of a named tuple
                Reading(
                    d.ts, site, device, d.quantity or quantity, d.value, sub.unit if d.unit is None else d.unit, d.flag
                ).check()
                for d in result.readings
            ]
        except (PayloadError, InvalidReading) as err:
            reason = err.reason if isinstance(err, PayloadError) else "invalid_reading"
            return [], [self._bad(sub, msg.topic, now, payload, reason, str(err))]
        readings, ahead = self._not_ahead(readings, now)
        readings, refused = self._within_caps(sub, readings)
        if readings and msg.topic not in self._routes:
            self._remember(msg.topic, sub, tags)
        problems: list[Rejected] = []
        if ahead:
            detail = f"{ahead} readings stamped more than {self.cfg.max_clock_skew:g}s ahead of their arrival refused"
            problems.append(self._bad(sub, msg.topic, now, payload, "clock_ahead", detail))
        for reason, n in refused.items():
            detail = f"{n} readings {_REFUSALS[reason]} refused, {len(readings)} kept"
            problems.append(self._bad(sub, msg.topic, now, payload, reason, detail))
        if result.errors:
            first = result.errors[0]
            detail = f"{len(result.errors)} bad entries, {len(readings)} kept; first: {first}"
            problems.append(self._bad(sub, msg.topic, now, payload, first.reason, detail))
        return readings, problems

    async def _watch_silence(self, stop: asyncio.Event) -> None:
        """Every ``SILENCE_CHECK_S`` (or a quarter of the shortest ``silent_after``): a subscription
        silent for its ``silent_after`` (counted from the first confirmed subscribe) is warned of
        once, and its gauges are brought up to date."""
        subs = self.cfg.subscriptions
        afters = {s.topic: self.cfg.silent_after if s.silent_after is None else s.silent_after for s in subs}
        every = max(0.1, min([SILENCE_CHECK_S] + [a / 4 for a in afters.values() if a]))
        while not await wait_event(stop, every):
            if self._listening_since is None:
                if not self.subscribed.is_set():
                    continue
                self._listening_since = time.time_ns()
            now = time.time_ns()
            for sub in self.cfg.subscriptions:
                heard = self.heard.get(sub.topic)
                self._metrics.mqtt_last_message.labels(self.cfg.id, sub.topic).set((heard or 0) / 1e9)
                after = afters[sub.topic]
                since = heard if heard is not None else self._listening_since
                if after and sub.topic not in self.silent and now - since > after * 1e9:
                    self.silent.add(sub.topic)
                    self.silence_changed.set()
                    self._metrics.mqtt_silent.labels(self.cfg.id, sub.topic).set(1)
                    what = "no message since" if heard is not None else "no message at all since subscribing"
                    log.warning(
                        "%s: subscription %r: %s %.0f min ago; check the topic against what the publisher sends "
                        "(mosquitto_sub -v -t '#') and that it is running",
                        self.where,
                        sub.topic,
                        what,
                        (now - since) / 60e9,
                    )

    def _heard_again(self, sub: Subscription) -> None:
        self.silent.discard(sub.topic)
        self.silence_changed.set()
        self._metrics.mqtt_silent.labels(self.cfg.id, sub.topic).set(0)
        log.info("%s: subscription %r receives messages again", self.where, sub.topic)

    def _paths_of(self, sub: Subscription, site: str) -> Paths:
        """One Paths per subscription and configured site (only admitted sites get here)."""
        key = (sub.topic, site)
        paths = self._paths.get(key)
        if paths is None:
            paths = self._paths[key] = sub.paths(self._zones.get(site))
        return paths

    def _not_ahead(self, readings: list[Reading | Aggregate], now: int) -> tuple[list[Reading | Aggregate], int]:
        """Readings stamped at most ``max_clock_skew`` ahead of their arrival; the others refused
        (counted) or, with ``clock_ahead: restamp``, taken as arriving now. One reading stamped a
        day ahead would otherwise satisfy a limit's ``for`` at once and hold nodata quiet."""
        latest = now + int(self.cfg.max_clock_skew * 1e9)
        if all(r.ts <= latest for r in readings):
            return readings, 0
        if self.cfg.clock_ahead == "restamp":
            restamped = sum(r.ts > latest for r in readings)
            self._metrics.errors.labels("mqtt", "clock", "restamped").inc(restamped)
            return [r._replace(ts=now) if r.ts > latest else r for r in readings], 0  # type: ignore[union-attr]
        kept = [r for r in readings if r.ts <= latest]
        return kept, len(readings) - len(kept)

    def _within_caps(
        self, sub: Subscription, readings: list[Reading | Aggregate]
    ) -> tuple[list[Reading | Aggregate], collections.Counter[str]]:
        """The readings of series already known or admitted (a batch key in ``quantities``,
        within ``max_devices`` and ``max_series_per_device``) and not older than their series'
        latest by more than the back-fill window; how many were refused, by reason. Topics and
        payloads are others' to write: the daemon's memory and series are not theirs to grow,
        and one stamp from 2000 does not reopen the past."""
        kept: list[Reading | Aggregate] = []
        refused: collections.Counter[str] = collections.Counter()
        window = None if self.cfg.backfill else int(self.cfg.backfill_window * 1e9)
        for r in readings:
            latest = self._series.get((r.site, r.device))
            last = latest.get(r.quantity) if latest is not None else None
            if last is None:
                if sub.quantities and r.quantity != sub.quantity and not _matches(r.quantity, sub.quantities):
                    refused["unknown_quantity"] += 1
                    continue
                if latest is None:
                    if len(self._series) >= self.cfg.max_devices:
                        refused["series_cap"] += 1
                        continue
                    latest = self._series[(r.site, r.device)] = {}  # only for a reading that is kept
                if len(latest) >= self.cfg.max_series_per_device:
                    refused["series_cap"] += 1
                    continue
                latest[r.quantity] = r.ts
            elif window is not None and r.ts < last - window:
                refused["clock_behind"] += 1
                continue
            elif r.ts > last:
                self._series[(r.site, r.device)][r.quantity] = r.ts
            kept.append(r)
        return kept, refused

    def _bad(self, sub: Subscription, topic: str, now: int, payload: bytes, reason: str, detail: str) -> Rejected:
        self._metrics.rejected.labels(self.cfg.id, reason).inc()
        self._metrics.mqtt_rejected.labels(self.cfg.id, sub.topic, reason).inc()
        seen = time.monotonic()
        # Keyed by what the config names: refused topics leave nothing behind.
        if seen - self._last_logged.get(sub.topic, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_logged[sub.topic] = seen
            sample = payload[:80].decode("utf-8", errors="replace")
            log.warning("%s: rejected payload on %r: %s (sample: %r)", self.where, topic, detail, sample)
        return Rejected(now, self.cfg.id, topic, reason, detail, payload)

    def _went_down(self, stage: str, error_type: str, reason: str) -> None:
        self._metrics.errors.labels("mqtt", stage, error_type).inc()
        self._metrics.device_up.labels(self.cfg.id).set(0)
        self.last_error = reason
        self.failed.set()
        if self._down_reason != reason:
            log.error("%s: %s; retrying with back-off", self.where, reason)
            self._down_reason = reason

    # paho callbacks: they run in paho's thread, so they only hand over to the event loop.

    def _call(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed at shutdown
                loop.call_soon_threadsafe(fn, *args)

    def _on_connect(self, client: paho.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            if self._v5 and self.cfg.protocol == "auto" and _protocol_refused(reason):
                self._call(self._fall_back)
                return
            self._call(self._went_down, "connect", "refused", f"broker refused the connection: {reason}")
            return
        self._session_up = True
        topics: list[tuple[str, int]] = [(self.cfg.subscribe_filter(s), s.qos) for s in self.cfg.subscriptions]
        client.subscribe(topics)
        self._call(self._connected, bool(getattr(flags, "session_present", False)))

    def _fall_back(self) -> None:
        """The broker speaks no MQTT 5: 3.1.1 from the next attempt on, in flight as it allows."""
        if not self._v5:
            return
        log.warning(
            "%s: the broker refused MQTT 5; using 3.1.1 (its own in-flight window, 20 on a stock Mosquitto, "
            "bounds the rate of acks after commit)",
            self.where,
        )
        self._v5 = False
        self._backoff.reset()
        self._renew = True  # a new client once the refused one's loop has stopped

    def _connected(self, session_present: bool) -> None:
        self._metrics.device_up.labels(self.cfg.id).set(1)
        self._backoff.reset()
        kept = "session kept by the broker" if session_present else "new session"
        if self._down_reason is not None:
            log.info("%s: connected again (%s)", self.where, kept)
        else:
            log.info("%s: connected (%s)", self.where, kept)
        self._down_reason = None

    def _on_subscribe(self, _c: paho.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        refused = [c for c in codes if getattr(c, "is_failure", False)]
        if refused:
            self._call(log.error, "%s: broker refused subscriptions: %s", self.where, refused)
        else:
            self._call(log.info, "%s: subscribed to %d filter(s)", self.where, len(self.cfg.subscriptions))
        self._call(self.subscribed.set)

    def _on_unsubscribe(self, _c: paho.Client, _u: Any, _mid: int, _codes: Any, _p: Any) -> None:
        self._confirmed.set()  # only the shutdown unsubscribes

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._confirmed.set()  # nothing more will be confirmed on this connection
        self._call(self.subscribed.clear)
        self._call(self._lost.set)
        if self._session_up and getattr(reason, "value", 0) != 0:  # a refused CONNACK was reported already
            self._call(self._went_down, "connection", "lost", f"connection lost: {reason}")

    def _on_message(self, _c: paho.Client, _u: Any, msg: Inbound) -> None:
        self._inbox.append(msg)
        if not self._wake_pending:
            self._wake_pending = True
            self._call(self._wake.set)


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _protocol_refused(reason: Any) -> bool:
    """A CONNACK refusing the protocol version: 0x84 from an MQTT 5 broker; paho reports a 3.1.1
    broker's return code 1 (unacceptable protocol level) as 0x84 too."""
    return getattr(reason, "value", None) == 0x84


def _reason(err: BaseException) -> tuple[str, str]:
    """A bounded error type and a clear, secret-free reason for a failed connection."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return "tls_verify", f"TLS certificate verification failed: {err.verify_message}"
    if isinstance(err, ssl.SSLError):
        return "tls", f"TLS error: {err.reason or err}"
    if isinstance(err, ConnectionRefusedError):
        return "unreachable", "connection refused"
    if isinstance(err, FileNotFoundError):
        return "config", f"file not found: {err.filename}"
    if "timed out" in str(err):
        return "timeout", "connection timed out"
    return "other", f"{type(err).__name__}: {err}"
