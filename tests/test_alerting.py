"""Alert lifecycle and notification: exactly the messages a supervisor should get."""

from __future__ import annotations

import asyncio
import email
import socket
import time
from collections.abc import Iterator
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller
from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter

from alerts import rule_config
from alerts.alert import Message, Silence
from alerts.config import Notify
from alerts.desk import AlertDesk
from alerts.lifecycle import AlertManager
from alerts.notify import Notifier, default_send, render
from alerts.robots import Result
from alerts.rule_config import EvaluatedRule, RuleConfig
from alerts.rules import RulesEngine
from telemetry.metrics import Metrics
from telemetry.model import AlertEvent, Reading
from telemetry.outbox import Outbox
from telemetry.sim.notifications import NotificationReceiver
from telemetry.timing import Backoff
from tests.daemon import direct_db, start_daemon
from tests.services import Influx1

NS = 1_000_000_000
MIN = 60 * NS


def notify(**route: Any) -> Notify:
    base = {"name": "ops", "urls": ["json://127.0.0.1:1/x"], "group_wait": "0s", "group_interval": "0s"}
    return Notify.model_validate({"routes": [base | route]})


def rule(**kw: Any) -> EvaluatedRule:
    parsed: EvaluatedRule = TypeAdapter(RuleConfig).validate_python({"severity": "critical"} | kw)  # type: ignore[assignment]
    return parsed


class Desk:
    """Rules + manager with a manual clock; sends succeed and are logged as (time, channel, kind, rules)."""

    def __init__(self, cfg: Notify, rules: list[EvaluatedRule]) -> None:
        self.cfg = cfg
        self.rules = rules
        self.engine = RulesEngine(rules, {"s": "Asia/Shanghai"})
        self.manager = AlertManager(cfg)
        self.log: list[tuple[int, str, str, tuple[str, ...]]] = []

    def feed(self, t_s: float, value: float, device: str = "an", quantity: str = "cod") -> None:
        self.manager.ingest(self.engine.feed([Reading(int(t_s * NS), "s", device, quantity, value, "mg/L")]))

    def tick(self, t_s: float) -> None:
        now = int(t_s * NS)
        self.manager.ingest(self.engine.tick(now))
        for message in self.manager.due(now):
            kind = "escalation" if message.escalation else "firing" if message.firing else "resolved"
            names = tuple(sorted(a.rule for a in message.firing + message.resolved))
            self.log.append((int(t_s), message.channel, kind, names))
            self.manager.record(message, True, now)

    def restart(self) -> None:
        """What a daemon restart does: state to JSON in SQLite, then back into fresh objects."""
        alerts, rules = orjson.dumps(self.manager.snapshot()), orjson.dumps(self.engine.snapshot())
        self.engine = RulesEngine(self.rules, {"s": "Asia/Shanghai"})
        self.manager = AlertManager(self.cfg)
        self.manager.restore(orjson.loads(alerts))
        self.engine.restore(orjson.loads(rules))


def test_flapping_around_the_limit_with_hysteresis_sends_one_firing_and_one_resolved() -> None:
    desk = Desk(notify(), [rule(kind="limit", name="cod", quantity="cod", above=100, clear_above=90)])
    for t, value in enumerate([95, 101, 99, 102, 98, 101, 95, 100.5, 91, 89, 95, 88]):
        desk.feed(t, value)
        desk.tick(t)
    assert desk.log == [(1, "ops#0", "firing", ("cod",)), (9, "ops#0", "resolved", ("cod",))]


def test_keep_firing_for_rides_out_a_brief_dip() -> None:
    desk = Desk(notify(), [rule(kind="limit", name="cod", quantity="cod", above=100, keep_firing_for="5m")])
    for t, value in [(0, 120), (60, 80), (120, 130), (180, 80), (400, 80), (480, 80)]:
        desk.feed(t, value)
        desk.tick(t)
    assert desk.log == [(0, "ops#0", "firing", ("cod",)), (480, "ops#0", "resolved", ("cod",))]


def test_repeat_interval_until_acknowledged() -> None:
    desk = Desk(notify(repeat_interval="1h"), [rule(kind="limit", name="cod", quantity="cod", above=100)])
    desk.feed(0, 150)
    for t in range(0, 3 * 3600 + 1, 600):
        desk.tick(t)
    assert [(t, kind) for t, _, kind, _ in desk.log] == [
        (0, "firing"),
        (3600, "firing"),
        (7200, "firing"),
        (10800, "firing"),
    ]
    [alert] = desk.manager.alerts.values()
    desk.manager.ack(alert.id, "wang", 10801 * NS)
    for t in range(10800, 6 * 3600, 600):
        desk.tick(t)
    assert len(desk.log) == 4


