"""`telemetry check` refuses names one section gives another that do not exist, times that do
not fit together, and reports every problem of a file in one run (issue 17, item 6)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alerts.lifecycle import AlertManager
from telemetry import app
from telemetry.config import Deployment
from telemetry.errors import ConfigError
from telemetry.times import parse_timestamp

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
sites:
  - {id: s1}
devices:
  - {id: an, kind: modbus, site: s1, host: 127.0.0.1, points: [{quantity: cod, address: 0}]}
"""  # lines 1-4: what follows starts at line 5


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    """The problems of a config, with the file name left out of each line."""
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        app.load(str(path), env or {})
    return [p.removeprefix(str(path)) for p in info.value.problems]


def load(tmp_path: Path, text: str) -> Deployment:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return app.load(str(path), {})


def warnings(tmp_path: Path, text: str) -> list[str]:
    return [w.removeprefix(str(tmp_path / "site.yaml")) for w in load(tmp_path, text).warnings]


HJ212 = "  - {name: city, host: 127.0.0.1, port: 9212, mn: '010000A8900016F000169DC0', pw: '1'WHERE}\n"


def test_a_platform_for_a_site_that_is_not_configured_is_refused(tmp_path: Path) -> None:
    """It used to be uploaded as the site's inferred point: a typo uploaded nothing, silently."""
    text = BASE + "hj212:\n" + HJ212.replace("WHERE", ", site: chenxing")
    assert problems(tmp_path, text) == [
        ":6: hj212[0].site: expected a site from 'sites' (s1), found 'chenxing': add it to 'sites'"
    ]
    typo = BASE.replace("{id: s1}", "{id: diaoyushan}").replace("site: s1", "site: diaoyushan")
    assert problems(tmp_path, typo + "hj212:\n" + HJ212.replace("WHERE", ", site: diaoyushn")) == [
        ":6: hj212[0].site: expected a site from 'sites' (diaoyushan), found 'diaoyushn' (did you mean 'diaoyushan'?)"
    ]


ROUTES = """\
notify:
  routes:
    - {name: supervisors, urls: ["json://127.0.0.1:1/"], EXTRA}
    - {name: managers, urls: ["json://127.0.0.1:2/"]}
"""


def test_escalate_to_must_name_a_route_and_come_with_escalate_after(tmp_path: Path) -> None:
    def route(extra: str) -> list[str]:
        return problems(tmp_path, BASE + ROUTES.replace("EXTRA", extra))

    assert route("escalate_after: 1h, escalate_to: manager") == [
        ":7: notify.routes[0].escalate_to: expected the name of a route (managers, supervisors), found 'manager'"
        " (did you mean 'managers'?)"
    ]
    assert route("escalate_to: managers") == [
        ":7: notify.routes[0].escalate_to: expected escalate_after beside it (how long an alert fires"
        " unacknowledged before it is escalated), found none"
    ]
    assert route("escalate_after: 1h") == [
        ":7: notify.routes[0].escalate_after: expected escalate_to beside it (the route to escalate to), found none"
    ]


STANDARD = """\
rules:
  - {kind: standard, name: gb16889, site: s1, tables: [gb16889-2008-table2], windows: [1h]}
  - {kind: nodata, name: comm_lost, site: s1, device: an, for: 10m}
"""


def test_a_route_filter_that_matches_no_rule_once_standards_are_expanded_is_refused(tmp_path: Path) -> None:
    """`rules: [gb]` when the limits are gb16889_cod_1h ...: critical exceedances reached nobody."""
    found = problems(tmp_path, BASE + STANDARD + ROUTES.replace("EXTRA", "rules: [gb, comm_lots]"))
    assert found == [
        ":10: notify.routes[0].rules[0]: expected the name of a rule, or of a standard for all of its limits,"
        " found 'gb', which matches no rule (comm_lost, gb16889, outbox_full)",
        ":10: notify.routes[0].rules[1]: expected the name of a rule, or of a standard for all of its limits,"
        " found 'comm_lots', which matches no rule (did you mean 'comm_lost'?)",
    ]


