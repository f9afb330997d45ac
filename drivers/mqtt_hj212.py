"""HJ 212 frames over MQTT (``format: hj212``): the MQTT device's station table and the decoding
of a DTU's message, as the HJ 212 listener (``drivers.hj212``) decodes what it receives.

The MQTT device names the stations (``stations``: MN, PW, site, device, point, codes), so one
subscription (``dtu/+/hj212``) serves every station behind the broker: the frame's MN says whose
data it is, and site and device come from the station, not the topic. MN and PW are checked as
the listener checks them (a refusal is dead-lettered, counted and alerted once). There is no
9014 over MQTT: the QoS 1 ack after the commit is the handshake.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drivers.mqtt_decode import MAX_PAYLOAD, PayloadError, hj212_frames
from telemetry.config import DeviceConfig, Duration, OwnWindows, PointClaim
from telemetry.config_base import TimeZone
from telemetry.hj212.codec import FrameError, decode_frame
from telemetry.hj212.extras import Extras
from telemetry.hj212.inbound import Inbound, InboundError
from telemetry.hj212.stations import Gate, Refusal, Station, own_windows, point_claims, redact
from telemetry.metrics import Metrics
from telemetry.model import Aggregate, Reading, Rejected

Bad = Callable[[bytes, str, str], Rejected]  # (payload, reason, detail) -> the dead letter, counted


class StationTable(DeviceConfig):
    """A device that takes HJ 212 from stations: the listener's config, and the MQTT device's
    for ``format: hj212`` subscriptions."""

    stations: list[Station] = []  # whose frames it takes
    timezone: TimeZone = "Asia/Shanghai"  # of the stations' DataTime, unless a station says otherwise
    max_clock_ahead: Duration = 300.0  # a DataTime later than this ahead of the host's clock is refused

    def site_refs(self) -> list[tuple[tuple[str | int, ...], str | None]]:
        return [*super().site_refs(), *((("stations", j, "site"), s.site) for j, s in enumerate(self.stations))]

    def own_windows(self) -> list[OwnWindows]:
        return own_windows(self.stations, self.id)

    def point_claims(self) -> list[PointClaim]:
        return point_claims(self.stations, self.id)


def station_desk(cfg: StationTable, shared: dict[str, Any] | None) -> tuple[Gate, Inbound]:
    """Who may send (MN, PW) and how frames become records, for either kind of device; the
    extras (sample times, EFlags) are shared with the uplinks that relay them."""
    extras: Extras = (shared if shared is not None else {}).setdefault("hj212.extras", Extras())
    return Gate(cfg.id, cfg.stations, cfg.site), Inbound(cfg.id, cfg.timezone, cfg.max_clock_ahead, extras)


def count_deviations(metrics: Metrics, device: str, deviations: tuple[str, ...]) -> None:
    """Each lenient deviation a frame had, counted per device."""
    for deviation in deviations:
        metrics.hj212_lenient.labels(device, deviation).inc()


class Hj212Payloads:
    """Messages of ``format: hj212`` subscriptions into records and dead letters."""

    def __init__(self, cfg: StationTable, metrics: Metrics, shared: dict[str, Any] | None = None) -> None:
        self.device = cfg.id
        self.gate, self.inbound = station_desk(cfg, shared)
        self._metrics = metrics

    def decode(
        self, payload: bytes, lenient: bool, now: int, max_bytes: int = MAX_PAYLOAD, bad: Bad | None = None
    ) -> tuple[list[Reading | Aggregate], list[Rejected]]:
        """The frames of one message, each checked and decoded; what cannot be used goes to ``bad``
        with its password blanked out."""
        letter = bad or (lambda data, reason, detail: Rejected(now, self.device, "", reason, detail, data))
        try:
            frames = hj212_frames(payload, max_bytes)
        except PayloadError as err:
            return [], [letter(redact(payload), err.reason, str(err))]
        records: list[Reading | Aggregate] = []
        rejected: list[Rejected] = []
        for raw in frames:
            try:
                packet = decode_frame(raw, lenient=lenient)
                count_deviations(self._metrics, self.device, packet.deviations)
                station = self.gate.check(packet, lenient)
                if isinstance(station, Refusal):
                    rejected.append(letter(redact(raw), station.reason, station.detail))
                    continue
                decoded = self.inbound.decode(station, packet, now)
            except (FrameError, InboundError) as err:
                rejected.append(letter(redact(raw), err.reason, str(err)))
                continue
            records += decoded.records
            if decoded.problems:
                rejected.append(letter(redact(raw), "bad_values", decoded.problem_summary))
        return records, rejected
