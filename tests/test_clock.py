"""Host clock steps: found against the monotonic clock, and rule and notification timers
move with them, so a step is neither silence, nor a condition held, nor a due repeat."""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry

from alerts.desk import AlertDesk
from alerts.lifecycle import AlertManager
from alerts.notify import Notifier
from alerts.rules import RulesEngine
from telemetry.clock import SETTLE_NS, ClockWatch
from telemetry.metrics import Metrics
from telemetry.model import AlertEvent, Reading
from telemetry.outbox import Outbox
from tests.daemon import direct_db
from tests.test_alerting import Desk, notify
from tests.test_rules import r, rule, states

NS = 1_000_000_000
HOUR = 3600


class Clocks:
    """A wall and a monotonic clock the test moves: ``advance`` moves both, ``step`` the wall only."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000 * NS
        self.mono = 5 * NS

    def advance(self, s: float) -> None:
        self.wall += int(s * NS)
        self.mono += int(s * NS)

    def step(self, s: float) -> None:
        self.wall += int(s * NS)

    def watch(self) -> ClockWatch:
        return ClockWatch(wall=lambda: self.wall, mono=lambda: self.mono)


def reading(ts: int) -> Reading:
    return Reading(ts, "s", "an", "cod", 1.0)


def test_a_step_is_told_from_jitter_and_slewing() -> None:
    clocks = Clocks()
    watch = clocks.watch()
    for _ in range(100):  # slewing: 0.5 ms per second, 50 ms in all, never a step
        clocks.advance(1)
        clocks.step(0.0005)
        assert watch.check() == 0
    clocks.step(0.9)
    assert watch.check() == 0  # under a second: timers may follow it
    clocks.advance(1)
    clocks.step(-HOUR)
    assert watch.check() == -HOUR * NS
    assert watch.check() == 0  # told once


def test_readings_stamped_before_a_step_are_moved_onto_the_new_timeline_for_a_while() -> None:
    clocks = Clocks()
    watch = clocks.watch()
    before = reading(clocks.wall - NS // 10)  # polled just before the step, committed after it
    clocks.step(HOUR)
    after = reading(clocks.wall)
    assert watch.align([before, after]) == [before, after]  # no step seen yet
    assert watch.check() == HOUR * NS
    assert watch.align([before, after]) == [before._replace(ts=before.ts + HOUR * NS), after]
    clocks.advance(SETTLE_NS / NS + 1)
    assert watch.align([before]) == [before]  # long after the step, a reading's ts is what it is


def test_nodata_neither_fires_on_a_step_forward_nor_sleeps_through_a_step_back() -> None:
    def run(step_s: float, tell: bool, reports_after: bool = True) -> list[tuple[str, float]]:
        engine = RulesEngine([rule(kind="nodata", quantity="cod", **{"for": "10s"})])
        events: list[AlertEvent] = []
        t = 0.0
        for _ in range(5):  # reporting every second
            events += engine.feed([r(t, 1)]) + engine.tick(int(t * NS))
            t += 1
        t += step_s
        if tell:
            engine.clock_stepped(int(step_s * NS))
        events += engine.tick(int(t * NS))  # a tick comes first
        if reports_after:
            events += engine.feed([r(t, 1)])
        for _ in range(15):  # then the analyzer falls silent
            t += 1
            events += engine.tick(int(t * NS))
        return states(events)

    assert run(HOUR, tell=False)[0] == ("firing", 3605)  # what the step did before it was seen
    assert run(HOUR, tell=True) == [("firing", 3616)]  # only the real silence, 11 s after the last reading
    assert run(-HOUR, tell=True) == [("firing", -3584)]
    # An analyzer that falls silent as the clock steps back: seen 10 s after its last reading,
    # where without the shift it would stay unseen for an hour.
    assert run(-HOUR, tell=True, reports_after=False) == [("firing", -3585)]
    assert run(-HOUR, tell=False, reports_after=False) == []


def test_held_conditions_keep_their_age_across_a_step() -> None:
    engine = RulesEngine(
        [
            rule(kind="limit", name="cod", quantity="cod", above=100, **{"for": "5m"}),
            rule(kind="flatline", name="stuck", quantity="tp", **{"for": "10m"}),
        ]
    )
    assert engine.feed([r(0, 150), r(0, 0.3, quantity="tp"), r(120, 150), r(120, 0.3, quantity="tp")]) == []
    engine.clock_stepped(-HOUR * NS)
    events = engine.feed([r(t - HOUR, 150) for t in (180, 240, 300)])
    assert states(events) == [("firing", 300 - HOUR)]  # 5 min after the breach began, not an hour later
    engine.clock_stepped(2 * HOUR * NS)
    assert engine.feed([r(t + HOUR, 0.3, quantity="tp") for t in (300, 420, 540)]) == []  # held 9 min, not 69
    assert states(engine.feed([r(600 + HOUR, 0.3, quantity="tp")])) == [("firing", 600 + HOUR)]


def test_notification_timers_move_with_a_step() -> None:
    desk = Desk(
        notify(repeat_interval="1h", escalate_after="30m", escalate_to="ops"),
        [rule(kind="limit", name="cod", quantity="cod", above=100)],
    )
    desk.feed(0, 150)
    desk.tick(0)
    desk.tick(600)
    desk.manager.clock_stepped(2 * HOUR * NS)  # ten minutes in, the clock jumps two hours
    for t in range(600, 3600 + 1, 60):
        desk.tick(t + 2 * HOUR)
    assert [(t - 2 * HOUR if t else t, kind) for t, _, kind, _ in desk.log] == [
        (0, "firing"),
        (1800, "escalation"),  # 30 min after it started, not at the step
        (3600, "firing"),  # the hourly repeat, not at the step
    ]


async def test_the_moved_timers_are_saved_for_a_restart() -> None:
    """A restarted daemon cannot see a step made before it started: it must find them moved."""

    cfg = notify(group_wait="1h")
    metrics = Metrics(CollectorRegistry())
    engine = RulesEngine([rule(kind="nodata", name="silent", quantity="cod", **{"for": "10m"})], {"s": "UTC"})
    outbox = Outbox(":memory:")
    desk = AlertDesk(AlertManager(cfg), Notifier(cfg.routes, metrics, {"s": "UTC"}), engine, metrics, outbox, direct_db)
    engine.feed([r(0, 1)])
    await desk.save()
    desk.clock_stepped(HOUR * NS)
    await desk.tick(HOUR * NS)
    saved = orjson.loads(outbox.load_state("rules") or b"{}")
    assert saved["silent"]["state"]["last"]["s/an/cod"][0] == HOUR * NS  # the reading at 0, moved by the step
