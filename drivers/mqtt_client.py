"""paho's MQTT client with a receive path lean enough for acks after commit at broker speed.

A profile of a backlog drain (issue 18) put half the daemon's CPU in paho's network thread:
per message, paho reads the socket with three ``recv`` calls and a ``select``, builds an MQTT 5
``Properties`` object and a ``MQTTMessageInfo`` with its own lock and condition, and every
manual ``ack`` wakes its thread through the socket pair and is sent on its own. Here:

- the socket is read 64 KiB at a time and packets are cut from the buffer (``_sock_recv``),
  and one ``loop_read`` takes every whole packet buffered, not one;
- a QoS 0/1 PUBLISH without properties (what brokers forward) becomes a ``Message`` of four
  slots; anything else (QoS 2, MQTT 5 properties) takes paho's own path;
- ``ack_many`` queues the PUBACKs of a committed batch as one write and one wake-up.

These override paho 2.x internals (``_sock_recv``, ``_sock_close``, ``loop_read``,
``_handle_publish``, ``_packet_queue``); setup.cfg pins paho below 3, and
tests/test_mqtt_client.py checks the publish decoding against paho's own on generated packets.
"""

from __future__ import annotations

import struct
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

_READ = 65536
_PUBACK = 0x40


class Message:
    """What the driver needs of a PUBLISH: paho's ``MQTTMessage`` costs a lock and a condition."""

    __slots__ = ("mid", "payload", "qos", "topic")

    def __init__(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        self.topic = topic
        self.payload = payload
        self.mid = mid
        self.qos = qos


def decode_publish(header: int, packet: bytes | bytearray, v5: bool) -> Message | None:
    """A QoS 0/1 PUBLISH (fixed header byte, then the rest) as a ``Message``; None for what paho
    should decode itself (QoS 2, MQTT 5 properties) or a malformed one (paho reports it)."""
    qos = (header & 0x06) >> 1
    if qos == 2 or len(packet) < 2:
        return None
    end = 2 + int.from_bytes(packet[0:2], "big")
    pos = end + (2 if qos else 0)
    if pos > len(packet):
        return None
    mid = int.from_bytes(packet[end:pos], "big") if qos else 0
    if v5:
        if pos >= len(packet) or packet[pos] != 0:
            return None  # properties present (or none at all): paho's own decoding
        pos += 1
    elif end == 2:
        return None  # MQTT 3.1.1 forbids an empty topic: paho reports it
    try:
        topic = bytes(packet[2:end]).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return Message(topic, bytes(packet[pos:]), mid, qos)


class Client(paho.Client):
    """``on_message`` receives ``Message`` (or paho's ``MQTTMessage`` off the fast path); both
    have ``topic`` (str), ``payload``, ``mid`` and ``qos``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buffer = bytearray()

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self._buffer:
            data = super()._sock_recv(_READ)  # BlockingIOError when there is nothing: paho's AGAIN
            if len(data) <= bufsize:
                return data
            self._buffer += data
        out = bytes(self._buffer[:bufsize])
        del self._buffer[:bufsize]
        return out

    def _sock_close(self) -> None:
        self._buffer.clear()  # what was buffered belonged to the old connection
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Every whole packet that has arrived, not one per ``select``."""
        while True:
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_publish(self) -> MQTTErrorCode:
        callback = self.on_message
        if self._manual_ack and callback is not None:  # the fast path leaves acks to the caller
            message = decode_publish(
                self._in_packet["command"], self._in_packet["packet"], self._protocol == paho.MQTTv5
            )
            if message is not None:
                callback(self, self._userdata, message)  # type: ignore[arg-type]
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._handle_publish()

    def ack_many(self, mids: list[int]) -> None:
        """PUBACKs for QoS 1 messages, in this order, as one write."""
        if mids:
            blob = b"".join(struct.pack("!BBH", _PUBACK, 2, mid) for mid in mids)
            self._packet_queue(_PUBACK, blob, 0, 0)
