"""MQTT payload decoding: every format, every timestamp form, explained rejections."""

from __future__ import annotations

import calendar
import json
import zoneinfo
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.mqtt_decode import DEFAULT_PATHS, Paths, PayloadError, decode
from telemetry.model import Flag

NOW = 1_764_000_000 * 10**9


def one(payload: bytes, fmt: str = "auto", paths: Paths = DEFAULT_PATHS) -> tuple[float, int, Flag, str | None]:
    result = decode(payload, NOW, fmt, paths)  # type: ignore[arg-type]
    assert result.errors == []
    [d] = result.readings
    return d.value, d.ts, d.flag, d.unit


@pytest.mark.parametrize(
    ("payload", "value", "ts"),
    [
        (b"12.5", 12.5, NOW),
        (b" 7 \n", 7.0, NOW),
        (b'{"value": 41.5}', 41.5, NOW),
        (b'{"value": 1, "ts": 1763999990}', 1.0, 1_763_999_990 * 10**9),
        (b'{"value": 1, "ts": 1763999990.25}', 1.0, 1_763_999_990_250_000_000),
        (b'{"value": 1, "ts": 1763999990123}', 1.0, 1_763_999_990_123 * 10**6),
        (b'{"value": 1, "ts": 1763999990123456}', 1.0, 1_763_999_990_123_456 * 10**3),
        (b'{"value": 1, "ts": 1763999990123456789}', 1.0, 1_763_999_990_123_456_789),
        (b'{"value": 1, "ts": "2025-11-24T23:59:50+08:00"}', 1.0, 1_763_999_990 * 10**9),
        (b'{"value": 1, "ts": "2025-11-24T15:59:50.5Z"}', 1.0, 1_763_999_990_500_000_000),
    ],
)
def test_number_and_json_with_each_timestamp_form(payload: bytes, value: float, ts: int) -> None:
    assert one(payload)[:2] == (value, ts)


def test_flag_and_unit() -> None:
    assert one(b'{"value": 3, "flag": "C", "unit": "mg/L"}')[2:] == (Flag.C, "mg/L")


def test_configured_field_paths() -> None:
    paths = Paths(value="data.v", ts="data.t", flag="st", unit="u")
    payload = b'{"data": {"v": 9.5, "t": 1763999990000}, "st": "M", "u": "t/h"}'
    assert one(payload, "json", paths) == (9.5, 1_763_999_990 * 10**9, Flag.M, "t/h")
    assert one(b'{"items": [{"v": 4}]}', "json", Paths(value="items.0.v"))[0] == 4.0


def test_batch_list_and_object() -> None:
    listed = decode(b'[{"quantity": "cod", "value": 41}, {"quantity": "nh3n", "value": 2.5, "flag": "C"}]', NOW)
    assert [(d.quantity, d.value, d.flag) for d in listed.readings] == [
        ("cod", 41.0, Flag.N),
        ("nh3n", 2.5, Flag.C),
    ]
    obj = decode(b'{"ts": 1763999990, "cod": 41, "tp": {"value": 0.4, "flag": "M"}, "unit": "mg/L"}', NOW)
    assert [(d.quantity, d.value, d.ts, d.flag, d.unit) for d in obj.readings] == [
        ("cod", 41.0, 1_763_999_990 * 10**9, Flag.N, "mg/L"),
        ("tp", 0.4, 1_763_999_990 * 10**9, Flag.M, "mg/L"),
    ]


def test_fifty_reading_batch() -> None:
    payload = ("{" + ", ".join(f'"q{i}": {i}' for i in range(50)) + "}").encode()
    assert [d.value for d in decode(payload, NOW, "batch").readings] == [float(i) for i in range(50)]


def test_batch_keeps_good_entries_and_reports_bad_ones() -> None:
    result = decode(b'{"cod": 41, "nh3n": "high", "tp": null}', NOW)
    assert [d.quantity for d in result.readings] == ["cod"]
    assert [e.reason for e in result.errors] == ["bad_value", "bad_value"]
    assert "nh3n" in str(result.errors[0])