def test_a_route_filter_naming_a_standard_routes_every_limit_it_expands_into(tmp_path: Path) -> None:
    dep = load(tmp_path, BASE + STANDARD + ROUTES.replace("EXTRA", "rules: [gb16889, outbox_full, comm_lost]"))
    assert dep.config.notify.routes[0].rules == [
        "gb16889_bod5_1h",
        "gb16889_cod_1h",
        "gb16889_nh3n_1h",
        "gb16889_ss_1h",
        "gb16889_tn_1h",
        "gb16889_tp_1h",
        "outbox_full",  # the daemon's own alert
        "comm_lost",
    ]


def test_a_rule_device_that_no_configured_device_produces_is_refused(tmp_path: Path) -> None:
    rule = "rules:\n  - {kind: nodata, name: comm_lost, site: s1, device: cod-analyser, for: 10m}\n"
    text = BASE.replace("id: an,", "id: cod-analyzer,") + rule
    assert problems(tmp_path, text) == [
        ":6: rules[0].device: expected a device that reads at site s1 (cod-analyzer), found 'cod-analyser'"
        " (did you mean 'cod-analyzer'?)"
    ]
    elsewhere = BASE + "  - {id: fm, kind: modbus, site: s2, host: h, points: [{quantity: flow, address: 0}]}\n"
    elsewhere = elsewhere.replace("  - {id: s1}\n", "  - {id: s1}\n  - {id: s2}\n")
    assert problems(tmp_path, elsewhere + "rules:\n  - {kind: nodata, name: x, site: s1, device: fm, for: 1m}\n") == [
        ":8: rules[0].device: expected a device that reads at site s1 (an), found 'fm'"
    ]


MQTT = """\
  - id: broker
    kind: mqtt
    host: 127.0.0.1
    subscriptions: [{topic: "plant/s1/{device}/{quantity}", site: s1, devices: ["*"]}]
"""


def test_a_rule_device_an_mqtt_topic_may_name_is_a_warning(tmp_path: Path) -> None:
    """A `{device}` level names devices at run time: only what is statically certain is refused."""
    rule = "rules:\n  - {kind: nodata, name: comm_lost, site: s1, device: cod-7, for: 10m}\n"
    assert warnings(tmp_path, BASE + MQTT + rule) == [
        ":10: rules[0].device: 'cod-7' is not a configured device at site s1; only the topics or payloads of"
        " broker can name it: not checked"
    ]
    no_devices = "sites: [{id: s1}]\n" + rule  # a config to replay recorded readings with `rules test`
    assert warnings(tmp_path, no_devices) == [
        ":3: rules[0].device: no devices are configured: 'cod-7' is not checked (a config for `rules test`?)"
    ]


def test_a_limit_on_a_window_the_aggregation_does_not_close_is_refused(tmp_path: Path) -> None:
    rules = """\
rules:
  - {kind: limit, name: cod_daily, quantity: cod, above: 100, window: 1d}
  - {kind: standard, name: gb, site: s1, tables: [gb16889-2008-table2], windows: [instant, 1d]}
  - {kind: limit, name: cod_hourly, quantity: cod, above: 100, window: 1h}
"""
    assert problems(tmp_path, BASE + rules + "aggregation: {windows: [1m, 1h]}\n") == [
        ":6: rules[0].window: expected a window the aggregation closes (aggregation.windows: 1m, 1h), found '1d':"
        " add 1d to aggregation.windows",
        ":7: rules[1].windows[1]: expected a window the aggregation closes (aggregation.windows: 1m, 1h),"
        " found '1d': add 1d to aggregation.windows",
    ]
    found = problems(tmp_path, BASE + rules + "aggregation: {enabled: false}\n")
    assert found == [
        ":6: rules[0].window: expected a window the aggregation closes, found '1d' with aggregation.enabled: false",
        ":7: rules[1].windows[1]: expected a window the aggregation closes, found '1d' with aggregation.enabled: false",
        ":8: rules[2].window: expected a window the aggregation closes, found '1h' with aggregation.enabled: false",
    ]