def test_alerts_of_one_site_are_grouped() -> None:
    cfg = notify(group_wait="30s", group_interval="5m")
    rules = [rule(kind="limit", name=q, quantity=q, above=10) for q in ("cod", "nh3n", "tp")]
    desk = Desk(cfg, rules)
    desk.feed(0, 50, quantity="cod")
    desk.tick(0)
    desk.feed(10, 50, quantity="nh3n")
    for t in range(0, 31, 5):
        desk.tick(t)
    desk.feed(40, 50, quantity="tp")
    for t in range(40, 400, 10):
        desk.tick(t)
    assert desk.log == [(30, "ops#0", "firing", ("cod", "nh3n")), (330, "ops#0", "firing", ("tp",))]


def test_communication_loss_inhibits_that_analyzers_limit_alerts() -> None:
    cfg = Notify.model_validate(
        {
            "routes": [{"name": "ops", "urls": ["json://x"], "group_wait": "0s", "group_interval": "0s"}],
            "inhibit": [{"source": {"rule": "comm_lost"}, "target": {"rule": "cod"}, "equal": ["site", "device"]}],
        }
    )
    rules = [
        rule(kind="limit", name="cod", quantity="cod", above=100),
        rule(kind="limit", name="comm_lost", quantity="comm", above=0.5),
    ]
    desk = Desk(cfg, rules)
    desk.feed(0, 1, quantity="comm")  # the analyzer's link is down
    desk.feed(0, 150, quantity="cod")  # and its last value looks like an exceedance
    desk.feed(0, 150, quantity="cod", device="other")  # another analyzer's is not inhibited
    desk.tick(0)
    assert [(kind, names) for _, _, kind, names in desk.log] == [("firing", ("cod", "comm_lost"))]
    [message_alerts] = [names for *_, names in desk.log]
    assert message_alerts.count("cod") == 1
    desk.feed(60, 0, quantity="comm")  # link back; the exceedance is still there: now it is told
    desk.tick(60)
    # One message for the site: the inhibited exceedance firing, the communication loss resolved.
    assert desk.log[1:] == [(60, "ops#0", "firing", ("cod", "comm_lost"))]
    told = {(a.rule, a.labels["device"]): (a.state, sorted(a.sent_firing)) for a in desk.manager.alerts.values()}
    assert told[("cod", "an")] == ("firing", ["ops#0"])
    assert told[("comm_lost", "an")] == ("resolved", ["ops#0"])


def test_silence_holds_messages_and_lets_them_out_when_it_ends() -> None:
    desk = Desk(notify(), [rule(kind="limit", name="cod", quantity="cod", above=100)])
    desk.manager.add_silence(Silence("s1", {"site": "s"}, 0, 3600 * NS, "calibration", "wang"))
    desk.feed(10, 150)
    desk.tick(10)
    desk.feed(20, 50)  # resolved inside the silence: never told, so nothing to resolve
    desk.feed(30, 150)
    for t in range(30, 3600, 60):
        desk.tick(t)
    assert desk.log == []
    desk.tick(3600)
    assert desk.log == [(3600, "ops#0", "firing", ("cod",))]


def test_escalation_to_a_second_route_when_nobody_acknowledges() -> None:
    cfg = Notify.model_validate(
        {
            "routes": [
                {
                    "name": "ops",
                    "urls": ["json://x"],
                    "group_wait": "0s",
                    "escalate_after": "30m",
                    "escalate_to": "boss",
                    "repeat_interval": "24h",
                },
                {"name": "boss", "urls": ["json://y"], "group_wait": "0s", "sites": ["nowhere"]},
            ]
        }
    )
    desk = Desk(
        cfg,
        [
            rule(kind="limit", name="cod", quantity="cod", above=100),
            rule(kind="limit", name="tp", quantity="tp", above=1),
        ],
    )
    desk.feed(0, 150)
    desk.feed(0, 5, quantity="tp")
    desk.tick(0)
    tp = next(a for a in desk.manager.alerts.values() if a.rule == "tp")
    desk.manager.ack(tp.id, "li", 60 * NS)
    for t in range(60, 3 * 3600, 60):
        desk.tick(t)
    assert desk.log == [(0, "ops#0", "firing", ("cod", "tp")), (1800, "boss#0", "escalation", ("cod",))]


