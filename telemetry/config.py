"""Deployment configuration: one YAML file, validated completely before any I/O.

Phase 1 parses every section into frozen pydantic models (typed, with clear
messages); driver sections are validated with the model their driver registers,
which the caller passes in, so this module never imports a driver. Phase 2 checks
rules across entries (duplicate ids, unknown sites, points; ``config_refs`` the
rest), also when phase 1 failed, on the entries it could parse: one run reports
every problem. Every problem is reported as
``FILE:LINE: dotted.path: what was expected, what was found``.

pydantic is used rather than hand-written checks because its typed models are
the single place where types, defaults and legal values are declared.
"""

from __future__ import annotations

import pathlib
import re
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
)

from alerts.config import Notify, Reports
from alerts.rule_config import (
    Aggregation,
    EvaluatedRule,
    RuleConfig,
    StandardRule,
    expand_standard,
    o2_reference,
)
from telemetry import config_refs
from telemetry.calendar import DEFAULT_ZONE
from telemetry.config_base import (
    Duration,
    Listen,
    M,
    Model,
    Name,
    Severity,
    Size,
    TimeZone,
    parse_duration,
    parse_size,
)
from telemetry.config_refs import Sections, did_you_mean, raw_names, salvage, suggest
from telemetry.derive import Deriver, O2Reference
from telemetry.errors import ConfigError
from telemetry.furnaces import FurnaceConfig
from telemetry.hj212 import units
from telemetry.hj212.config import Platform
from telemetry.points import Point, PointConfig, Points
from telemetry.yamlsource import Path, Source, dotted, load_yaml

_SECRET_WORDS = ("password", "token", "secret", "pw", "urls", "url")

__all__ = ["Duration", "Model", "Name", "Severity", "Size", "parse_duration", "parse_size"]


class Site(Model):
    id: Name
    name: str = ""
    timezone: TimeZone = "Asia/Shanghai"


class KnownSeries(NamedTuple):
    """A series a device is known to produce before it runs (``unit`` None: set by the payload)."""

    site: str
    device: str
    quantity: str
    unit: str | None
    where: Path  # the config path (below the device) that declares it


class OwnWindows(NamedTuple):
    """A source that sends its own aggregates (a data acquisition unit): the daemon does not
    aggregate its (site, device), and its minute data is stored as windows of ``minutes``."""

    site: str
    device: str
    minutes: str  # e.g. "10m"


class PointClaim(NamedTuple):
    """A device section naming the monitoring point its data feeds (checked against ``points``)."""

    where: Path  # below the device
    site: str
    point: str
    device: str


class DeviceConfig(Model):
    """Fields every driver section has; each driver's config class extends it."""

    id: Name
    kind: str
    site: Name | None = None

    def describe(self) -> str:
        """One line for ``telemetry check``: where the device is reached."""
        return self.kind

    def known_series(self) -> list[KnownSeries]:
        """The series this device produces that the configuration names in full (others come
        from topics and payloads at run time)."""
        return []

    def produces(self) -> list[tuple[str | None, str | None]]:
        """(site, device) of the readings it makes; None where a topic or payload names it at
        run time. By default its own id at its site."""
        return [(self.site, self.id)]

    def site_refs(self) -> list[tuple[tuple[str | int, ...], str | None]]:
        """Each site this device's configuration names, with its path under the device."""
        return [(("site",), self.site)]

    def open_quantities(self) -> list[str | None]:
        """Sites where its readings name quantities the configuration does not list (a topic
        level, a payload, an HJ 212 station's codes); None: at a site named at run time too."""
        return []

    def sampled_series(self) -> list[KnownSeries]:
        """Series whose readings carry the analyzer's sample time (a sample-time register)."""
        return []

    def warnings(self) -> list[str]:
        """Valid but probably wrong, for ``telemetry check`` (none by default)."""
        return []

    def own_windows(self) -> list[OwnWindows]:
        """Series whose windows the device itself sends (none by default)."""
        return []

    def point_claims(self) -> list[PointClaim]:
        """Monitoring points the device section names (none by default)."""
        return []

    @classmethod
    def cross_check(cls, devices: list[DeviceConfig]) -> list[tuple[DeviceConfig, str, str]]:
        """Problems across devices of this kind: (device, key, message). None by default."""
        return []