def test_a_platform_needs_the_windows_of_the_data_it_sends(tmp_path: Path) -> None:
    sends = "hj212:\n" + HJ212.replace("WHERE", ", site: s1, send: [rtd, hour]")
    assert problems(tmp_path, BASE + sends + "aggregation: {windows: [1m, 1d]}\n") == [
        ":6: hj212[0].send[1]: expected data whose window the aggregation closes (aggregation.windows: 1m, 1d),"
        " found 'hour': add 1h to aggregation.windows"
    ]
    default = "hj212:\n" + HJ212.replace("WHERE", ", site: s1")  # send: every kind
    assert problems(tmp_path, BASE + default + "aggregation: {enabled: false}\n") == [
        f":6: hj212[0].send: expected data the aggregation makes, found {kind!r} (rtd, min, hour, day: send by"
        " default) with aggregation.enabled: false (only 'rtd' is sent without it)"
        for kind in ("day", "hour", "min")  # in the order of the text, on one line
    ]


def test_grace_consistency(tmp_path: Path) -> None:
    """A platform grace shorter than the aggregation's is fine (a period waits for its windows
    to close); a backfill a period leaves before it is due, or windows deleted before they are
    back-filled, are not."""
    platform = "hj212:\n" + HJ212.replace("WHERE", ", site: s1, grace: 1m, backfill: BACKFILL")
    fine = BASE + platform.replace("BACKFILL", "2d") + "aggregation: {grace: 10m}\n"
    load(tmp_path, fine)  # no ConfigError
    assert problems(tmp_path, fine.replace("backfill: 2d", "backfill: 1d")) == [
        ":6: hj212[0].backfill: expected more than 1d10m (its longest window, 1d, and the longer of its grace 1m"
        " and aggregation.grace 10m): a period is due only that long after it starts and would have left the"
        " back-fill horizon, never sent; found 1d"
    ]
    hourly = platform.replace("BACKFILL", "1h").replace("grace: 1m", "grace: 3m, send: [rtd, min, hour]")
    assert problems(tmp_path, BASE + hourly) == [
        ":6: hj212[0].backfill: expected more than 1h3m (its longest window, 1h, and the longer of its grace 3m"
        " and aggregation.grace 2m): a period is due only that long after it starts and would have left the"
        " back-fill horizon, never sent; found 1h"
    ]
    kept = BASE + platform.replace("BACKFILL", "7d") + "outbox: {retention: {windows: 3d}}\n"
    assert problems(tmp_path, kept) == [
        ":7: outbox.retention.windows: expected at least the longest hj212 backfill (7d, platform 'city'): older"
        " windows would be deleted before they are back-filled; found 3d"
    ]


def test_the_dashboard_link_template_is_checked(tmp_path: Path) -> None:
    """A typo in it used to fail every message with a link, when the first alert fired."""
    link = 'notify: {grafana_url: "http://grafana:3000/d/plant?var-site={sites}"}\n'
    assert problems(tmp_path, BASE + link) == [
        ":5: notify.grafana_url: expected only the fields ({site}, {rule}), found {sites}"
    ]
    load(tmp_path, BASE + link.replace("{sites}", "{site}&rule={rule}"))


SILENCES = """\
notify:
  silences:
    - {matchers: MATCHERS, start: START, end: END, reason: calibration}
"""


