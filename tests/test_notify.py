"""Notification messages: each rule kind's numbers in its own units, in Chinese and English,
and every channel's size limit kept, with alerts counted as told only by the part that carried them."""

from __future__ import annotations

import asyncio
import email
import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter

from alerts.alert import Message
from alerts.config import Notify, Route
from alerts.lifecycle import AlertManager
from alerts.notify import Notifier, default_send, render
from alerts.robots import Result
from alerts.rule_config import EvaluatedRule, RuleConfig
from alerts.rules import RulesEngine
from telemetry.hj212.codec import Packet
from telemetry.hj212.stations import Gate, Station
from telemetry.metrics import Metrics
from telemetry.model import AlertEvent, AlertState, Flag, Measure, Reading
from telemetry.sim.notifications import NotificationReceiver

NS = 1_000_000_000
MIN = 60 * NS
T0 = 1_764_547_200 * NS  # 2025-12-01 00:00 UTC, 08:00 in Beijing
ZONES = {"s": "Asia/Shanghai"}


def rule(**kw: Any) -> EvaluatedRule:
    parsed: EvaluatedRule = TypeAdapter(RuleConfig).validate_python({"severity": "critical"} | kw)  # type: ignore[assignment]
    return parsed


def notify(**route: Any) -> Notify:
    base = {"name": "ops", "urls": ["json://127.0.0.1:1/x"], "group_wait": "0s", "group_interval": "0s"}
    return Notify.model_validate({"routes": [base | route]})


def routes(language: str) -> Route:
    return notify(language=language).routes[0]


# -- each kind's numbers -------------------------------------------------------------------------


def lines(events: list[AlertEvent], at: int, language: str) -> str:
    """The one message a route gets for ``events`` at ``at``, title and body."""
    manager = AlertManager(notify())
    manager.ingest(events)
    [message] = manager.due(at)
    title, body = render(message, routes(language), ZONES)
    return f"{title}\n{body}"


def alert_id(events: list[AlertEvent]) -> str:
    manager = AlertManager(notify())
    manager.ingest(events)
    [alert] = manager.alerts.values()
    return alert.id


def test_nodata_reads_as_minutes_without_data_and_its_resolve_says_how_long() -> None:
    engine = RulesEngine([rule(kind="nodata", name="cod_nodata", quantity="cod", **{"for": "5m"})], ZONES)
    events = engine.feed([Reading(T0, "s", "an", "cod", 50.0, "mg/L")])
    fired = engine.tick(T0 + 10 * MIN)
    resolved = engine.feed([Reading(T0 + 12 * MIN, "s", "an", "cod", 55.0, "mg/L")])
    assert [(e.measure, e.value, e.limit) for e in fired + resolved] == [("silence", 600, 300), ("silence", 720, 300)]
    aid = alert_id(fired)
    assert lines(events + fired, T0 + 10 * MIN, "zh") == (
        "【告警】 s · cod_nodata\n"
        "• cod_nodata（严重）s/an 化学需氧量：无有效数据 10 min，限值 5 min，自 2025-12-01 08:10 +08:00 起\n"
        f"  编号 {aid}"
    )
    assert lines(fired, T0 + 10 * MIN, "en") == (
        "[FIRING] s · cod_nodata\n"
        "• cod_nodata [critical] s/an cod: no valid data for 10 min against limit 5 min, since 2025-12-01 08:10 +08:00\n"
        "  no valid cod from s/an for 10 min\n"
        f"  id {aid}"
    )
    manager = AlertManager(notify())
    manager.ingest(fired)
    manager.record(manager.due(T0 + 10 * MIN)[0], True, T0 + 10 * MIN)
    manager.ingest(resolved)
    [message] = manager.due(T0 + 12 * MIN)
    assert render(message, routes("zh"), ZONES)[1] == (
        "• cod_nodata（严重）s/an 化学需氧量：无有效数据 12 min，限值 5 min，"
        "2025-12-01 08:12 +08:00 已恢复（自 2025-12-01 08:10 +08:00 起）\n"
        f"  编号 {aid}"
    )
    assert render(message, routes("en"), ZONES)[1] == (
        "• cod_nodata [critical] s/an cod: no valid data for 12 min against limit 5 min,"
        " resolved 2025-12-01 08:12 +08:00 (since 2025-12-01 08:10 +08:00)\n"
        "  cod from s/an reporting again\n"
        f"  id {aid}"
    )


