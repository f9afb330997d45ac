"""No secret leaves the daemon: a run with known secrets, with errors on every path that
handles one, and everything it emitted (logs, /metrics, /alerts, the CLI) grepped for them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from telemetry.sim.notifications import NotificationReceiver
from tests import services
from tests.services import Victoria, eventually, free_port

pytestmark = pytest.mark.service
ROOT = Path(__file__).resolve().parents[1]
SECRETS = {
    "MQTT_PW": "mqtt-Secret-1a",
    "MQTT_WRONG_PW": "mqtt-Wrong-Secret-6f",
    "INFLUX_TOKEN": "influx-Secret-2b",
    "HJ212_PW": "hjSecret3c",
    "ACK_TOKEN": "ack-Secret-4d",
    "HOOK": "hook-Secret-5e",
}


def config(tmp: Path, broker: services.Mosquitto, victoria: Victoria, hook: int, hj212: int, metrics: int) -> Path:
    path = tmp / "site.yaml"
    path.write_text(
        f"""
sites: [{{id: plant}}]
devices:
  - {{id: broker, kind: mqtt, host: {broker.host}, port: {broker.port}, username: plant, password: "${{MQTT_PW}}",
     subscriptions: [{{topic: "plant/{{site}}/{{device}}/{{quantity}}", devices: ["*"]}}]}}
  - {{id: refused, kind: mqtt, host: {broker.host}, port: {broker.port}, username: plant,
     password: "${{MQTT_WRONG_PW}}", subscriptions: [{{topic: "other/{{site}}/{{device}}/{{quantity}}", devices: ["*"]}}]}}
influxdb:
  - {{name: vm, api: v2, url: "{victoria.url}", bucket: plant, org: plant, token: "${{INFLUX_TOKEN}}"}}
  - {{name: gone, api: v2, url: "http://127.0.0.1:{free_port()}", bucket: plant, token: "${{INFLUX_TOKEN}}"}}
rules:
  - {{kind: limit, name: cod_limit, quantity: cod, above: 100}}
notify:
  routes:
    - {{name: ops, urls: ["json://127.0.0.1:{hook}/${{HOOK}}"], group_wait: 0s}}
hj212:
  - {{name: city, host: 127.0.0.1, port: {hj212}, site: plant, mn: "010000A8900016F000169DC0", pw: "${{HJ212_PW}}",
     rtd_interval: 1s}}
metrics: {{listen: "127.0.0.1:{metrics}", ack_token: "${{ACK_TOKEN}}"}}
outbox: {{path: "{tmp}/outbox.sqlite"}}
log_level: DEBUG
"""
    )
    return path


def cli(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "telemetry.cli", *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout + result.stderr


def get(url: str, token: str = "") -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return str(resp.read().decode())


def test_nothing_the_daemon_emits_holds_a_secret(tmp_path: Path, victoria: Victoria) -> None:
    env = {**os.environ, **SECRETS}
    hook = NotificationReceiver(status=500).start()  # every notification fails: the error path is logged
    hj212_port, metrics_port = free_port(), free_port()
    platform = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "telemetry.cli",
            "hj212",
            "receiver",
            "--listen",
            "127.0.0.1",
            "--port",
            str(hj212_port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    with services.mosquitto(tmp_path, user=("plant", SECRETS["MQTT_PW"])) as broker:
        cfg = config(tmp_path, broker, victoria, hook.port, hj212_port, metrics_port)
        log = tmp_path / "daemon.log"
        with log.open("wb") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "telemetry.cli", "run", "-c", str(cfg)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=out,
            )
        emitted = []
        try:
            eventually(lambda: "subscribed to" in log.read_text(), 30, "the daemon to subscribe")
            publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id="pub")
            publisher.username_pw_set("plant", SECRETS["MQTT_PW"])
            publisher.connect(broker.host, broker.port)
            publisher.loop_start()
            publisher.publish("plant/plant/an/cod", json.dumps({"value": 150.0}), qos=1).wait_for_publish(10)
            publisher.loop_stop()
            publisher.disconnect()
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

            def failed_everywhere() -> bool:
                text = get(metrics_url)
                return all(
                    needle in text
                    for needle in (
                        'telemetry_notifications_total{result="failed",route="ops"}',
                        'telemetry_sink_write_errors_total{error_type="network",sink="gone"}',
                        'telemetry_hj212_packets_total{cn="2011",platform="city",result="sent"}',
                    )
                ) and "not authorised" in log.read_text().lower().replace("authorized", "authorised")

            eventually(failed_everywhere, 60, "a failed notification, sink write, refused login and an HJ 212 packet")
            emitted.append(get(metrics_url))
            emitted.append(get(f"http://127.0.0.1:{metrics_port}/alerts"))
            emitted.append(cli("check", "-c", str(cfg), env=env))
            emitted.append(cli("alerts", "list", "-c", str(cfg), env=env))
            emitted.append(cli("outbox", "status", "-c", str(cfg), env=env))
            broken = tmp_path / "broken.yaml"
            broken.write_text(cfg.read_text().replace("rtd_interval: 1s", "rtd_interval: soon"))
            emitted.append(cli("check", "-c", str(broken), env=env))
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
            platform.terminate()
            received, _ = platform.communicate(timeout=10)
            hook.stop()
        emitted.append(log.read_text())
    # The platform did get the PW (the protocol carries it): the grep below is not vacuous.
    assert f"PW={SECRETS['HJ212_PW']}".encode() in received
    assert "rtd_interval" in emitted[-2]  # the broken config's error was printed
    everything = "\n".join(emitted)
    leaked = {name: value for name, value in SECRETS.items() if value in everything}
    assert leaked == {}, f"secrets in the daemon's output: {sorted(leaked)}"