class InfluxBase(Model):
    name: Name
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+")]
    batch_size: Annotated[int, Field(gt=0, le=100_000)] = 5000
    flush_interval: Duration = 1.0
    timeout: Duration = 10.0
    verify_tls: bool = True


class InfluxV2(InfluxBase):
    """InfluxDB 2.x/3.x, 1.8+ compat, VictoriaMetrics: ``/api/v2/write`` via influxdb-client."""

    api: Literal["v2"]
    token: SecretStr = SecretStr("")
    org: str = ""
    bucket: str


class InfluxV1(InfluxBase):
    """InfluxDB 1.x before 1.8: ``/write`` with db, rp and basic auth."""

    api: Literal["v1"]
    database: str
    retention_policy: str = ""
    username: str = ""
    password: SecretStr = SecretStr("")
    create_database: bool = False


Sink = Annotated[InfluxV2 | InfluxV1, Field(discriminator="api")]


class Metrics(Model):
    """The HTTP endpoint: /metrics, /alerts, POST /alerts/ID/ack (only with ``ack_token``: it is the Bearer token)."""

    enabled: bool = True
    listen: Listen = "127.0.0.1:9108"
    ack_token: SecretStr = SecretStr("")
    ready_sink_age: Duration = 300.0  # /readyz fails while a sink keeps a record waiting this long after its commit


class OutboxRetention(Model):
    """How long the outbox's side tables keep their rows (the record queue keeps a record until
    every sink has it). ``windows`` defaults to the longest hj212 ``backfill`` + 1 day, at least 2 days."""

    windows: Annotated[Duration, Field(ge=2 * 86400)] | None = None
    quarantine: Duration = 30 * 86400.0
    quarantine_max: Annotated[int, Field(gt=0, le=10_000_000)] = 10_000
    deadletters: Duration = 30 * 86400.0
    deliveries: Duration = 90 * 86400.0
    deliveries_max: Annotated[int, Field(gt=0, le=10_000_000)] = 10_000
    commands: Duration = 7 * 86400.0
    commands_max: Annotated[int, Field(gt=0, le=10_000_000)] = 10_000


class Outbox(Model):
    path: str = "var/outbox.sqlite"
    commit_max: Annotated[int, Field(gt=0, le=100_000)] = 5000
    deadletter_max: Annotated[int, Field(gt=0, le=10_000_000)] = 10_000
    max_bytes: Size | None = None
    # Commits wait (back-pressure, an alert, /readyz 503) while the disk has less than this free.
    min_free: Size = 64 << 20
    when_full: Literal["drop_oldest", "block"] = "drop_oldest"
    synchronous: Literal["full", "normal"] = "full"
    retention: OutboxRetention = OutboxRetention()
    snapshot_interval: Annotated[Duration, Field(ge=1, le=3600)] = 30.0  # open windows and rule state saved


class Config(Model):
    sites: Annotated[list[Site], Field(min_length=1)]
    points: list[PointConfig] = []
    furnaces: list[FurnaceConfig] = []
    devices: list[dict[str, Any]] = []
    influxdb: list[Sink] = []
    rules: list[RuleConfig] = []
    aggregation: Aggregation = Aggregation()
    hj212: list[Platform] = []
    standards_dir: str = ""
    notify: Notify = Notify()
    reports: Reports = Reports()
    metrics: Metrics = Metrics()
    outbox: Outbox = Outbox()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_levels: dict[str, Literal["DEBUG", "INFO", "WARNING", "ERROR"]] = {}  # per module, e.g. drivers.modbus