def test_stock_reads_as_a_percentage_of_capacity() -> None:
    engine = RulesEngine([rule(kind="stock", name="pond", quantity="volume", capacity=3000)], ZONES)
    fired = engine.feed([Reading(T0, "s", "pond", "volume", 1050.0, "m3")])
    assert [(e.measure, e.value) for e in fired] == [("fraction", 0.35)]
    aid = alert_id(fired)
    assert lines(fired, T0, "zh") == (
        f"【告警】 s · pond\n• pond（严重）s/pond 库容：达容量 35 %，限值 33 %，自 2025-12-01 08:00 +08:00 起\n  编号 {aid}"
    )
    assert lines(fired, T0, "en") == (
        "[FIRING] s · pond\n"
        "• pond [critical] s/pond volume: 35 % of capacity against limit 33 %, since 2025-12-01 08:00 +08:00\n"
        "  volume at s: 1050 m3 is 35% of 3000, above 33%\n"
        f"  id {aid}"
    )


def test_capacity_reads_as_the_days_tonnage() -> None:
    capacity = rule(kind="capacity", name="plant_750t", quantity="throughput", design=750, project_after="4h")
    engine = RulesEngine([capacity], ZONES)
    midnight = T0 - 8 * 3600 * NS  # 2025-12-01 00:00 in Beijing
    fired = engine.feed([Reading(midnight + m * MIN, "s", "scale", "throughput", 40.0, "t/h") for m in range(241)])
    assert [(e.measure, round(e.value, 6), e.limit) for e in fired] == [("day_total", 960, 750)]
    aid = alert_id(fired)
    assert lines(fired, T0, "zh") == (
        "【告警】 s · plant_750t\n"
        "• plant_750t（严重）s/scale 处理量：预计今日 960 t，限值 750 t，自 2025-12-01 04:00 +08:00 起\n"
        f"  编号 {aid}"
    )
    assert lines(fired, T0, "en") == (
        "[FIRING] s · plant_750t\n"
        "• plant_750t [critical] s/scale throughput: projected day total 960 t against limit 750 t,"
        " since 2025-12-01 04:00 +08:00\n"
        "  s/scale: at this rate today ends at 960 t of 750 t (160 t so far)\n"
        f"  id {aid}"
    )


def test_a_limit_reads_in_the_readings_unit_and_a_rules_own_message_is_kept_in_chinese() -> None:
    plain = rule(kind="limit", name="cod_limit", quantity="cod", above=100)
    engine = RulesEngine([plain], ZONES)
    fired = engine.feed([Reading(T0, "s", "an", "cod", 123.4, "mg/L")])
    assert [(e.measure, e.templated) for e in fired] == [("reading", False)]
    aid = alert_id(fired)
    assert lines(fired, T0, "zh") == (
        "【告警】 s · cod_limit\n"
        "• cod_limit（严重）s/an 化学需氧量：数值 123.4 mg/L，限值 100 mg/L，自 2025-12-01 08:00 +08:00 起\n"
        f"  编号 {aid}"
    )
    assert lines(fired, T0, "en") == (
        "[FIRING] s · cod_limit\n"
        "• cod_limit [critical] s/an cod: 123.4 mg/L against limit 100 mg/L, since 2025-12-01 08:00 +08:00\n"
        "  cod 123.4 mg/L above limit 100 mg/L at s/an\n"
        f"  id {aid}"
    )
    own = rule(kind="limit", name="cod_limit", quantity="cod", above=100, message="{site} 出水 COD 超标，请核查")
    fired = RulesEngine([own], ZONES).feed([Reading(T0, "s", "an", "cod", 123.4, "mg/L")])
    assert [e.templated for e in fired] == [True]
    assert lines(fired, T0, "zh").splitlines()[2] == "  s 出水 COD 超标，请核查"