@pytest.mark.parametrize("when", ["pending", "firing", "silenced"])
def test_restart_changes_nothing_in_the_message_log(when: str) -> None:
    def scenario(restart_at: int | None) -> list[tuple[int, str, str, tuple[str, ...]]]:
        desk = Desk(
            notify(repeat_interval="1h"), [rule(kind="limit", name="cod", quantity="cod", above=100, **{"for": "5m"})]
        )
        if when == "silenced":
            desk.manager.add_silence(Silence("s1", {"rule": "cod"}, 0, 1800 * NS, "maintenance", "wang"))
        values = [(t, 150.0) for t in range(0, 5400, 60)] + [(t, 50.0) for t in range(5400, 7200, 60)]
        for t, value in values:
            if t == restart_at:
                desk.restart()
            desk.feed(t, value)
            desk.tick(t)
        return desk.log

    restart_at = {"pending": 120, "firing": 900, "silenced": 600}[when]
    baseline = scenario(None)
    assert scenario(restart_at) == baseline
    expected = {
        "pending": [(300, "firing"), (3900, "firing"), (5400, "resolved")],  # fires after 'for', repeats hourly
        "firing": [(300, "firing"), (3900, "firing"), (5400, "resolved")],
        "silenced": [(1800, "firing"), (5400, "resolved")],  # told when the silence ends
    }[when]
    assert [(t, kind) for t, _, kind, _ in baseline] == expected


# -- delivery ----------------------------------------------------------------------------------


@pytest.fixture
def robot() -> Iterator[NotificationReceiver]:
    server = NotificationReceiver().start()
    server.answer = {"errcode": 0, "errmsg": "ok"}
    yield server
    server.stop()


async def test_a_robot_refusal_with_http_200_is_a_failure_retried_and_surfaced(robot: NotificationReceiver) -> None:
    robot.answer = {"errcode": 310000, "errmsg": "keywords not in content"}
    cfg = notify(urls=["dingtalk://SIGNSECRET@tok123"], robot_base_url=robot.base_url, retries=2)
    manager = AlertManager(cfg)
    engine = RulesEngine([rule(kind="limit", name="cod", quantity="cod", above=100)], {"s": "Asia/Shanghai"})
    manager.ingest(engine.feed([Reading(0, "s", "an", "cod", 150.0, "mg/L")]))
    metrics = Metrics(CollectorRegistry())
    notifier = Notifier(cfg.routes, metrics, {"s": "Asia/Shanghai"}, backoff=lambda: Backoff(0.0, 0.0))
    results: list[tuple[bool, str]] = []

    def on_result(m: Message, ok: bool, detail: str) -> None:
        results.append((ok, detail))
        manager.record(m, ok, 5 * NS)

    notifier.on_result = on_result
    [message] = manager.due(5 * NS)
    assert not await notifier.deliver(message, None)
    assert len(robot.messages) == 3  # tried, and retried twice
    assert results == [(False, "dingtalk: refused with code 310000: keywords not in content")]
    assert metrics.registry.get_sample_value("telemetry_notifications_total", {"route": "ops", "result": "failed"}) == 3
    assert [a.rule for a in manager.undelivered()] == ["cod"]
    body = robot.messages[0]
    path = body["_path"]
    assert path.startswith("/robot/send?access_token=tok123&timestamp=")
    assert "&sign=" in path
    assert "化学需氧量" in body["markdown"]["text"]
    assert manager.due(30 * NS) == []  # not hammered: offered again after a minute
    robot.answer = {"errcode": 0, "errmsg": "ok"}
    [again] = manager.due(66 * NS)
    assert await notifier.deliver(again, None)
    assert manager.undelivered() == []


