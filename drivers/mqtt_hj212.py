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
from telemetry.config import Duration, Model
from telemetry.config_base import TimeZone
from telemetry.hj212.codec import FrameError, decode_frame
from telemetry.hj212.extras import Extras
from telemetry.hj212.inbound import Inbound, InboundError
from telemetry.hj212.stations import Gate, Refusal, Station, redact
from telemetry.metrics import Metrics
from telemetry.model import Aggregate, Reading, Rejected

Bad = Callable[[bytes, str, str], Rejected]  # (payload, reason, detail) -> the dead letter, counted


class StationTable(Model):
    """The HJ 212 stations of an MQTT device (a mixin of its config)."""

    stations: list[Station] = []  # whose frames ``format: hj212`` subscriptions carry
    timezone: TimeZone = "Asia/Shanghai"  # of the stations' DataTime, unless a station says otherwise
    max_clock_ahead: Duration = 300.0  # a DataTime later than this ahead of the host's clock is refused


class Hj212Payloads:
    """Messages of ``format: hj212`` subscriptions into records and dead letters."""

    def __init__(
        self, device: str, site: str | None, cfg: StationTable, metrics: Metrics, shared: dict[str, Any] | None = None
    ) -> None:
        extras: Extras = (shared if shared is not None else {}).setdefault("hj212.extras", Extras())
        self.device = device
        self.gate = Gate(device, cfg.stations, site)
        self.inbound = Inbound(device, cfg.timezone, cfg.max_clock_ahead, extras)
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
                for deviation in packet.deviations:
                    self._metrics.hj212_lenient.labels(self.device, deviation).inc()
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
                detail = f"{len(decoded.problems)} values left out; first: {decoded.problems[0]}"
                rejected.append(letter(redact(raw), "bad_values", detail))
        return records, rejected