class Deployment:
    """A validated configuration: the config, its resolved devices, its rules with the
    discharge standards expanded into limits, and its file."""

    def __init__(
        self, file: str, config: Config, devices: list[DeviceConfig], rules: list[EvaluatedRule] | None = None
    ) -> None:
        self.file = file
        self.config = config
        self.devices = devices
        self.rules: list[EvaluatedRule] = rules if rules is not None else []  # standards expanded
        self.warnings: list[str] = []  # valid but unsafe: logged at start-up, shown by `telemetry check`
        self.points = points_of(config)
        self.o2_references: list[O2Reference] = []  # stacks judged at a reference O2 (from their standards)

    def deriver(self) -> Deriver:
        """The readings computed from readings: O2-corrected concentrations, furnace temperatures."""
        return Deriver(self.points, self.o2_references, self.config.furnaces)

    def site(self, site_id: str) -> Site:
        return next(s for s in self.config.sites if s.id == site_id)

    def zone(self, site_id: str) -> str:
        """A site's time zone; Beijing time for a site outside the config (named by MQTT topics)."""
        return next((s.timezone for s in self.config.sites if s.id == site_id), DEFAULT_ZONE)

    def platform_point(self, platform: Platform) -> Point:
        """The monitoring point a platform connection uploads (checked at load)."""
        return resolve_point(self.points, platform.point, platform.site)


def points_of(config: Config) -> Points:
    return Points.from_config([s.id for s in config.sites], config.points, config.aggregation.flow_quantity)


def resolve_point(points: Points, point: str | None, site: str | None) -> Point:
    """The point a rule or platform names: ``point``, or the only point of ``site``.
    Raises ValueError saying what was expected."""
    if point is not None:
        found = points.by_id.get(point)
        if found is None:
            known = ", ".join(sorted(points.by_id)) or "none"
            raise ValueError(f"expected a monitoring point ({known}), found {point!r}")
        if site is not None and found.site != site:
            raise ValueError(f"expected a point of site {site!r}, found {point!r} of site {found.site!r}")
        return found
    candidates = points.of_site(site or "")
    if len(candidates) != 1:
        names = ", ".join(p.id for p in candidates)
        raise ValueError(f"expected 'point': site {site!r} has {len(candidates)} monitoring points ({names})")
    return candidates[0]


MAX_FILE_CHARS = 4 << 20  # a configuration file, however many sites: a few hundred KiB at most


def load(
    file: str,
    drivers: Mapping[str, type[DeviceConfig]],
    environ: Mapping[str, str] | None = None,
) -> Deployment:
    """Read and validate ``file``; raise ConfigError listing every problem."""
    try:
        with open(file, encoding="utf-8") as handle:
            text = handle.read(MAX_FILE_CHARS + 1)
    except OSError as err:
        raise ConfigError([f"{file}: cannot read: {err.strerror}"]) from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            [f"{file}: expected UTF-8 text, found a byte {err.object[err.start]:#04x} it cannot be"]
        ) from None
    if len(text) > MAX_FILE_CHARS:
        raise ConfigError(
            [f"{file}:1: (size): expected a configuration of at most {MAX_FILE_CHARS:,} characters, found more"]
        )
    return parse(file, text, drivers, environ)


def parse(
    file: str,
    text: str,
    drivers: Mapping[str, type[DeviceConfig]],
    environ: Mapping[str, str] | None = None,
) -> Deployment:
    src = load_yaml(file, text, environ)
    problems = list(src.problems)
    if problems and src.data is None:
        raise ConfigError(problems)
    if not isinstance(src.data, Mapping):
        raise ConfigError([f"{file}:1: (top level): expected a mapping of sections, found {_kind(src.data)}"])
    config = _validate(Config, src.data, (), src, problems)
    # Phase 2 runs on what phase 1 could parse, so one run reports every problem.
    sections = Sections(config) if config is not None else _salvage(src.data)
    devices: list[DeviceConfig] = []
    raw_devices = src.data.get("devices")
    for i, raw in enumerate(raw_devices if isinstance(raw_devices, list) else []):
        device = _device(raw, i, drivers, src, problems)
        if device is not None:
            devices.append(device)
        else:
            sections.failed_devices.append(raw)
    problems.extend(_cross_checks(sections, devices, src))
    references: list[O2Reference] = []
    rules, standards = _expand_rules(sections, file, src, problems, references)
    refs = config_refs.References(src, sections, devices, rules, standards)
    refs.run()
    problems += refs.problems
    if problems or config is None or standards is None:
        raise ConfigError(sorted(set(problems), key=_line_key))
    dep = Deployment(file, config_refs.resolved(config, devices, rules, standards), devices, rules)
    dep.o2_references = references
    dep.warnings = secret_warnings(src) + refs.warnings
    return dep


