"""The committed JSON Schema is current and describes real configs; `check` warns of likely mistakes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from telemetry import app
from telemetry.cli import likely_mistakes, main

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema" / "telemetry.schema.json"
EXAMPLE = ROOT / "config" / "examples" / "leachate-station.yaml"
ENV = {"DINGTALK_URL": "dingtalk://t", "SUPERVISOR_MAIL": "mailto://a", "MANAGER_MAIL": "mailto://b", "HJ212_PW": "1"}


def test_committed_schema_is_current() -> None:
    assert json.loads(SCHEMA.read_text()) == json.loads(json.dumps(app.schema())), (
        "config/schema/telemetry.schema.json is stale: run `telemetry schema > config/schema/telemetry.schema.json`"
    )


def test_example_validates_against_the_schema_and_the_loader() -> None:
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(yaml.safe_load(EXAMPLE.read_text()))
    dep = app.load(str(EXAMPLE), ENV)
    assert [d.id for d in dep.devices] == ["cod-analyzer", "nh3n-analyzer", "flowmeter"]


def test_schema_catches_what_an_editor_should_underline() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["devices"][0]["baudrate"] = 1234
    data["outbox"]["when_full"] = "panic"
    errors = list(jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).iter_errors(data))
    assert {tuple(e.absolute_path)[:2] for e in errors} >= {("devices", 0), ("outbox", "when_full")}


def test_check_warns_of_rules_nobody_feeds_and_devices_nobody_watches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(
        """
sites: [{id: s}]
devices:
  - {id: an, kind: modbus, site: s, host: h, timeout: 1s, points: [{quantity: cod, address: 0}]}
  - {id: fm, kind: modbus, site: s, host: h, unit_id: 2, timeout: 1s, points: [{quantity: flow, address: 0}]}
  - {id: b, kind: mqtt, host: localhost, subscriptions: [{topic: x/cod, site: s, device: an, quantity: cod}]}
rules:
  - {kind: limit, name: cod, site: s, quantity: cod, above: 100}
  - {kind: limit, name: tp, site: s, quantity: tp, above: 3}
