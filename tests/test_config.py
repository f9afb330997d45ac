"""Config loading: every mistake named by file, line and dotted path; secrets never echoed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from alerts.rule_config import LimitRule
from telemetry import app
from telemetry.config import parse_duration
from telemetry.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

VALID = """\
sites:
  - id: s1
devices:
  - id: analyzer
    kind: modbus
    site: s1
    host: 127.0.0.1
    port: 502
    interval: 5s
    timeout: 1s
    points:
      - {quantity: cod, address: 0}
influxdb:
  - name: local
    api: v1
    url: http://127.0.0.1:8086
    database: plant
rules:
  - {kind: limit, name: cod,
     quantity: cod,
     above: 100}
"""


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        app.load(str(path), env or {})
    return info.value.problems


def test_valid_config_loads_with_typed_values(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(VALID)
    dep = app.load(str(path), {})
    device = dep.devices[0]
    assert device.kind == "modbus"
    assert device.interval == 5.0  # type: ignore[attr-defined]
    assert dep.config.influxdb[0].api == "v1"
    rule = dep.config.rules[0]
    assert isinstance(rule, LimitRule)
    assert rule.above == 100


def test_unknown_key_names_file_line_path_and_the_legal_keys(tmp_path: Path) -> None:
    text = VALID.replace("    port: 502\n", "    port: 502\n    colour: red\n")
    [problem] = problems(tmp_path, text)  # nothing like it: every key it could have been
    assert problem.startswith(f"{tmp_path / 'site.yaml'}:9: devices[0].colour: unknown key; expected one of:")
    assert "interval" in problem
    assert "unit_id" in problem


def test_a_misspelt_key_gets_did_you_mean_instead_of_every_key(tmp_path: Path) -> None:
    """It used to list all 23 keys of a Modbus device."""
    found = problems(tmp_path, VALID.replace("interval: 5s", "intervall: 5s").replace("kind: limit", "kind: limt"))
    file = tmp_path / "site.yaml"
    assert found == [
        f"{file}:9: devices[0].intervall: unknown key; did you mean 'interval'?",
        f"{file}:19: rules[0].kind: expected one of 'limit', 'standard', 'capacity', 'stock', 'nodata', 'flatline',"
        " 'rate', 'maintenance_too_long', 'furnace_temperature', found 'limt' (did you mean 'limit'?)",
    ]


def test_wrong_type_says_expected_and_found(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, VALID.replace("port: 502", "port: five"))
    assert ":8: devices[0].port: expected a valid integer" in problem
    assert "found 'five'" in problem


def test_missing_required_key_points_at_its_section(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, VALID.replace("    database: plant\n", ""))
    assert ":14: influxdb[0].database: required key is missing" in problem


def test_bad_enum_lists_the_choices(tmp_path: Path) -> None:
    [problem] = problems(
        tmp_path, VALID.replace("{quantity: cod, address: 0}", "{quantity: cod, address: 0, type: float}")
    )
    assert ":12: devices[0].points[0].type: expected one of 'int16', 'uint16', 'int32', 'uint32', 'int64'" in problem
    assert "'float64' or 'bool'" in problem
    assert "found 'float'" in problem


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    text = VALID.replace("port: 502", "port: five").replace("above: 100", "above: lots").replace("api: v1", "api: v9")
    found = problems(tmp_path, text)
    assert len(found) == 3
    assert [p.split(":")[1] for p in found] == sorted((p.split(":")[1] for p in found), key=int)
    assert any("influxdb[0].api: expected one of 'v2', 'v1', found 'v9'" in p for p in found)


def test_cross_checks_unknown_site_and_duplicate_id(tmp_path: Path) -> None:
    text = VALID + "  - kind: limit\n    name: cod\n    quantity: cod\n    site: nowhere\n    above: 1\n"
    found = problems(tmp_path, text)
    assert any(":23: rules[1].name: expected a unique name, found 'cod' again" in p for p in found)
    assert any(":25: rules[1].site: expected a site from 'sites' (s1), found 'nowhere'" in p for p in found)


def test_timeout_must_be_shorter_than_interval(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, VALID.replace("timeout: 1s", "timeout: 10s"))
    assert ":10: devices[0].timeout: expected timeout x (retries + 1) = 20.0s shorter than interval (5.0s)" in problem


def test_environment_expansion_and_default(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(VALID.replace("port: 502", "port: ${MB_PORT:-1502}").replace("database: plant", "database: ${DB}"))
    dep = app.load(str(path), {"DB": "plant_a"})
    assert dep.devices[0].port == 1502  # type: ignore[attr-defined]
    assert dep.config.influxdb[0].database == "plant_a"  # type: ignore[union-attr]
    dep = app.load(str(path), {"DB": "b", "MB_PORT": "2502"})
    assert dep.devices[0].port == 2502  # type: ignore[attr-defined]


def test_unset_variable_without_default_is_an_error(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, VALID.replace("database: plant", "database: ${DB}"))
    assert ":17: influxdb[0].database: environment variable DB is not set" in problem


def test_an_unset_variable_is_one_problem(tmp_path: Path) -> None:
    """It was two: "not set", then the empty value "found a value taken from the environment"."""
    found = problems(tmp_path, VALID.replace("port: 502", "port: ${MB_PORT}").replace("url: http://", "url: ${URL}"))
    file = tmp_path / "site.yaml"
    assert found == [
        f"{file}:8: devices[0].port: environment variable MB_PORT is not set and ${{MB_PORT}} has no ':-default'",
        f"{file}:16: influxdb[0].url: environment variable URL is not set and ${{URL}} has no ':-default'",
    ]


def test_secrets_from_environment_never_appear_in_errors(tmp_path: Path) -> None:
    text = VALID.replace("port: 502", "port: ${SECRET_PORT}")
    [problem] = problems(tmp_path, text, {"SECRET_PORT": "hunter2-token"})
    assert "hunter2" not in problem
    assert "found a value taken from the environment" in problem


def test_password_field_value_is_not_echoed(tmp_path: Path) -> None:
    text = VALID.replace("database: plant", "database: plant\n    password: [hunter2]")
    [problem] = problems(tmp_path, text)
    assert "hunter2" not in problem
    assert "influxdb[0].password" in problem


def test_duplicate_yaml_key_and_syntax_error(tmp_path: Path) -> None:
    [dup] = problems(tmp_path, VALID.replace("port: 502", "port: 502\n    port: 503"))
    assert ":9: devices[0].port: duplicate key (first at line 8)" in dup
    [syntax] = problems(tmp_path, "sites: [\n")
    assert "site.yaml:2: (syntax):" in syntax


def test_unreadable_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        app.load("/nonexistent/site.yaml", {})


@pytest.mark.parametrize(
    ("text", "seconds"), [("10s", 10), ("500ms", 0.5), ("2m", 120), ("1h30m", 5400), ("1d", 86400), (3, 3)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10 minutes", "", "-1s", "s", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_check_command_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "telemetry.cli", "check", "-c", str(ROOT / "config/demo.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "devices (6):" in ok.stdout
    assert "haizhou-dau          hj212   site (from stations): hj212 listener" in ok.stdout
    assert "cod_limit" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("port: 502", "port: [1]"))
    res = subprocess.run(
        [sys.executable, "-m", "telemetry.cli", "check", "-c", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 2
    assert f"{bad}:8: devices[0].port: expected a valid integer" in res.stderr
    assert "Traceback" not in res.stderr


def test_yaml_that_pyyaml_cannot_construct_is_a_clear_error(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, "=")  # found by tests/test_fuzz.py: it used to escape as a traceback
    assert problem.startswith(f"{tmp_path / 'site.yaml'}:1: (syntax):")


MQTT = VALID.replace(
    "influxdb:",
    """  - id: broker
    kind: mqtt
    host: HOST
    subscriptions: [{topic: "plant/{site}/{device}/{quantity}", devices: ["*"]}]EXTRA
