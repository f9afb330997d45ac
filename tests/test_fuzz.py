"""Inputs from people and devices the daemon does not control: no crash, an explained rejection,
and what is accepted survives the trip."""

from __future__ import annotations

import re
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import DRIVERS
from telemetry import config
from telemetry.errors import ConfigError
from telemetry.lineproto import reading_line
from telemetry.model import InvalidReading, Reading
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
