"""Modbus device configuration: addressing, profiles, status maps and cross-device checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drivers.modbus_config import ModbusConfig, profiles
from telemetry import app
from telemetry.errors import ConfigError

SITE = """\
sites:
  - id: s
devices:
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "site.yaml"
    path.write_text(SITE + text)
    with pytest.raises(ConfigError) as info:
        app.load(str(path), {})
    return info.value.problems


def base(**kw: Any) -> dict[str, Any]:
    return {"id": "an", "kind": "modbus", "site": "s", "host": "127.0.0.1", "timeout": "1s"} | kw


@pytest.mark.parametrize("name", profiles())
def test_every_shipped_profile_validates(name: str) -> None:
    cfg = ModbusConfig.model_validate(base(profile=name))
    assert cfg.points
    assert cfg.blocks()


def test_profile_points_are_overridden_by_quantity_and_extended() -> None:
    cfg = ModbusConfig.model_validate(
        base(
            profile="em-flowmeter",
            byte_order="ABCD",
            points=[{"quantity": "flow", "address": 0, "unit": "L/s"}, {"quantity": "temp", "address": 20}],
        )
    )
    by_quantity = {p.quantity: p for p in cfg.points}
    assert set(by_quantity) == {"flow", "flow_total", "temp"}
    assert (by_quantity["flow"].address, by_quantity["flow"].unit) == (0, "L/s")
    assert by_quantity["flow_total"].address == 4120
    assert cfg.byte_order == "ABCD"  # the site overrides the profile's CDAB
    assert len(cfg.status) == 1


def test_addressing_modes() -> None:
    one = ModbusConfig.model_validate(base(addressing=1, points=[{"quantity": "a", "address": 1, "table": "input"}]))
    assert one.resolve(1, "input") == ("input", 0)
    modicon = ModbusConfig.model_validate(base(addressing="modicon", points=[{"quantity": "a", "address": 30010}]))
    assert modicon.spans()[0].table == "input"
    assert modicon.spans()[0].address == 9
    assert ModbusConfig.model_validate(base(points=[{"quantity": "a", "address": "400001"}])).spans()[0].address == 0


def test_mistakes_point_at_the_key(tmp_path: Path) -> None:
    text = """\
  - id: an
    kind: modbus
    site: s
    host: 127.0.0.1
    timeout: 1s
    addressing: 1
    points:
      - {quantity: cod, address: 0}
"""
    [problem] = problems(tmp_path, text)
    assert ":11: devices[0].points[0].address: expected a register number from 1 (addressing: 1)" in problem


def test_modicon_table_conflict_and_bad_notation(tmp_path: Path) -> None:
    text = """\
  - id: an
    kind: modbus
    site: s
    host: 127.0.0.1
    timeout: 1s
    points:
      - quantity: cod
        address: "40001"
        table: input
"""
    [problem] = problems(tmp_path, text)
    assert ":11: devices[0].points[0].address: expected table holding for Modicon address 40001" in problem
    [bad] = problems(tmp_path, text.replace('"40001"', '"5x1"').replace("        table: input\n", ""))
    assert "expected Modicon notation such as 40001" in bad


def test_unknown_profile_lists_the_shipped_ones(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, "  - {id: an, kind: modbus, site: s, host: h, timeout: 1s, profile: cod}\n")
    assert "devices[0].profile: expected a profile name (cod-analyzer, em-flowmeter" in problem


def test_status_must_name_known_quantities_and_map_something(tmp_path: Path) -> None:
    text = """\
  - id: an
    kind: modbus
    site: s
    host: h
    timeout: 1s
    points: [{quantity: cod, address: 0}]
    status:
      - {address: 10, values: {2: C}, applies_to: [nh3n]}
"""
    [problem] = problems(tmp_path, text)
    assert ":11: devices[0].status[0]: expected a quantity of this device, found nh3n" in problem
    [empty] = problems(tmp_path, text.replace("values: {2: C}, applies_to: [nh3n]", "applies_to: [cod]"))
    assert "expected 'values' or 'bits' mapping to flags" in empty
    [flag] = problems(tmp_path, text.replace("{2: C}", "{2: X}").replace("[nh3n]", "[cod]"))
    assert "devices[0].status[0].values[2]: expected one of 'N', 'F', 'M', 'S', 'D', 'C', 'T' or 'B', found 'X'" in flag


def test_devices_sharing_a_link_must_agree_and_not_repeat_a_unit(tmp_path: Path) -> None:
    text = """\
  - {id: a, kind: modbus, site: s, host: gw, transport: rtu_over_tcp, timeout: 1s, unit_id: 1, points: [{quantity: q, address: 0}]}
  - {id: b, kind: modbus, site: s, host: gw, transport: rtu_over_tcp, timeout: 2s, interval: 10s, unit_id: 2, points: [{quantity: q, address: 0}]}
  - {id: c, kind: modbus, site: s, host: gw, transport: rtu_over_tcp, timeout: 1s, unit_id: 1, points: [{quantity: q, address: 0}]}
"""
    found = problems(tmp_path, text)
    assert len(found) == 2
    assert (
        ":5: devices[1].transport: expected the same timeout, retries, pause and serial settings as device 'a'"
        in found[0]
    )
    assert (
        ":6: devices[2].unit_id: expected a unit id not already polled on rtu-over-tcp gw:502, found 1 (also device 'a')"
        in found[1]
    )


def test_rtu_needs_a_serial_port_and_bit_needs_bool(tmp_path: Path) -> None:
    [serial] = problems(
        tmp_path,
        "  - {id: a, kind: modbus, site: s, transport: rtu, timeout: 1s, points: [{quantity: q, address: 0}]}\n",
    )
    assert "devices[0].serial_port: expected serial_port (e.g. /dev/ttyUSB0) for rtu" in serial
    [bit] = problems(
        tmp_path,
        "  - {id: a, kind: modbus, site: s, host: h, timeout: 1s, points: [{quantity: q, address: 0, bit: 3}]}\n",
    )
    assert "devices[0].points[0].bit: expected 'bit' only with type bool" in bit