def test_maintenance_rate_and_flatline_read_in_their_units() -> None:
    rules = [
        rule(kind="maintenance_too_long", name="cod_maint", quantity="cod", **{"for": "4h"}),
        rule(kind="rate", name="level_rate", quantity="level", max_per_minute=0.1),
        rule(kind="flatline", name="ph_stuck", quantity="ph", **{"for": "1h"}),
    ]
    engine = RulesEngine(rules, ZONES)
    events = engine.feed([Reading(T0 + m * 10 * MIN, "s", "an", "cod", 50.0, "mg/L", Flag.C) for m in range(25)])
    events += engine.feed([Reading(T0 + 250 * MIN, "s", "an", "cod", 50.0, "mg/L")])  # back to N after 4 h 10 min
    events += engine.feed([Reading(T0, "s", "lv", "level", 1.0, "m"), Reading(T0 + MIN, "s", "lv", "level", 1.5, "m")])
    events += engine.feed([Reading(T0, "s", "ph", "ph", 7.0), Reading(T0 + 62 * MIN, "s", "ph", "ph", 7.0)])
    summary = [(e.rule, e.state.value, e.measure, e.value, e.limit) for e in events]
    assert summary == [
        ("cod_maint", "firing", "flagged", 14400, 14400),
        ("cod_maint", "resolved", "flagged", 15000, 14400),  # how long it was flagged
        ("level_rate", "firing", "per_minute", 0.5, 0.1),
        ("ph_stuck", "firing", "held", 7, 7),
    ]
    zh = [lines([e], e.ts, "zh").splitlines()[1] for e in events if e.state is AlertState.FIRING]
    assert zh == [
        "• cod_maint（严重）s/an 化学需氧量：维护/校准状态 4.0 h，限值 4.0 h，自 2025-12-01 12:00 +08:00 起",
        "• level_rate（严重）s/lv 液位：变化 0.5 m/min，限值 0.1 m/min，自 2025-12-01 08:01 +08:00 起",
        "• ph_stuck（严重）s/ph pH：数值 7，保持 7 不变，自 2025-12-01 09:02 +08:00 起",
    ]
    en = [lines([e], e.ts, "en").splitlines()[1] for e in events if e.state is AlertState.FIRING]
    assert en == [
        "• cod_maint [critical] s/an cod: flagged for 4.0 h against limit 4.0 h, since 2025-12-01 12:00 +08:00",
        "• level_rate [critical] s/lv level: changing 0.5 m/min against limit 0.1 m/min, since 2025-12-01 08:01 +08:00",
        "• ph_stuck [critical] s/ph ph: 7, held at 7, since 2025-12-01 09:02 +08:00",
    ]


def test_chinese_messages_have_no_english_words_but_names() -> None:
    """Only names (rules, sites, devices, ids, units) are Latin in a Chinese message."""
    rules = [
        rule(kind="limit", name="cod_limit", quantity="cod", above=100),
        rule(kind="stock", name="pond", quantity="volume", capacity=3000),
    ]
    engine = RulesEngine(rules, ZONES)
    fired = engine.feed([Reading(T0, "s", "an", "cod", 150.0, "mg/L"), Reading(T0, "s", "p", "volume", 2000.0, "m3")])
    text = re.sub(r"编号 [0-9a-f]{10}", "", lines(fired, T0, "zh"))
    names = {"cod_limit", "pond", "s", "an", "p", "mg", "L", "m3"}
    assert set(re.findall(r"[A-Za-z][A-Za-z0-9_]*", text)) <= names


def test_the_daemons_own_alerts_read_in_chinese_without_meaningless_numbers() -> None:
    """A refused station (from the listener's gate), a refusing platform and a full outbox have
    no value against a limit: the Chinese line says what happened, in Chinese."""
    fired: list[AlertEvent] = []
    gate = Gate("dau", [Station(mn="41050022000017", pw="right1", site="s")], "s", clock=lambda: T0)
    gate.on_alert = fired.append
    for mn, pw in (("41050022000017", "wrong1"), ("41050022000099", "right1")):
        gate.check(Packet("20251201080000000", "32", "2011", pw, mn, 5, None, None, []), lenient=False)
    own = {"device": "hj212", "quantity": "city", "point": "outlet"}
    fired.append(
        AlertEvent(
            T0,
            "s",
            "hj212_city_refused",
            "critical",
            AlertState.FIRING,
            "HJ 212 platform city refuses the station: wrong password (PW)",
            1.0,
            0.0,
            own,
            Measure.STATE,
        )
    )
    fired.append(
        AlertEvent(
            T0,
            "s",
            "outbox_full",
            "critical",
            AlertState.FIRING,
            "outbox over its disk budget: dropped 654 oldest undelivered records",
            654.0,
            5e8,
            {},
            Measure.STATE,
        )
    )
    assert [e.rule for e in fired] == [
        "hj212_wrong_password",
        "hj212_unknown_station",
        "hj212_city_refused",
        "outbox_full",
    ]
    text = re.sub(r"编号 [0-9a-f]{10}", "", lines(fired, T0, "zh"))
    for said in ("站点密码错误", "未登记 MN", "平台 city 拒绝本站上传", "已丢弃最早未送出的记录 654 条"):
        assert said in text
    assert "数值" not in text
    assert "限值" not in text
    names = {
        "hj212_wrong_password",
        "hj212_unknown_station",
        "hj212_city_refused",
        "outbox_full",
        "s",
        "dau",
        "hj212",
        "city",
        "MN",
    }
    assert set(re.findall(r"[A-Za-z][A-Za-z0-9_]*", text)) <= names
    english = lines(fired, T0, "en")
    assert "refuses the station: wrong password (PW)" in english  # the details stay in English messages


