"""HJ 212 both ways in the configuration: listener stations, MQTT station tables, platform
equipment and controls, each mistake named by file, line and path; the password never echoed."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from telemetry import app
from telemetry.cli import likely_mistakes, summary
from telemetry.config_base import host_port, loopback
from telemetry.errors import ConfigError

BASE = """\
sites: [{id: s}, {id: t}]
points:
  - {id: outlet, site: s, devices: [dau-out]}
  - {id: inlet, site: s, devices: [dau-in]}
devices:
  - id: dau
    kind: hj212
    listen: "0.0.0.0:9212"
    lenient: true
    stations:
      - {mn: "41050022000017", pw: "${DAU_PW}", site: s, device: dau-out, point: outlet}
      - {mn: "41050022000018", pw: "${DAU_PW}", site: s, device: dau-in, point: inlet, aggregates: daemon}
      - {mn: "41050022000019", pw: "${DAU_PW}", site: t, codes: {cod_total: w01018}}
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return app.load(str(path), {"DAU_PW": "s3cret-pw"})


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.problems


def test_the_issue_configuration_loads_and_check_describes_the_listener(tmp_path: Path) -> None:
    dep = load(tmp_path, BASE)
    text = summary(dep)  # type: ignore[arg-type]
    assert "hj212 listener 0.0.0.0:9212, 3 station(s) at s, t, lenient" in text
    assert "s3cret-pw" not in text
    assert any("clear text" in w for w in dep.warnings + dep.devices[0].warnings())  # type: ignore[attr-defined]


def test_check_counts_stations_as_producers_of_their_sites(tmp_path: Path) -> None:
    """A station's codes name its quantities at run time: a rule at its site is fed, a point's
    station device exists; a site with no station and no device is still warned about."""
    rules = """
rules:
  - {kind: limit, name: cod_s, site: s, quantity: cod, above: 100}
  - {kind: limit, name: cod_out, site: s, device: dau-out, quantity: cod, above: 100}
"""
    fed = likely_mistakes(load(tmp_path, BASE + rules))  # type: ignore[arg-type]
    assert not [n for n in fed if "no device produces" in n or "no configured device" in n], fed
    lonely = BASE.replace("sites: [{id: s}, {id: t}]", "sites: [{id: s}, {id: t}, {id: u}]") + rules.replace(
        "site: s, quantity", "site: u, quantity"
    )
    assert "rule cod_s: no device produces 'cod' at u" in likely_mistakes(load(tmp_path, lonely))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "where", "what"),
    [
        (("41050022000018", "41050022000017"), "devices[0].stations[1].mn", "found MN 41050022000017 again"),
        (
            ("device: dau-in, point: inlet", "device: dau-out, point: inlet"),
            "devices[0].stations[1].device",
            "dau-out again",
        ),
        (("point: outlet}", "point: inlet}"), "devices[0].stations[0].point", "whose devices hold 'dau-out'"),
        (('mn: "41050022000019"', "mn: 41050022000019"), "devices[0].stations[2].mn", "put it in quotes"),
        (("site: t, codes", "site: x, codes"), "devices[0].stations[2].site", "expected a site from 'sites'"),
        (
            ("aggregates: daemon", "min_interval_minutes: 7"),
            "devices[0].stations[1].min_interval_minutes",
            "divides an hour",
        ),
    ],
)
def test_station_mistakes_are_named(tmp_path: Path, change: tuple[str, str], where: str, what: str) -> None:
    found = problems(tmp_path, BASE.replace(*change))
    assert any(where in p and what in p for p in found), found
    assert not any("s3cret-pw" in p for p in found)


def test_an_mqtt_hj212_subscription_needs_a_station_table(tmp_path: Path) -> None:
    text = """\
sites: [{id: s}]
devices:
  - {id: dtu, kind: mqtt, host: 127.0.0.1, subscriptions: [{topic: "dtu/+/hj212", format: hj212}]}
"""
    assert any("devices[0].stations" in p and "format: hj212" in p for p in problems(tmp_path, text))
    loaded = load(
        tmp_path, text.replace("format: hj212}]", 'format: hj212}],\n     stations: [{mn: "1", pw: "pw1", site: s}]')
    )
    assert loaded is not None


def test_platform_controls_name_modbus_devices_and_remote_control_commands_only(tmp_path: Path) -> None:
    text = (
        BASE
        + """\
hj212:
  - {name: city, host: 127.0.0.1, port: 1, point: outlet, mn: "1", pw: "pw1",
     equipment: [{id: SB1, device: dau-out, quantity: pump}],
     controls: {"3012": {device: dau, address: 30, value: 1}, "1012": {device: dau, address: 1, value: 1}}}
"""
    )
    found = problems(tmp_path, text)
    assert any("hj212[0].controls" in p and "3011-3021" in p and "1012" in p for p in found), found
    found = problems(tmp_path, text.replace(', "1012": {device: dau, address: 1, value: 1}', ""))
    assert any("hj212[0].controls.3012.device" in p and "modbus device" in p for p in found), found


def test_the_relay_example_validates_against_the_schema_and_the_loader() -> None:
    root = Path(__file__).resolve().parents[1]
    example = root / "config" / "examples" / "dau-relay.yaml"
    schema = json.loads((root / "config" / "schema" / "telemetry.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(example.read_text()))
    dep = app.load(str(example), {"DAU_PW": "d1", "CITY_PW": "c1", "PROVINCE_PW": "p1"})
    assert [p.name for p in dep.config.hj212] == ["city", "province"]
    assert [w.minutes for d in dep.devices for w in d.own_windows()] == ["10m"]


def test_a_listener_on_loopback_is_not_warned_about_clear_text(tmp_path: Path) -> None:
    """One loopback test for the MQTT broker and the listener: 127.0.0.0/8 and [::1] too."""
    for listen, warned in (("0.0.0.0:9212", True), ("127.0.0.2:9212", False), ("[::1]:9212", False)):
        dep = load(tmp_path, BASE.replace('"0.0.0.0:9212"', f'"{listen}"'))
        assert any("clear text" in w for w in dep.devices[0].warnings()) is warned, listen  # type: ignore[attr-defined]
    assert host_port("[::1]:9212") == ("::1", 9212)
    assert [loopback(h) for h in ("localhost", "127.9.9.9", "::1", "10.0.0.1", "broker")] == [True] * 3 + [False] * 2
