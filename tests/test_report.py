"""The daily report: its figures against a straight-line calculation from the readings, from a
replay and from the outbox a running daemon filled, and its delivery at the configured local
time (a fake clock) to real notification receivers, once, even across a restart."""

from __future__ import annotations

import asyncio
import email
import email.header
import email.message
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.config import DailyReport, Route
from alerts.daily import DailyReports, fit_markdown
from alerts.robots import Result, counted_bytes
from telemetry import app
from telemetry.cli import main
from telemetry.cli_report import replayed
from telemetry.model import Aggregate, Flag, Reading
from telemetry.outbox import Outbox, add_command
from telemetry.report import Capacity, Limits, SiteSetup
from telemetry.report import DailyReport as Report
from telemetry.report import build as report_build
from telemetry.report_render import markdown, page
from telemetry.sim.notifications import NotificationReceiver
from telemetry.sim.platform import Receiver
from tests.daemon import direct_db, start_daemon

NS = 1_000_000_000
BJ = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 11, 30)
SITE = """
sites: [{id: s, name: 钓鱼山站, timezone: Asia/Shanghai}]
points:
  - {id: outlet, site: s, devices: [eff, eff-flow], flow: {device: eff-flow}}
rules:
  - {kind: standard, name: t2, point: outlet, tables: [gb16889-2008-table2], windows: [1h, 1d]}
  - {kind: capacity, name: treated, site: s, quantity: flow, design: 50}
"""
Minute = tuple[float, str] | None  # (COD, flag), or no reading that minute


def day_rows(day: date, cod: list[Minute]) -> list[Reading]:
    t0 = int(datetime(day.year, day.month, day.day, tzinfo=BJ).timestamp())
    out = []
    for m, entry in enumerate(cod):
        ts = (t0 + m * 60 + 5) * NS
        out.append(Reading(ts, "s", "eff-flow", "flow", 2.0, "m3/h"))
        if entry is not None:
            out.append(Reading(ts, "s", "eff", "cod", entry[0], "mg/L", Flag(entry[1])))
    return out


def oracle(cod: list[Minute]) -> dict[str, Any]:
    """The figures from DOMAIN.md's rules, written out: a valid hour has 45 valid minutes, a valid
    day 20 valid hours; with a constant flow the flow-weighted day is the mean of its valid hours."""
    received = sum(e is not None for e in cod)
    valid = sum(e is not None and e[1] == "N" for e in cod)
    hours = []
    for h in range(24):
        values = [e[0] for e in cod[h * 60 : h * 60 + 60] if e is not None and e[1] == "N"]
        hours.append(sum(values) / len(values) if len(values) >= 45 else None)
    valid_hours = [v for v in hours if v is not None]
    mean = sum(valid_hours) / len(valid_hours) if len(valid_hours) >= 20 else None
    return {
        "received": received,
        "valid": valid,
        "transmission": received / 1440,
        "validity": valid / received if received else 0.0,
        "hours_above": sum(v > 100 for v in valid_hours),
        "mean": mean,
        "verdict": "insufficient" if mean is None else "exceeded" if mean > 100 else "pass",
    }


def check_against(report: Report, cod: list[Minute]) -> None:
    want = oracle(cod)
    [q] = [q for q in report.quantities if q.quantity == "cod"]
    assert (q.expected, q.received, q.valid) == (1440, want["received"], want["valid"])
    assert q.transmission == pytest.approx(want["transmission"])
    assert q.validity == pytest.approx(want["validity"])
    assert q.effective == pytest.approx(want["transmission"] * want["validity"])
    assert q.hours_above == want["hours_above"]
    assert q.verdict == want["verdict"]
    if want["mean"] is not None:
        assert q.mean == pytest.approx(want["mean"])