@pytest.mark.parametrize(
    ("payload", "fmt", "reason"),
    [
        (b"", "auto", "empty"),
        (b"abc", "auto", "not_a_number"),
        (b"nan", "auto", "not_finite"),
        (b"inf", "number", "not_finite"),
        (b"{bad json", "auto", "bad_json"),
        (b'{"value": "1"}', "auto", "bad_value"),
        (b'{"value": true}', "json", "bad_value"),
        (b'{"value": NaN}', "json", "bad_json"),
        (b'{"v": 1}', "json", "no_value"),
        (b"[1, 2]", "batch", "bad_entry"),
        (b'[{"value": 1}]', "batch", "no_quantity"),
        (b'"text"', "batch", "not_a_batch"),
        (b"[]", "batch", "empty"),
        (b'{"value": 1, "flag": "X"}', "auto", "bad_flag"),
        (b'{"value": 1, "ts": "2025-11-24T15:59:50"}', "auto", "bad_ts"),
        (b'{"value": 1, "ts": "yesterday"}', "auto", "bad_ts"),
        (b'{"value": 1, "ts": 5}', "auto", "implausible_ts"),
        (b'{"value": 1, "ts": 99999999999999999999}', "auto", "implausible_ts"),
        (b'{"value": 1, "unit": 5}', "auto", "bad_unit"),
        (b"\xff\xfe", "auto", "not_a_number"),
        (b"[" * 5000 + b"]" * 5000, "auto", "bad_json"),  # nesting deeper than the parser allows
        (b"1" * (256 * 1024 + 1), "auto", "too_large"),
    ],
)
def test_rejected_with_a_reason(payload: bytes, fmt: str, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode(payload, NOW, fmt)  # type: ignore[arg-type]
    assert info.value.reason == reason
    assert str(info.value)


SHANGHAI = Paths(zone=zoneinfo.ZoneInfo("Asia/Shanghai"))


@given(st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2025, 11, 20)))
def test_gateway_local_times_in_every_form_are_read_in_the_site_zone(local: datetime) -> None:
    local = local.replace(microsecond=0)
    # The oracle: Beijing time is UTC+8 all year (no DST since 1991).
    expected = (calendar.timegm(local.timetuple()) - 8 * 3600) * 10**9
    forms: list[object] = [
        local.strftime("%Y-%m-%d %H:%M:%S"),
        local.strftime("%Y-%m-%dT%H:%M:%S"),
        local.strftime("%Y%m%d%H%M%S"),
        int(local.strftime("%Y%m%d%H%M%S")),
    ]
    for form in forms:
        payload = json.dumps({"value": 1.5, "ts": form}).encode()
        assert one(payload, paths=SHANGHAI)[1] == expected, form
    # A zone in the text wins over the site's.
    utc = json.dumps({"value": 1.5, "ts": local.strftime("%Y-%m-%dT%H:%M:%SZ")}).encode()
    assert one(utc, paths=SHANGHAI)[1] == calendar.timegm(local.timetuple()) * 10**9


def test_a_zone_less_time_without_a_zone_to_read_it_in_is_refused() -> None:
    with pytest.raises(PayloadError, match="no time zone"):
        decode(b'{"value": 1, "ts": "2025-11-20 08:00:00"}', NOW)


def test_a_batch_gives_fields_their_units_and_ignores_what_is_not_a_reading() -> None:
    paths = Paths(units={"cod": "mg/L", "flow": "m3/h"}, ignore=frozenset({"status", "sn"}))
    payload = (
        b'{"ts": 1763999990, "cod": 41.5, "flow": {"value": 12, "unit": "L/s"}, "ph": 7.1, "status": "ok", "sn": "A1"}'
    )
    result = decode(payload, NOW, "batch", paths)
    assert result.errors == []
    got = {d.quantity: (d.value, d.unit) for d in result.readings}
    assert got == {"cod": (41.5, "mg/L"), "flow": (12.0, "L/s"), "ph": (7.1, None)}  # the payload's own unit wins
    # Without the ignore list the status text is a bad entry (the rest kept).
    result = decode(payload, NOW, "batch", Paths(units=paths.units))
    assert [e.reason for e in result.errors] == ["bad_value", "bad_value"]
