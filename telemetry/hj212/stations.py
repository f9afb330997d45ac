"""The stations a listener (``drivers.hj212``) or an MQTT subscription (``format: hj212``)
accepts data from, and the check every frame passes before anything is stored.

A station is known by its MN and proves itself with its PW (compared in constant time).
An unknown MN is refused with 9011 QnRtn 4, a wrong PW with QnRtn 3, a QN that is not
17-20 digits with QnRtn 7 (HJ 212's codes); each refusal is dead-lettered with the PW
blanked out, counted, and alerted once: unknown stations as one alert per listener
(resolved after an hour without one), a wrong password per station (resolved by the
station's next frame with the right one). The password never reaches a log, a metric,
an alert or a dead letter.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

from telemetry.config import OwnWindows, PointClaim
from telemetry.config_base import Model, Name, TimeZone
from telemetry.hj212.codec import Packet
from telemetry.hj212.config import MN_CHARS, Code, MinInterval, Mn, Pw
from telemetry.model import AlertEvent, AlertState, Measure, Rejected

UNKNOWN_QUIET_NS = 3600 * 10**9  # an unknown-station alert resolves after this long without one
_PW_FIELD = re.compile(rb"PW=[^;&]*")
_QN = re.compile(r"\d{17,20}")


class Station(Model):
    """A data acquisition unit (数采仪) sending HJ 212: where its data belongs."""

    mn: Mn
    pw: Pw
    site: Name
    device: Name | None = None  # the readings' device; default: the listener's id
    point: Name | None = None  # the monitoring point it feeds (checked against ``points``)
    codes: dict[Name, Code] = {}  # quantity -> code, beyond the 2017 and 2005 code sets
    timezone: TimeZone | None = None  # of its DataTime; default: the listener's (Asia/Shanghai)
    # ``station``: its 2051/2061/2031 are the windows of its series (stored and relayed as they
    # are, never recomputed); ``daemon``: the daemon aggregates what it sends (for a station that
    # sends only real-time data), period values entering as readings where no finer data came.
    aggregates: Literal["station", "daemon"] = "station"
    min_interval_minutes: MinInterval = 10  # the period of its 2051 data

    @property
    def min_window(self) -> str:
        """The aggregation window of its minute data (2051)."""
        return f"{self.min_interval_minutes}m"

    def device_or(self, default: str) -> str:
        return self.device or default


def own_windows(stations: list[Station], device: str) -> list[OwnWindows]:
    """The series of stations that send their own aggregates (``device``: the default device)."""
    return [OwnWindows(s.site, s.device_or(device), s.min_window) for s in stations if s.aggregates == "station"]


def station_series(stations: list[Station], device: str) -> list[tuple[str | None, str | None]]:
    """(site, device) of each station's readings (``device``: the default device)."""
    return [(s.site, s.device_or(device)) for s in stations]


def point_claims(stations: list[Station], device: str) -> list[PointClaim]:
    """The monitoring points the stations name, to check against ``points``."""
    return [
        PointClaim(("stations", i, "point"), s.site, s.point, s.device_or(device))
        for i, s in enumerate(stations)
        if s.point is not None
    ]


class Refusal(NamedTuple):
    qn_rtn: str  # the 9011 answer
    reason: str  # bounded, for metrics and the dead letter
    detail: str  # for the dead letter and the log: no secret


def redact(raw: bytes) -> bytes:
    """The frame with its PW blanked out, for a dead letter (its CRC no longer matches)."""
    return _PW_FIELD.sub(b"PW=***", raw)


def shown_mn(mn: str) -> str:
    """An MN as logs and alerts may show it: what a station sent is not trusted."""
    return mn if MN_CHARS.fullmatch(mn) else "(not an MN)"


class Gate:
    """Which station a frame comes from, or why it is refused; alerts on refusals."""

    def __init__(
        self, source: str, stations: Sequence[Station], site: str | None, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.source = source
        self.site = site or "daemon"
        self.by_mn = {s.mn: s for s in stations}
        self.on_alert: Callable[[AlertEvent], None] | None = None
        self._clock = clock
        self._unknown: AlertEvent | None = None
        self._unknown_at = 0
        self._wrong_pw: dict[str, AlertEvent] = {}

    def check(self, packet: Packet, lenient: bool) -> Station | Refusal:
        now = self._clock()
        if self._unknown is not None and now - self._unknown_at > UNKNOWN_QUIET_NS:
            self._resolve(self._unknown, "no frame from an unknown station for an hour")
            self._unknown = None
        station = self.by_mn.get(packet.mn)
        if station is None:
            mn = shown_mn(packet.mn)
            self._unknown_at = now
            if self._unknown is None:
                self._unknown = self._fire(
                    "hj212_unknown_station",
                    self.site,
                    f"HJ 212 listener {self.source}: a station with MN {mn} "
                    "is not configured; its data is refused (QnRtn 4)",
                    {"device": self.source},
                )
            return Refusal("4", "unknown_mn", f"MN {mn} is not a configured station")
        if not hmac.compare_digest(packet.pw.encode(), station.pw.get_secret_value().encode()):
            if station.mn not in self._wrong_pw:
                self._wrong_pw[station.mn] = self._fire(
                    "hj212_wrong_password",
                    station.site,
                    f"HJ 212 station {station.mn} ({self.source}) sends a wrong password; data refused (QnRtn 3)",
                    {"device": station.device_or(self.source)},
                )
            return Refusal("3", "wrong_pw", f"station {station.mn}: wrong PW")
        if not (_QN.fullmatch(packet.qn) or (lenient and packet.qn == "")):
            return Refusal("7", "bad_qn", f"station {station.mn}: QN is not 17-20 digits")
        refused = self._wrong_pw.pop(station.mn, None)
        if refused is not None:
            self._resolve(refused, f"HJ 212 station {station.mn} sends the right password again")
        return station

    def dead_letter(self, refusal: Refusal, packet_mn: str, raw: bytes) -> Rejected:
        return Rejected(
            self._clock(), self.source, f"hj212/{shown_mn(packet_mn)}", refusal.reason, refusal.detail, redact(raw)
        )

    def _fire(self, rule: str, site: str, message: str, labels: dict[str, str]) -> AlertEvent:
        event = AlertEvent(
            self._clock(), site, rule, "warning", AlertState.FIRING, message, 1.0, 0.0, labels, Measure.STATE
        )
        if self.on_alert is not None:
            self.on_alert(event)
        return event

    def _resolve(self, event: AlertEvent, message: str) -> None:
        if self.on_alert is not None:
            resolved = AlertEvent(
                self._clock(),
                event.site,
                event.rule,
                event.severity,
                AlertState.RESOLVED,
                message,
                0.0,
                0.0,
                event.labels,
                Measure.STATE,
            )
            self.on_alert(resolved)
