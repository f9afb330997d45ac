"""The platform's commands to the station, and the station's answers (a mixin of ``Uplink``).

Each request gets 9011 (QnRtn) with its QN, then, once done, 9012 (ExeRtn); data asked
for goes between the two. A request that names another MN gets QnRtn 4, one without the
station's current PW QnRtn 3, whatever it asks. What is answered, and how:

- 1000 OverTime/ReCount, 1061-1064 intervals, 2011/2012 real-time data on/off: set
  within bounds (the platform is not trusted), else ExeRtn 3;
- 1011 get time: ``SystemTime``; 1012 set time: ExeRtn 3 (the host keeps its clock by
  NTP, never by a platform); 1013 (a station's time-calibration request, sent by a
  platform): answered like 1011 with the station's time, so the platform sees the
  clock it would calibrate, and ExeRtn 1;
- 1072 set password: a ``NewPW``
  HJ 212 can carry (1-16 of the characters the config allows) is stored in the outbox
  and used from then on, across restarts, until the configured PW changes (ExeRtn 1);
  an unusable one gets ExeRtn 3, a store that fails ExeRtn 2. The password is never logged;
- 2021/2022 equipment running status on/off: ``SBn-RS`` from the configured status series
  (``equipment``), sent now and every ``RtdInterval`` until 2022; none configured: ExeRtn 100;
- 2041 equipment running time per day in BeginTime..EndTime (yesterday without them):
  ``SBn-RT`` in hours, the sum of the status series' hourly means clamped to 0..1
  (1 = running); ExeRtn 100 when nothing is stored;
- 2081 restart time: ``RestartTime``, when the daemon started (also sent once unasked
  after the first connection);
- 2031/2051/2061 with BeginTime/EndTime: history, each period acknowledged, then ExeRtn
  1 (100 when none is stored); the range is bounded by what the outbox keeps, and one
  history request (or 2041) is answered at a time: another meanwhile gets QnRtn 2;
- 3011-3021 (calibration, sampling, cleaning, sample intervals, meter information):
  ExeRtn 3, "the request's conditions are not met": the station takes no remote control
  of its analyzers, unless ``controls`` maps that CN to one fixed Modbus register write
  (the allow-list; nothing the platform sends is written): then ExeRtn 1, or 2 when the
  write failed;
- anything else: QnRtn 8. A 9011 refusal of the station (QnRtn 3 PW, 4 MN, ...) raises
  an alert instead of looping.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable

import orjson

from telemetry.calendar import NS
from telemetry.hj212.codec import Packet, flag_value
from telemetry.hj212.config import PW_CHARS, Control, Platform
from telemetry.hj212.periods import CN_KIND, PointEncoder
from telemetry.hj212.session import NotAcked, answer
from telemetry.metrics import Metrics
from telemetry.model import Aggregate, Reading
from telemetry.outbox import Outbox
from telemetry.points import Point
from telemetry.protocols import Db

log = logging.getLogger(__name__)

MAX_RTD_INTERVAL_S = 86400.0  # what a platform may set (1062): a day; beyond that a command is refused
REFUSALS = {"3": "wrong password (PW)", "4": "wrong station id (MN)", "5": "wrong ST", "6": "wrong Flag"}
CONTROL_CNS = frozenset(str(cn) for cn in range(3011, 3022))
Control_ = Callable[[Control], Awaitable[None]]


def password_state(config_pw: str, new_pw: str) -> bytes:
    """What 1072 stores: the new password, and a digest of the configured one it replaced, so an
    operator's change of the configured password later wins over a platform's earlier change."""
    return orjson.dumps({"config": hashlib.sha256(config_pw.encode()).hexdigest(), "pw": new_pw})


def stored_password(config_pw: str, body: bytes | None) -> str | None:
    """The password a platform set (1072), if it replaced the one configured now."""
    if not body:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("config") != hashlib.sha256(config_pw.encode()).hexdigest():
        return None
    pw = data.get("pw")
    return pw if isinstance(pw, str) and PW_CHARS.fullmatch(pw) else None


class PlatformCommands:
    """Answers to the platform (mixed into ``Uplink``, which sets these attributes)."""

    cfg: Platform
    name: str
    point: Point
    encoder: PointEncoder
    started_ns: int
    control: Control_ | None
    _db: Db | None
    _outbox: Outbox | None
    _pw: str
    _rtd_on: bool
    _rtd_interval: float
    _status_on: bool
    _status: dict[tuple[str, str], Reading]
    _overtime: float
    _recount: int
    _tasks: set[asyncio.Future[None]]
    _metrics: Metrics
    _refused_cns: set[str]  # commands whose refusal was logged at WARNING once

    def _packet(self, cn: str, cp: list[dict[str, str]], qn: str = "", st: str = "", ack: bool | None = None) -> Packet:
        raise NotImplementedError

    async def _send(self, packet: Packet) -> None:
        raise NotImplementedError

    async def _write_packet(self, packet: Packet) -> None:
        raise NotImplementedError

    def _refusal(self, why: str) -> None:
        raise NotImplementedError

    async def periods_between(self, cn: str, begin: int, end: int) -> list[int]:
        raise NotImplementedError

    async def _period_packet(self, cn: str, start: int) -> Packet | None:
        raise NotImplementedError

    async def _handle(self, p: Packet) -> None:
        if p.cn in ("9014", "9013", "9012"):
            return  # an acknowledgement nobody waits for (a wrong QN, a late one): nothing to do
        if p.cn == "9011":
            code = p.get("QnRtn") or ""
            if code in REFUSALS:
                self._refusal(REFUSALS[code])
            return
        refused = self._unauthorized(p)
        if refused:
            await self._reply(p, refused)
        elif (p.cn in CN_KIND and p.get("BeginTime")) or p.cn == "2041":
            if self._tasks:
                # One history answer at a time: what a platform can make the station send (and
                # read from disk) grows with its requests only one after another.
                self._metrics.errors.labels("hj212", "command", "history_busy").inc()
                log.warning("hj212 %s: history request %s refused (QnRtn 2): one is being answered", self.name, p.qn)
                await self._reply(p, "2")
            else:
                self._background(self._history(p) if p.cn != "2041" else self._running_time(p))
        elif (handler := self._handlers().get(p.cn)) is None:
            await self._reply(p, "8")
        else:
            await self._reply(p, "1")
            await handler(p)

    def _unauthorized(self, p: Packet) -> str | None:
        """Who may ask anything: the platform that names this station (else QnRtn 4) and knows
        its current PW (else 3)."""
        if p.mn != self.cfg.mn:
            return "4"
        if not hmac.compare_digest(p.pw.encode(), self._pw.encode()):
            return "3"
        return None

    def _handlers(self) -> dict[str, Callable[[Packet], Awaitable[None]]]:
        return {
            "1000": self._set_timeouts,
            "1011": self._get_time,
            "1012": self._set_time,
            "1013": self._get_time,
            "1061": self._get_rtd,
            "1062": self._set_rtd,
            "1063": self._get_min,
            "1064": self._set_min,
            "1072": self._set_password,
            "2011": self._start_rtd,
            "2012": self._stop_rtd,
            "2021": self._start_status,
            "2022": self._stop_status,
            "2081": self._restart_time,
            **dict.fromkeys(CONTROL_CNS, self._remote_control),
        }

    def _background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answer(self, request: Packet, cn: str, cp: list[dict[str, str]]) -> Packet:
        """An answer under the station's own MN and PW (``session.answer``)."""
        flag = flag_value(self.cfg.version, ack=False)
        return answer(request, cn, cp, mn=self.cfg.mn, pw=self._pw, flag=flag)

    async def _reply(self, request: Packet, qn_rtn: str) -> None:
        await self._write_packet(self._answer(request, "9011", [{"QnRtn": qn_rtn}]))

    async def _data_reply(self, request: Packet, cn: str, cp: list[dict[str, str]]) -> None:
        """What was asked for, under the request's QN, then ExeRtn 1."""
        await self._write_packet(self._packet(cn, cp, qn=request.qn, ack=False))
        await self._result(request, "1")

    async def _result(self, request: Packet, exe_rtn: str) -> None:
        if exe_rtn == "3":  # what was refused, by name only: values may be a password (1072)
            keys = ", ".join(sorted({k[:32] for item in request.cp for k in item})[:8])
            first = request.cn not in self._refused_cns
            self._refused_cns.add(request.cn)  # CNs the station answers: a bounded set
            level = logging.WARNING if first else logging.DEBUG
            log.log(level, "hj212 %s: platform command %s refused (ExeRtn 3): %s", self.name, request.cn, keys)
        await self._write_packet(self._answer(request, "9012", [{"ExeRtn": exe_rtn}]))

    async def _history(self, p: Packet) -> None:
        """Answer a history request: 9011, each stored period in the range (acked), 9012."""
        try:
            await self._reply(p, "1")
            begin = self.encoder.parse_local(p.get("BeginTime") or "")
            end = self.encoder.parse_local(p.get("EndTime") or "")
            sent = 0
            for start in await self.periods_between(p.cn, begin, end):
                packet = await self._period_packet(p.cn, start)
                if packet is not None:
                    await self._send(packet)
                    sent += 1
            await self._result(p, "1" if sent else "100")
        except (NotAcked, ConnectionError, OSError, ValueError, TimeoutError) as err:
            log.warning("hj212 %s: history request %s failed: %s", self.name, p.qn, err)

    # -- settings ---------------------------------------------------------------------------------

    async def _set_timeouts(self, p: Packet) -> None:
        """OverTime 1-600 s and ReCount 0-10, as the configuration allows; anything else is refused."""
        overtime, recount = p.get("OverTime"), p.get("ReCount")
        try:
            seconds = float(overtime) if overtime else self._overtime
            count = int(recount) if recount else self._recount
        except ValueError:
            seconds, count = math.nan, -1
        ok = 1.0 <= seconds <= 600.0 and 0 <= count <= 10
        if ok:
            self._overtime, self._recount = seconds, count
        await self._result(p, "1" if ok else "3")

    async def _get_time(self, p: Packet) -> None:
        await self._data_reply(p, "1011", [{"SystemTime": self.encoder.local(time.time_ns())}])

    async def _set_time(self, p: Packet) -> None:
        log.warning(
            "hj212 %s: platform asked to set the clock to %s; the daemon uses the host clock (NTP)",
            self.name,
            (p.get("SystemTime") or "")[:20],
        )
        await self._result(p, "3")

    async def _get_rtd(self, p: Packet) -> None:
        await self._data_reply(p, "1061", [{"RtdInterval": str(int(self._rtd_interval))}])

    async def _set_rtd(self, p: Packet) -> None:
        try:
            seconds = float(p.get("RtdInterval") or "")
        except ValueError:
            seconds = math.nan
        ok = 1.0 <= seconds <= MAX_RTD_INTERVAL_S  # NaN and inf fail too: the platform is not trusted
        if ok:
            self._rtd_interval = seconds
        await self._result(p, "1" if ok else "3")

    async def _get_min(self, p: Packet) -> None:
        await self._data_reply(p, "1063", [{"MinInterval": str(self.encoder.min_minutes)}])

    async def _set_min(self, p: Packet) -> None:
        text = p.get("MinInterval") or ""
        minutes = int(text) if text.isascii() and text.isdigit() and len(text) < 4 else 0
        ok = 1 <= minutes <= 60 and 60 % minutes == 0
        if ok:
            self.encoder.min_minutes = minutes
        await self._result(p, "1" if ok else "3")

    async def _set_password(self, p: Packet) -> None:
        new = p.get("NewPW") or ""
        if not PW_CHARS.fullmatch(new):
            log.warning("hj212 %s: platform sent a new password HJ 212 cannot carry; refused", self.name)
            await self._result(p, "3")
            return
        assert self._db is not None
        assert self._outbox is not None
        body = password_state(self.cfg.pw.get_secret_value(), new)
        try:
            await self._db(self._outbox.save_state, f"hj212_pw/{self.name}", body)
        except Exception as err:
            log.error("hj212 %s: could not store the platform's new password (%s)", self.name, type(err).__name__)
            await self._result(p, "2")
            return
        await self._result(p, "1")  # under the password the request came with
        self._pw = new
        log.warning("hj212 %s: the platform set a new station password; stored and in use", self.name)

    async def _start_rtd(self, p: Packet) -> None:
        self._rtd_on = True
        await self._result(p, "1")

    async def _stop_rtd(self, p: Packet) -> None:
        self._rtd_on = False
        await self._result(p, "1")

    # -- equipment --------------------------------------------------------------------------------

    def status_items(self) -> list[dict[str, str]] | None:
        """``SBn-RS`` of each configured equipment with a status reading (None: none has one)."""
        items: list[dict[str, str]] = []
        newest = 0
        for equipment in self.cfg.equipment:
            reading = self._status.get((equipment.device, equipment.quantity))
            if reading is not None and math.isfinite(reading.value):
                items.append({f"{equipment.id}-RS": str(round(reading.value))})
                newest = max(newest, reading.ts)
        return [{"DataTime": self.encoder.local(newest)}, *items] if items else None

    async def _start_status(self, p: Packet) -> None:
        items = self.status_items()
        if items is None:
            await self._result(p, "100")
            return
        self._status_on = True
        await self._write_packet(self._packet("2021", items, ack=False))
        await self._result(p, "1")

    async def _stop_status(self, p: Packet) -> None:
        self._status_on = False
        await self._result(p, "1")

    async def _running_time(self, p: Packet) -> None:
        """2041: each day's running hours of the configured equipment (9011, the days, 9012)."""
        try:
            await self._reply(p, "1")
            now = time.time_ns()
            if p.get("BeginTime"):
                begin = self.encoder.parse_local(p.get("BeginTime") or "")
                end = self.encoder.parse_local(p.get("EndTime") or "") if p.get("EndTime") else now
            else:  # yesterday
                begin = self.encoder.period("day", self.encoder.period("day", now) - NS)
                end = begin
            # The platform's range is not trusted: nothing is stored after now or before the
            # outbox's window retention, so the days looked at are bounded by the config.
            assert self._outbox is not None
            begin = max(begin, now - int(self._outbox.retention.windows * NS))
            end = min(end, now)
            sent = 0
            day = self.encoder.period("day", begin)
            while day <= end and sent < 366:
                items = await self._running_items(day)
                if items is not None:
                    await self._send(self._packet("2041", items, ack=False))
                    sent += 1
                day = self.encoder.end("day", day)
            await self._result(p, "1" if sent else "100")
        except (ConnectionError, OSError, ValueError, TimeoutError) as err:
            log.warning("hj212 %s: running-time request %s failed: %s", self.name, p.qn, err)

    async def _running_items(self, day: int) -> list[dict[str, str]] | None:
        if not self.cfg.equipment:
            return None
        assert self._db is not None
        assert self._outbox is not None
        hours: list[Aggregate] = await self._db(
            self._outbox.windows, self.point.site, "1h", day, self.encoder.end("day", day), None
        )
        items: list[dict[str, str]] = []
        for equipment in self.cfg.equipment:
            means = [
                min(1.0, max(0.0, h.avg))
                for h in hours
                if (h.device, h.quantity) == (equipment.device, equipment.quantity) and h.avg is not None
            ]
            if means:
                items.append({f"{equipment.id}-RT": f"{sum(means):.2f}"})
        return [{"DataTime": self.encoder.local(day)}, *items] if items else None

    async def _restart_time(self, p: Packet) -> None:
        await self._data_reply(p, "2081", self.restart_items())

    def restart_items(self) -> list[dict[str, str]]:
        return [{"DataTime": self.encoder.local(time.time_ns())}, {"RestartTime": self.encoder.local(self.started_ns)}]

    # -- remote control ---------------------------------------------------------------------------

    async def _remote_control(self, p: Packet) -> None:
        allowed = self.cfg.controls.get(p.cn)
        if allowed is None or self.control is None:
            log.info("hj212 %s: platform command %s refused: not in this station's controls", self.name, p.cn)
            await self._result(p, "3")
            return
        try:
            await self.control(allowed)
        except TimeoutError:
            await self._result(p, "4")
            return
        except Exception as err:
            log.warning("hj212 %s: command %s: the write to %s failed: %s", self.name, p.cn, allowed.device, err)
            await self._result(p, "2")
            return
        log.info("hj212 %s: command %s executed as configured (%s)", self.name, p.cn, allowed.device)
        await self._result(p, "1")