"""
    )
    dep = app.load(str(config), {})
    assert likely_mistakes(dep) == [
        "rule tp: no device produces 'tp' at s",
        "series s/an/cod is written by 2 sources (an, b)",
        "device fm: no rule watches its flow",
    ]
    assert main(["check", "-c", str(config)]) == 0
    assert "warnings (3):" in capsys.readouterr().out


def test_json_log_format_keeps_secrets_out(tmp_path: Path) -> None:
    import logging  # noqa: PLC0415

    from telemetry.cli import _JsonFormatter  # noqa: PLC0415

    record = logging.LogRecord("drivers.mqtt", logging.ERROR, __file__, 1, "mqtt %s: %s", ("broker", "refused"), None)
    line = json.loads(_JsonFormatter().format(record))
    assert (line["level"], line["logger"], line["message"]) == ("ERROR", "drivers.mqtt", "mqtt broker: refused")


def test_prometheus_rules_use_metrics_the_daemon_exports() -> None:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from telemetry.metrics import Metrics  # noqa: PLC0415

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.watch_outbox(lambda: {"influx:x": 0}, lambda: {"influx:x": 0.0})
    families = list(registry.collect())
    exported = {f.name for f in families} | {f"{f.name}_total" for f in families if f.type == "counter"} | {"up"}
    rules = yaml.safe_load((ROOT / "config" / "prometheus" / "telemetry-alerts.yaml").read_text())
    for rule in rules["groups"][0]["rules"]:
        for name in re.findall(r"\b(telemetry_[a-z_]+|up)\b", rule["expr"]):
            assert name in exported, f"{rule['alert']}: {name} is not a metric of the daemon"


def test_dockerfile_and_systemd_unit_refer_to_what_exists() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, flags=re.MULTILINE):
        for name in copied.split():
            assert (ROOT / name).exists(), name
    unit = (ROOT / "config" / "systemd" / "telemetry.service").read_text()
    assert "ExecStart=/opt/telemetry/bin/telemetry run -c /etc/telemetry/telemetry.yaml" in unit
    assert "NoNewPrivileges=yes" in unit
    assert "ProtectSystem=strict" in unit


def test_compose_stack_refers_to_what_exists() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"mosquitto", "influxdb", "prometheus", "grafana", "telemetry", "victoriametrics"}
    # Without deduplication VictoriaMetrics keeps both copies of a re-sent batch (README).
    assert "-dedup.minScrapeInterval=1ms" in services["victoriametrics"]["command"]
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
    grafana = services["grafana"]["volumes"]
    provider = yaml.safe_load((ROOT / "config/grafana/provisioning/dashboards/plant.yaml").read_text())
    mounted = {v.split(":")[1] for v in grafana}
    assert provider["providers"][0]["options"]["path"] in mounted  # the provider reads where the dashboards are
    assert services["telemetry"]["command"][-1] == "/opt/telemetry/config/demo.yaml"
    # Prometheus scrapes the daemon where it listens, and loads the rules from where they are mounted.
    scrape = yaml.safe_load((ROOT / "config/prometheus/prometheus.yml").read_text())
    [job] = scrape["scrape_configs"]
    assert job["job_name"] == "telemetry"  # what TelemetryDown matches
    port = services["telemetry"]["environment"]["METRICS_LISTEN"].rpartition(":")[2]
    assert job["static_configs"][0]["targets"] == [f"telemetry:{port}"]
    mounted = {v.split(":")[1] for v in services["prometheus"]["volumes"]}
    assert set(scrape["rule_files"]) <= mounted
    assert services["grafana"]["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"
    assert "COPY config /opt/telemetry/config" in (ROOT / "Dockerfile").read_text()


def test_check_names_every_wiring_mistake_of_a_first_day(capsys: pytest.CaptureFixture[str]) -> None:
    case = ROOT / "tests" / "cases" / "wiring-mistakes.yaml"
    assert main(["check", "-c", str(case)]) == 0  # warnings: the daemon would run
    out = capsys.readouterr().out
    warnings = out[out.index("warnings (") :].splitlines()[1:]
    assert len(warnings) == 5, warnings
    expected = [
        "rules[1]: no route sends rule nh3n_silent (info)",
        "device cod-an: points[0] (cod) address 40001 looks like a Modicon register number",
        "Did you mean addressing: modicon?",
        "device nh3n-an: status[0] and points[0] (nh3n) read the same holding register(s) 0",
        "bus /dev/ttyUSB0: 2 devices take up to 2s a round when none answers",
        "cod-an every 1.5s, nh3n-an every 1.5s",
        "rule nh3n_silent: quiet while an analyzer reports maintenance or calibration, and no maintenance_too_long",
    ]
    for text in expected:
        assert any(text in w for w in warnings), text
    # json://127.0.0.1:18080/alerts carries no credentials: nothing to warn of
    assert "secret" not in out


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("json://127.0.0.1:18080/alerts", False),
        ("mailto://ops.example.com?to=a@example.com", False),
        ("dingtalk://0123456789abcdef", True),
        ("mailto://user:hunter2@smtp.example.com", True),
        ("json://hooks.example.com/alert?token=abc", True),
        ("jsons://hooks.example.com/services/T00000000B00000000XXXXXXXX", True),
    ],
)
def test_a_notification_url_is_a_secret_only_when_it_carries_one(tmp_path: Path, url: str, secret: bool) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(f'sites: [{{id: s}}]\nnotify: {{routes: [{{name: ops, urls: ["{url}"]}}]}}\n')
    path.chmod(0o644)
    warnings = app.load(str(path), {}).warnings
    assert any("a secret written into the config file" in w for w in warnings) is secret
    assert any("readable by every user" in w for w in warnings) is secret


@pytest.mark.parametrize("example", sorted((ROOT / "config" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_example_passes_check_without_warnings(example: Path) -> None:
    as_json = json.loads(json.dumps(yaml.safe_load(example.read_text())))  # keys as an editor sees them: text
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(as_json)
    env = ENV | {"CITY_PW": "2", "PROVINCE_PW": "3", "DAU_PW": "4", "TELEMETRY_ACK_TOKEN": "t"}
    dep = app.load(str(example), env)
    assert dep.warnings == []
    notes = [n for n in likely_mistakes(dep) if "bus " in n or "Modicon" in n or "same" in n or "no route" in n]
    assert notes == []