async def test_a_dead_mail_server_retrying_does_not_hold_back_the_robot(robot: NotificationReceiver) -> None:
    """Each target (URL of a route) has its own queue: the e-mail target waiting to retry
    (for an hour here) holds back neither the robot's firing message nor its resolve, and
    each target's record says what it was told."""
    dead_mail = f"mailto://127.0.0.1:{_free_port()}?from=plant@example.com&to=sup@example.com&mode=insecure"
    cfg = notify(urls=[dead_mail, "dingtalk://tok1"], robot_base_url=robot.base_url, retries=3)
    manager = AlertManager(cfg)
    engine = RulesEngine([rule(kind="limit", name="cod", quantity="cod", above=100)], {"s": "Asia/Shanghai"})
    metrics = Metrics(CollectorRegistry())
    notifier = Notifier(cfg.routes, metrics, {"s": "Asia/Shanghai"}, backoff=lambda: Backoff(3600.0, 3600.0))
    results: list[tuple[str, bool, str]] = []
    told = asyncio.Event()

    def on_result(m: Message, ok: bool, detail: str) -> None:
        results.append((m.channel, ok, "firing" if m.firing else "resolved"))
        manager.record(m, ok, 5 * NS)
        told.set()

    notifier.on_result = on_result
    stop = asyncio.Event()
    runner = asyncio.create_task(notifier.run(stop))
    manager.ingest(engine.feed([Reading(0, "s", "an", "cod", 150.0, "mg/L")]))
    for message in manager.due(5 * NS):  # the mail first: it used to hold the robot's turn
        notifier.submit(message)
    await asyncio.wait_for(told.wait(), 10)
    assert results == [("ops#1", True, "firing")]
    [alert] = manager.alerts.values()
    assert alert.sent_firing == {"ops#1": 5 * NS}

    told.clear()
    manager.ingest(engine.feed([Reading(6 * NS, "s", "an", "cod", 50.0, "mg/L")]))
    [resolve] = manager.due(6 * NS)  # only where the firing message went
    assert resolve.channel == "ops#1"
    notifier.submit(resolve)
    await asyncio.wait_for(told.wait(), 10)
    assert results == [("ops#1", True, "firing"), ("ops#1", True, "resolved")]
    assert len(robot.messages) == 2

    stop.set()  # the mail target gives up its wait to retry, and reports the failure
    await asyncio.wait_for(runner, 10)
    assert results[2] == ("ops#0", False, "firing")
    failed = {"route": "ops", "result": "failed"}
    assert metrics.registry.get_sample_value("telemetry_notifications_total", failed) == 1  # not retried in place
    assert alert.failed == {"ops#0": 5 * NS}
    assert alert.sent_resolved == ["ops#1"]


async def test_a_slow_target_does_not_delay_another_and_each_keeps_its_order() -> None:
    cfg = notify(urls=["json://slow/x", "json://fast/x"])
    manager = AlertManager(cfg)
    engine = RulesEngine([rule(kind="limit", name="cod", quantity="cod", above=100)], {"s": "UTC"})
    release = asyncio.Event()
    sent: list[tuple[str, str]] = []

    async def send(url: str, title: str, body: str, route: Any, firing: bool) -> Result:
        if "slow" in url:
            await release.wait()
        sent.append((url.split("/")[2], "firing" if firing else "resolved"))
        return Result(True, "ok")

    fast_told: list[asyncio.Event] = [asyncio.Event(), asyncio.Event()]  # firing, resolved

    def on_result(m: Message, ok: bool, detail: str) -> None:
        manager.record(m, ok, 0)
        if m.channel == "ops#1":
            fast_told[0 if m.firing else 1].set()

    notifier = Notifier(cfg.routes, Metrics(CollectorRegistry()), {"s": "UTC"}, send=send)
    notifier.on_result = on_result
    stop = asyncio.Event()
    runner = asyncio.create_task(notifier.run(stop))
    manager.ingest(engine.feed([Reading(0, "s", "an", "cod", 150.0, "mg/L")]))
    for message in manager.due(0):
        notifier.submit(message)
    await asyncio.wait_for(fast_told[0].wait(), 10)
    manager.ingest(engine.feed([Reading(NS, "s", "an", "cod", 50.0, "mg/L")]))
    [resolve] = manager.due(NS)  # the fast target's resolve; the slow one has not fired yet
    notifier.submit(resolve)
    await asyncio.wait_for(fast_told[1].wait(), 10)
    assert sent == [("fast", "firing"), ("fast", "resolved")]
    release.set()
    stop.set()
    await asyncio.wait_for(runner, 10)
    assert sent[2:] == [("slow", "firing")]


