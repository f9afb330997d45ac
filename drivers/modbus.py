"""Modbus polling: TCP, RTU over serial, RTU framing over TCP.

Guarantee: one poll produces at most one reading per configured point, stamped
with the poll's start time, and counts as taken once ``emit`` returns (the
readings are committed). A point that cannot be read produces no reading:
values are never fabricated. The first readings after a communication failure
carry flag ``B``; readings taken while the analyzer's status register says
maintenance, calibration, fault, stopped or over-range carry ``M``/``C``/``D``/
``F``/``T``, so they never count as valid or trip a limit.

Each device polls on its own schedule, so a slow or dead device delays only
the devices sharing its physical link (a bus takes one request at a time). A
device is logged when it goes down and when it comes back, not every poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zoneinfo
from datetime import UTC, datetime
from functools import partial
from typing import Any

from drivers.modbus_config import ModbusConfig, ModbusPoint, StatusRegister
from drivers.modbus_decode import BIT_TABLES, ByteOrder, decode
from drivers.modbus_link import (
    ILLEGAL_ADDRESS,
    DeviceException,
    DeviceTimeout,
    Link,
    LinkDown,
    LinkPool,
)
from drivers.modbus_plan import Block
from telemetry.metrics import Metrics
from telemetry.model import Flag, InvalidReading, Reading
from telemetry.protocols import Emit
from telemetry.timing import until_committed, wait_event

log = logging.getLogger(__name__)

__all__ = ["ModbusConfig", "ModbusDriver"]


class ModbusDriver:
    def __init__(self, cfg: ModbusConfig, metrics: Metrics, shared: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.id
        self._metrics = metrics
        pool = (shared if shared is not None else {}).setdefault("modbus.links", LinkPool())
        self._pool: LinkPool = pool
        self.link: Link = pool.acquire(cfg.link())
        self.blocks: list[Block] = cfg.blocks()
        self._down: str | None = None
        self._comm_lost = False
        self._bad: set[int] = set()
        self._unmapped: set[tuple[int | str, int]] = set()  # (status register, value) logged once
        self._flag_for = _status_targets(cfg)
        self._sample_keys = cfg.sample_time_keys()
        # point -> ((sample-time registers, value registers), stamp, sample time believed)
        self._samples: dict[int, tuple[tuple[tuple[int, ...] | None, tuple[int, ...]], int, bool]] = {}
        self._bad_sample: set[int] = set()
        self.last_error: str | None = None  # the latest problem, for the probe; cleared by a clean poll

    @property
    def where(self) -> str:
        return f"{self.cfg.site}/{self.cfg.id} ({self.link.spec.describe()} unit {self.cfg.unit_id})"

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        try:
            while not stop.is_set():
                readings = await self.poll()
                if readings:
                    await self._commit(emit, readings, stop)
                next_at += self.cfg.interval
                now = loop.time()
                if next_at < now:  # a poll overran: skip the slots it missed, keep the phase
                    next_at += ((now - next_at) // self.cfg.interval + 1) * self.cfg.interval
                await wait_event(stop, next_at - now)
        finally:
            self.close()

    async def _commit(self, emit: Emit, readings: list[Reading], stop: asyncio.Event) -> None:
        """A failed commit is retried and polling waits for it: the poll's readings are kept,
        the next ones not taken (a device's history is not ours to hold in memory)."""
        if await until_committed(partial(emit, readings), stop, self._commit_failed) is None:
            log.warning("%s: stopped with %d readings of one poll uncommitted", self.where, len(readings))

    def _commit_failed(self, err: BaseException, attempt: int) -> None:
        self._metrics.errors.labels("modbus", "commit", "outbox").inc()
        if attempt == 1:
            log.error("%s: could not commit a poll (%s); retrying, polling paused", self.where, err)

    def close(self) -> None:
        if self.link is not None:
            self._pool.release(self.link)

    async def write_register(self, address: int, value: int) -> None:
        """One holding-register write to this device (an HJ 212 platform's allowed command)."""
        await self.link.write_register(self.cfg.unit_id, address, value)

    async def poll(self) -> list[Reading]:
        """Read every point once. Device trouble is logged, counted and returns fewer readings."""
        ts = time.time_ns()
        started = time.perf_counter()
        raw: dict[int, list[int]] = {}
        self.last_error = None
        try:
            for block in list(self.blocks):
                await self._read_block(block, raw)
        except (LinkDown, DeviceTimeout) as err:
            self._went_down(err)
            return []
        finally:
            self._metrics.poll_seconds.labels(self.cfg.id).observe(time.perf_counter() - started)
        readings = self._readings(raw, ts)
        self._came_up()
        return readings

    async def _read_block(self, block: Block, raw: dict[int, list[int]]) -> None:
        try:
            values = await self.link.read(self.cfg.unit_id, block.table, block.address, block.count)
        except DeviceException as err:
            if err.code == ILLEGAL_ADDRESS and len(block.split()) > 1:
                # A gap in the merged read is not implemented by the device: read point by point from now on.
                index = self.blocks.index(block)
                self.blocks[index : index + 1] = block.split()
                log.info(
                    "%s: device refused a merged read at %d; reading those points separately",
                    self.where,
                    block.address,
                )
                for part in block.split():
                    await self._read_block(part, raw)
                return
            self._count("exception")
            for span in block.spans:
                self._point_failed(span.key, f"answered Modbus exception {err.code}")
            return
        for span in block.spans:
            raw[span.key] = block.slice(values, span)

    def _readings(self, raw: dict[int, list[int]], ts: int) -> list[Reading]:
        order = self.cfg.byte_order
        statuses = {}
        for i, status in enumerate(self.cfg.status):
            words = raw.get(len(self.cfg.points) + i)
            if words is None:
                # Unread (its request failed: logged as the status register's failure): the
                # analyzer's state is unknown, and a value of unknown state is not valid data.
                statuses[i] = Flag.D
                continue
            word = int(decode(words, status.type, status.byte_order or order))
            statuses[i] = status.flag(word)
            if status.unmapped(word):
                self._unmapped_status(status, word)
        comm_flag = Flag.B if self._comm_lost else Flag.N
        out = []
        for key, point in enumerate(self.cfg.points):
            words = raw.get(key)
            if words is None:
                continue
            value = self._value(point, words)
            flag = next((statuses[i] for i in self._flag_for[key] if statuses.get(i, Flag.N) is not Flag.N), comm_flag)
            stamp = self._sample_ts(key, point, raw, ts) if point.sample_time is not None else ts
            try:
                reading = Reading(stamp, self.cfg.site, self.cfg.id, point.quantity, value, point.unit, flag).check()
            except InvalidReading as err:
                self._metrics.rejected.labels(self.cfg.id, "invalid_value").inc()
                self._point_failed(key, str(err))
                continue
            if key in self._bad:
                self._bad.discard(key)
                log.info("%s: %s reads again", self.where, point.quantity)
            out.append(reading)
        return out

    def _sample_ts(self, key: int, point: ModbusPoint, raw: dict[int, list[int]], poll_ts: int) -> int:
        """The analyzer's sample time of the value the point holds: every poll of one result carries
        the same stamp, so the result enters aggregation once. Unreadable, or later than the poll,
        or older than ``max_age``: the time of the poll that first shows the result (each such poll
        counted, the first logged)."""
        spec = point.sample_time
        assert spec is not None
        words = raw.get(self._sample_keys[key])
        # The result is the value with its sample time: either changing is a new result. (Where
        # both sit in one request, which `telemetry check` asks for, they cannot tear apart.)
        result = (tuple(words) if words is not None else None, tuple(raw[key]))
        seen = self._samples.get(key)
        if seen is not None and seen[0] == result:
            if not seen[2]:
                self._count("sample_time")  # still not believed: counted every poll, logged once
            return seen[1]
        stamp = decode_sample_time(words, spec.format, spec.byte_order or self.cfg.byte_order, spec.timezone)
        believed = stamp is not None and poll_ts - spec.max_age * 1e9 <= stamp <= poll_ts + _SAMPLE_AHEAD_NS
        if not believed:
            self._count("sample_time")
            if key not in self._bad_sample:
                self._bad_sample.add(key)
                shown = "unreadable" if stamp is None else _iso(stamp)
                log.error(
                    "%s: %s sample time %s not believed; each new result is stamped with the poll that shows it",
                    self.where,
                    point.quantity,
                    shown,
                )
            stamp = poll_ts
        elif key in self._bad_sample:
            self._bad_sample.discard(key)
            log.info("%s: %s sample time believable again", self.where, point.quantity)
        assert stamp is not None
        self._samples[key] = (result, stamp, believed)
        return stamp

    def _value(self, point: ModbusPoint, words: list[int]) -> float:
        table, _ = self.cfg.resolve(point.address, point.table)
        if table in BIT_TABLES:
            raw = float(words[0])
        else:
            raw = decode(words, point.type, point.byte_order or self.cfg.byte_order, point.bit)
        if point.scale == 1 and point.offset == 0:
            return raw
        # 57 x 0.01 is 0.5700000000000001 in binary: kept to 12 significant digits, what a register
        # and its scale can say.
        return float(f"{raw * point.scale + point.offset:.12g}")

    def _point_failed(self, key: int, why: str) -> None:
        sampled = {k: p for p, k in self._sample_keys.items()}
        if key < len(self.cfg.points):
            name = self.cfg.points[key].quantity
        elif key in sampled:
            name = f"sample time of {self.cfg.points[sampled[key]].quantity}"
        else:
            name = "status register"
        self.last_error = f"{name} {why}"
        if key in self._bad:
            return
        self._bad.add(key)
        log.error("%s: %s %s", self.where, name, why)

    def _unmapped_status(self, status: StatusRegister, value: int) -> None:
        """Counted every poll; logged once per register and value (a few dozen at most)."""
        self._metrics.errors.labels("modbus", "status", "unmapped").inc()
        seen = (status.address, value)
        if seen not in self._unmapped and len(self._unmapped) < 64:
            self._unmapped.add(seen)
            log.warning(
                "%s: status register %s reads %d, which its values do not map; readings it applies to "
                "are flagged D (fault) until it does. Add it to values (or normal) if it means something else",
                self.where,
                status.address,
                value,
            )

    def _count(self, error_type: str) -> None:
        self._metrics.errors.labels("modbus", "read", error_type).inc()
        self._metrics.device_errors.labels(self.cfg.id, error_type).inc()

    def _went_down(self, err: Exception) -> None:
        kind = "timeout" if isinstance(err, DeviceTimeout) else "connection"
        self._count(kind)
        self._metrics.device_up.labels(self.cfg.id).set(0)
        self._comm_lost = True
        self.last_error = str(err)
        if self._down is None:
            log.error("%s: device down: %s", self.where, err)
        else:
            log.debug("%s: still down: %s", self.where, err)
        self._down = kind

    def _came_up(self) -> None:
        self._metrics.device_up.labels(self.cfg.id).set(1)
        self._comm_lost = False
        if self._down is not None:
            log.info("%s: device answering again", self.where)
            self._down = None


_SAMPLE_AHEAD_NS = 300 * 1_000_000_000  # an analyzer clock up to 5 min ahead of the host is believed


def decode_sample_time(words: list[int] | None, fmt: str, order: ByteOrder, zone: str) -> int | None:
    """UTC ns of a sample time in ``epoch``, ``ymdhms`` or ``ymdhms_bcd`` registers; None when not a time."""
    if words is None:
        return None
    try:
        if fmt == "epoch":
            return int(decode(words, "uint32", order)) * 1_000_000_000
        if fmt == "ymdhms_bcd":
            digits = "".join(f"{w:04x}" for w in words[:3])
            if not digits.isdigit():
                return None
            parts = [int(digits[i : i + 2]) for i in range(0, 12, 2)]
            parts[0] += 2000
        else:
            parts = list(words[:6])
        year, month, day, hour, minute, second = parts
        local = datetime(year, month, day, hour, minute, second, tzinfo=zoneinfo.ZoneInfo(zone))
    except (ValueError, OverflowError):
        return None
    return int(local.timestamp()) * 1_000_000_000


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


def _status_targets(cfg: ModbusConfig) -> list[list[int]]:
    """For each point, the status registers that flag it, in the order written."""
    return [[i for i, status in enumerate(cfg.status) if _applies(status, point.quantity)] for point in cfg.points]


def _applies(status: StatusRegister, quantity: str) -> bool:
    return not status.applies_to or quantity in status.applies_to
