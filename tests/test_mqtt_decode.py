"""MQTT payload decoding: accepted formats and explained rejections."""

from __future__ import annotations

import pytest

from drivers.mqtt_decode import PayloadError, decode
from telemetry.model import Flag

NOW = 1_764_000_000 * 10**9


@pytest.mark.parametrize(
    ("payload", "value", "ts"),
    [
        (b"12.5", 12.5, NOW),
        (b" 7 \n", 7.0, NOW),
        (b'{"value": 41.5}', 41.5, NOW),
        (b'{"value": 1, "ts": 1763999990}', 1.0, 1_763_999_990 * 10**9),
        (b'{"value": 1, "ts": 1763999990123}', 1.0, 1_763_999_990_123 * 10**6),
        (b'{"value": 1, "ts": 1763999990123456789}', 1.0, 1_763_999_990_123_456_789),
        (b'{"value": 1, "ts": "2025-11-24T23:59:50+08:00"}', 1.0, 1_763_999_990 * 10**9),
        (b'{"value": 1, "ts": "2025-11-24T15:59:50.5Z"}', 1.0, 1_763_999_990_500_000_000),
    ],
)
def test_accepted(payload: bytes, value: float, ts: int) -> None:
    decoded = decode(payload, NOW)
    assert (decoded.value, decoded.ts, decoded.flag) == (value, ts, Flag.N)


def test_flag_and_unit() -> None:
    decoded = decode(b'{"value": 3, "flag": "C", "unit": "mg/L"}', NOW)
    assert (decoded.flag, decoded.unit) == (Flag.C, "mg/L")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty"),
        (b"abc", "not_a_number"),
        (b"nan", "not_finite"),
        (b"inf", "not_finite"),
        (b"{bad json", "bad_json"),
        (b'{"v": 1}', "no_value"),
        (b'{"value": "1"}', "bad_value"),
        (b'{"value": true}', "bad_value"),
        (b'{"value": 1, "flag": "X"}', "bad_flag"),
        (b'{"value": 1, "ts": "2025-11-24T15:59:50"}', "bad_ts"),
        (b'{"value": 1, "ts": 5}', "implausible_ts"),
        (b'{"value": 1, "ts": 99999999999999999999}', "implausible_ts"),
        (b'{"value": 1, "unit": 5}', "bad_unit"),
        (b"\xff\xfe", "not_a_number"),
    ],
)
def test_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode(payload, NOW)
    assert info.value.reason == reason
    assert str(info.value)