def test_state_saved_by_an_earlier_version_still_loads_and_reads_as_before() -> None:
    old = {
        "ts": T0,
        "site": "s",
        "rule": "cod_limit",
        "severity": "critical",
        "state": "firing",
        "message": "cod 150 mg/L above limit 100 mg/L at s/an",
        "value": 150.0,
        "limit": 100.0,
        "labels": {"device": "an", "quantity": "cod", "unit": "mg/L"},
    }
    event = AlertEvent.from_dict(old)
    assert (event.measure, event.templated) == ("", False)
    assert AlertEvent.from_dict(event.to_dict()) == event
    manager = AlertManager(notify())
    manager.ingest([event])
    snapshot = orjson.loads(orjson.dumps(manager.snapshot()))
    for alert in snapshot["alerts"]:  # an alert as an earlier version saved it
        del alert["measure"], alert["templated"]
    restored = AlertManager(notify())
    restored.restore(snapshot)
    [message] = restored.due(T0)
    assert render(message, routes("zh"), ZONES)[1].splitlines()[:2] == [
        "• cod_limit（严重）s/an 化学需氧量：数值 150 mg/L，限值 100 mg/L，自 2025-12-01 08:00 +08:00 起",
        "  cod 150 mg/L above limit 100 mg/L at s/an",  # no measure: the text is all it has
    ]
    assert Measure("day_total") is Measure.DAY_TOTAL


# -- every channel's size ------------------------------------------------------------------------

SHORT = "{site} 出水 COD 超标，请核查"
SOP = (
    "{site}/{device} 出水化学需氧量 {value:.1f} {unit}，超过排放限值 {limit:g} {unit}。处置要求："
    "一、立即核查在线分析仪运行状态、试剂余量与最近一次校准记录，确认数据有效；"
    "二、检查膜生物反应器出水浊度、回流比与曝气量，排除工艺异常；"
    "三、数据有效且超标持续时，将出水切换至应急池暂存，停止外排；"
    "四、电话通知当班环保主管与站长，并在交接班记录中登记；"
    "五、三十分钟内在系统中确认本告警，填写原因与处置结果。"
)
SIZE = {"dingtalk": 20_000, "wecombot": 2_048, "feishu": 20_000}  # as the services document them


@pytest.fixture
def robots() -> Iterator[NotificationReceiver]:
    server = NotificationReceiver(robot_limits=True).start()
    server.answer = {"errcode": 0, "errmsg": "ok"}
    yield server
    server.stop()


def breach(cfg: Notify, message: str, count: int) -> AlertManager:
    """``count`` COD exceedances at one site, one device each: one group, one message due."""
    manager = AlertManager(cfg)
    engine = RulesEngine([rule(kind="limit", name="cod_limit", quantity="cod", above=100, message=message)], ZONES)
    readings = [Reading(T0, "s", f"analyzer-{i:02d}", "cod", 150.0 + i, "mg/L") for i in range(count)]
    manager.ingest(engine.feed(readings))
    return manager


async def send_until_told(manager: AlertManager, notifier: Notifier) -> int:
    """Deliver what is due, round after round (group_interval 0), until nothing is; the rounds."""
    now = T0

    def on_result(m: Message, ok: bool, detail: str) -> None:
        manager.record(m, ok, now)

    notifier.on_result = on_result
    rounds = 0
    while due := manager.due(now):
        for message in due:
            assert await notifier.deliver(message, None)
        rounds += 1
        now += NS
        assert rounds < 20, "alerts left untold"
    return rounds


def robot_text(body: dict[str, Any]) -> str:
    if "markdown" in body:
        return str(body["markdown"]["text"])
    if "text" in body:
        return str(body["text"]["content"])
    return str(body["content"]["text"])


