"""Configuration of rules, aggregation and discharge-standard tables.

Rule kinds: ``limit`` (instant, rolling, or a 1m/1h/1d window average),
``standard`` (a table of ``config/standards/*.yaml`` expanded into ``limit``
rules), ``capacity`` (daily total against design), ``stock`` (fraction of a
volume), ``nodata``, ``flatline``, ``rate``, ``maintenance_too_long``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from telemetry.aggregate import Override
from telemetry.config_base import Duration, Model, Name, Severity
from telemetry.derive import converted
from telemetry.model import Flag

_ROLLING = re.compile(r"^rolling\s+(\d+(?:\.\d+)?)(s|m|h)$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}


# The fields an alert ``message`` is formatted with (``alerts.kinds.RuleState._event``), by type.
MESSAGE_FIELDS: dict[str, type] = {
    "site": str,
    "device": str,
    "quantity": str,
    "unit": str,
    "value": float,
    "limit": float,
    "state": str,
}


def message_problem(template: str, fields: Mapping[str, type], kind: str = "") -> str | None:
    """Why formatting ``template`` with ``fields`` would fail when an alert fires, or None.

    Checked when the config loads: a typo such as ``{valu}`` or a format spec that does not
    fit the field (``{site:.1f}``) would otherwise only show on the first alert, by then
    inside the committer. Fields are used by name only (no positions, attributes or items).
    """
    offered = ", ".join("{" + name + "}" for name in fields)
    try:
        used = list(_replacement_fields(template))
    except ValueError as err:
        return f"expected a format string ({{{{ and }}}} for a literal brace), found {template!r}: {err}"
    samples = {name: kind_of(1) for name, kind_of in fields.items()}
    for name, conversion, spec in used:
        if name not in fields:
            whose = f"the fields a {kind} rule offers" if kind else "the fields"
            return f"expected only {whose} ({offered}), found {{{name}}}"
        field = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        try:
            field.format(**samples)
        except (ValueError, TypeError, KeyError, IndexError) as err:
            what = "a number" if fields[name] is float else "text"
            return f"expected a format spec that fits {{{name}}} ({what}), found {field!r}: {err}"
    return None


def _replacement_fields(template: str) -> Iterator[tuple[str, str | None, str]]:
    """(name, conversion, spec) of each replacement field, those nested in a spec included."""
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        yield name, conversion, spec or ""
        if spec and "{" in spec:
            yield from _replacement_fields(spec)


class RuleBase(Model):
    name: Name
    site: Name | None = None
    point: Name | None = None  # a monitoring point: only the series that measure it
    device: Name | None = None
    severity: Severity = "warning"
    message: str = ""  # a format string over ``message_fields``; empty: the rule kind's own text
    keep_firing_for: Duration = 0.0  # once firing, stay firing until clear this long

    message_fields: ClassVar[dict[str, type]] = MESSAGE_FIELDS

    @model_validator(mode="after")
    def _check_message(self) -> RuleBase:
        problem = message_problem(self.message, self.message_fields, str(getattr(self, "kind", "")))
        if problem is not None:  # the text goes in the context: it holds braces of its own
            raise PydanticCustomError("message", "{problem}", {"at": "message", "problem": problem})
        return self

    def matches(self, site: str, device: str) -> bool:
        """Site and device only: the engine checks ``point`` (it knows which series measure it)."""
        return (self.site is None or self.site == site) and (self.device is None or self.device == device)

    def describe(self) -> str:
        """One line for ``telemetry check``."""
        what = getattr(self, "quantity", None) or "*"
        where = f"{self.site or '*'}{'@' + self.point if self.point else ''}/{self.device or '*'}/{what}"
        kind = str(getattr(self, "kind", ""))
        return f"{kind:<20} {where} {self.detail()} [{self.severity}]"

    def detail(self) -> str:
        duration = getattr(self, "for_", 0.0)
        return f"for {duration:g}s" if duration else ""


class LimitRule(RuleBase):
    """A value (``window: instant``), a rolling mean (``rolling 15m``) or a closed window's
    mean (``1m``, ``1h``, ``1d``) above/below a limit. An invalid window never trips."""

    kind: Literal["limit"]
    quantity: Name
    above: float | None = None
    below: float | None = None
    window: str = "instant"
    for_: Duration = Field(0.0, alias="for")
    clear_above: float | None = None  # hysteresis: once firing above, resolve only at or under this
    clear_below: float | None = None  # hysteresis: once firing below, resolve only at or over this
    # A closed window's breach is an alert of its own (labelled with the window's local start),
    # resolved when the series' next window is judged: a daily violation counts once per day.
    each_window: bool = False

    @model_validator(mode="after")
    def _check(self) -> LimitRule:
        if self.above is None and self.below is None:
            raise PydanticCustomError("limit", "expected 'above' or 'below' (or both), found neither")
        if self.clear_above is not None and (self.above is None or self.clear_above > self.above):
            raise PydanticCustomError("clear", "expected clear_above at or under 'above'", {"at": "clear_above"})
        if self.clear_below is not None and (self.below is None or self.clear_below < self.below):
            raise PydanticCustomError("clear", "expected clear_below at or over 'below'", {"at": "clear_below"})
        if self.window not in ("instant", "1m", "1h", "1d") and not _ROLLING.match(self.window):
            raise PydanticCustomError("window", "expected instant, 1m, 1h, 1d or 'rolling 15m'", {"at": "window"})
        if self.each_window and self.window not in ("1m", "1h", "1d"):
            message = "expected each_window only with a 1m, 1h or 1d window"
            raise PydanticCustomError("each", message, {"at": "each_window"})
        return self

    def detail(self) -> str:
        bounds = " ".join(x for x in (_fmt(">", self.above), _fmt("<", self.below)) if x)
        return f"{self.window} {bounds}" + (f" for {self.for_:g}s" if self.for_ else "")

    @property
    def rolling_s(self) -> float | None:
        match = _ROLLING.match(self.window)
        return float(match.group(1)) * _UNIT_S[match.group(2)] if match else None


class StandardRule(Model):
    """Attach discharge-standard tables to an outfall or a stack (a ``point``, or a ``site`` with
    one point): one ``limit`` rule per pollutant and window. ``overrides`` merge into the
    table's limits (``{ph: {above: 8.5}}`` keeps the table's lower bound). A table with an
    ``o2_reference`` (a flue-gas table) judges the O2-corrected series (``so2_zs``), corrected
    at the rule's ``o2_reference`` when it sets one."""

    kind: Literal["standard"]
    name: Name
    site: Name | None = None
    point: Name | None = None
    device: Name | None = None
    tables: Annotated[list[str], Field(min_length=1)]
    windows: list[Literal["instant", "1h", "1d"]] = ["1h", "1d"]
    overrides: dict[Name, dict[Literal["above", "below"], float]] = {}
    severity: Severity | None = None  # default: the table's per window, else critical
    o2_reference: Annotated[float, Field(ge=0, lt=20)] | None = None
    o2_max: Annotated[float, Field(gt=0, le=21)] = 20.0  # an O2 at or above this: the stack draws air
    o2_max_age: Annotated[Duration, Field(gt=0, le=3600)] = 60.0  # an O2 this far from the sample is not its own

    @model_validator(mode="after")
    def _where(self) -> StandardRule:
        if self.site is None and self.point is None:
            raise PydanticCustomError("where", "expected 'point' (or 'site' for a site with one point), found neither")
        return self


