"""Phase 2 of the configuration check: what sections say about each other.

Every name one section gives another must exist: the sites of platforms, overrides
and silences, the devices rules and silences name, the routes ``escalate_to`` names,
the rules route filters and silences name (after the discharge standards are
expanded), the aggregation windows limit rules and platforms need; and the times
must fit together: back-fill horizons, retention, silence windows. What cannot be
known before the daemon runs (a device named by an MQTT topic) is a warning, never
an error.

These checks run on what phase 1 could parse, also when some entries could not be
parsed (``Sections``): a check that depends on a section with a broken entry only
refuses what that entry could not have changed, so one run reports every problem.

Grace consistency: a period goes up to a platform once its last window has closed
(``aggregation.grace`` after the window's end) and the platform's own ``grace`` has
passed, whichever is later (``telemetry.hj212.uplink``), so a platform ``grace``
shorter than the aggregation's is fine. What is refused is a ``backfill`` so short
that a period leaves the back-fill horizon before it is due (it would never be
sent) and an ``outbox.retention.windows`` shorter than a ``backfill`` (windows
would be deleted before they are back-filled).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from alerts.config import Route
from alerts.rule_config import EvaluatedRule, LimitRule, StandardRule
from telemetry.aggregate import WINDOW_NS
from telemetry.calendar import DEFAULT_ZONE, NS, calendar
from telemetry.hj212.periods import KINDS
from telemetry.yamlsource import Path, Source

if TYPE_CHECKING:
    from alerts.config import Matchers, SilenceConfig
    from telemetry.config import Config, DeviceConfig

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DAEMON_SITE = "daemon"  # the site of the daemon's own alerts (``outbox_full``)
UPLINK_DEVICE = "hj212"  # the device of a platform's refusal alert (``hj212_NAME_refused``)


def builtin_rules(config: Config) -> list[str]:
    """Names of the alerts the daemon raises itself (``telemetry.pipeline``, ``telemetry.hj212.uplink``)."""
    return ["outbox_full", *(f"hj212_{p.name}_refused" for p in config.hj212)]


def did_you_mean(found: str, choices: Iterable[str]) -> str:
    """``did you mean 'x'?`` for a near miss among ``choices`` (a typo), else ""."""
    close = difflib.get_close_matches(found, sorted(set(choices)), n=2, cutoff=0.6)
    return f"did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def suggest(found: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss among ``choices``, else ""."""
    hint = did_you_mean(found, choices)
    return f" ({hint})" if hint else ""