def _salvage(data: Mapping[str, Any]) -> Sections:
    """The entries of a config that failed phase 1 which parse on their own (the failures are
    already reported), for phase 2 to check; remembers which sections lost entries."""
    sections = Sections(Config.model_construct(sites=[]))
    sections.config = salvage(Config, data, (), sections)
    return sections


# A URL is hidden in error messages (it may carry credentials) but not warned about.
_SECRET_KEYS = tuple(w for w in _SECRET_WORDS if w != "url")


def secret_warnings(src: Source) -> list[str]:
    """Secrets written into the config file (they belong in the environment or a file of
    their own), and secret files, or a config holding secrets, that every user can read."""
    warnings: list[str] = []
    literal = False

    def walk(value: Any, path: Path) -> None:
        nonlocal literal
        if isinstance(value, Mapping):
            for key, child in value.items():
                walk(child, (*path, key))
            return
        if isinstance(value, list):
            for i, child in enumerate(value):
                walk(child, (*path, i))
            return
        if not _may_be_secret(path, _SECRET_KEYS):
            return
        if isinstance(value, str) and "urls" in path and not url_holds_secret(value):
            return  # json://127.0.0.1:18080/alerts: nothing in it to keep from others
        if str(path[-1]).lower().endswith("_file"):
            if value:
                warnings.extend(_world_readable(str(value), f"{src.file}:{src.line_of(path)}: {dotted(path)}"))
        elif value not in ("", None) and path not in src.from_env:
            literal = True
            warnings.append(
                f"{src.file}:{src.line_of(path)}: {dotted(path)}: a secret written into the config file; "
                "take it from the environment (${VAR}) or a file readable only by the daemon"
            )

    walk(src.data, ())
    if literal:
        warnings += _world_readable(src.file, f"{src.file} (holds secrets)")
    return warnings


# Notification schemes whose host is a host: their URL holds a secret only in a user and
# password, a query, or a path. Every other scheme (dingtalk://TOKEN, pushplus://TOKEN, ...)
# may carry its token anywhere and counts as a secret.
_PLAIN_SCHEMES = frozenset({"json", "jsons", "xml", "xmls", "form", "forms", "mailto", "mailtos", "http", "https"})
_SECRET_QUERY = re.compile(r"(token|key|secret|sign|pass|auth|sendkey|code)", re.IGNORECASE)
_TOKEN_LIKE = re.compile(r"(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_-]{12,}")  # letters and digits, 12 or more


def url_holds_secret(url: str) -> bool:
    """A notification URL with credentials in it. Only a URL of a plain scheme (a webhook, an
    e-mail server) with no user, no secret-looking query key and no token-like path segment
    is known to hold none; anything else is treated as a secret."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return True  # unreadable: treated as secret, never shown
    if parts.scheme.lower() not in _PLAIN_SCHEMES or "@" in parts.netloc:
        return True
    if any(_SECRET_QUERY.search(key) for key, _ in urllib.parse.parse_qsl(parts.query)):
        return True
    return any(_TOKEN_LIKE.fullmatch(segment) for segment in parts.path.split("/"))


def _may_be_secret(path: Path, words: tuple[str, ...] = _SECRET_WORDS) -> bool:
    """A key whose name holds a secret word (``password``, ``ack_token``), or anything under
    one (each of ``urls``). Error messages hide such values; the loader warns of literal ones."""
    last = str(path[-1]).lower() if path else ""
    return any(w in last for w in words) or any(isinstance(p, str) and p.lower() in words for p in path)


def _world_readable(file: str, what: str) -> list[str]:
    try:
        mode = pathlib.Path(file).stat().st_mode
    except OSError:
        return []  # a missing file is reported where it is opened
    if mode & 0o004:
        return [f"{what}: {file} is readable by every user on this machine (mode {mode & 0o777:o}); chmod o-r it"]
    return []


def standards_dir(config: Config, file: str) -> pathlib.Path:
    """Where the discharge-standard tables are: ``standards_dir``, else ``standards/`` beside
    the config file, else the tables shipped in the repository's ``config/standards``."""
    if config.standards_dir:
        return pathlib.Path(config.standards_dir)
    beside = pathlib.Path(file).resolve().parent / "standards"
    return beside if beside.is_dir() else pathlib.Path(__file__).resolve().parents[1] / "config" / "standards"