@pytest.mark.parametrize(
    ("sites", "matchers", "start", "end", "expected"),
    [
        ("{id: s1, timezone: Europe/Berlin}", "{site: s1}", "2026-12-01 08:00", "2026-12-01 12:00", "+01:00"),
        ("{id: s1, timezone: Europe/Berlin}", "{device: an}", "2026-12-01 08:00:00", "2026-12-01 12:00", "+01:00"),
        ("{id: s1, timezone: Europe/Berlin}", "{}", "2026-12-01T08:00", "2026-12-01T12:00", "+01:00"),
        ("{id: s1}", "{site: daemon}", "2026-12-01T08:00", "2026-12-01T12:00", "+08:00"),
        ("{id: s1, timezone: Europe/Berlin}", "{site: s1}", "2026-12-01T08:00+08:00", "2026-12-01T12:00Z", None),
    ],
)
def test_silence_times_without_a_zone_are_read_in_the_zone_of_the_site_they_match(
    tmp_path: Path, sites: str, matchers: str, start: str, end: str, expected: str | None
) -> None:
    """They passed `check`, then `run` died with a traceback from the MQTT payload decoder."""
    text = BASE.replace("{id: s1}", sites) + SILENCES.replace("MATCHERS", matchers).replace("START", start)
    silence = load(tmp_path, text.replace("END", end)).config.notify.silences[0]
    if expected is None:  # a zone given is kept
        assert (silence.start, silence.end) == ("2026-12-01T08:00:00+08:00", "2026-12-01T12:00:00+00:00")
    else:
        assert (silence.start, silence.end) == (f"2026-12-01T08:00:00{expected}", f"2026-12-01T12:00:00{expected}")
    manager = AlertManager(load(tmp_path, text.replace("END", end)).config.notify, parse_time=parse_timestamp)
    assert manager.silences["config-0"].starts_ns == parse_timestamp(silence.start)  # what `run` does


def test_silence_times_that_do_not_parse_are_refused_at_their_line(tmp_path: Path) -> None:
    text = BASE + SILENCES.replace("MATCHERS", "{site: s1}")
    assert problems(tmp_path, text.replace("START", "tomorrow 8am").replace("END", "2026-12-01T12:00")) == [
        ":7: notify.silences[0].start: expected an ISO 8601 time such as 2026-12-01T08:00 or"
        " 2026-12-01T08:00+08:00, found 'tomorrow 8am'"
    ]
    assert problems(tmp_path, text.replace("START", "2026-12-01T12:00").replace("END", "2026-12-01T08:00")) == [
        ":7: notify.silences[0].end: expected an end after start (2026-12-01T12:00:00+08:00), found '2026-12-01T08:00'"
    ]


def test_silences_and_inhibitions_must_match_something(tmp_path: Path) -> None:
    """A typo in a matcher silences nothing: an alert during a declared calibration."""
    notify = """\
notify:
  inhibit:
    - {source: {rule: comm_lost}, target: {rule: gb16889}}
  silences:
    - {matchers: {site: s1, device: cod-analyser}, start: 2026-12-01T08:00, end: 2026-12-01T09:00}
    - {matchers: {site: s9}, start: 2026-12-01T08:00, end: 2026-12-01T09:00}
    - {matchers: {site: daemon, rule: outbox_full}, start: 2026-12-01T08:00, end: 2026-12-01T09:00}
    - {matchers: {device: hj212, rule: hj212_city_refused}, start: 2026-12-01T08:00, end: 2026-12-01T09:00}
"""
    platform = "hj212:\n" + HJ212.replace("WHERE", ", site: s1")
    assert problems(tmp_path, BASE + STANDARD + notify + platform) == [
        ":10: notify.inhibit[0].target.rule: expected one rule's name, found 'gb16889', a standard: name one of its"
        " limits (gb16889_bod5_1h, gb16889_cod_1h, gb16889_nh3n_1h ...)",
        ":12: notify.silences[0].matchers.device: expected a device that reads at site s1 (an), found 'cod-analyser'",
        ":13: notify.silences[1].matchers.site: expected a site from 'sites' (s1), found 's9': add it to 'sites'",
    ]