async def test_a_bug_in_a_target_worker_ends_the_notifier_loudly() -> None:
    cfg = notify()
    manager = AlertManager(cfg)
    engine = RulesEngine([rule(kind="limit", name="cod", quantity="cod", above=100)], {"s": "UTC"})

    async def send(url: str, title: str, body: str, route: Any, firing: bool) -> Result:
        return Result(True, "ok")

    def on_result(m: Message, ok: bool, detail: str) -> None:
        raise RuntimeError("bookkeeping bug")

    notifier = Notifier(cfg.routes, Metrics(CollectorRegistry()), {"s": "UTC"}, send=send)
    notifier.on_result = on_result
    runner = asyncio.create_task(notifier.run(asyncio.Event()))
    manager.ingest(engine.feed([Reading(0, "s", "an", "cod", 150.0, "mg/L")]))
    [message] = manager.due(0)
    notifier.submit(message)
    with pytest.raises(RuntimeError, match="bookkeeping bug"):
        await asyncio.wait_for(runner, 10)


async def test_wecom_and_feishu_answers_are_read(robot: NotificationReceiver) -> None:
    route = notify(robot_base_url=robot.base_url).routes[0]
    robot.answer = {"errcode": 93000, "errmsg": "invalid webhook url"}
    assert await default_send("wecombot://key1", "t", "b", route, True) == Result(
        False, "wecombot: refused with code 93000: invalid webhook url"
    )
    robot.answer = {"code": 0, "msg": "success"}
    assert (await default_send("feishu://hook1", "t", "b", route, True)).ok
    assert robot.messages[0]["_path"] == "/cgi-bin/webhook/send?key=key1"
    assert robot.messages[1]["_path"] == "/open-apis/bot/v2/hook/hook1"
    assert robot.messages[1]["content"]["text"] == "t\nb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_email_arrives_with_the_chinese_template_intact() -> None:
    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    port = _free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        url = f"mailto://127.0.0.1:{port}?from=plant@example.com&to=supervisor@example.com&mode=insecure"
        cfg = notify(urls=[url])
        manager = AlertManager(cfg)
        engine = RulesEngine([rule(kind="limit", name="cod_limit", quantity="cod", above=100)], {"s": "Asia/Shanghai"})
        manager.ingest(engine.feed([Reading(0, "s", "an", "cod", 123.4, "mg/L")]))
        notifier = Notifier(cfg.routes, Metrics(CollectorRegistry()), {"s": "Asia/Shanghai"})
        [message] = manager.due(0)
        assert await notifier.deliver(message, None)
    finally:
        controller.stop()
    [envelope] = received
    mail = email.message_from_bytes(envelope.content)
    subject = str(make_header(decode_header(mail["Subject"])))
    parts = [p for p in mail.walk() if p.get_content_type() == "text/plain"]
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    text = payload.decode(parts[0].get_content_charset() or "utf-8")
    assert subject == "【告警】 s · cod_limit"
    assert "化学需氧量：数值 123.4 mg/L，限值 100 mg/L，自 1970-01-01 08:00 +08:00 起" in text
    assert envelope.rcpt_tos == ["supervisor@example.com"]


def test_english_template_and_grafana_link() -> None:
    cfg = notify(language="en")
    manager = AlertManager(cfg)
    engine = RulesEngine([rule(kind="limit", name="cod", quantity="cod", above=100)], {"s": "Asia/Shanghai"})
    manager.ingest(engine.feed([Reading(0, "s", "an", "cod", 123.4, "mg/L")]))
    [message] = manager.due(0)
    title, body = render(message, cfg.routes[0], {"s": "Asia/Shanghai"}, "http://grafana/d/plant?var-site={site}")
    assert title == "[FIRING] s · cod"
    assert "cod: 123.4 mg/L against limit 100 mg/L, since 1970-01-01 08:00" in body
    assert body.endswith("Dashboard: http://grafana/d/plant?var-site=s")
    assert isinstance(message, Message)
    assert asyncio.iscoroutinefunction(default_send)


def test_a_breach_is_handed_to_the_notifier_at_once_when_group_wait_is_zero() -> None:
    """The desk does not wait for its next tick (1 s) with what is already due."""

    for wait, expected in (("0s", 1), ("30s", 0)):
        cfg = notify(group_wait=wait)
        metrics = Metrics(CollectorRegistry())
        engine = RulesEngine([rule(kind="limit", name="cod_limit", quantity="cod", above=100)], {"s": "UTC"})
        notifier = Notifier(cfg.routes, metrics, {"s": "UTC"})
        desk = AlertDesk(AlertManager(cfg), notifier, engine, metrics, Outbox(":memory:"), direct_db)
        now = 1_700_000_000 * NS
        desk.events(engine.feed([Reading(now, "s", "an", "cod", 150.0, "mg/L")]))
        assert len(notifier.in_flight) == expected, wait