def _expand_rules(
    sections: Sections, file: str, src: Source, problems: list[str], references: list[O2Reference]
) -> tuple[list[EvaluatedRule], dict[str, list[str]] | None]:
    """The rules with each standard expanded into its limits, and each standard's limits
    (None when a standard could not be expanded: then not every rule name is known). The
    stacks whose standards judge O2-corrected values go to ``references``."""
    config = sections.config
    out: list[EvaluatedRule] = []
    standards: dict[str, list[str]] | None = {}
    directory = standards_dir(config, file)
    points = points_of(config)
    points_ok = sections.complete(("points",), ("sites",))
    sites = {s.id for s in config.sites}
    for index, rule in sections.each(("rules",), config.rules):
        if not isinstance(rule, StandardRule):
            out.append(rule)
            continue
        standard = rule
        if rule.point is None:  # a standard judges an outfall: the site's only point
            if rule.site not in sites or not points_ok:
                standards = None  # an unknown site (refused as such), or its points did not parse
                continue
            try:
                standard = rule.model_copy(update={"point": resolve_point(points, None, rule.site).id})
            except ValueError as err:
                problems.append(src.at(("rules", index, "site"), str(err)))
                standards = None
                continue
        try:
            limits = expand_standard(standard, directory)
            o2 = o2_reference(standard, directory)
        except (ValueError, OSError) as err:
            problems.append(src.at(("rules", index, "tables"), str(err)))
            standards = None
            continue
        out.extend(limits)
        if o2 is not None and standard.point is not None:
            reference, pollutants = o2
            known = next((r for r in references if r.point == standard.point), None)
            if known is not None and known.reference != reference:
                message = (
                    f"expected one reference O2 per stack, found {known.reference:g} and {reference:g}"
                    f" for {standard.point}"
                )
                problems.append(src.at(("rules", index, "o2_reference"), message))
            elif known is None:
                references.append(
                    O2Reference(
                        standard.point, reference, frozenset(pollutants), "o2", standard.o2_max, standard.o2_max_age
                    )
                )
            else:
                references[references.index(known)] = replace(known, pollutants=known.pollutants | set(pollutants))
        if standards is not None:
            standards[rule.name] = [limit.name for limit in limits]
    twice = sorted(name for name, n in Counter(r.name for r in out).items() if n > 1)
    if twice:
        message = f"expected unique rule names once standards are expanded, found {twice}"
        problems.append(src.at(("rules",), message))
    return out, standards


def _device(
    raw: Any, index: int, drivers: Mapping[str, type[DeviceConfig]], src: Source, problems: list[str]
) -> DeviceConfig | None:
    path: Path = ("devices", index)
    if not isinstance(raw, Mapping):
        problems.append(src.at(path, f"expected a mapping, found {_kind(raw)}"))
        return None
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in drivers:
        where = (*path, "kind") if "kind" in raw else path
        found = f"found {kind!r}{suggest(str(kind), drivers)}" if "kind" in raw else "found no 'kind'"
        problems.append(src.at(where, f"expected kind one of: {', '.join(sorted(drivers))}, {found}"))
        return None
    return _validate(drivers[kind], raw, path, src, problems)


def _validate(model: type[M], data: Any, prefix: Path, src: Source, problems: list[str]) -> M | None:
    context: dict[str, Any] = {}
    result: M | None = None
    try:
        result = model.model_validate(data, context=context)
    except ValidationError as err:
        for error in err.errors():
            problem = _describe(error, prefix, src)
            if problem is not None:
                problems.append(problem)
    paths = _paths_by_id(src.data)
    for obj_id, keys, allowed in context.get("unknown", []):
        where = paths.get(obj_id, prefix)
        for key in keys:
            hint = did_you_mean(str(key), allowed) or f"expected one of: {', '.join(allowed)}"
            problems.append(src.at((*where, key), f"unknown key; {hint}"))
    return result  # without the unknown keys: phase 2 checks the rest (the problems refuse the config)


