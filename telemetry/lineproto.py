"""InfluxDB line protocol for the schema of DESIGN.md.

Escaping is a security matter: tag values come from MQTT topics and payloads
that others control. Identifiers with control characters or backslashes never
get here (``Reading.check`` refuses them); commas, equals signs and spaces are
escaped; string fields escape quotes and backslashes.
"""

from __future__ import annotations

import functools

from telemetry.model import Aggregate, AlertEvent, Flag, Reading, Record

_TAG = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})


def tag(value: str) -> str:
    return value.translate(_TAG)


def string_field(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def number(value: float) -> str:
    return repr(float(value))


@functools.lru_cache(maxsize=100_000)  # a series' escaped measurement and tags, built once
def _reading_tags(site: str, device: str, quantity: str, unit: str) -> str:
    tags = f"telemetry,device={tag(device)},quantity={tag(quantity)},site={tag(site)}"
    return tags + f",unit={tag(unit)}" if unit else tags


_FLAG_FIELD = {flag: f"flag={string_field(flag.value)}" for flag in Flag}  # eight values: escaped once


def reading_line(r: Reading) -> str:
    tags = _reading_tags(r.site, r.device, r.quantity, r.unit)
    return f"{tags} {_FLAG_FIELD[r.flag]},value={number(r.value)} {r.ts}"


def alert_line(e: AlertEvent) -> str:
    """Tagged by every label the event has but its unit (device, point, quantity, a capacity
    rule's condition ...): two alerts at one tick are two points, not one overwriting the other."""
    keys = {k: v for k, v in e.labels.items() if v and k != "unit"}
    keys |= {"rule": e.rule, "severity": e.severity, "site": e.site, "state": e.state.value}
    tags = "alerts" + "".join(f",{k}={tag(keys[k])}" for k in sorted(keys))
    fields = f"limit={number(e.limit)},message={string_field(e.message)},value={number(e.value)}"
    return f"{tags} {fields} {e.ts}"


def agg_line(a: Aggregate) -> str:
    tags = f"telemetry_agg,device={tag(a.device)}"
    if a.point:
        tags += f",point={tag(a.point)}"
    tags += f",quantity={tag(a.quantity)},site={tag(a.site)}"
    if a.unit:
        tags += f",unit={tag(a.unit)}"
    tags += f",window={tag(a.window)}"
    fields = [f"count={a.count}i", f"flag={string_field(a.flag.value)}"]
    if a.method:
        fields.append(f"method={string_field(a.method)}")
    fields += [
        f"{name}={number(v)}"
        for name, v in (("avg", a.avg), ("cou", a.cou), ("max", a.max), ("min", a.min))
        if v is not None
    ]
    fields += [f"valid={'true' if a.valid else 'false'}", f"valid_count={a.valid_count}i"]
    return f"{tags} {','.join(sorted(fields))} {a.ts}"


def line(record: Record) -> str:
    if isinstance(record, Reading):
        return reading_line(record)
    if isinstance(record, Aggregate):
        return agg_line(record)
    return alert_line(record)
