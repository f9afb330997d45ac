"""What every rule kind shares: judging a condition into one firing and one resolve, the
alert event it reports, and per-series state that is saved, restored and moved by clock steps
in one place (``Times``, ``Stamped``), so each kind only says what it keeps."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from telemetry.calendar import NS, Calendar, calendar
from telemetry.model import Aggregate, AlertEvent, AlertState, Measure, Reading

log = logging.getLogger("alerts.kinds")
V = TypeVar("V")
T = TypeVar("T", bound="Times | Stamped[Any]")


class Times(dict[str, int]):
    """Per series, a time (UTC ns): when a condition started to hold."""

    def dump(self) -> dict[str, int]:
        return dict(self)

    def load(self, data: Mapping[str, Any]) -> None:
        self.clear()
        self.update({k: int(v) for k, v in data.items()})

    def shift(self, delta_ns: int) -> None:
        for key in self:
            self[key] += delta_ns


class Stamped(dict[str, tuple[int, V]], Generic[V]):
    """Per series, a time and what was seen then (the last reading, the value held since)."""

    def __init__(self, encode: Callable[[V], Any] = lambda v: v, decode: Callable[[Any], V] = lambda v: v) -> None:
        super().__init__()
        self._encode, self._decode = encode, decode

    def dump(self) -> dict[str, list[Any]]:
        return {k: [t, self._encode(v)] for k, (t, v) in self.items()}

    def load(self, data: Mapping[str, Any]) -> None:
        self.clear()
        self.update({k: (int(t), self._decode(v)) for k, (t, v) in data.items()})

    def shift(self, delta_ns: int) -> None:
        for key, (t, value) in self.items():
            self[key] = (t + delta_ns, value)


def readings() -> Stamped[Reading]:
    """A store of readings (saved as their dicts)."""
    return Stamped(Reading.to_dict, Reading.from_dict)


def values() -> Stamped[float]:
    return Stamped(float, float)


def _no_point(item: Reading | Aggregate) -> str:
    return ""


def _no_count(stage: str, error_type: str) -> None:
    return None


class RuleState:
    """One rule's state: its series, what fires, and the events it reports."""

    def __init__(self, rule: Any, zones: Mapping[str, str]) -> None:
        self.rule = rule
        self._calendars = {site: calendar(zone) for site, zone in zones.items()}
        self._kept: dict[str, Times | Stamped[Any]] = {}
        self._firing: dict[str, AlertEvent] = {}
        self._since = self.keep("since", Times())  # breached since (``for``)
        self._clear_since = self.keep("clear_since", Times())  # clear since (``keep_firing_for``)
        # Live: the daemon's clock, so that presence (``nodata``) is judged by arrival, whatever a
        # device's clock says. None (a replay): the readings' time.
        self.now: Callable[[], int] | None = None
        self.point_of: Callable[[Reading | Aggregate], str] = _no_point  # the engine knows the points
        self.count_error: Callable[[str, str], None] = _no_count  # (stage, error_type): the engine's metrics
        self._message_failed = False
        self.counts: Counter[str] = Counter()  # data this rule adjusted or ignored, by reason (metrics)

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        return []

    def on_window(self, w: Aggregate) -> list[AlertEvent]:
        return []

    def on_tick(self, now_ns: int) -> list[AlertEvent]:
        return []

    def firing_keys(self) -> list[str]:
        return list(self._firing)

    def keep(self, name: str, store: T) -> T:
        """Register a per-series store under ``name``: it is saved, restored and moved by clock
        steps with the rest of the state, so no kind writes that by hand."""
        self._kept[name] = store
        return store

    def shift(self, delta_ns: int) -> None:
        """The host clock stepped by ``delta_ns``: move the times this state measures from
        with it, so the step neither counts as time held or silent nor takes time away."""
        for store in self._kept.values():
            store.shift(delta_ns)

    def _judge(
        self, key: str, breached: bool, ts: int, for_s: float, event: Callable[[AlertState], AlertEvent]
    ) -> list[AlertEvent]:
        if breached:
            self._clear_since.pop(key, None)
            since = self._since.setdefault(key, ts)
            if key not in self._firing and ts - since >= for_s * NS:
                self._firing[key] = fired = event(AlertState.FIRING)
                return [fired]
            return []
        self._since.pop(key, None)
        if key in self._firing:
            clear_since = self._clear_since.setdefault(key, ts)
            if ts - clear_since < self.rule.keep_firing_for * NS:
                return []  # keep-firing-for: a brief dip does not resolve (and re-fire)
            del self._firing[key]
            self._clear_since.pop(key, None)
            return [event(AlertState.RESOLVED)]
        return []

    def dump(self) -> dict[str, Any]:
        """State to survive a restart: what fires, and every registered store."""
        return {"firing": {k: e.to_dict() for k, e in self._firing.items()}} | {
            name: store.dump() for name, store in self._kept.items()
        }

    def load(self, data: Mapping[str, Any]) -> None:
        self._firing = {k: AlertEvent.from_dict(e) for k, e in data.get("firing", {}).items()}
        for name, store in self._kept.items():
            store.load(data.get(name, {}))

    def _event(
        self,
        state: AlertState,
        ts: int,
        item: Reading | Aggregate,
        value: float,
        limit: float,
        default: str,
        measure: Measure,
        **labels: str,
    ) -> AlertEvent:
        """``measure`` says what ``value`` and ``limit`` are (a duration, a fraction, ...), so a
        notification renders each with its own unit."""
        fields = {"site": item.site, "device": item.device, "quantity": item.quantity, "unit": item.unit}
        message, templated = self._message(default, **fields, **labels, value=value, limit=limit, state=state.value)
        point = item.point if isinstance(item, Aggregate) else self.point_of(item)
        return AlertEvent(
            ts=ts,
            site=item.site,
            rule=self.rule.name,
            severity=self.rule.severity,
            state=state,
            message=message,
            value=value,
            limit=limit,
            labels={**self._identity(item), **({"point": point} if point else {}), **labels},
            measure=measure,
            templated=templated,
        )

    @property
    def _device_wide(self) -> bool:
        """A rule that watches a device as a whole (``nodata`` or ``maintenance_too_long``
        without a quantity)."""
        return getattr(self.rule, "quantity", ...) is None

    def _series(self, r: Reading) -> str:
        """The series the rule judges a reading in: its quantity's, or its device's."""
        return f"{r.site}/{r.device}" if self._device_wide else key_of(r)

    def _identity(self, item: Reading | Aggregate) -> dict[str, str]:
        """The labels that identify the alert: the rule's own key, the same for its firing and its
        resolve. A device-wide rule leaves the quantity out: whichever reading fired it or
        resolved it, it is one alert."""
        if self._device_wide:
            return {"device": item.device}
        return {"device": item.device, "quantity": item.quantity, "unit": item.unit}

    def _message(self, default: str, **fields: Any) -> tuple[str, bool]:
        """The rule's ``message`` template filled in, or the kind's own text without one.

        ``telemetry check`` refuses a template that cannot be filled in; one that fails
        anyway (a rule built without the check) falls back to the default text, is counted
        and logged once per rule: an alert must never take the committer down with it. The
        flag says whether the text is the template's."""
        template = self.rule.message
        if not template:
            return default, False
        try:
            return str(template.format(**fields)), True
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as err:
            self.count_error("message", "template")
            level = logging.DEBUG if self._message_failed else logging.ERROR
            self._message_failed = True
            log.log(level, "rule %s: message %r failed (%r); sent the default text", self.rule.name, template, err)
            return default, False

    def calendar(self, site: str) -> Calendar:
        return self._calendars.get(site) or calendar()


def key_of(item: Reading | Aggregate, *extra: str) -> str:
    return "/".join((item.site, item.device, item.quantity, *extra))


def unit_of(item: Reading | Aggregate) -> str:
    return f" {item.unit}" if item.unit else ""
