"""Each stage of the notification path on its own, and the path as a whole: an alert the inhibit
or silence stage holds back is never sent, repeated or escalated."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from alerts.alert import Alert, Silence
from alerts.config import Inhibit, Notify, Route
from alerts.lifecycle import AlertManager
from alerts.stages import Candidate, DedupStage, EscalateStage, GroupStage, InhibitStage, RouteStage, SilenceStage
from telemetry.model import AlertEvent, AlertState

NS = 1_000_000_000
MIN = 60 * NS


def alert(rule: str = "cod", device: str = "an", state: str = "firing", started: int = 0, **kw: Any) -> Alert:
    return Alert(
        f"{rule}-{device}",
        rule,
        "s",
        kw.pop("severity", "critical"),
        {"device": device},
        state,
        started,
        150.0,
        100.0,
        "m",
        **kw,
    )


def route(**kw: Any) -> Route:
    return Route.model_validate({"name": "ops", "urls": ["json://a", "json://b"]} | kw)


def test_inhibit_holds_back_firing_targets_while_their_source_fires_with_the_same_labels() -> None:
    stage = InhibitStage([Inhibit.model_validate({"source": {"rule": "comm"}, "target": {"rule": "cod"}})])
    comm, cod, other, done = alert("comm"), alert("cod"), alert("cod", "b"), alert("cod", "c", "resolved")
    everything = [comm, cod, other, done]
    assert stage([cod, other, done], everything) == [other, done]  # same site and device only; resolves pass
    assert stage([cod], [cod, alert("comm", state="resolved")]) == [cod]  # a resolved source inhibits nothing


def test_silence_holds_back_firing_alerts_it_covers_while_it_lasts() -> None:
    stage = SilenceStage({"s1": Silence("s1", {"device": "an"}, 0, 60 * MIN)})
    cod, other, done = alert(), alert(device="b"), alert(state="resolved")
    assert stage([cod, other, done], 10 * MIN) == [other, done]
    assert stage([cod], 60 * MIN) == [cod]  # it ended


def test_route_puts_an_alert_on_each_target_of_each_route_it_passes() -> None:
    stage = RouteStage(
        [route(), route(name="boss", urls=["json://c"], severities=["critical"]), route(name="x", sites=["y"])]
    )
    assert [c.channel for c in stage([alert()])] == ["ops#0", "ops#1", "boss#0"]
    assert [c.channel for c in stage([alert(severity="warning")])] == ["ops#0", "ops#1"]


def test_dedup_tells_each_target_what_it_has_not_been_told() -> None:
    r = route(repeat_interval="4h")
    told = alert(sent_firing={"ops#0": 0})
    acked = alert(sent_firing={"ops#0": 0}, acked_by="wang")
    failed = alert(failed={"ops#0": 5 * MIN})
    resolved = alert(state="resolved", sent_firing={"ops#0": 0})
    never = alert(state="resolved")
    news = DedupStage()([Candidate(a, r, "ops#0") for a in (told, acked, failed, resolved, never)], 5 * MIN + 30 * NS)
    assert [(c.alert, c.news) for c in news] == [(resolved, "resolved")]
    [repeat] = DedupStage()([Candidate(told, r, "ops#0")], 4 * 60 * MIN)
    assert (repeat.news, repeat.repeat) == ("firing", True)
    assert DedupStage()([Candidate(acked, r, "ops#0")], 8 * 60 * MIN) == []  # acknowledged: no more repeats


def test_group_waits_then_batches_a_groups_news_per_target() -> None:
    r = route(group_wait="30s", group_interval="5m")
    stage = GroupStage()
    first = [Candidate(alert(), r, "ops#0", "firing")]
    assert stage(first, 0) == []  # group_wait
    [message] = stage([*first, Candidate(alert("tp"), r, "ops#0", "firing")], 30 * NS)
    assert [a.rule for a in message.firing] == ["cod", "tp"]


def test_escalate_goes_once_per_target_after_the_wait_unless_acknowledged() -> None:
    routes = {"ops": route(escalate_after="2h", escalate_to="boss"), "boss": route(name="boss", urls=["json://c"])}
    stage = EscalateStage(routes, RouteStage([routes["ops"]]))
    # audible_ns 0: past inhibition and silences since it started
    assert stage([alert(audible_ns=0)], 60 * MIN) == []
    [message] = stage([alert(audible_ns=0)], 2 * 60 * MIN)
    assert (message.channel, message.escalation) == ("boss#0", True)
    assert stage([alert(escalated=["boss#0"], audible_ns=0)], 3 * 60 * MIN) == []
    assert stage([alert(acked_by="wang", audible_ns=0)], 3 * 60 * MIN) == []
    late = alert()  # first audible at 1 h (a silence ended): the wait counts from then
    assert stage([late], 60 * MIN) == []
    assert stage([late], 2 * 60 * MIN) == []
    assert len(stage([late], 3 * 60 * MIN)) == 1


def test_escalations_due_at_once_go_in_one_message_per_target_and_site() -> None:
    """Thirty alerts escalated at one moment were thirty messages to the manager's robot."""
    routes = {"ops": route(escalate_after="2h", escalate_to="boss"), "boss": route(name="boss", urls=["json://c"])}
    stage = EscalateStage(routes, RouteStage([routes["ops"]]))
    many = [alert(device=f"d{i}", audible_ns=0) for i in range(30)]
    [message] = stage(many, 2 * 60 * MIN)
    assert (message.channel, message.escalation, len(message.firing)) == ("boss#0", True, 30)


