"""What the daemon reads now, for ``telemetry status`` and ``GET /status``: per series the
last value with unit and flag, per device its link state and last error, per MQTT
subscription when it last heard a message.

The latest readings are kept per series the sources admitted (their caps bound them; this
table has its own bound too). The body is also saved with the other snapshots, so that
``telemetry status`` can answer, from the outbox, for a daemon whose HTTP listener is off.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from telemetry.calendar import NS
from telemetry.metrics import Metrics
from telemetry.model import Reading

MAX_SERIES = 100_000  # beyond this many series, new ones are not shown (the sources cap far lower)


class Latest:
    """The newest reading of each series."""

    def __init__(self) -> None:
        self._by: dict[tuple[str, str, str], Reading] = {}

    def update(self, readings: Iterable[Reading]) -> None:
        by = self._by
        for r in readings:
            key = (r.site, r.device, r.quantity)
            old = by.get(key)
            if old is None:
                if len(by) >= MAX_SERIES:
                    continue
            elif old.ts > r.ts:
                continue
            by[key] = r

    def series(self, now_ns: int) -> list[dict[str, Any]]:
        return [
            {
                "site": r.site,
                "device": r.device,
                "quantity": r.quantity,
                "value": r.value,
                "unit": r.unit,
                "flag": r.flag.value,
                "ts": r.ts / NS,
                "age_s": round((now_ns - r.ts) / NS, 1),
            }
            for _, r in sorted(self._by.items())
        ]


def body(latest: Latest, drivers: Sequence[Any], metrics: Metrics, now_ns: int) -> dict[str, Any]:
    """The status as JSON: ``series``, ``devices``, ``subscriptions``, and when it was taken."""
    devices = []
    subscriptions = []
    for driver in drivers:
        up = metrics.registry.get_sample_value("telemetry_device_up", {"device": driver.name})
        devices.append(
            {
                "device": driver.name,
                "kind": getattr(getattr(driver, "cfg", None), "kind", ""),
                "up": None if up is None else bool(up),
                "last_error": getattr(driver, "last_error", None),
            }
        )
        heard: dict[str, int] | None = getattr(driver, "heard", None)
        if heard is not None:
            for sub in driver.cfg.subscriptions:
                at = heard.get(sub.topic)
                subscriptions.append(
                    {
                        "device": driver.name,
                        "subscription": sub.topic,
                        "last_message_ts": None if at is None else at / NS,
                        "age_s": None if at is None else round((now_ns - at) / NS, 1),
                        "silent": sub.topic in getattr(driver, "silent", ()),
                    }
                )
    series = latest.series(now_ns)
    return {"taken_ts": now_ns / NS, "series": series, "devices": devices, "subscriptions": subscriptions}
