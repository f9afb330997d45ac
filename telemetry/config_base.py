"""The building blocks of config sections: the strict base model and shared value types.

Separate from ``telemetry.config`` so that section modules (rules, drivers) can use
them without importing the whole configuration.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from telemetry.model import identifier_problem

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


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
        raise PydanticCustomError("name", "expected a name usable as a tag (this one {problem})", {"problem": problem})
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


def host_port(listen: str) -> tuple[str, int]:
    """HOST and PORT of a ``Listen`` value; an IPv6 host without its brackets."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def loopback(host: str) -> bool:
    """Only this machine reaches it: localhost, 127.0.0.0/8, ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


M = TypeVar("M", bound=BaseModel)
Duration = Annotated[float, BeforeValidator(parse_duration, json_schema_input_type=float | str)]
Size = Annotated[int, BeforeValidator(parse_size, json_schema_input_type=int | str)]
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