def test_aggregation_overrides_name_configured_sites_and_devices(tmp_path: Path) -> None:
    overrides = "aggregation:\n  overrides:\n    - {quantity: cod, site: s2, cycle: 1h}\n"
    overrides += "    - {quantity: cod, device: cod-analyser, cycle: 1h}\n"
    assert problems(tmp_path, BASE + overrides) == [
        ":7: aggregation.overrides[0].site: expected a site from 'sites' (s1), found 's2': add it to 'sites'",
        ":8: aggregation.overrides[1].device: expected a device that reads (an), found 'cod-analyser'",
    ]


def test_cross_checks_run_also_when_some_sections_did_not_parse(tmp_path: Path) -> None:
    """Phase-2 problems used to appear only once every phase-1 problem was fixed."""
    text = (
        BASE.replace("host: 127.0.0.1", "host: 127.0.0.1, port: five")
        + STANDARD.replace("for: 10m}", "for: 10m}\n  - {kind: limit, name: cod, quantity: cod, above: lots}")
        + ROUTES.replace("EXTRA", "rules: [cod, gb], escalate_after: 1h, escalate_to: boss")
        + "hj212:\n"
        + HJ212.replace("WHERE", ", site: s2")
        + "metrics: {listen: 9108}\n"
    )
    assert problems(tmp_path, text) == [
        ":4: devices[0].port: expected a valid integer, unable to parse string as an integer, found 'five'",
        ":8: rules[2].above: expected a valid number, unable to parse string as a number, found 'lots'",
        # the route filter is still checked: the rule that did not parse has a name
        ":11: notify.routes[0].escalate_to: expected the name of a route (managers, supervisors), found 'boss'",
        ":11: notify.routes[0].rules[1]: expected the name of a rule, or of a standard for all of its limits,"
        " found 'gb', which matches no rule (cod, comm_lost, gb16889, hj212_city_refused, outbox_full)",
        ":14: hj212[0].site: expected a site from 'sites' (s1), found 's2': add it to 'sites'",
        ":15: metrics.listen: expected a valid string, found 9108",
    ]


BROKEN = ROOT / "tests" / "cases" / "broken-site.yaml"
BROKEN_PROBLEMS = [  # what the closing note of issue 17 quotes
    "11: devices[0].intervall: unknown key; did you mean 'interval'?",
    "23: influxdb[0].url: environment variable INFLUX_URL is not set and ${INFLUX_URL} has no ':-default'",
    "27: metrics.listen: expected a valid string, found 9108",
    "31: rules[1].window: expected a window the aggregation closes (aggregation.windows: 1m, 1h), found '1d':"
    " add 1d to aggregation.windows",
    "32: rules[2].device: expected a device that reads at site diaoyushan (cod-analyzer), found 'cod-analyser'"
    " (did you mean 'cod-analyzer'?)",
    "35: notify.grafana_url: expected only the fields ({site}, {rule}), found {sites}",
    "39: notify.routes[0].rules[0]: expected the name of a rule, or of a standard for all of its limits,"
    " found 'gb', which matches no rule (cod_daily, comm_lost, gb16889, hj212_city_refused,"
    " hj212_province_refused, outbox_full)",
    "41: notify.routes[0].escalate_to: expected the name of a route (managers, supervisors), found 'manager'"
    " (did you mean 'managers'?)",
    "47: notify.inhibit[0].target.rule: expected one rule's name, found 'gb16889', a standard: name one of its"
    " limits (gb16889_bod5_1h, gb16889_cod_1h, gb16889_nh3n_1h ...)",
    "55: notify.silences[1].start: expected an ISO 8601 time such as 2026-12-01T08:00 or 2026-12-01T08:00+08:00,"
    " found 'tomorrow 8am'",
    "60: hj212[0].send: expected data whose window the aggregation closes (aggregation.windows: 1m, 1h), found"
    " 'day' (rtd, min, hour, day: send by default): add 1d to aggregation.windows or set send",
    "63: hj212[0].site: expected a site from 'sites' (diaoyushan), found 'chenxing': add it to 'sites'",
    "72: hj212[1].send[2]: expected data whose window the aggregation closes (aggregation.windows: 1m, 1h),"
    " found 'day': add 1d to aggregation.windows",
    "73: hj212[1].backfill: expected more than 1h3m (its longest window, 1h, and the longer of its grace 3m and"
    " aggregation.grace 2m): a period is due only that long after it starts and would have left the back-fill"
    " horizon, never sent; found 1h",
]