def duration_text(seconds: float) -> str:
    """``1d3m``-style text of a duration, as the config writes it."""
    if seconds <= 0:
        return "0s"
    out, rest = "", seconds
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if rest >= size:
            count = int(rest // size)
            out, rest = out + f"{count}{unit}", rest - count * size
    return out + (f"{rest:g}s" if rest else "")


@dataclass
class Sections:
    """What phase 1 parsed: the config (or, when some entries failed, the entries that did
    not), the file index of each list entry kept, and the sections with a broken entry."""

    config: Config
    index: dict[Path, list[int]] = field(default_factory=dict)
    broken: set[Path] = field(default_factory=set)
    failed_devices: list[Any] = field(default_factory=list)  # device entries as written that did not parse

    def each(self, section: Path, items: Sequence[T]) -> list[tuple[int, T]]:
        """Entries with their index in the file."""
        where = self.index.get(section)
        return list(zip(where if where is not None else range(len(items)), items, strict=True))

    def complete(self, *sections: Path) -> bool:
        """True when nothing in these sections (nor the sections holding them) failed to parse."""
        return not any(b[: len(s)] == s or s[: len(b)] == b for s in sections for b in self.broken)


def salvage(model: type[M], data: Any, path: Path, sections: Sections) -> M:
    """``model`` built from the fields of ``data`` that parse, and of a list the entries that
    do (their file index in ``sections.index``); what did not parse is in ``sections.broken``."""
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if not isinstance(data, Mapping) or key not in data:
            continue
        here, raw, annotation = (*path, key), data[key], cast(Any, info.annotation)
        try:
            adapter: TypeAdapter[Any] = TypeAdapter(
                Annotated[(annotation, *info.metadata)] if info.metadata else annotation
            )
            values[name] = adapter.validate_python(raw, context={})
            continue
        except ValidationError:
            sections.broken.add(here)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            values[name] = salvage(annotation, raw, here, sections)
        elif get_origin(annotation) is list and isinstance(raw, list):
            item: TypeAdapter[Any] = TypeAdapter(get_args(annotation)[0])
            kept: list[tuple[int, Any]] = []
            for index, entry in enumerate(raw):
                try:
                    kept.append((index, item.validate_python(entry, context={})))
                except ValidationError:
                    continue
            sections.index[here] = [index for index, _ in kept]
            values[name] = [value for _, value in kept]
    for name, info in model.model_fields.items():  # a required list that did not parse at all: empty
        if name not in values and info.is_required() and get_origin(info.annotation) is list:
            values[name] = []
    return model.model_construct(**values)


@dataclass
class _Producer:
    site: str | None  # None: named by a topic or payload at run time
    device: str | None
    source: str  # the configured device (a broker for MQTT) that makes these readings


class References:
    """The phase-2 checks across sections; ``problems`` refuse the config, ``warnings`` do not."""

    def __init__(
        self,
        src: Source,
        sections: Sections,
        devices: Sequence[DeviceConfig],
        rules: Sequence[EvaluatedRule],
        standards: dict[str, list[str]] | None,
    ) -> None:
        """``rules`` with the standards expanded (``standards``: each one's limits; None when a
        standard could not be expanded, so not every rule name is known)."""
        self.src = src
        self.sections = sections
        self.config = sections.config
        self.devices = devices
        self.rules = rules
        self.standards = standards or {}
        self.rule_names = [r.name for r in rules] + builtin_rules(self.config)
        # A rule that did not parse still has its name, unless it is a standard (its limits unknown).
        kept = set(sections.index.get(("rules",), []))
        raw = raw_list(src, ("rules",))
        failed = [e for i, e in enumerate(raw) if ("rules",) in sections.index and i not in kept]
        self.rules_complete = standards is not None and all(
            isinstance(e, dict) and e.get("name") and e.get("kind") != "standard" for e in failed
        )
        self.rule_names += [str(e["name"]) for e in failed if isinstance(e, dict) and e.get("name")]
        self.problems: list[str] = []
        self.warnings: list[str] = []
        raw_sites = raw_names(src, ("sites",), "id")
        self.sites = {n: DEFAULT_ZONE for n in raw_sites if n} | {s.id: s.timezone for s in self.config.sites}
        self.sites_certain = bool(raw_sites) and all(raw_sites)  # else phase 1 reports the missing ids
        self.device_ids = raw_names(src, ("devices",), "id")
        self.producers = [_Producer(s, d, dev.id) for dev in devices for s, d in dev.produces()]

    def run(self) -> None:
        for device in self.devices:
            for suffix, site in device.site_refs():
                self.site(("devices", self.device_ids.index(device.id), *suffix), site)
        self.platforms()
        self.rule_references()
        self.routes()
        for index, silence in self.sections.each(("notify", "silences"), self.config.notify.silences):
            self.matchers(("notify", "silences", index, "matchers"), silence.matchers)
            self.silence_times(index, silence)
        for index, inhibit in self.sections.each(("notify", "inhibit"), self.config.notify.inhibit):
            self.matchers(("notify", "inhibit", index, "source"), inhibit.source)
            self.matchers(("notify", "inhibit", index, "target"), inhibit.target)
        self.retention()

    def refuse(self, path: Path, message: str) -> None:
        self.problems.append(self.src.at(path, message))

    def warn(self, path: Path, message: str) -> None:
        self.warnings.append(self.src.at(path, message))

    # -- sites -------------------------------------------------------------------------------

    def site(self, path: Path, site: str | None, also: Sequence[str] = ()) -> bool:
        """Refuse a site that is not configured (``also``: names allowed besides); True if known."""
        if site is None or site in self.sites or site in also:
            return True
        if not self.sites_certain:
            return False  # 'sites' is missing, or an entry without an id: phase 1 says so
        known = ", ".join(sorted(self.sites)) or "none"
        hint = suggest(site, self.sites) or ": add it to 'sites'"
        self.refuse(path, f"expected a site from 'sites' ({known}), found {site!r}{hint}")
        return False

    # -- devices -----------------------------------------------------------------------------

    def device(self, path: Path, site: str | None, device: str | None, also: Sequence[str] = ()) -> None:
        """Refuse a device no configured device produces (at ``site``); warn of one only an
        MQTT topic or payload could name at run time."""
        if device is None or device in also:
            return
        here = [p for p in self.producers if site is None or p.site in (site, None)]
        if any(p.device == device and (site is None or p.site == site) for p in here):
            return
        where = f" at site {site}" if site else ""
        dynamic = sorted({p.source for p in here if p.device in (device, None)})
        unparsed = _device_names(self.sections.failed_devices)
        if dynamic or unparsed is None or device in unparsed:
            sources = f"the topics or payloads of {', '.join(dynamic)}" if dynamic else "a device that did not parse"
            self.warn(path, f"{device!r} is not a configured device{where}; only {sources} can name it: not checked")
            return
        if not self.devices:
            self.warn(path, f"no devices are configured: {device!r} is not checked (a config for `rules test`?)")
            return
        known = sorted({p.device for p in here if p.device is not None})
        listed = ", ".join(known) or "none"
        self.refuse(path, f"expected a device that reads{where} ({listed}), found {device!r}{suggest(device, known)}")

    # -- rules -------------------------------------------------------------------------------

    def rule_references(self) -> None:
        points = {p.id: p for p in self.config.points} if self.sections.complete(("points",)) else {}
        for index, rule in self.sections.each(("rules",), self.config.rules):
            at: Path = ("rules", index)
            self.site((*at, "site"), rule.site)
            point = points.get(rule.point or "")
            if point is not None and rule.device is not None and rule.device not in point.devices:
                found = f"found {rule.device!r}{suggest(rule.device, point.devices)}"
                self.refuse(
                    (*at, "device"), f"expected one of point {point.id}'s devices ({', '.join(point.devices)}), {found}"
                )
            elif rule.site is None or rule.site in self.sites:
                self.device((*at, "device"), rule.site or (point.site if point else None), rule.device)
            if isinstance(rule, LimitRule) and rule.window in WINDOW_NS:
                self.window((*at, "window"), rule.window)
            elif isinstance(rule, StandardRule):
                for j, window in enumerate(rule.windows):
                    if window in WINDOW_NS:
                        self.window((*at, "windows", j), window)
        for index, override in self.sections.each(("aggregation", "overrides"), self.config.aggregation.overrides):
            at = ("aggregation", "overrides", index)
            if self.site((*at, "site"), override.site):
                self.device((*at, "device"), override.site, override.device)

    def window(self, path: Path, window: str) -> None:
        """A limit judged on a closed window needs the aggregation to close that window."""
        if not self.sections.complete(("aggregation", "enabled"), ("aggregation", "windows")):
            return
        agg = self.config.aggregation
        if not agg.enabled:
            self.refuse(
                path, f"expected a window the aggregation closes, found {window!r} with aggregation.enabled: false"
            )
        elif window not in agg.windows:
            closes = ", ".join(agg.windows) or "none"
            self.refuse(
                path,
                f"expected a window the aggregation closes (aggregation.windows: {closes}), found {window!r}:"
                f" add {window} to aggregation.windows",
            )

    # -- platforms ---------------------------------------------------------------------------

    def platforms(self) -> None:
        agg = self.config.aggregation
        agg_ok = self.sections.complete(
            ("aggregation", "enabled"), ("aggregation", "windows"), ("aggregation", "grace")
        )
        for index, platform in self.sections.each(("hj212",), self.config.hj212):
            at: Path = ("hj212", index)
            self.site((*at, "site"), platform.site)
            if not agg_ok:
                continue
            sent = [(j, kind) for j, kind in enumerate(platform.send) if kind in KINDS]
            written = (*at, "send") in self.src.lines
            default = "" if written else f" ({', '.join(platform.send)}: send by default)"
            for j, kind in sent:
                window = KINDS[kind][1]  # the window that kind of HJ 212 data is made of
                where = (*at, "send", j) if written else (*at, "send")
                if not agg.enabled:
                    self.refuse(
                        where,
                        f"expected data the aggregation makes, found {kind!r}{default} with aggregation.enabled:"
                        " false (only 'rtd' is sent without it)",
                    )
                elif window not in agg.windows:
                    self.refuse(
                        where,
                        f"expected data whose window the aggregation closes (aggregation.windows:"
                        f" {', '.join(agg.windows) or 'none'}), found {kind!r}{default}: add {window} to"
                        " aggregation.windows" + ("" if written else " or set send"),
                    )
            made = [WINDOW_NS[KINDS[kind][1]] / NS for _, kind in sent if agg.enabled and KINDS[kind][1] in agg.windows]
            if not made:
                continue
            longest = max(made)
            wait = max(platform.grace, agg.grace)
            if platform.backfill <= longest + wait:
                self.refuse(
                    (*at, "backfill"),
                    f"expected more than {duration_text(longest + wait)} (its longest window,"
                    f" {duration_text(longest)}, and the longer of its grace {duration_text(platform.grace)} and"
                    f" aggregation.grace {duration_text(agg.grace)}): a period is due only that long after it"
                    f" starts and would have left the back-fill horizon, never sent; found"
                    f" {duration_text(platform.backfill)}",
                )

    def retention(self) -> None:
        keep = self.config.outbox.retention.windows
        if keep is None or not self.config.hj212:
            return
        longest = max(self.config.hj212, key=lambda p: p.backfill)
        if keep < longest.backfill:
            self.refuse(
                ("outbox", "retention", "windows"),
                f"expected at least the longest hj212 backfill ({duration_text(longest.backfill)}, platform"
                f" {longest.name!r}): older windows would be deleted before they are back-filled;"
                f" found {duration_text(keep)}",
            )

    # -- notification ------------------------------------------------------------------------

    def routes(self) -> None:
        routes = self.config.notify.routes
        names = {r.name for r in routes} | {n for n in raw_names(self.src, ("notify", "routes"), "name") if n}
        for j, name in enumerate(self.config.reports.daily.routes):
            if name not in names:
                listed = ", ".join(sorted(names)) or "none configured"
                message = f"expected the name of a route ({listed}), found {name!r}" + suggest(name, names)
                self.refuse(("reports", "daily", "routes", j), message)
        for j, site in enumerate(self.config.reports.daily.sites):
            self.site(("reports", "daily", "sites", j), site)
        for index, route in self.sections.each(("notify", "routes"), routes):
            at: Path = ("notify", "routes", index)
            for j, site in enumerate(route.sites):
                self.site((*at, "sites", j), site, also=[DAEMON_SITE])
            if route.escalate_to is not None:
                if route.escalate_to not in names:
                    listed = ", ".join(sorted(names))
                    self.refuse(
                        (*at, "escalate_to"),
                        f"expected the name of a route ({listed}), found {route.escalate_to!r}"
                        + suggest(route.escalate_to, names),
                    )
                elif route.escalate_after is None:
                    self.refuse(
                        (*at, "escalate_to"),
                        "expected escalate_after beside it (how long an alert fires unacknowledged before it is"
                        " escalated), found none",
                    )
            elif route.escalate_after is not None:
                self.refuse(
                    (*at, "escalate_after"), "expected escalate_to beside it (the route to escalate to), found none"
                )
            if self.rules_complete:
                for j, name in enumerate(route.rules):
                    self.route_filter((*at, "rules", j), name)
        if routes and self.rules_complete:
            self.unsent(routes)

    def unsent(self, routes: Sequence[Route]) -> None:
        """A rule whose alerts no route's filters pass is recorded but never told (a warning:
        ``telemetry alerts list`` still shows them)."""
        standard_of = {limit: name for name, limits in self.standards.items() for limit in limits}
        raw = raw_names(self.src, ("rules",), "name")
        for rule in self.rules:
            top = standard_of.get(rule.name, rule.name)  # a route may name the standard, not its limit
            if not any(r.passes(rule.site, rule.severity, name) for r in routes for name in {rule.name, top}):
                index = raw.index(top) if top in raw else None
                where: Path = ("rules", index) if index is not None else ("notify", "routes")
                self.warn(where, f"no route sends rule {rule.name} ({rule.severity}): its alerts are only recorded")

    def route_filter(self, path: Path, name: str) -> None:
        """A route's ``rules`` entry: a rule's name, or a standard's (all the limits it expands into)."""
        if name in self.rule_names or name in self.standards:
            return
        top = [n for n in self.rule_names if not any(n in e for e in self.standards.values())]
        choices = sorted({*top, *self.standards})
        hint = suggest(name, [*self.rule_names, *self.standards]) or f" ({', '.join(choices)})"
        self.refuse(
            path,
            f"expected the name of a rule, or of a standard for all of its limits, found {name!r}, which matches"
            f" no rule{hint}",
        )

    def matchers(self, path: Path, m: Matchers) -> None:
        """What a silence or an inhibition matches must exist (a typo silences nothing)."""
        known = self.site((*path, "site"), m.site, also=[DAEMON_SITE])
        if known and m.site != DAEMON_SITE:
            self.device((*path, "device"), m.site, m.device, also=[UPLINK_DEVICE])
        if m.rule is None or not self.rules_complete or m.rule in self.rule_names:
            return
        if m.rule in self.standards:
            limits = self.standards[m.rule]
            shown = ", ".join(limits[:3]) + (" ..." if len(limits) > 3 else "")
            message = f"expected one rule's name, found {m.rule!r}, a standard: name one of its limits ({shown})"
        else:
            hint = suggest(m.rule, self.rule_names)
            message = f"expected the name of a rule, found {m.rule!r}, which matches no rule{hint}"
        self.refuse((*path, "rule"), message)

    def silence_zone(self, m: Matchers) -> str:
        """The zone a silence's wall-clock times are read in (see ``silence_zone``)."""
        return silence_zone(self.config, self.devices, self.rules, m)

    def silence_times(self, index: int, silence: SilenceConfig) -> None:
        at: Path = ("notify", "silences", index)
        zone = self.silence_zone(silence.matchers)
        times = {}
        for key in ("start", "end"):
            text = getattr(silence, key)
            try:
                times[key] = calendar(zone).moment(text)
            except ValueError as err:
                self.refuse((*at, key), f"{err}, found {text!r}")
        if len(times) == 2 and times["end"] <= times["start"]:
            self.refuse(
                (*at, "end"), f"expected an end after start ({times['start'].isoformat()}), found {silence.end!r}"
            )


def silence_zone(config: Config, devices: Sequence[DeviceConfig], rules: Sequence[EvaluatedRule], m: Matchers) -> str:
    """The time zone of the sites a silence can match: its ``site``; else the sites of the
    device or rule it names; else every site. One zone among them: that zone; else Beijing."""
    zones = {s.id: s.timezone for s in config.sites}
    if m.site is not None:
        return zones.get(m.site, DEFAULT_ZONE)
    sites = set(zones)
    if m.device is not None:
        sites &= {s for d in devices for s, name in d.produces() if name in (m.device, None) and s is not None}
    if m.rule is not None:
        named = [r for r in rules if r.name == m.rule]
        if named and all(r.site is not None for r in named):
            sites &= {r.site for r in named if r.site is not None}
    found = {zones[s] for s in sites}
    return found.pop() if len(found) == 1 else DEFAULT_ZONE


def resolved(
    config: Config, devices: Sequence[DeviceConfig], rules: Sequence[EvaluatedRule], standards: dict[str, list[str]]
) -> Config:
    """The config as it runs: a route filter naming a standard names its limits, and silence
    times carry their zone (checked before, so they parse)."""
    routes = [
        route.model_copy(
            update={"rules": list(dict.fromkeys(n for name in route.rules for n in standards.get(name, [name])))}
        )
        for route in config.notify.routes
    ]
    silences = []
    for silence in config.notify.silences:
        cal = calendar(silence_zone(config, devices, rules, silence.matchers))
        times = {key: cal.moment(getattr(silence, key)).isoformat() for key in ("start", "end")}
        silences.append(silence.model_copy(update=times))
    notify = config.notify.model_copy(update={"routes": routes, "silences": silences})
    return config.model_copy(update={"notify": notify})


def _device_names(entries: list[Any]) -> set[str] | None:
    """The device names device entries that did not parse could produce, as written: each one's
    id and every ``device`` inside it (an HJ 212 station's, a subscription's); None when one could
    name any device (no id, or a ``{device}`` topic level)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "device" and isinstance(value, str):
                    names.add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("id") or "{device}" in str(entry):
            return None
        names.add(str(entry["id"]))
        walk(entry)
    return names


def raw_list(src: Source, section: Path) -> list[Any]:
    """The entries of a list section as written, also those that did not parse."""
    node: Any = src.data
    for part in section:
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, list) else []


def raw_names(src: Source, section: Path, key: str) -> list[str]:
    """The ``key`` of each entry of a list section as written ("" where it has none); by index."""
    return [str(e.get(key) or "") if isinstance(e, dict) else "" for e in raw_list(src, section)]