class CapacityRule(RuleBase):
    """Daily total of a throughput against design capacity, in local plant days."""

    kind: Literal["capacity"]
    quantity: Name
    source: Literal["rate", "totalizer"] = "rate"
    # Which test fired: ``projection`` (today's rate), ``overload`` or ``underuse`` (a day's total).
    message_fields: ClassVar[dict[str, type]] = {**MESSAGE_FIELDS, "condition": str}
    design: Annotated[float, Field(gt=0)]
    over_percent: Annotated[float, Field(gt=0)] = 100.0
    under_percent: Annotated[float, Field(ge=0)] | None = None
    project_after: Duration = 4 * 3600.0
    rollover: Annotated[float, Field(gt=0)] | None = None
    # A totalizer reading lower than before, in the counter's unit (defaults from ``design``):
    reset_below: Annotated[float, Field(ge=0)] | None = None  # at or under this: restarted from 0 (design)
    jitter: Annotated[float, Field(ge=0)] | None = None  # a step back this small: ignored (1 % of design)
    max_gap: Duration = 3600.0
    grace: Duration = 300.0

    def detail(self) -> str:
        under = f", under {self.under_percent:g} %" if self.under_percent is not None else ""
        return f"{self.source} vs design {self.design:g}/d: over {self.over_percent:g} %{under}"


class StockRule(RuleBase):
    """A level or volume above a fraction of its capacity (a regulating pond above 1/3)."""

    kind: Literal["stock"]
    quantity: Name
    capacity: Annotated[float, Field(gt=0)]
    above_fraction: Annotated[float, Field(gt=0, le=1)] = 1 / 3
    for_: Duration = Field(0.0, alias="for")

    def detail(self) -> str:
        return f"above {self.above_fraction:.3g} of {self.capacity:g}"


def _fmt(sign: str, value: float | None) -> str:
    return f"{sign} {value:g}" if value is not None else ""


