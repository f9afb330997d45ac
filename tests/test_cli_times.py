"""`rules test` and `alerts list` print times in the site's zone, not the host's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from alerts.config import Notify
from alerts.lifecycle import AlertManager
from telemetry.cli import main
from telemetry.model import AlertEvent, AlertState
from telemetry.outbox import Outbox

NS = 1_000_000_000
CONFIG = """
sites: [{{id: berlin, timezone: Europe/Berlin}}, {{id: urumqi, timezone: Asia/Urumqi}}]
rules: [{{kind: limit, name: cod_now, quantity: cod, above: 100}}]
outbox: {{path: "{outbox}"}}
"""


@pytest.fixture
def host_in_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The host's zone is UTC, as on most servers and containers."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_rules_test_prints_each_event_in_its_sites_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host_in_utc: None
) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(CONFIG.format(outbox=tmp_path / "outbox.sqlite"))
    csv = tmp_path / "day.csv"
    csv.write_text(
        "ts,site,device,quantity,value\n"
        "2026-11-25T08:00:00Z,berlin,an,cod,130\n"
        "2026-11-25T08:00:00Z,urumqi,an,cod,130\n"
    )
    assert main(["rules", "test", "-c", str(config), "--input", str(csv)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in out[:2]] == [
        ["2026-11-25T09:00:00+01:00", "firing", "cod_now"],
        ["2026-11-25T14:00:00+06:00", "firing", "cod_now"],
    ]


def test_alerts_list_prints_when_an_alert_started_in_its_sites_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host_in_utc: None
) -> None:
    path = tmp_path / "outbox.sqlite"
    config = tmp_path / "site.yaml"
    config.write_text(CONFIG.format(outbox=path))
    manager = AlertManager(Notify())
    start = 1_795_593_600 * NS  # 2026-11-25 08:00 UTC
    labels = {"device": "an", "quantity": "cod", "unit": "mg/L"}
    manager.ingest([AlertEvent(start, "urumqi", "cod_now", "critical", AlertState.FIRING, "m", 130, 100, labels)])
    outbox = Outbox(str(path))
    try:
        outbox.save_state("alerts", orjson.dumps(manager.snapshot()))
    finally:
        outbox.close()
    assert main(["alerts", "list", "-c", str(config)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.split()[2] == "2026-11-25T14:00:00+06:00"