influxdb:""",
)


@pytest.mark.parametrize(
    ("host", "extra", "expected"),
    [
        ("192.0.2.7", "", ":13: devices[1]: expected a tls section for a broker off this machine, or insecure: true"),
        ("broker.example", "\n    tls: {verify: false}", ":13: devices[1]: expected insecure: true with tls.verify"),
        ("192.0.2.7", "\n    insecure: true", None),
        ("192.0.2.7", "\n    tls: {ca_file: /etc/ssl/ca.pem}", None),
        ("127.0.0.1", "", None),
        ("localhost", "", None),
        ("::1", "", None),
    ],
)
def test_plain_or_unverified_mqtt_off_this_machine_needs_insecure_true(
    tmp_path: Path, host: str, extra: str, expected: str | None
) -> None:
    text = MQTT.replace("HOST", host).replace("EXTRA", extra)
    if expected is None:
        (tmp_path / "site.yaml").write_text(text)
        app.load(str(tmp_path / "site.yaml"), {})  # no ConfigError
    else:
        [problem] = problems(tmp_path, text)
        assert expected in problem


@pytest.mark.parametrize(
    ("subscription", "expected"),
    [
        ('{topic: "plant/{site}/{device}/{quantity}"}', "expected devices: the names or patterns"),
        ('{topic: "plant/outlet/{device", site: s1, devices: [a]}', "expected a whole topic level"),
        ('{topic: "plant/{site}/{station}", devices: [a]}', "found '{station}'"),
    ],
)
def test_topic_levels_and_the_devices_they_may_name_are_checked(
    tmp_path: Path, subscription: str, expected: str
) -> None:
    text = MQTT.replace("HOST", "127.0.0.1").replace("EXTRA", "")
    text = text.replace('[{topic: "plant/{site}/{device}/{quantity}", devices: ["*"]}]', f"[{subscription}]")
    [problem] = problems(tmp_path, text)
    assert ":16: devices[1].subscriptions[0]" in problem
    assert expected in problem


def test_share_group_cannot_change_the_subscribed_topic(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, MQTT.replace("HOST", "127.0.0.1").replace("EXTRA", "\n    share_group: a/#"))
    assert "devices[1].share_group" in problem


def test_secrets_written_in_the_config_or_readable_by_everyone_are_warned_of(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.pw"
    secret.write_text("hunter2\n")
    secret.chmod(0o644)
    text = (
        MQTT.replace("HOST", "127.0.0.1").replace("EXTRA", f"\n    username: plant\n    password_file: {secret}")
        + "metrics: {ack_token: literal-token}\nnotify:\n  routes: [{name: ops, urls: ['${ALERT_URL}']}]\n"
    )
    path = tmp_path / "site.yaml"
    path.write_text(text)
    path.chmod(0o644)
    warnings = app.load(str(path), {"ALERT_URL": "dingtalk://secret-token"}).warnings
    assert warnings == [
        f"{path}:18: devices[1].password_file: {secret} is readable by every user on this machine (mode 644); "
        "chmod o-r it",
        f"{path}:28: metrics.ack_token: a secret written into the config file; take it from the environment "
        "(${VAR}) or a file readable only by the daemon",
        f"{path} (holds secrets): {path} is readable by every user on this machine (mode 644); chmod o-r it",
    ]
    assert not any("literal-token" in w or "hunter2" in w or "secret-token" in w for w in warnings)
    secret.chmod(0o600)
    path.write_text(text.replace("literal-token", "'${ACK_TOKEN}'"))
    assert app.load(str(path), {"ALERT_URL": "x://y", "ACK_TOKEN": "t"}).warnings == []


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("mn", "'0100;CN=9014'", "hj212[0].mn"),
        ("pw", "'12&&CN=2011'", "hj212[0].pw"),
        ("st", "'3;'", "hj212[0].st"),
        ("codes", "{cod: 'w01018;x-Rtd=1'}", "hj212[0].codes.cod"),
    ],
)
def test_hj212_fields_that_reach_a_frame_cannot_carry_separators(
    tmp_path: Path, field: str, value: str, where: str
) -> None:
    platform = {"mn": "'010000A8900016F000169DC0'", "pw": "'123456'", "st": "'32'", "codes": "{}"} | {field: value}
    text = VALID + (
        "hj212:\n  - {name: city, host: 127.0.0.1, port: 9212, site: s1, "
        + ", ".join(f"{k}: {v}" for k, v in platform.items())
        + "}\n"
    )
    [problem] = problems(tmp_path, text)
    assert f": {where}: " in problem
    assert "&&CN" not in problem  # a PW is never echoed, even a bad one


def test_rule_messages_are_checked_against_the_fields_their_kind_offers(tmp_path: Path) -> None:
    """A typo in a ``message`` used to pass ``check`` and take the committer down with the first alert."""
    rules = """\
  - {kind: limit, name: typo, quantity: cod, above: 100, message: "{site}: {quantity} {valu} {unit}"}
  - {kind: limit, name: spec, quantity: cod, above: 100, message: "{value:d} over {limit}"}
  - {kind: limit, name: brace, quantity: cod, above: 100, message: "{value} at {site} }"}
  - {kind: limit, name: kind, quantity: cod, above: 100, message: "{condition}"}
  - {kind: capacity, name: tons, quantity: t, design: 750, message: "{condition}: {value:.0f} {unit} ({state})"}
  - {kind: limit, name: fine, quantity: cod, above: 100, message: "{quantity:>6} {value:.1f} {{ok}} {limit:g}"}
