"""Deployment configuration: one YAML file, validated completely before any I/O.

Phase 1 parses every section into frozen pydantic models (typed, with clear
messages); driver sections are validated with the model their driver registers,
which the caller passes in, so this module never imports a driver. Phase 2 checks
rules across entries (duplicate ids, unknown sites). Every problem is reported as
``FILE:LINE: dotted.path: what was expected, what was found``.

pydantic is used rather than hand-written checks because its typed models are
the single place where types, defaults and legal values are declared.
"""

from __future__ import annotations

import re
import zoneinfo
from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from telemetry.errors import ConfigError
from telemetry.model import identifier_problem
from telemetry.yamlsource import Path, Source, dotted, load_yaml

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SECRET_WORDS = ("password", "token", "secret", "pw", "urls", "url")


def parse_duration(value: Any) -> float:
    """Seconds from ``10s``, ``500ms``, ``2m``, ``1h30m``, ``1d`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise PydanticCustomError("duration", "expected a duration like 10s, 500ms, 2m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        pos, seconds = 0, 0.0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(text) or pos == 0:
            raise PydanticCustomError("duration", "expected a duration like 10s, 500ms, 2m or 1h")
    else:
        raise PydanticCustomError("duration", "expected a duration like 10s, 500ms, 2m or 1h")
    if seconds < 0:
        raise PydanticCustomError("duration", "expected a duration that is not negative")
    return seconds


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}


def parse_size(value: Any) -> int:
    """Bytes from ``500MB``, ``2GiB`` or a bare number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if not match:
        raise PydanticCustomError("size", "expected a size such as 500MB or 2GiB")
    size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    if size <= 0:
        raise PydanticCustomError("size", "expected a size above 0")
    return size


def _check_name(value: str) -> str:
    problem = identifier_problem(value)
    if problem:
        raise PydanticCustomError(
            "name", "expected a name usable as a tag (this one {problem})", {"problem": problem}
        )
    return value


def _check_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError("timezone", "expected an IANA time zone such as Asia/Shanghai") from None
    return value


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PydanticCustomError("listen", "expected HOST:PORT such as 127.0.0.1:9108")
    return value


M = TypeVar("M", bound=BaseModel)
Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
Name = Annotated[str, AfterValidator(_check_name)]
TimeZone = Annotated[str, AfterValidator(_check_zone)]
Listen = Annotated[str, AfterValidator(_check_listen)]
Severity = Literal["info", "warning", "critical"]


class Model(BaseModel):
    """Base of every config section: immutable, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any, info: ValidationInfo) -> Any:
        """Drop unknown keys and note them, so the rest of the section is still checked."""
        if not isinstance(data, Mapping):
            return data
        names = {f.alias or n for n, f in cls.model_fields.items()}
        unknown = [k for k in data if k not in names and k not in cls.model_fields]
        if not unknown:
            return data
        if isinstance(info.context, dict):
            info.context.setdefault("unknown", []).append((id(data), unknown, sorted(names)))
            return {k: v for k, v in data.items() if k not in unknown}
        raise PydanticCustomError("unknown_key", "unknown key {key}", {"key": unknown[0]})


class Site(Model):
    id: Name
    name: str = ""
    timezone: TimeZone = "Asia/Shanghai"


class DeviceConfig(Model):
    """Fields every driver section has; each driver's config class extends it."""

    id: Name
    kind: str
    site: Name | None = None

    def describe(self) -> str:
        """One line for ``telemetry check``: where the device is reached."""
        return self.kind

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


class ThresholdRule(Model):
    """Instantaneous value above/below a limit for at least ``for`` seconds."""

    name: Name
    kind: Literal["threshold"] = "threshold"
    site: Name | None = None
    device: Name | None = None
    quantity: Name
    above: float | None = None
    below: float | None = None
    for_: Duration = Field(0.0, alias="for")
    severity: Severity = "warning"
    message: str = ""

    @model_validator(mode="after")
    def _needs_a_limit(self) -> ThresholdRule:
        if self.above is None and self.below is None:
            raise PydanticCustomError("limit", "expected 'above' or 'below' (or both), found neither")
        return self


class Route(Model):
    """Where notifications go: apprise URLs, optionally only for some sites/severities/rules."""

    name: Name
    urls: list[SecretStr]
    sites: list[Name] = []
    severities: list[Severity] = []
    rules: list[Name] = []
    send_resolved: bool = True
    retries: Annotated[int, Field(ge=0, le=10)] = 3


class Notify(Model):
    routes: list[Route] = []


class Metrics(Model):
    enabled: bool = True
    listen: Listen = "127.0.0.1:9108"


class Outbox(Model):
    path: str = "var/outbox.sqlite"
    commit_max: Annotated[int, Field(gt=0, le=100_000)] = 5000
    deadletter_max: Annotated[int, Field(gt=0, le=10_000_000)] = 10_000
    max_bytes: Size | None = None
    when_full: Literal["drop_oldest", "block"] = "drop_oldest"
    synchronous: Literal["full", "normal"] = "full"


class Config(Model):
    sites: Annotated[list[Site], Field(min_length=1)]
    devices: list[dict[str, Any]] = []
    influxdb: list[Sink] = []
    rules: list[ThresholdRule] = []
    notify: Notify = Notify()
    metrics: Metrics = Metrics()
    outbox: Outbox = Outbox()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Deployment:
    """A validated configuration: the config, its resolved devices and its file."""

    def __init__(self, file: str, config: Config, devices: list[DeviceConfig]) -> None:
        self.file = file
        self.config = config
        self.devices = devices

    def site(self, site_id: str) -> Site:
        return next(s for s in self.config.sites if s.id == site_id)