minute = st.one_of(
    st.none(),
    st.tuples(st.sampled_from([40.0, 60.0, 95.0, 140.0]), st.sampled_from(["N", "N", "N", "N", "C", "M"])),
)
hour_shape = st.tuples(minute, st.integers(0, 60))  # an hour: one kind of minute, and how many of its minutes


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hour_shape, min_size=24, max_size=24))
def test_replayed_report_matches_a_straight_line_calculation(
    tmp_path_factory: pytest.TempPathFactory, hours: list[tuple[Minute, int]]
) -> None:
    tmp = tmp_path_factory.mktemp("report")
    cod: list[Minute] = []
    for entry, count in hours:  # the first `count` minutes of the hour as `entry`, the rest normal
        cod += [entry] * count + [(48.0, "N")] * (60 - count)
    (tmp / "site.yaml").write_text(SITE)
    csv = tmp / "in.csv"
    csv.write_text(
        "ts,site,device,quantity,value,unit,flag\n"
        + "".join(
            f"{r.ts},{r.site},{r.device},{r.quantity},{r.value},{r.unit},{r.flag.value}\n" for r in day_rows(DAY, cod)
        )
    )
    dep = app.load(str(tmp / "site.yaml"))
    report = replayed(dep, app.report_setup(dep, "s"), DAY, str(csv))
    check_against(report, cod)
    [treated] = report.capacities
    assert treated.total == pytest.approx(48.0)  # 2 m3/h for 24 hours
    assert treated.use == pytest.approx(48.0 / 50)