@pytest.mark.parametrize("template", [SHORT, SOP], ids=["short", "sop"])
@pytest.mark.parametrize("url", ["dingtalk://SECRET@tok", "wecombot://key", "feishu://SECRET@hook"])
async def test_thirty_alerts_reach_each_robot_within_its_size(
    robots: NotificationReceiver, url: str, template: str
) -> None:
    cfg = notify(urls=[url], robot_base_url=robots.base_url, retries=0)
    manager = breach(cfg, template, 30)
    notifier = Notifier(cfg.routes, Metrics(CollectorRegistry()), ZONES)
    rounds = await send_until_told(manager, notifier)
    scheme = url.split(":", maxsplit=1)[0]
    assert robots.refused == []
    sizes = [len(robot_text(m).encode()) if scheme == "wecombot" else m["_bytes"] for m in robots.messages]
    assert max(sizes) <= SIZE[scheme]
    texts = [robot_text(m) for m in robots.messages]
    for alert in manager.alerts.values():
        assert list(alert.sent_firing) == ["ops#0"]
        assert alert.failed == {}
        assert sum(alert.id in text for text in texts) == 1, alert.id  # each told once
    if sum(sizes) > SIZE[scheme]:
        assert len(texts) > 1  # it had to be split
    if rounds > 1:  # more than 3 parts' worth: the rest was announced and came next
        assert any("另有" in text and "telemetry alerts list" in text for text in texts)


def mail_text(envelope: Any) -> tuple[str, str]:
    mail = email.message_from_bytes(envelope.content)
    subject = str(make_header(decode_header(mail["Subject"])))
    [part] = [p for p in mail.walk() if p.get_content_type() == "text/plain"]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return subject, payload.decode(part.get_content_charset() or "utf-8")


@pytest.mark.parametrize("count", [30, 60])
async def test_alerts_by_email_are_capped_per_message_and_all_arrive(smtp: tuple[int, list[Any]], count: int) -> None:
    port, received = smtp
    url = f"mailto://127.0.0.1:{port}?from=plant@example.com&to=supervisor@example.com&mode=insecure"
    cfg = notify(urls=[url], retries=0)
    manager = breach(cfg, SOP, count)
    await send_until_told(manager, Notifier(cfg.routes, Metrics(CollectorRegistry()), ZONES))
    mails = [mail_text(e) for e in received]
    assert len(mails) == (1 if count == 30 else 2)  # 50 alerts a mail at most
    assert all(len(e.content) <= 200_000 for e in received)
    for alert in manager.alerts.values():
        assert list(alert.sent_firing) == ["ops#0"]
        assert sum(alert.id in body for _, body in mails) == 1
    if count == 60:
        assert mails[0][0] == "【告警】 s · 60 条"
        assert "…… 另有 10 条告警，随后发送（全部告警：telemetry alerts list）" in mails[0][1]
        assert mails[1][0] == "【告警】 s · 10 条"


async def test_an_alert_is_told_only_when_the_part_carrying_it_was_delivered() -> None:
    """The second of three parts is refused: the first part's alerts are told, the second's
    failed (offered again after a minute), the third is not tried and failed likewise."""
    cfg = notify(urls=["wecombot://key"], retries=0)
    manager = breach(cfg, SHORT, 30)
    sent: list[str] = []

    async def send(url: str, title: str, body: str, route: Any, firing: bool) -> Result:
        sent.append(body)
        return Result(len(sent) != 2, "wecombot: ok" if len(sent) != 2 else "wecombot: refused with code 45009")

    results: list[tuple[int, bool, str]] = []

    def on_result(m: Message, ok: bool, detail: str) -> None:
        results.append((len(m.firing), ok, detail))
        manager.record(m, ok, T0)

    notifier = Notifier(cfg.routes, Metrics(CollectorRegistry()), ZONES, send=send)
    notifier.on_result = on_result
    [message] = manager.due(T0)
    assert not await notifier.deliver(message, None)
    assert len(sent) == 2
    first, second, third = results
    assert (first[1:], second[1:]) == (
        (True, "wecombot: ok (part 1 of 3)"),
        (False, "wecombot: refused with code 45009 (part 2 of 3)"),
    )
    assert third[1:] == (False, "not sent: part 2 of 3 failed")
    told = [a for a in manager.alerts.values() if a.sent_firing]
    assert len(told) == first[0]
    assert all(a.id in sent[0] for a in told)
    assert len(manager.undelivered()) == second[0] + third[0]
    assert manager.due(T0 + 30 * NS) == []  # the failed ones wait a minute
    [again] = manager.due(T0 + 61 * NS)
    assert {a.id for a in again.firing} == {a.id for a in manager.alerts.values() if not a.sent_firing}