def _paths_by_id(data: Any, path: Path = ()) -> dict[int, Path]:
    """Path of every mapping in the document, by identity (validators see the same objects)."""
    out: dict[int, Path] = {}
    if isinstance(data, Mapping):
        out[id(data)] = path
        for key, value in data.items():
            out.update(_paths_by_id(value, (*path, key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out.update(_paths_by_id(value, (*path, index)))
    return out


def _describe(error: Any, prefix: Path, src: Source) -> str | None:
    """The problem pydantic found, in the file's terms; None for a value that names an unset
    environment variable (reported once already, where it is read)."""
    loc = (*prefix, *error["loc"])
    ctx = error.get("ctx") or {}
    kind = error["type"]
    if isinstance(ctx.get("at"), str):  # a section-level check naming the key it is about
        loc = (*loc, *(int(p) if p.isdigit() else p for p in ctx["at"].split(".")))
    path = src.locate(loc)
    if any(path[: len(unset)] == unset for unset in src.unset):
        return None
    if kind == "union_tag_invalid":
        path = (*path, ctx["discriminator"].strip("'"))
        hint = suggest(str(ctx["tag"]), _quoted_choices(ctx["expected_tags"]))
        return src.at(path, f"expected one of {ctx['expected_tags']}, found {ctx['tag']!r}{hint}")
    if kind == "missing":
        return src.at(path, "required key is missing")
    message = error["msg"]
    if kind in ("literal_error", "enum"):
        message = f"expected one of {ctx['expected']}"
        if isinstance(error.get("input"), str) and not _may_be_secret(path):
            message += f", found {error['input']!r}{suggest(error['input'], _quoted_choices(ctx['expected']))}"
            return src.at(path, message)
    elif message.startswith("Input should be "):
        message = "expected " + message.removeprefix("Input should be ")
    elif message.startswith("String should match pattern"):
        message = "expected " + _PATTERN_HINTS.get(ctx.get("pattern", ""), message)
    elif message.startswith("List should have at least"):
        message = "expected a list with " + message.removeprefix("List should have ")
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    if message.startswith("expected") and not isinstance(error.get("input"), Mapping):
        message = f"{message}, found {_found(error.get('input'), path, src)}"
    return src.at(path, message)


def _quoted_choices(text: str) -> list[str]:
    """The choices pydantic lists as ``'a', 'b' or 'c'``."""
    return [part.strip(" '") for part in text.replace(" or ", ", ").split(",") if part.strip(" '")]


_PATTERN_HINTS = {r"^https?://[^\s/]+": "a URL starting with http:// or https://"}


def _found(value: Any, path: Path, src: Source) -> str:
    if path in src.from_env:
        return "a value taken from the environment"
    if _may_be_secret(path):
        return f"{_kind(value)} (not shown: may be a secret)"
    if isinstance(value, Mapping | list):
        return _kind(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "text",
        int: "an integer",
        float: "a number",
        bool: "true/false",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)


def _line_key(problem: str) -> tuple[int, str]:
    parts = problem.split(":", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0, problem)


def _cross_checks(sections: Sections, devices: list[DeviceConfig], src: Source) -> list[str]:
    """Unique names, devices of one kind together, and monitoring points (``config_refs``
    checks the names sections give each other)."""
    problems: list[str] = []

    def duplicates(section: Path, key: str) -> None:
        names = raw_names(src, section, key)
        counts = Counter(names)
        for index, name in enumerate(names):
            if name and counts[name] > 1 and names.index(name) != index:
                problems.append(src.at((*section, index, key), f"expected a unique {key}, found {name!r} again"))

    for section, key in (("sites",), "id"), (("devices",), "id"), (("influxdb",), "name"), (("rules",), "name"):
        duplicates(section, key)
    duplicates(("furnaces",), "id")
    duplicates(("notify", "routes"), "name")
    raw_ids = raw_names(src, ("devices",), "id")
    for kind in sorted({type(d) for d in devices}, key=lambda t: t.__name__):
        for device, key, message in kind.cross_check([d for d in devices if type(d) is kind]):
            problems.append(src.at(("devices", raw_ids.index(device.id), key), message))
    if sections.complete(("points",), ("sites",), ("aggregation", "flow_quantity")):
        problems += _point_checks(sections, devices, raw_ids, src)
    return problems


def _point_checks(sections: Sections, devices: list[DeviceConfig], raw_ids: list[str], src: Source) -> list[str]:
    """Monitoring points: unique, unambiguous, named correctly by rules and platforms, the units
    of what each platform uploads convertible into the units HJ 212 prescribes, and a cycle
    for every analyzer whose sample time is read."""
    config = sections.config
    problems = _declared_points(config, src)
    if problems:
        return problems
    points = points_of(config)
    sites = {s.id for s in config.sites}

    def named(path: Path, point: str | None, site: str | None) -> Point | None:
        try:
            return resolve_point(points, point, site)
        except ValueError as err:
            problems.append(src.at((*path, "point" if point is not None else "site"), str(err)))
            return None

    for index, rule in sections.each(("rules",), config.rules):
        if rule.point is not None:
            named(("rules", index), rule.point, rule.site)
    for index, furnace in sections.each(("furnaces",), config.furnaces):
        problems += _furnace_problems(furnace, index, sites, named, src)
    for index, override in sections.each(("aggregation", "overrides"), config.aggregation.overrides):
        if override.point is not None:
            named(("aggregation", "overrides", index), override.point, override.site)
    series = [(raw_ids.index(d.id), s) for d in devices for s in d.known_series()]
    for index, declared in enumerate(p for p in points.all if not p.inferred):  # declared first, in order
        flows = sorted({s.device for _, s in series if _flow_of(declared, s)})
        if declared.flow_device is None and len(flows) > 1:
            message = f"expected flow.device: {', '.join(flows)} all measure {declared.flow_quantity} at this point"
            problems.append(src.at(("points", index, "flow"), message))
    for index, platform in sections.each(("hj212",), config.hj212):
        if platform.point is None and platform.site not in sites:
            continue  # refused as a site that is not configured (config_refs)
        point = named(("hj212", index), platform.point, platform.site)
        if point is not None:
            problems += _unit_problems(platform, point, series, src)
    if sections.complete(("aggregation", "overrides")):
        problems += _cycle_problems(config, points, devices, raw_ids, src)
    problems += _station_checks(config, points, devices, raw_ids, src)
    return problems


def _furnace_problems(
    furnace: FurnaceConfig, index: int, sites: set[str], named: Callable[..., Point | None], src: Source
) -> list[str]:
    """A furnace at a configured site, its stack a gas point of that site."""
    if furnace.site not in sites:
        message = f"expected a configured site, found {furnace.site!r}{suggest(furnace.site, sites)}"
        return [src.at(("furnaces", index, "site"), message)]
    stack = named(("furnaces", index), furnace.point, furnace.site) if furnace.point is not None else None
    if stack is not None and stack.kind != "gas":
        message = f"expected the furnace's stack (a point of kind gas), found {stack.id!r} of kind {stack.kind}"
        return [src.at(("furnaces", index, "point"), message)]
    return []


def _cycle_problems(
    config: Config, points: Points, devices: list[DeviceConfig], raw_ids: list[str], src: Source
) -> list[str]:
    """A cycle for every analyzer whose sample time is read."""
    problems = []
    for device in devices:
        for sampled in device.sampled_series():
            if not _has_cycle(config, points, sampled):
                message = (
                    f"expected the analyzer's measuring cycle for a sample-time register: add "
                    f"{{quantity: {sampled.quantity}, device: {sampled.device}, cycle: 1h}} to aggregation.overrides"
                )
                problems.append(src.at(("devices", raw_ids.index(device.id), *sampled.where), message))
    return problems


def _station_checks(
    config: Config, points: Points, devices: list[DeviceConfig], raw_ids: list[str], src: Source
) -> list[str]:
    """HJ 212 both ways: a platform's allowed commands write to Modbus devices only; a station
    names a point of its site that holds its device."""
    problems = []
    for index, platform in enumerate(config.hj212):
        for cn, control in platform.controls.items():
            target = next((d for d in devices if d.id == control.device), None)
            if target is None or target.kind != "modbus":
                message = f"expected a modbus device from 'devices', found {control.device!r}"
                problems.append(src.at(("hj212", index, "controls", cn, "device"), message))
    for device in devices:
        for claim in device.point_claims():
            found = points.by_id.get(claim.point)
            if (
                found is None
                or found.site != claim.site
                or (found.devices is not None and claim.device not in found.devices)
            ):
                message = f"expected a point of site {claim.site!r} whose devices hold {claim.device!r}"
                problems.append(src.at(("devices", raw_ids.index(device.id), *claim.where), message))
    return problems


def _declared_points(config: Config, src: Source) -> list[str]:
    problems: list[str] = []
    site_ids = {s.id for s in config.sites}
    inferred = site_ids - {p.site for p in config.points}
    for index, point in enumerate(config.points):
        at: Path = ("points", index)
        if any(p.id == point.id for p in config.points[:index]):
            problems.append(src.at((*at, "id"), f"expected a unique id, found {point.id!r} again"))
        if point.site not in site_ids:
            problems.append(src.at((*at, "site"), f"expected a site from 'sites', found {point.site!r}"))
        if point.id in inferred:
            problems.append(src.at((*at, "id"), f"expected an id other than site {point.id!r} (its inferred point)"))
        if point.flow.device is not None and point.flow.device not in point.devices:
            message = f"expected one of the point's devices {point.devices}"
            problems.append(src.at((*at, "flow", "device"), message))
        flow = point.flow.quantity or config.aggregation.flow_quantity
        if point.quantities and flow not in point.quantities:
            message = f"expected its flow quantity {flow!r} among them (else the point has no volume and no mass)"
            problems.append(src.at((*at, "quantities"), message))
        for other in config.points[:index]:
            shared = _overlap(point, other)
            if shared:
                message = f"expected each series in one point; {shared} is also in {other.id!r}"
                problems.append(src.at((*at, "devices"), message))
    return problems


def _unit_problems(platform: Platform, point: Point, series: list[tuple[int, KnownSeries]], src: Source) -> list[str]:
    problems = []
    codes = platform.code_map(point.kind)
    for device_index, known in series:
        code = codes.get(known.quantity)
        if code is None or known.unit is None or known.site != point.site:
            continue
        if point.holds(known.device, known.quantity) and units.factor(known.unit, code) is None:
            message = (
                f"expected a unit convertible to {units.wire_unit(code)} for {known.quantity} ({code}),"
                f" uploaded to hj212 {platform.name!r}, found {known.unit!r}"
            )
            problems.append(src.at(("devices", device_index, *known.where), message))
    return problems


def _flow_of(point: Point, series: KnownSeries) -> bool:
    return (
        series.site == point.site
        and point.holds(series.device, series.quantity)
        and point.is_flow(series.device, series.quantity)
    )


def _has_cycle(config: Config, points: Points, series: KnownSeries) -> bool:
    point = points.point_of(series.site, series.device, series.quantity)
    return any(
        o.cycle is not None and o.override().selects(series.site, series.device, series.quantity, point)
        for o in config.aggregation.overrides
    )


def _overlap(a: PointConfig, b: PointConfig) -> str:
    """A series two points of one site would both claim, as text ("" when none)."""
    if a.site != b.site:
        return ""
    devices = sorted(set(a.devices) & set(b.devices))
    if not devices:
        return ""
    if a.quantities and b.quantities:
        quantities = sorted(set(a.quantities) & set(b.quantities))
        return f"{devices[0]}/{quantities[0]}" if quantities else ""
    return f"{devices[0]}/{(a.quantities or b.quantities or ['*'])[0]}"
