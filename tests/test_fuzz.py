"""Inputs from people and devices the daemon does not control: no crash, an explained rejection,
and what is accepted survives the trip."""

from __future__ import annotations

import math
import re
import struct
import time
import urllib.parse
import urllib.request
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import DRIVERS, modbus_decode, mqtt_decode
from telemetry import config
from telemetry.errors import ConfigError
from telemetry.lineproto import reading_line
from telemetry.model import Flag, InvalidReading, Reading
from tests.services import Influx1

PROBLEM = re.compile(r"^site\.yaml(:\d+)?: ")
KINDS = {kind: d.config for kind, d in DRIVERS.items()}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 70000), st.floats(allow_nan=False), st.text(max_size=12))
keys = st.sampled_from(
    [
        "sites",
        "devices",
        "id",
        "kind",
        "site",
        "host",
        "port",
        "points",
        "quantity",
        "address",
        "type",
        "rules",
        "above",
        "for",
        "influxdb",
        "api",
        "url",
        "database",
        "notify",
        "routes",
        "urls",
        "outbox",
        "hj212",
        "x",
    ]
)
documents = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5), max_leaves=25
)


def parse(text: str) -> None:
    problems: list[str] = []
    try:
        config.parse("site.yaml", text, KINDS, {})
    except ConfigError as err:
        problems = err.problems or ["(no problem given)"]
    for problem in problems:
        assert PROBLEM.match(problem), problem


@given(documents)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_structure_is_loaded_or_explained_with_file_and_line(document: Any) -> None:
    parse(yaml.safe_dump(document, allow_unicode=True))


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_any_text_is_loaded_or_explained(text: str) -> None:
    parse(text)


identifiers = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\\"), min_size=1, max_size=20
)


@pytest.mark.service
@given(site=identifiers, device=identifiers, quantity=identifiers, unit=identifiers)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_tag_values_survive_the_trip_through_influxdb_unchanged(
    influx1: Influx1, site: str, device: str, quantity: str, unit: str
) -> None:
    try:
        reading = Reading(time.time_ns(), site, device, quantity, 1.5, unit).check()
    except InvalidReading:
        return  # refused before line protocol: the explained rejection path
    db = "fuzz"
    influx1.create(db)
    request = urllib.request.Request(
        f"{influx1.url}/write?db={db}&precision=ns", data=reading_line(reading).encode(), method="POST"
    )
    urllib.request.urlopen(request, timeout=10).close()
    q = f"SELECT * FROM telemetry WHERE time = {reading.ts}"
    params = urllib.parse.urlencode({"db": db, "q": q, "epoch": "ns"})
    with urllib.request.urlopen(f"{influx1.url}/query?{params}", timeout=10) as resp:
        body = resp.read().decode()
    rows = influx1.query(db, q)
    assert len(rows) == 1, body
    assert (rows[0]["site"], rows[0]["device"], rows[0]["quantity"], rows[0]["unit"]) == (site, device, quantity, unit)
    assert rows[0]["value"] == 1.5
    measurements = {m["name"] for m in influx1.query(db, "SHOW MEASUREMENTS")}
    assert measurements == {"telemetry"}


PAYLOAD_REASONS = {
    "bad_entry", "bad_flag", "bad_json", "bad_ts", "bad_unit", "bad_value", "empty", "implausible_ts",
    "no_quantity", "no_value", "not_a_batch", "not_a_number", "not_an_object", "not_finite", "too_large",
}  # fmt: skip
NOW_NS = 1_764_000_000 * 10**9
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS) if _jsonable(v) else b"null"),
    st.dictionaries(st.sampled_from(["value", "ts", "flag", "unit", "quantity", "cod"]), json_values).map(
        lambda v: orjson.dumps(v) if _jsonable(v) else b"{}"
    ),
)


def _jsonable(value: Any) -> bool:
    try:
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


@given(payload=payloads, fmt=st.sampled_from(["auto", "number", "json", "batch"]))
@settings(max_examples=500, deadline=None)
def test_any_payload_is_decoded_or_rejected_with_a_known_reason(payload: bytes, fmt: str) -> None:
    rejection: mqtt_decode.PayloadError | None = None
    try:
        result = mqtt_decode.decode(payload, NOW_NS, fmt)  # type: ignore[arg-type]
    except mqtt_decode.PayloadError as err:
        rejection = err
    if rejection is not None:
        assert rejection.reason in PAYLOAD_REASONS
        assert str(rejection)  # explained
        return
    assert result.readings  # accepted means at least one reading
    for decoded in result.readings:
        assert math.isfinite(decoded.value)
        assert decoded.ts >= 946_684_800 * 10**9  # never before 2000
    for error in result.errors:  # a batch keeps its good entries and explains the bad ones
        assert error.reason in PAYLOAD_REASONS


@given(
    value=st.floats(allow_nan=False, allow_infinity=False),
    ts_ms=st.integers(1_000_000_000_000, NOW_NS // 10**6),
    flag=st.sampled_from(list(Flag)),
    unit=st.text(max_size=10),
)
@settings(max_examples=300, deadline=None)
def test_an_accepted_json_reading_round_trips(value: float, ts_ms: int, flag: Flag, unit: str) -> None:
    payload = orjson.dumps({"value": value, "ts": ts_ms, "flag": flag.value, "unit": unit})
    [decoded] = mqtt_decode.decode(payload, NOW_NS, "json").readings
    assert (decoded.value, decoded.ts, decoded.flag, decoded.unit) == (value, ts_ms * 10**6, flag, unit)


@given(
    type_name=st.sampled_from(modbus_decode.NUMERIC_TYPES),
    order=st.sampled_from(modbus_decode.BYTE_ORDERS),
    data=st.data(),
)
@settings(max_examples=500, deadline=None)
def test_register_codec_round_trips_every_type_and_byte_order(type_name: str, order: str, data: Any) -> None:
    fmt = ">" + modbus_decode.TYPES[type_name].fmt
    if fmt[1] in "fd":
        value = data.draw(st.floats(allow_nan=False, width=32 if fmt[1] == "f" else 64))
    else:
        bits = struct.calcsize(fmt) * 8
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if fmt[1].islower() else (0, (1 << bits) - 1)
        value = data.draw(st.integers(low, high))
    registers = modbus_decode.encode(value, type_name, order)  # type: ignore[arg-type]
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert len(registers) == modbus_decode.TYPES[type_name].registers
    got = modbus_decode.decode(registers, type_name, order)  # type: ignore[arg-type]
    if fmt[1] == "f":  # the same float32, as its shortest decimal (modbus_decode.shortest_float32)
        assert struct.pack(">f", got) == struct.pack(">f", value)
    else:
        assert got == float(value)


@given(
    type_name=st.sampled_from(modbus_decode.NUMERIC_TYPES),
    order=st.sampled_from(modbus_decode.BYTE_ORDERS),
    registers=st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
)
def test_any_register_contents_decode_to_a_number(type_name: str, order: str, registers: list[int]) -> None:
    """A device can hold anything: decoding never fails; NaN or infinity is refused later as a reading."""
    value = modbus_decode.decode(registers, type_name, order)  # type: ignore[arg-type]
    assert isinstance(value, float)
    if not math.isfinite(value):
        with pytest.raises(InvalidReading):
            Reading(0, "s", "d", "q", value).check()