class NodataRule(RuleBase):
    """No valid reading of a series for ``for``; with site, device and quantity all set,
    the series is expected from start-up, so a device dead from the start is noticed."""

    kind: Literal["nodata"]
    quantity: Name | None = None
    for_: Annotated[Duration, Field(gt=0)] = Field(alias="for")
    # Readings flagged these (maintenance, calibration) count as present: an analyzer being
    # serviced is not silent, ``maintenance_too_long`` judges how long. ``[]``: fire anyway.
    hold_flags: list[Flag] = [Flag.M, Flag.C]


class FlatlineRule(RuleBase):
    """A value unchanged (within ``epsilon``) for ``for``: a stuck analyzer."""

    kind: Literal["flatline"]
    quantity: Name
    for_: Annotated[Duration, Field(gt=0)] = Field(alias="for")
    epsilon: Annotated[float, Field(ge=0)] = 0.0


class RateRule(RuleBase):
    """A change faster than ``max_per_minute`` between consecutive valid readings
    (measured over at least one minute, so fast polling does not amplify noise)."""

    kind: Literal["rate"]
    quantity: Name
    max_per_minute: Annotated[float, Field(gt=0)]


class MaintenanceRule(RuleBase):
    """An analyzer flagged maintenance, calibration or fault for longer than allowed."""

    kind: Literal["maintenance_too_long"]
    quantity: Name | None = None
    for_: Annotated[Duration, Field(gt=0)] = Field(alias="for")
    flags: list[Flag] = [Flag.M, Flag.C, Flag.D]


class FurnaceTemperatureRule(RuleBase):
    """A furnace's representative temperature (``telemetry.furnaces``) in clock-aligned windows
    (``5m``): each window whose mean is below ``min`` during normal operation is one event;
    the first event of a natural day warns (``severity``), the ``max_events_per_day``-th is
    flagged as the last allowed, and one more is a violation (``violation_severity``).
    850 degC is [V2]; the 5-minute means and "more than 5 a day" are [U] (DOMAIN-incinerator.md
    A1/A2): defaults, not fixed rules. Windows the furnace's ``not_normal`` marks cover (drying,
    start-up, shutdown, out of service) are not judged."""

    kind: Literal["furnace_temperature"]
    quantity: Name = "furnace_temp"
    min: float = 850.0
    window: Annotated[str, Field(pattern=r"^[0-9]{1,2}m$")] = "5m"
    max_events_per_day: Annotated[int, Field(ge=0, le=288)] = 5
    violation_severity: Severity = "critical"
    grace: Duration = 60.0  # a window is judged this long after its end (a late sample still counts)
    # Which count the event reached: ``first``, ``last_allowed`` or ``violation``; the local day.
    message_fields: ClassVar[dict[str, type]] = {**MESSAGE_FIELDS, "condition": str, "window": str}

    @model_validator(mode="after")
    def _window_divides_an_hour(self) -> FurnaceTemperatureRule:
        minutes = int(self.window[:-1])
        if not minutes or 60 % minutes:
            raise PydanticCustomError("window", "expected a window of minutes that divides an hour", {"at": "window"})
        return self

    @property
    def window_s(self) -> float:
        return int(self.window[:-1]) * 60.0

    def detail(self) -> str:
        return f"{self.window} mean < {self.min:g}, over {self.max_events_per_day}/day: {self.violation_severity}"


RuleConfig = Annotated[
    LimitRule
    | StandardRule
    | CapacityRule
    | StockRule
    | NodataRule
    | FlatlineRule
    | RateRule
    | MaintenanceRule
    | FurnaceTemperatureRule,
    Field(discriminator="kind"),
]


class QuantityOverride(Model):
    """Aggregation settings of one quantity, optionally only at a site, point or device.
    Every matching entry applies in the order written; what a later one sets wins."""

    quantity: Name
    site: Name | None = None
    point: Name | None = None
    device: Name | None = None
    hour_min_valid_minutes: Annotated[int, Field(ge=1, le=60)] | None = None
    day_min_valid_hours: Annotated[int, Field(ge=1, le=24)] | None = None
    cycle: Annotated[Duration, Field(gt=0, le=7 * 86400)] | None = None  # the analyzer's measuring cycle
    sample_time: bool | None = None  # the readings' ts is the analyzer's sample time (MQTT, HJ 212 DAUs)
    hour_value: Literal["measured", "carry"] | None = None  # a cycle above an hour: carry the last result
    hour_min_measurements: Annotated[int, Field(ge=1, le=60)] | None = None
    detection_limit: Annotated[float, Field(ge=0)] | None = None
    below_detection: Literal["half", "limit", "zero", "keep"] | None = None

    def override(self) -> Override:
        """This entry as the aggregator takes it."""
        return Override(self.quantity, self.settings(), self.site, self.point, self.device)

    def settings(self) -> dict[str, Any]:
        """The aggregator's per-series settings this entry sets (``telemetry.aggregate.Validity``)."""
        out = self.model_dump(
            include={
                "hour_min_valid_minutes",
                "day_min_valid_hours",
                "hour_value",
                "hour_min_measurements",
                "detection_limit",
                "below_detection",
            },
            exclude_none=True,
        )
        if self.cycle is not None:
            out["cycle_s"] = self.cycle
        if self.sample_time is not None:
            out["sampled"] = self.sample_time
        return out