def test_an_alert_that_fired_before_points_existed_resolves_under_the_same_id() -> None:
    """A firing alert restored from a version without points, then resolved by a rule that now
    labels its events with the point: one alert, not a firing one left behind."""
    from alerts.alert import alert_id  # noqa: PLC0415
    from telemetry.model import AlertEvent, AlertState  # noqa: PLC0415

    labels = {"device": "an", "quantity": "cod", "unit": "mg/L"}
    before = AlertEvent(1, "s", "cod_limit", "critical", AlertState.FIRING, "m", 120.0, 100.0, labels)
    after = AlertEvent(2, "s", "cod_limit", "critical", AlertState.RESOLVED, "m", 60.0, 100.0, labels | {"point": "s"})
    other = AlertEvent(2, "s", "cod_limit", "critical", AlertState.RESOLVED, "m", 60.0, 100.0, labels | {"device": "b"})
    assert alert_id(before) == alert_id(after)
    assert alert_id(before) != alert_id(other)
    manager = AlertManager(Notify())
    manager.ingest([before])
    manager.ingest([after])
    assert [a.state for a in manager.alerts.values()] == ["resolved"]


async def test_a_message_that_fails_at_run_time_never_stops_the_committer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It used to: the first alert raised in the committer, the daemon stopped and exited 0."""
    monkeypatch.setattr(rule_config, "message_problem", lambda *args: None)  # one that got past the check
    config = tmp_path / "site.yaml"
    config.write_text(
        f"""
sites: [{{id: s}}]
rules: [{{kind: limit, name: cod, quantity: cod, above: 100, message: "{{site}} COD {{valu}}"}}]
metrics: {{enabled: false}}
outbox: {{path: "{tmp_path}/outbox.sqlite"}}
"""
    )
    events: list[AlertEvent] = []
    daemon = await start_daemon(config, lambda readings, new: events.extend(new))
    try:
        now = time.time_ns()
        await daemon.pipeline.emit([Reading(now, "s", "an", "cod", 120.0, "mg/L")])
        # Committed: the committer still runs (it used to wait here for ever).
        await asyncio.wait_for(daemon.pipeline.emit([Reading(now + 1, "s", "an", "cod", 50.0, "mg/L")]), 10)
        assert not daemon.task.done()
    finally:
        await daemon.close()
    assert [(e.state.value, e.message) for e in events] == [
        ("firing", "cod 120 mg/L above limit 100 mg/L at s/an"),
        ("resolved", "cod back to 50 mg/L (limit 100 mg/L) at s/an"),
    ]
    labels = {"component": "rules", "stage": "message", "error_type": "template"}
    assert daemon.sample("telemetry_errors_total", labels) == 2


@pytest.mark.service
async def test_two_devices_alerts_at_one_tick_are_two_points_in_influxdb(
    tmp_path: Path, unique: str, influx1: Influx1
) -> None:
    """Two analyzers fall silent together: their nodata events share the rule, site, severity,
    state and timestamp. Tagged by device (and quantity), they are two points, not one overwriting
    the other."""
    from tests.services import eventually  # noqa: PLC0415

    config = tmp_path / "site.yaml"
    config.write_text(
        f"""
sites: [{{id: s}}]
influxdb: [{{name: local, api: v1, url: "{influx1.url}", database: {unique}, create_database: true, flush_interval: 50ms}}]
rules: [{{kind: nodata, name: silent, site: s, quantity: cod, for: 1m}}]
metrics: {{enabled: false}}
outbox: {{path: "{tmp_path}/outbox.sqlite"}}
"""
    )
    daemon = await start_daemon(config)
    try:
        now = time.time_ns()
        await daemon.pipeline.emit([Reading(now, "s", dev, "cod", 50.0, "mg/L") for dev in ("an-1", "an-2")])
        daemon.pipeline.tick(now + 5 * MIN)  # one tick: both silent for 5 minutes
        rows = await asyncio.to_thread(
            eventually,
            lambda: r if len(r := influx1.query(unique, "SELECT * FROM alerts")) >= 2 else None,
            20,
            "2 alert points",
        )
    finally:
        await daemon.close()
    assert sorted((r["device"], r["quantity"], r["rule"], r["state"]) for r in rows) == [
        ("an-1", "cod", "silent", "firing"),
        ("an-2", "cod", "silent", "firing"),
    ]
    assert len({r["time"] for r in rows}) == 1  # the same tick: only the device tag tells them apart