async def test_a_lone_alert_too_long_for_wecom_is_shortened_and_delivered(robots: NotificationReceiver) -> None:
    cfg = notify(urls=["wecombot://key"], robot_base_url=robots.base_url, retries=0)
    manager = breach(cfg, SOP * 4, 1)
    await send_until_told(manager, Notifier(cfg.routes, Metrics(CollectorRegistry()), ZONES))
    [body] = robots.messages
    text = robot_text(body)
    assert robots.refused == []
    assert 2_000 < len(text.encode()) <= 2_048
    [alert] = manager.alerts.values()
    assert text.endswith(f"…\n  编号 {alert.id}")


async def test_a_shutdown_mid_message_fails_only_the_parts_not_sent() -> None:
    cfg = notify(urls=["wecombot://key"], retries=0)
    manager = breach(cfg, SHORT, 30)
    release = asyncio.Event()
    calls = 0

    async def send(url: str, title: str, body: str, route: Any, firing: bool) -> Result:
        nonlocal calls
        calls += 1
        if calls == 2:
            await release.wait()  # a robot that hangs on the second part
        return Result(True, "wecombot: ok")

    results: list[tuple[bool, str]] = []
    notifier = Notifier(cfg.routes, Metrics(CollectorRegistry()), ZONES, send=send)

    def on_result(m: Message, ok: bool, detail: str) -> None:
        results.append((ok, detail))
        manager.record(m, ok, T0)

    notifier.on_result = on_result
    stop = asyncio.Event()
    stop.set()  # already stopping: each target gets the drain time
    [message] = manager.due(T0)
    notifier.submit(message)
    await asyncio.wait_for(notifier.run(stop, drain_timeout=0.2), 10)
    assert results == [
        (True, "wecombot: ok (part 1 of 3)"),
        (False, "shutdown before delivery"),
        (False, "shutdown before delivery"),
    ]
    told = [a for a in manager.alerts.values() if a.sent_firing]
    assert told
    assert all(not a.failed for a in told)
    assert len(manager.undelivered()) == 30 - len(told)


async def test_default_send_posts_what_compose_measured(robots: NotificationReceiver) -> None:
    """The bytes the notifier counts are the bytes the robot receives."""
    from alerts.robots import counted_bytes  # noqa: PLC0415

    route = notify(robot_base_url=robots.base_url).routes[0]
    title, body = "【告警】 s · cod_limit", '• 数值 123.4 mg/L\n  "引号" 与 \\ 反斜杠'
    for url in ("dingtalk://SECRET@tok", "feishu://SECRET@hook"):
        assert (await default_send(url, title, body, route, True)).ok
        assert robots.messages[-1]["_bytes"] == counted_bytes(url, title, body)


def test_messages_link_to_the_alerts_page_when_its_address_is_set() -> None:
    cfg = notify()
    one = breach(cfg, "", 1).due(T0)[0]
    two = breach(cfg, "", 2).due(T0)[0]
    _, body = render(one, cfg.routes[0], ZONES, console_url="https://plant.example/telemetry/")
    [alert] = one.firing
    assert body.endswith(f"确认或屏蔽 https://plant.example/telemetry/ui/alerts/{alert.id}")
    _, body = render(two, cfg.routes[0], ZONES, console_url="https://plant.example/telemetry")
    assert body.endswith("确认或屏蔽 https://plant.example/telemetry/ui")  # several alerts: the list
    _, body = render(one, cfg.routes[0], ZONES)
    assert "/ui" not in body


def test_info_only_messages_are_notices_not_alarms() -> None:
    cfg = notify()
    manager = AlertManager(cfg)
    engine = RulesEngine([rule(kind="limit", name="cod_note", quantity="cod", above=100, severity="info")], ZONES)
    manager.ingest(engine.feed([Reading(T0, "s", "an", "cod", 150.0, "mg/L")]))
    [message] = manager.due(T0)
    title, _ = render(message, cfg.routes[0], ZONES)
    assert title.startswith("【通知】")
    title, _ = render(message, routes("en"), ZONES)
    assert title.startswith("[NOTICE]")