def test_check_reports_every_mistake_of_the_broken_site() -> None:
    """tests/cases/broken-site.yaml holds every mistake of issue 17; `check` names each, once, in one run."""
    env = {k: v for k, v in os.environ.items() if k not in ("INFLUX_URL", "HJ212_PW")}
    res = subprocess.run(
        [sys.executable, "-m", "telemetry.cli", "check", "-c", "tests/cases/broken-site.yaml"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert res.returncode == 2
    assert res.stdout == ""
    prefix = "tests/cases/broken-site.yaml:"
    assert res.stderr.splitlines() == [prefix + p for p in BROKEN_PROBLEMS] + [
        f"{len(BROKEN_PROBLEMS)} problem(s) in tests/cases/broken-site.yaml"
    ]
    assert "Traceback" not in res.stderr
    assert BROKEN.read_text().count("\n") > 70  # the line numbers above are that file's


def test_a_rule_device_outside_its_point_is_refused(tmp_path: Path) -> None:
    points = "points:\n  - {id: outlet, site: s1, devices: [an]}\n  - {id: inlet, site: s1, devices: [raw]}\n"
    devices = "  - {id: raw, kind: modbus, site: s1, host: h, unit_id: 2, points: [{quantity: cod, address: 0}]}\n"
    rule = "rules:\n  - {kind: limit, name: cod, point: outlet, device: raw, quantity: cod, above: 100}\n"
    assert problems(tmp_path, BASE + devices + points + rule) == [
        ":10: rules[0].device: expected one of point outlet's devices (an), found 'raw'"
    ]


def test_the_daemons_own_alerts_can_be_routed_and_silenced(tmp_path: Path) -> None:
    notify = """\
notify:
  routes:
    - {name: ops, urls: ["json://127.0.0.1:1/"], sites: [daemon], rules: [outbox_full]}
  silences:
    - {matchers: {site: daemon}, start: 2026-12-01T08:00, end: 2026-12-01T09:00}
"""
    route = load(tmp_path, BASE + notify).config.notify.routes[0]
    assert (route.sites, route.rules) == (["daemon"], ["outbox_full"])


def test_a_device_that_did_not_parse_hides_only_the_names_it_could_produce(tmp_path: Path) -> None:
    """A listener whose station password is unset did not parse; a rule's misspelt device was then
    not checked at all. Now only the names that device's entry could produce are left alone."""
    text = (
        BASE
        + """\
  - {id: dau, kind: hj212, listen: "127.0.0.1:9212", stations: [{mn: "1234", pw: "${NOPE}", site: s1, device: dau-out}]}
rules:
  - {kind: nodata, name: typo, site: s1, device: an2, for: 5m}
  - {kind: nodata, name: station, site: s1, device: dau-out, for: 5m}
"""
    )
    found = problems(tmp_path, text)
    assert any("stations[0].pw" in p and "NOPE" in p for p in found), found
    assert any(p.startswith(":7: rules[0].device") and "'an2'" in p for p in found), found
    assert not any("rules[1]" in p for p in found), found  # the listener's station may produce it
    topic = text.replace("device: dau-out}]}", 'device: dau-out}], topic: "x/{device}", devices: ["*"]}')
    assert not any("rules[0].device" in p for p in problems(tmp_path, topic))  # could be any name