"""
    found = problems(
        tmp_path, VALID.replace("  - {kind: limit, name: cod,\n     quantity: cod,\n     above: 100}\n", rules)
    )
    file = tmp_path / "site.yaml"
    offers = "({site}, {device}, {quantity}, {unit}, {value}, {limit}, {state})"
    assert found == [
        f"{file}:19: rules[0].message: expected only the fields a limit rule offers {offers}, found {{valu}}",
        f"{file}:20: rules[1].message: expected a format spec that fits {{value}} (a number),"
        " found '{value:d}': Unknown format code 'd' for object of type 'float'",
        f"{file}:21: rules[2].message: expected a format string ({{{{ and }}}} for a literal brace),"
        " found '{value} at {site} }': Single '}' encountered in format string",
        f"{file}:22: rules[3].message: expected only the fields a limit rule offers {offers}, found {{condition}}",
    ]  # a capacity rule offers {condition} too; the last one is fine


def test_check_refuses_a_message_typo(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("above: 100}", 'above: 100, message: "{site} COD {valu}"}'))
    res = subprocess.run(
        [sys.executable, "-m", "telemetry.cli", "check", "-c", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 2
    assert f"{bad}:21: rules[0].message: expected only the fields a limit rule offers" in res.stderr
    assert "found {valu}" in res.stderr


def test_an_alias_bomb_and_an_oversized_file_are_refused_with_one_line(tmp_path: Path) -> None:
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for name, prev in zip("bcdefghi", "abcdefgh", strict=True):
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\nsites: [{id: s}]\n")  # 9^9 values from a few hundred bytes
    with pytest.raises(ConfigError) as err:
        app.load(str(bomb), {})
    assert err.value.problems == [
        f"{bomb}:1: (size): expected a configuration of at most 200,000 values, found more"
        " (YAML aliases repeating a collection?): refused"
    ]
    big = tmp_path / "big.yaml"
    big.write_text("sites: [{id: s}]\n" + "# padding\n" * 500_000)
    with pytest.raises(ConfigError) as err:
        app.load(str(big), {})
    assert err.value.problems == [
        f"{big}:1: (size): expected a configuration of at most 4,194,304 characters, found more"
    ]