def event(rule: str, device: str, state: AlertState, ts: int) -> AlertEvent:
    return AlertEvent(ts, "s", rule, "critical", state, f"{rule} {state.value}", 150.0, 100.0, {"device": device})


def test_an_inhibited_alert_is_never_sent_repeated_or_escalated() -> None:
    """The review's case: cod inhibited by comm_lost went to the escalation route after 2 h."""
    manager = AlertManager(
        Notify.model_validate(
            {
                "routes": [
                    {
                        "name": "ops",
                        "urls": ["json://a"],
                        "group_wait": "0s",
                        "rules": ["cod"],
                        "repeat_interval": "1h",
                        "escalate_after": "2h",
                        "escalate_to": "boss",
                    },
                    {"name": "boss", "urls": ["json://b"], "rules": ["none"]},
                ],
                "inhibit": [{"source": {"rule": "comm_lost"}, "target": {"rule": "cod"}}],
            }
        )
    )
    manager.ingest([event("comm_lost", "an", AlertState.FIRING, 0), event("cod", "an", AlertState.FIRING, 0)])
    sent = []
    for minute in range(0, 5 * 60, 5):
        for message in manager.due(minute * MIN):
            sent.append((minute, message.channel, [a.rule for a in message.firing], message.escalation))
            manager.record(message, True, minute * MIN)
    assert sent == []  # the route only carries cod; comm_lost goes nowhere; cod is inhibited throughout


def test_a_silenced_alert_is_never_repeated_or_escalated_and_is_told_when_the_silence_ends() -> None:
    manager = AlertManager(
        Notify.model_validate(
            {
                "routes": [
                    {
                        "name": "ops",
                        "urls": ["json://a"],
                        "group_wait": "0s",
                        "repeat_interval": "1h",
                        "escalate_after": "2h",
                        "escalate_to": "boss",
                    },
                    {"name": "boss", "urls": ["json://b"], "rules": ["none"]},
                ]
            }
        )
    )
    manager.add_silence(Silence("s1", {"rule": "cod"}, 0, 3 * 60 * MIN, "maintenance"))
    manager.ingest([event("cod", "an", AlertState.FIRING, 0)])
    sent = []
    for minute in range(0, 5 * 60 + 5, 5):
        for message in manager.due(minute * MIN):
            sent.append((minute, message.channel, message.escalation))
            manager.record(message, True, minute * MIN)
    # after the silence: told, repeated hourly, and escalated only once its 2 h without an ack
    # have passed since then (it was escalated the moment the silence ended)
    assert sent == [(180, "ops#0", False), (240, "ops#0", False), (300, "ops#0", False), (300, "boss#0", True)]