def load(
    file: str,
    drivers: Mapping[str, type[DeviceConfig]],
    environ: Mapping[str, str] | None = None,
) -> Deployment:
    """Read and validate ``file``; raise ConfigError listing every problem."""
    try:
        with open(file, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as err:
        raise ConfigError([f"{file}: cannot read: {err.strerror}"]) from None
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
    devices: list[DeviceConfig] = []
    raw_devices = src.data.get("devices")
    for i, raw in enumerate(raw_devices if isinstance(raw_devices, list) else []):
        device = _device(raw, i, drivers, src, problems)
        if device is not None:
            devices.append(device)
    if config is not None:
        problems.extend(_cross_checks(config, devices, src))
    if problems or config is None:
        raise ConfigError(sorted(set(problems), key=_line_key))
    return Deployment(file, config, devices)


def _device(
    raw: Any, index: int, drivers: Mapping[str, type[DeviceConfig]], src: Source, problems: list[str]
) -> DeviceConfig | None:
    path: Path = ("devices", index)
    if not isinstance(raw, Mapping):
        problems.append(_at(src, path, f"expected a mapping, found {_kind(raw)}"))
        return None
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in drivers:
        where = (*path, "kind") if "kind" in raw else path
        found = f"found {kind!r}" if "kind" in raw else "found no 'kind'"
        problems.append(_at(src, where, f"expected kind one of: {', '.join(sorted(drivers))}, {found}"))
        return None
    return _validate(drivers[kind], raw, path, src, problems)


def _validate(model: type[M], data: Any, prefix: Path, src: Source, problems: list[str]) -> M | None:
    context: dict[str, Any] = {}
    result: M | None = None
    try:
        result = model.model_validate(data, context=context)
    except ValidationError as err:
        for error in err.errors():
            problems.append(_describe(error, prefix, src))
    paths = _paths_by_id(src.data)
    for obj_id, keys, allowed in context.get("unknown", []):
        where = paths.get(obj_id, prefix)
        for key in keys:
            problems.append(_at(src, (*where, key), f"unknown key; expected one of: {', '.join(allowed)}"))
    return None if context.get("unknown") else result


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


def _describe(error: Any, prefix: Path, src: Source) -> str:
    loc = (*prefix, *error["loc"])
    ctx = error.get("ctx") or {}
    kind = error["type"]
    if isinstance(ctx.get("at"), str):  # a section-level check naming the key it is about
        loc = (*loc, *(int(p) if p.isdigit() else p for p in ctx["at"].split(".")))
    path = src.locate(loc)
    if kind == "union_tag_invalid":
        path = (*path, ctx["discriminator"].strip("'"))
        return _at(src, path, f"expected one of {ctx['expected_tags']}, found {ctx['tag']!r}")
    if kind == "missing":
        return _at(src, path, "required key is missing")
    message = error["msg"]
    if kind in ("literal_error", "enum"):
        message = f"expected one of {ctx['expected']}"
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
    return _at(src, path, message)


_PATTERN_HINTS = {r"^https?://[^\s/]+": "a URL starting with http:// or https://"}


def _found(value: Any, path: Path, src: Source) -> str:
    if path in src.from_env:
        return "a value taken from the environment"
    last = str(path[-1]).lower() if path else ""
    if any(word in last for word in _SECRET_WORDS) or any(
        isinstance(p, str) and p.lower() in _SECRET_WORDS for p in path
    ):
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


def _at(src: Source, path: Path, message: str) -> str:
    return f"{src.file}:{src.line_of(path)}: {dotted(path)}: {message}"


def _line_key(problem: str) -> tuple[int, str]:
    parts = problem.split(":", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0, problem)


def _cross_checks(config: Config, devices: list[DeviceConfig], src: Source) -> list[str]:
    problems: list[str] = []
    sites = {s.id for s in config.sites}

    def duplicates(section: Path, names: list[str], key: str) -> None:
        counts = Counter(names)
        for index, name in enumerate(names):
            if name and counts[name] > 1 and names.index(name) != index:
                problems.append(
                    _at(src, (*section, index, key), f"expected a unique {key}, found {name!r} again")
                )

    duplicates(("sites",), [s.id for s in config.sites], "id")
    raw_devices = src.data.get("devices") or []
    raw_ids = [str(r.get("id", "")) if isinstance(r, Mapping) else "" for r in raw_devices]
    duplicates(("devices",), raw_ids, "id")
    duplicates(("influxdb",), [s.name for s in config.influxdb], "name")
    duplicates(("rules",), [r.name for r in config.rules], "name")
    duplicates(("notify", "routes"), [r.name for r in config.notify.routes], "name")

    def known(path: Path, site: str | None) -> None:
        if site is not None and site not in sites:
            problems.append(
                _at(src, path, f"expected a site from 'sites' ({', '.join(sorted(sites))}), found {site!r}")
            )

    for device in devices:
        known(("devices", raw_ids.index(device.id), "site"), device.site)
    for kind in sorted({type(d) for d in devices}, key=lambda t: t.__name__):
        for device, key, message in kind.cross_check([d for d in devices if type(d) is kind]):
            problems.append(_at(src, ("devices", raw_ids.index(device.id), key), message))
    for index, rule in enumerate(config.rules):
        known(("rules", index, "site"), rule.site)
    for index, route in enumerate(config.notify.routes):
        for j, site in enumerate(route.sites):
            known(("notify", "routes", index, "sites", j), site)
    return problems