def test_report_command_prints_each_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    normal: list[Minute] = [(48.0, "N")]
    cod = normal * 600 + [(130.0, "N")] * 60 + normal * 780
    (tmp_path / "site.yaml").write_text(SITE)
    rows = day_rows(DAY, cod)
    (tmp_path / "in.csv").write_text("".join(f"{r.ts},s,{r.device},{r.quantity},{r.value},{r.unit}\n" for r in rows))
    args = [
        "report",
        "daily",
        "-c",
        str(tmp_path / "site.yaml"),
        "--date",
        "2026-11-30",
        "--input",
        str(tmp_path / "in.csv"),
    ]
    assert main([*args, "--format", "md"]) == 0
    text = capsys.readouterr().out
    assert "### 【日报】 钓鱼山站 2026-11-30" in text
    assert "✅ 化学需氧量 cod 日均 51.42 mg/L（限值 100） 达标；超小时限值 1 小时" in text  # (23 x 48 + 130) / 24
    assert "- [critical] t2_cod_1h 10:00-11:00 (1.0 h), 未确认" in text
    assert main([*args, "--format", "html", "--lang", "en"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 1  # a chart per regulated series with data: cod
    assert "<script" not in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # no external assets
    assert main([*args, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("site,day,point,device,quantity,unit,mean,limit,verdict")
    assert lines[1].startswith("s,2026-11-30,outlet,eff,cod,mg/L,51.41666")
    assert main([*args, "--date", "2026-13-01"]) == 2


def reports(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The daily reports among what a robot received (the route also carries the alerts)."""
    return [m for m in messages if m["markdown"]["title"].startswith("【日报】")]


def subject(message: email.message.Message) -> str:
    return str(email.header.make_header(email.header.decode_header(message["Subject"] or "")))


# -- from the outbox of a running daemon, delivered at 08:00 on a fake clock -------------------


async def test_stored_report_is_delivered_at_its_time_once_even_across_a_restart(
    tmp_path: Path, receiver: NotificationReceiver, hj212_platform: Receiver, smtp: tuple[int, list[Any]]
) -> None:
    port, mails = smtp
    yesterday = (datetime.now(BJ) - timedelta(days=1)).date()
    path = tmp_path / "site.yaml"
    mail = f"mailto://127.0.0.1:{port}?from=plant@example.com&to=supervisor@example.com&mode=insecure"
    path.write_text(
        SITE
        + f"""
hj212:
  - {{name: city, host: 127.0.0.1, port: {hj212_platform.port}, point: outlet, mn: "010000A8900016F000169DC0",
     pw: "123456", send: [hour, day], grace: 0s}}
notify:
  routes:
    - {{name: supervisors, urls: ["dingtalk://token1", "{mail}"], robot_base_url: "{receiver.base_url}", group_wait: 0s}}
reports:
  daily: {{at: "08:00", routes: [supervisors]}}
metrics: {{enabled: false}}
outbox: {{path: "{tmp_path}/outbox.sqlite"}}
"""
    )
    # Yesterday: COD 48 with a 30-minute gap at 03:00, 20 minutes of calibration at 12:00, and the
    # last hour at 130 (its hourly alert still firing at midnight, acknowledged by zhang).
    cod: list[Minute] = [(48.0, "N")] * 180 + [None] * 30 + [(48.0, "N")] * 510
    cod += [(48.0, "C")] * 20 + [(48.0, "N")] * 640 + [(130.0, "N")] * 60
    today = datetime.now(BJ).date()
    clock = [int(datetime(today.year, today.month, today.day, 7, 59, tzinfo=BJ).timestamp()) * NS]
    daemon = await start_daemon(path)
    daemon.pipeline.now = lambda: clock[0]  # the daemon's wall clock, before its first tick: 07:59 today
    delivered = asyncio.Event()
    try:
        await asyncio.wait_for(daemon.pipeline.started.wait(), 10)
        desk = daemon.desk()
        assert desk.reports is not None
        told = desk.reports.on_change

        def on_change() -> None:
            told()
            delivered.set()

        desk.reports.on_change = on_change
        readings = day_rows(yesterday, cod)
        for i in range(0, len(readings), 1000):
            await daemon.pipeline.emit(readings[i : i + 1000])
        daemon.pipeline.tick(clock[0])  # yesterday's windows close, and its hours are judged
        await daemon.pipeline.emit([])
        await daemon.uplink().settled()  # the platform acknowledged yesterday's hours and day
        [firing] = [a for a in desk.manager.alerts.values() if a.state == "firing"]
        add_command(str(tmp_path / "outbox.sqlite"), "ack", {"id": firing.id, "by": "zhang"})
        await desk.tick(clock[0])
        await desk.reports.settled()
        assert reports(receiver.messages) == []  # not before 08:00
        assert not delivered.is_set()
        clock[0] += 120 * NS  # 08:01: the daemon's own ticker finds the report due
        await asyncio.wait_for(delivered.wait(), 20)
    finally:
        await daemon.close()
    [robot] = reports(receiver.messages)
    text = robot["markdown"]["text"]
    want = oracle(cod)
    assert robot["markdown"]["title"] == f"【日报】 钓鱼山站 {yesterday.isoformat()}"
    assert f"日均 {want['mean']:.4g} mg/L（限值 100） 达标；超小时限值 1 小时" in text
    assert f"传输率 {want['transmission'] * 100:.1f}% · 有效率 {want['validity'] * 100:.1f}%" in text
    assert "t2_cod_1h 23:00-至今未恢复" in text
    assert "确认人 zhang" in text
    assert "city (outlet): 2031 已确认 1/1，2061 已确认 24/24" in text
    [body] = [m for m in (email.message_from_bytes(e.content) for e in mails) if "日报" in subject(m)]
    html = next(part for part in body.walk() if part.get_content_type() == "text/html").get_payload(decode=True)
    assert b"<svg" in html
    assert yesterday.isoformat().encode() in html
    # A restart after 08:00: the report was delivered and is not sent again.
    again = await start_daemon(path)
    again.pipeline.now = lambda: clock[0] + 600 * NS
    try:
        await asyncio.wait_for(again.pipeline.started.wait(), 10)
        desk = again.desk()
        assert desk.reports is not None
        assert desk.reports.delivered == {
            "s/supervisors#0": yesterday.isoformat(),
            "s/supervisors#1": yesterday.isoformat(),
        }
        await desk.tick(clock[0] + 600 * NS)
        await desk.reports.settled()
    finally:
        await again.close()
    assert len(reports(receiver.messages)) == 1
    assert sum("日报" in subject(email.message_from_bytes(e.content)) for e in mails) == 1


async def test_a_failed_url_is_retried_alone_and_robots_get_what_they_take(tmp_path: Path) -> None:
    outbox = Outbox(str(tmp_path / "outbox.sqlite"))
    today = datetime.now(BJ).date()
    yesterday = today - timedelta(days=1)
    start = int(datetime(yesterday.year, yesterday.month, yesterday.day, tzinfo=BJ).timestamp()) * NS
    hours = [
        Aggregate(
            start + h * 3600 * NS, "1h", "s", "eff", "cod", "mg/L", 48.0, 48.0, 48.0, 60, 60, True, point="outlet"
        )
        for h in range(24)
    ]
    outbox.append(hours)
    setup = SiteSetup("s", "钓鱼山站", "Asia/Shanghai", {("outlet", "cod"): Limits(daily_above=100, hourly_above=100)})
    route = Route(name="r", urls=["wecombot://key", "mailto://127.0.0.1:9?to=a@example.com"])
    sent: list[tuple[str, str]] = []
    mail_down = [True]

    async def send(url: str, title: str, markdown: str, page: str, route: Route) -> Result:
        sent.append((url.split("://", maxsplit=1)[0], markdown))
        return Result(not (url.startswith("mailto") and mail_down[0]), "")

    reports = DailyReports(DailyReport(at="08:00", routes=["r"], retry=60), {"s": setup}, {"r": route}, send=send)
    at = int(datetime(today.year, today.month, today.day, 8, 30, tzinfo=BJ).timestamp()) * NS
    try:
        for step, mail_ok in ((0, False), (30, False), (61, True), (122, True)):
            mail_down[0] = not mail_ok
            await reports.tick(at + step * NS, direct_db, outbox)
            await reports.settled()
    finally:
        outbox.close()
    # 08:30 both; 08:30:30 nothing (retry after 60 s); 08:31:01 the mail alone, which now goes; then nothing.
    assert [scheme for scheme, _ in sent] == ["wecombot", "mailto", "mailto"]
    robot = sent[0][1]
    assert counted_bytes("wecombot://key", f"【日报】 钓鱼山站 {yesterday.isoformat()}", robot) <= 2048


def test_a_report_too_long_for_a_robot_is_cut_at_a_line_and_says_how_to_get_the_rest() -> None:
    body = "\n".join(f"- 化学需氧量 cod 监测点 {i} 日均 48 mg/L（限值 100） 达标" for i in range(200))
    cut = fit_markdown("wecombot://key", "【日报】 站 2026-11-30", body, "2026-11-30", "s")
    assert counted_bytes("wecombot://key", "【日报】 站 2026-11-30", cut) <= 2048
    assert cut.endswith("telemetry report daily --site s --date 2026-11-30）")
    assert cut.split("\n……")[0] in body  # whole lines, none cut in the middle
    assert fit_markdown("json://127.0.0.1/x", "t", body, "2026-11-30", "s") == body  # no limit: unchanged


# -- what the review found ------------------------------------------------------------------------


def hour(h: int, quantity: str, avg: float | None, device: str = "eff", **kw: Any) -> Aggregate:
    start = int(datetime(2026, 11, 30, tzinfo=BJ).timestamp()) * NS
    fields: dict[str, Any] = {"count": 60, "valid_count": 60, "valid": avg is not None, "point": "outlet"}
    fields.update(kw)
    return Aggregate(
        start + h * 3600 * NS,
        "1h",
        "s",
        device,
        quantity,
        kw.pop("unit", "mg/L"),
        avg,
        avg,
        avg,
        **{k: v for k, v in fields.items() if k != "unit"},
    )


def test_the_report_judges_against_the_most_severe_rule_and_a_cycle_analyzers_own_rates(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(
        SITE
        + "  - {kind: limit, name: cod_early, point: outlet, quantity: cod, window: 1d, above: 80, severity: warning}\n"
        + "aggregation: {overrides: [{quantity: tp, cycle: 2h}]}\n"
    )
    dep = app.load(str(tmp_path / "site.yaml"))
    setup = app.report_setup(dep, "s")
    assert setup.limits[("outlet", "cod")].daily_above == 100  # the standard's critical 100, not the early 80
    start = int(datetime(2026, 11, 30, tzinfo=BJ).timestamp()) * NS
    day = Aggregate(start, "1d", "s", "eff", "cod", "mg/L", 90.0, 90.0, 90.0, 24, 24, True, point="outlet")
    tp = [hour(h, "tp", 0.8, count=1, valid_count=1, method="cycles") for h in range(0, 24, 2)]
    tp += [hour(h, "tp", 0.8, count=0, valid_count=0, method="carried") for h in range(1, 24, 2)]
    built = report_build(setup, DAY, [day, *tp], [], lambda body: "x")
    by = {q.quantity: q for q in built.quantities}
    assert by["cod"].verdict == "pass"  # 90 under 100 (it is above the warning's 80)
    # A 2-hour cycle: 12 measurements expected, 12 received (carried hours hold none), all valid.
    assert (by["tp"].expected, by["tp"].received, by["tp"].valid) == (12, 12, 12)
    assert (by["tp"].transmission, by["tp"].validity, by["tp"].below_threshold) == (1.0, 1.0, False)


def test_capacity_is_per_device_and_a_silent_series_is_listed_and_units_are_escaped(tmp_path: Path) -> None:
    setup = SiteSetup(
        "s",
        "站",
        "Asia/Shanghai",
        {("outlet", "cod"): Limits(daily_above=100), ("outlet", "nh3n"): Limits(daily_above=25)},
        [Capacity("burned", "throughput_total", 600.0, "totalizer")],
    )
    # Two weighbridges' totalizers (tonnes since commissioning), one reset to zero at 12:00.
    start = int(datetime(2026, 11, 30, tzinfo=BJ).timestamp()) * NS

    def total(device: str, h: int, low: float, high: float) -> Aggregate:
        ts = start + h * 3600 * NS
        return Aggregate(ts, "1h", "s", device, "throughput_total", "t", low, high, high, 60, 60, True, point="s")

    a = [total("scale-a", h, 100000 + 10 * h, 100000 + 10 * h + 10) for h in range(24)]
    b = [total("scale-b", h, 5 * (h % 12), 5 * (h % 12) + 5) for h in range(24)]
    evil = hour(3, "cod", 48.0, unit="<img src=x onerror=alert(1)>")
    built = report_build(setup, DAY, [*a, *b, evil], [], lambda body: "x", None, [("outlet", "eff", "nh3n")])
    totals = {c.device: c.total for c in built.capacities}
    assert totals == {"scale-a": 240.0, "scale-b": 115.0}  # 24 x 10; 2 x 12 x 5 minus nothing for the reset
    [silent] = [q for q in built.quantities if q.quantity == "nh3n"]
    assert (silent.verdict, silent.received) == ("insufficient", 0)  # reported before, silent today
    page_html = page(built)
    assert "<img" not in page_html
    assert "&lt;img src=x onerror=alert(1)&gt;" in page_html


def test_a_furnaces_exempt_hours_leave_the_day_as_the_rule_judges_it() -> None:
    setup = SiteSetup("s", "站", "Asia/Shanghai", {("outlet", "so2_zs"): Limits(daily_above=80, hourly_above=100)})
    start = int(datetime(2026, 11, 30, tzinfo=BJ).timestamp()) * NS
    hours = [hour(h, "so2_zs", 400.0 if h < 6 else 40.0) for h in range(24)]
    day = Aggregate(start, "1d", "s", "eff", "so2_zs", "mg/m3", 40.0, 130.0, 400.0, 24, 24, True, point="outlet")

    def marked(point: str, begin: int, end: int) -> bool:  # 00:00-06:00 marked, within the budget
        return point == "outlet" and begin < start + 6 * 3600 * NS

    plain = report_build(setup, DAY, [*hours, day], [], lambda body: "x")
    judged = report_build(setup, DAY, [*hours, day], [], lambda body: "x", None, (), marked)
    assert (plain.quantities[0].verdict, plain.quantities[0].mean) == ("exceeded", 130.0)
    q = judged.quantities[0]
    assert (q.verdict, q.mean, q.exempt_hours) == ("pass", 40.0, 6)
    assert "（6 小时工况豁免）" in markdown(judged)
    # Of the 18 hours left only 10 valid: a day needs 20 of 24, so 15 of 18: not judged.
    thin = [
        hour(h, "so2_zs", 400.0 if h < 6 else 40.0) if h < 6 or h >= 14 else hour(h, "so2_zs", None) for h in range(24)
    ]
    assert report_build(setup, DAY, [*thin, day], [], lambda b: "x", None, (), marked).quantities[0].verdict == (
        "insufficient"
    )
