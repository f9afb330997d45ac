"""The lean PUBLISH decoding (drivers/mqtt_client.py) against paho's own, on generated packets."""

from __future__ import annotations

import socket

from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.client import MQTTv5, MQTTv311
from paho.mqtt.enums import CallbackAPIVersion

from drivers.mqtt_client import Client, decode_publish


def packet(topic: bytes, payload: bytes, qos: int, mid: int, props: bytes | None) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
    if props is not None:
        body += len(props).to_bytes(1, "big") + props
    return body + payload


@given(
    topic=st.text(min_size=1, max_size=60).filter(lambda t: "\x00" not in t),
    payload=st.binary(max_size=300),
    qos=st.sampled_from([0, 1]),
    mid=st.integers(1, 65535),
    v5=st.booleans(),
    dup=st.booleans(),
    retain=st.booleans(),
)
def test_a_publish_decodes_as_paho_decodes_it(
    topic: str, payload: bytes, qos: int, mid: int, v5: bool, dup: bool, retain: bool
) -> None:
    header = 0x30 | dup << 3 | qos << 1 | retain
    raw = packet(topic.encode(), payload, qos, mid, b"" if v5 else None)
    ours = decode_publish(header, raw, v5)
    theirs = _packet.decode_publish(header, raw, MQTTv5 if v5 else MQTTv311)
    assert ours is not None
    assert (ours.topic, ours.payload, ours.mid, ours.qos) == (
        theirs.topic.decode(),
        theirs.payload,
        theirs.mid,
        theirs.qos,
    )


def test_what_the_lean_path_leaves_to_paho() -> None:
    expiry = b"\x02\x00\x00\x00\x3c"  # message expiry interval 60 s: an MQTT 5 property
    assert decode_publish(0x32, packet(b"a/b", b"1", 1, 7, expiry), True) is None
    assert decode_publish(0x34, packet(b"a/b", b"1", 2, 7, None), False) is None  # QoS 2
    assert decode_publish(0x32, packet(b"", b"1", 1, 7, None), False) is None  # empty topic in 3.1.1
    assert decode_publish(0x32, packet(b"\xff\xfe", b"1", 1, 7, None), False) is None  # not UTF-8
    assert decode_publish(0x32, b"\x00\x09ab", False) is None  # topic longer than the packet


def test_reads_are_cut_from_one_buffer() -> None:
    """Three packets in one segment: one recv from the socket, then slices of the buffer."""
    ours, theirs = socket.socketpair()
    client = Client(CallbackAPIVersion.VERSION2, manual_ack=True)
    client._sock = ours
    ours.setblocking(False)
    theirs.sendall(b"\x30\x05\x00\x01a" + b"xy" + b"\x30\x04\x00\x01bz" + b"\x40\x02\x00\x01")
    parts = [client._sock_recv(n) for n in (1, 1, 5, 1, 1, 4, 1, 1, 2)]
    assert b"".join(parts) == b"\x30\x05\x00\x01axy\x30\x04\x00\x01bz\x40\x02\x00\x01"
    assert parts[2] == b"\x00\x01axy"
    client._sock_close()
    theirs.close()