def test_a_device_wide_nodata_alert_resolves_under_the_id_it_fired_with() -> None:
    """nodata without a quantity fired with the last reading's quantity and resolved with the next
    reading's: two ids, the firing one stuck for ever, repeating every 4 h and escalating."""
    from pydantic import TypeAdapter  # noqa: PLC0415

    from alerts.rule_config import RuleConfig  # noqa: PLC0415
    from alerts.rules import RulesEngine  # noqa: PLC0415
    from telemetry.model import Reading  # noqa: PLC0415

    rule = TypeAdapter(RuleConfig).validate_python({"kind": "nodata", "name": "silent", "site": "s", "for": "5m"})
    engine = RulesEngine([rule], {"s": "Asia/Shanghai"})  # type: ignore[list-item]
    manager = AlertManager(Notify())
    manager.ingest(engine.feed([Reading(0, "s", "an", "cod", 50.0, "mg/L")]))
    manager.ingest(engine.tick(10 * MIN))  # silent: fires
    manager.ingest(engine.feed([Reading(11 * MIN, "s", "an", "nh3n", 5.0, "mg/L")]))  # back, another quantity
    assert [(a.state, a.labels) for a in manager.alerts.values()] == [("resolved", {"device": "an", "point": "s"})]


def test_maintenance_too_long_fires_beside_unflagged_quantities_and_clears_per_quantity() -> None:
    """6 h of COD flagged C beside N-flagged flow, rule ``for: 4h``: it used to never fire, because
    every flow reading cleared the device's timer."""
    from pydantic import TypeAdapter  # noqa: PLC0415

    from alerts.rule_config import RuleConfig  # noqa: PLC0415
    from alerts.rules import RulesEngine  # noqa: PLC0415
    from telemetry.model import Flag, Reading  # noqa: PLC0415

    rule = TypeAdapter(RuleConfig).validate_python(
        {"kind": "maintenance_too_long", "name": "maint", "site": "s", "for": "4h"}
    )
    engine = RulesEngine([rule], {"s": "Asia/Shanghai"})  # type: ignore[list-item]
    events = []
    for minute in range(0, 6 * 60, 10):
        t = minute * MIN
        events += engine.feed(
            [Reading(t, "s", "an", "cod", 0.0, "mg/L", Flag.C), Reading(t + NS, "s", "an", "flow", 2.0, "m3/h")]
        )
        events += engine.tick(t + 2 * NS)
    fired = [e for e in events if e.state is AlertState.FIRING]
    assert [(e.ts // MIN, e.labels["device"]) for e in fired] == [(240, "an")]
    assert "cod flagged C for 4.0 h" in fired[0].message
    events = engine.feed([Reading(6 * 60 * MIN, "s", "an", "flow", 2.0, "m3/h")])  # flow's reading: no change
    assert events == []
    [resolved] = engine.feed([Reading(6 * 60 * MIN + NS, "s", "an", "cod", 40.0, "mg/L")])  # COD measures again
    assert resolved.state is AlertState.RESOLVED
    assert "quantity" not in resolved.labels


def test_an_alert_restored_with_an_older_identity_is_resolved_by_its_rule() -> None:
    """Saved by a version that labelled a device-wide nodata alert with a quantity: the resolve
    the rule sends now (device only) ends it instead of leaving it firing for ever."""
    manager = AlertManager(Notify())
    old = AlertEvent(
        0,
        "s",
        "silent",
        "warning",
        AlertState.FIRING,
        "m",
        600.0,
        300.0,
        {"device": "an", "quantity": "cod", "unit": "mg/L"},
    )
    manager.ingest([old])
    other = AlertEvent(
        0, "s", "silent", "warning", AlertState.FIRING, "m", 600.0, 300.0, {"device": "b", "quantity": "cod"}
    )
    manager.ingest([other])
    manager.ingest([AlertEvent(NS, "s", "silent", "warning", AlertState.RESOLVED, "m", 0.0, 300.0, {"device": "an"})])
    assert sorted((a.labels["device"], a.state) for a in manager.alerts.values()) == [
        ("an", "resolved"),
        ("b", "firing"),
    ]


def test_alerts_saved_before_audible_ns_escalate_from_their_start_as_they_did() -> None:
    manager = AlertManager(Notify.model_validate({"routes": []}))
    saved = asdict(alert(started=7 * MIN))
    del saved["audible_ns"]
    manager.restore({"alerts": [saved]})
    assert [a.audible_ns for a in manager.alerts.values()] == [7 * MIN]