class Aggregation(Model):
    enabled: bool = True
    windows: list[Literal["1m", "1h", "1d"]] = ["1m", "1h", "1d"]
    grace: Duration = 120.0
    hour_min_valid_minutes: Annotated[int, Field(ge=1, le=60)] = 45
    day_min_valid_hours: Annotated[int, Field(ge=1, le=24)] = 20
    flow_quantity: Name = "flow"  # the flow of inferred points (a site without ``points``)
    flow_weighted_daily: bool = True
    overrides: list[QuantityOverride] = []


def load_table(directory: Path, table: str) -> dict[str, Any]:
    path = directory / f"{table}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in directory.glob("*.yaml"))) or "none found"
        raise ValueError(f"expected a standard table in {directory} ({names}), found {table!r}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return dict(data)


_WINDOW_KEYS = ("instant", "1h", "1d")


def _bounds(table: str, quantity: str, raw: Any) -> dict[str, dict[str, float]]:
    """A table's limits of one quantity, per window: ``{above: 30}`` holds for every window,
    ``{1h: {above: 30}, 1d: {above: 20}}`` differs by window (a flue-gas table)."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"table {table}: {quantity}: expected a mapping of above/below, found {raw!r}")
    if any(k in _WINDOW_KEYS for k in raw):
        return {w: {k: float(v) for k, v in (b or {}).items() if k in ("above", "below")} for w, b in raw.items()}
    same = {k: float(v) for k, v in raw.items() if k in ("above", "below")}
    return dict.fromkeys(_WINDOW_KEYS, same)


def o2_reference(rule: StandardRule, directory: Path) -> tuple[float, list[str]] | None:
    """(reference O2 %, the measured pollutants) when the rule judges O2-corrected values."""
    reference: float | None = None
    pollutants: list[str] = []
    for table in rule.tables:
        data = load_table(directory, table)
        if data.get("o2_reference") is not None:
            reference = float(data["o2_reference"])
            pollutants += [q for q in (data.get("limits") or {}) if q not in pollutants]
    if reference is None:
        return None
    pollutants += [q for q in rule.overrides if q not in pollutants]
    return (rule.o2_reference if rule.o2_reference is not None else reference), pollutants


def expand_standard(rule: StandardRule, directory: Path) -> list[LimitRule]:
    """The limit rules a standard attachment stands for; later tables override earlier ones."""
    limits: dict[str, dict[str, dict[str, float]]] = {}
    severities: dict[str, str] = {}
    each: set[str] = set()
    for table in rule.tables:
        data = load_table(directory, table)
        for quantity, raw in (data.get("limits") or {}).items():
            limits[quantity] = _bounds(table, quantity, raw)
        severities.update(data.get("severity") or {})
        each.update(data.get("each_window") or ())
    for quantity, bounds in rule.overrides.items():
        current = limits.get(quantity, {w: {} for w in _WINDOW_KEYS})
        limits[quantity] = {w: {**b, **{k: float(v) for k, v in bounds.items()}} for w, b in current.items()}
    corrected = o2_reference(rule, directory) is not None
    out = []
    for quantity, per_window in sorted(limits.items()):
        for window in rule.windows:
            window_bounds = per_window.get(window)
            if not window_bounds:
                continue  # the table sets no limit for this window (a flue-gas 1-hour-only pollutant)
            out.append(
                LimitRule.model_validate(
                    {
                        "kind": "limit",
                        "name": f"{rule.name}_{quantity}_{window}",
                        "site": rule.site,
                        "point": rule.point,
                        "device": rule.device,
                        "quantity": converted(quantity) if corrected else quantity,
                        "window": window,
                        "severity": rule.severity or severities.get(window, "critical"),
                        "each_window": window in each,
                        **window_bounds,
                    }
                )
            )
    return out


EvaluatedRule = (
    LimitRule
    | CapacityRule
    | StockRule
    | NodataRule
    | FlatlineRule
    | RateRule
    | MaintenanceRule
    | FurnaceTemperatureRule
)
