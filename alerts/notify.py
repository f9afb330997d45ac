"""Render and deliver the messages the alert manager decides on.

Delivery never blocks ingestion or rule evaluation: messages queue here and go
out from their own tasks. Each message goes to one target (one URL of a route),
and each target has its own queue and worker: its messages go in order, its
retries with back-off hold only its own queue, so a dead mail server never holds
back the DingTalk robot. Each outcome is reported to ``on_result`` with a
secret-free detail; the manager marks alerts as told, per target, only on success. Robot
webhooks (DingTalk, WeCom, Feishu) are sent directly so their ``errcode`` is
read; other apprise URLs (e-mail, JSON webhooks, ...) go through apprise.
Templates: Chinese by default, English per route; each alert's value and limit read in
the units its rule kind says (``Measure``), times in the site's zone.

No message is longer than its target takes (``robots.LIMITS``; e-mail and other apprise
targets ``OTHER``): a group too long goes out in parts, each recorded on its own, and past
a target's ``max_parts`` the last part says how many alerts follow in the next message.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import logging
import sys
import zoneinfo
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

import apprise

from alerts.alert import Alert, Message
from alerts.config import Route
from alerts.robots import LIMITS, Limit, Result, counted_bytes, is_robot, send_robot
from telemetry.metrics import Metrics
from telemetry.model import Measure
from telemetry.times import spoken
from telemetry.timing import Backoff, wait_event

log = logging.getLogger(__name__)

NS = 1_000_000_000
QUANTITY_ZH = {
    "cod": "化学需氧量",
    "nh3n": "氨氮",
    "tp": "总磷",
    "tn": "总氮",
    "ph": "pH",
    "flow": "流量",
    "flow_total": "累计流量",
    "throughput": "处理量",
    "throughput_total": "累计处理量",
    "level": "液位",
    "volume": "库容",
    "bod5": "五日生化需氧量",
    "ss": "悬浮物",
}
SEVERITY_ZH = {"critical": "严重", "warning": "警告", "info": "提示"}

Send = Callable[[str, str, str, Route, bool], Awaitable[Result]]  # url, title, body, route, any firing
OnResult = Callable[[Message, bool, str], None]


async def default_send(url: str, title: str, body: str, route: Route, firing: bool) -> Result:
    if is_robot(url):
        return await asyncio.to_thread(send_robot, url, title, body, route.robot_base_url)
    target = apprise.Apprise()
    if not target.add(url):
        return Result(False, f"{url.split('://', 1)[0]}: not an apprise URL")
    kind = apprise.NotifyType.FAILURE if firing else apprise.NotifyType.SUCCESS
    ok = bool(await target.async_notify(body=body, title=title, notify_type=kind))
    return Result(ok, f"{url.split('://', 1)[0]}: {'sent' if ok else 'apprise reported failure'}")


@dataclass(frozen=True)
class Part:
    """One message as sent: the alerts it carries (a ``Message`` of its own, so each part is
    recorded on its own: an alert counts as told only once the part that carried it went out)."""

    message: Message
    title: str
    body: str


OTHER = Limit(100_000, "content", max_parts=1, max_alerts=50)  # e-mail and other apprise URLs: a sane cap
_UNLIMITED = Limit(sys.maxsize, "content", max_parts=1, max_alerts=sys.maxsize)


def limit_for(url: str) -> Limit:
    return LIMITS.get(url.split("://", 1)[0].lower(), OTHER)


def size_of(url: str, title: str, body: str) -> int:
    """Bytes of a message as the target counts them against ``limit_for(url).max_bytes``."""
    return counted_bytes(url, title, body) if is_robot(url) else len(f"{title}\n{body}".encode())


def render(
    message: Message, route: Route, zones: Mapping[str, str], grafana_url: str = "", console_url: str = ""
) -> tuple[str, str]:
    """Title and body of the whole message, whatever its size (``compose`` splits for a target)."""
    [part] = compose(message, route, zones, grafana_url, limit=_UNLIMITED, console_url=console_url)
    return part.title, part.body


def compose(
    message: Message,
    route: Route,
    zones: Mapping[str, str],
    grafana_url: str = "",
    url: str = "",
    limit: Limit | None = None,
    console_url: str = "",
) -> list[Part]:
    """The message as its target ``url`` takes it: alerts in order (firing, then resolved), as
    many per part as its limit allows, at most ``max_parts`` parts; the last says how many are
    left (they stay due and go out in the next message). A lone alert too long for a part has
    its text shortened. Each alert line: site, what, value against limit in the rule kind's
    units, since when in the site's time, id; a link to Grafana with ``grafana_url``."""
    limit = limit or limit_for(url)
    zh = route.language == "zh"
    items = [(a, False) for a in message.firing] + [(a, True) for a in message.resolved]
    site = items[0][0].site
    zone = zoneinfo.ZoneInfo(zones.get(site, "Asia/Shanghai"))
    tail = [("查看曲线 " if zh else "Dashboard: ") + grafana_url.format(site=site, rule=items[0][0].rule)]
    tail = tail if grafana_url else []
    if console_url:  # the alerts page (``telemetry.console``): acknowledge or silence from the phone
        one = f"/ui/alerts/{items[0][0].id}" if len(items) == 1 else "/ui"
        tail.append(("确认或屏蔽 " if zh else "Acknowledge or silence: ") + console_url.rstrip("/") + one)

    def fits(title: str, lines: list[str]) -> bool:
        return size_of(url, title, "\n".join(lines + tail)) <= limit.max_bytes

    packed: list[list[tuple[Alert, bool, str]]] = []
    i = 0
    while i < len(items) and len(packed) < limit.max_parts:
        title = _title(message, zh, len(packed) + 1, limit.max_parts)  # as long as the final one, or longer
        last = len(packed) == limit.max_parts - 1
        part: list[tuple[Alert, bool, str]] = []
        while i < len(items) and len(part) < limit.max_alerts:
            alert, resolved = items[i]
            left = len(items) - i - 1
            lines = [line for _, _, line in part]
            more = [_more(left, zh)] if last and left else []

            def fit(line: str, lines: list[str] = lines, more: list[str] = more, title: str = title) -> bool:
                return fits(title, [*lines, line, *more])

            line = _line(alert, zh, zone, resolved)
            if not fit(line):
                if part:
                    break
                line = _shortened(alert, zh, zone, resolved, fit)
            part.append((alert, resolved, line))
            i += 1
        packed.append(part)
    left = len(items) - i
    parts = []
    for k, part in enumerate(packed, 1):
        title = _title(message, zh, k, len(packed))
        lines = [line for _, _, line in part] + ([_more(left, zh)] if k == len(packed) and left else [])
        body = "\n".join(lines + tail)
        while size_of(url, title, body) > limit.max_bytes and body:  # names no message could hold: cut
            body = body[: len(body) * 9 // 10]
        told = replace(message, firing=[a for a, r, _ in part if not r], resolved=[a for a, r, _ in part if r])
        parts.append(Part(told, title, body))
    return parts


def _title(message: Message, zh: bool, part: int, parts: int) -> str:
    firing, resolved = message.firing, message.resolved
    if message.escalation:
        head = "【升级 未确认告警】" if zh else "[ESCALATED, not acknowledged]"
    elif firing and resolved:
        head = (
            f"【告警 {len(firing)} · 恢复 {len(resolved)}】"
            if zh
            else f"[FIRING {len(firing)}, RESOLVED {len(resolved)}]"
        )
    elif firing and all(a.severity == "info" for a in firing):
        head = "【通知】" if zh else "[NOTICE]"  # an operator's mark, a note: not an alarm
    elif firing:
        head = "【告警】" if zh else "[FIRING]"
    else:
        head = "【恢复】" if zh else "[RESOLVED]"
    only = firing or resolved
    count = len(firing) + len(resolved)
    what = only[0].rule if count == 1 else (f"{count} 条" if zh else f"{count} alerts")
    mark = "" if parts == 1 else (f"（{part}/{parts}）" if zh else f" ({part}/{parts})")
    return f"{head} {only[0].site} · {what}{mark}"


def _more(left: int, zh: bool) -> str:
    if zh:
        return f"…… 另有 {left} 条告警，随后发送（全部告警：telemetry alerts list）"
    return f"… and {left} more alerts, in the next message (all alerts: telemetry alerts list)"


def _shortened(a: Alert, zh: bool, zone: zoneinfo.ZoneInfo, resolved: bool, fit: Callable[[str], bool]) -> str:
    """The alert's line with as much of its text as ``fit`` allows (none, if nothing fits)."""
    low, high = 0, len(a.message)
    while low < high:
        mid = (low + high + 1) // 2
        if fit(_line(a, zh, zone, resolved, mid)):
            low = mid
        else:
            high = mid - 1
    return _line(a, zh, zone, resolved, low)


def _line(a: Alert, zh: bool, zone: zoneinfo.ZoneInfo, resolved: bool, text_chars: int | None = None) -> str:
    """One alert: what, where, its numbers in the rule kind's units, since when (site time).

    Chinese lines carry the rule's own ``message`` (its template, in the supervisors' words)
    and leave out a kind's English default text, which says nothing the line does not."""
    since = _local(a.started_ns, zone)
    where = "/".join(p for p in (a.site, a.labels.get("device", "")) if p)
    quantity = a.labels.get("quantity", "")
    numbers = _numbers(a, zh)
    note = a.message if (not zh or a.templated or not a.measure) else ""
    if text_chars is not None and len(note) > text_chars:
        note = note[:text_chars] + "…"
    note_line = f"\n  {note}" if note else ""
    if zh:
        name = QUANTITY_ZH.get(quantity, quantity)
        if resolved:
            state = f"{_local(a.resolved_ns or a.started_ns, zone)} 已恢复（自 {since} 起）"
        else:
            state = f"自 {since} 起"
        severity = SEVERITY_ZH.get(a.severity, a.severity)
        what = f"{where} {name}" if name else where
        return f"• {a.rule}（{severity}）{what}：{numbers}，{state}{note_line}\n  编号 {a.id}"
    state = f"resolved {_local(a.resolved_ns or a.started_ns, zone)} (since {since})" if resolved else f"since {since}"
    what = f"{where} {quantity}" if quantity else where
    return f"• {a.rule} [{a.severity}] {what}: {numbers}, {state}{note_line}\n  id {a.id}"


def _local(ns: int, zone: zoneinfo.ZoneInfo) -> str:
    """The site's local time with its offset: a supervisor elsewhere, or a CLI in UTC, reads
    the same moment."""
    stamp = datetime.fromtimestamp(ns / NS, zone)
    offset = stamp.strftime("%z")
    return stamp.strftime("%Y-%m-%d %H:%M") + f" {offset[:3]}:{offset[3:]}"


_PHRASES: dict[str, tuple[str, str]] = {  # measure (or capacity condition) -> Chinese, English
    Measure.SILENCE: ("无有效数据 {value}，限值 {limit}", "no valid data for {value} against limit {limit}"),
    Measure.FLAGGED: ("维护/校准状态 {value}，限值 {limit}", "flagged for {value} against limit {limit}"),
    Measure.HELD: ("数值 {value}，保持 {limit} 不变", "{value}, held at {limit}"),
    Measure.FRACTION: ("达容量 {value}，限值 {limit}", "{value} of capacity against limit {limit}"),
    Measure.DAY_TOTAL: ("今日累计 {value}，限值 {limit}", "day total {value} against limit {limit}"),
    "projection": ("预计今日 {value}，限值 {limit}", "projected day total {value} against limit {limit}"),
    "underuse": ("今日累计 {value}，下限 {limit}", "day total {value} against floor {limit}"),
    Measure.PER_MINUTE: ("变化 {value}，限值 {limit}", "changing {value} against limit {limit}"),
    Measure.READING: ("数值 {value}，限值 {limit}", "{value} against limit {limit}"),
}


# The daemon's own alerts (``Measure.STATE``): what they say, by rule name, in the template's
# language; the English ``message`` with its details (an MN, the platform's answer) goes with
# the English template and into the alerts list.
_OWN: tuple[tuple[str, str, str], ...] = (
    ("hj212_wrong_password", "站点密码错误，上传被拒收", "wrong password, uploads refused"),
    ("hj212_unknown_station", "未登记 MN 的站点上传，已拒收", "a station with an unknown MN, uploads refused"),
    ("hj212_*_refused", "平台 {quantity} 拒绝本站上传", "platform {quantity} refuses the station"),
)
_OUTBOX_DROPPED = (
    "本地缓存超出磁盘预算，已丢弃最早未送出的记录 {value} 条",
    "{value} oldest undelivered records dropped",
)
_OUTBOX_WAITING = ("本地缓存已满，新数据等待存入", "outbox full, new readings wait")


def _state_phrase(a: Alert, zh: bool) -> str:
    """``outbox_full``'s value is how many records the budget dropped (0: commits wait)."""
    if a.rule == "outbox_full":
        chinese, english = _OUTBOX_DROPPED if a.value > 0 else _OUTBOX_WAITING
    else:
        chinese, english = next(
            ((c, e) for pattern, c, e in _OWN if fnmatch.fnmatchcase(a.rule, pattern)), ("状态告警", "condition")
        )
    return (chinese if zh else english).format(quantity=a.labels.get("quantity", ""), value=f"{a.value:.0f}")


def _numbers(a: Alert, zh: bool) -> str:
    """Value against limit as the rule kind's ``measure`` says they read."""
    if a.measure == Measure.STATE:
        return _state_phrase(a, zh)
    key = a.measure
    condition = a.labels.get("condition", "")
    if key == Measure.DAY_TOTAL and condition in _PHRASES:
        key = condition
    value, limit = _formatted(a)
    chinese, english = _PHRASES.get(key, _PHRASES[Measure.READING])
    return (chinese if zh else english).format(value=value, limit=limit)


def _formatted(a: Alert) -> tuple[str, str]:
    unit = a.labels.get("unit", "")
    u = f" {unit}" if unit else ""
    if a.measure in (Measure.SILENCE, Measure.FLAGGED):
        return spoken(a.value), spoken(a.limit)
    if a.measure == Measure.FRACTION:
        return _percent(a.value), _percent(a.limit)
    if a.measure == Measure.DAY_TOTAL:
        per_day = unit.split("/")[0].strip()  # t/h integrated over a day is t; a totalizer's t stays t
        t = f" {per_day}" if per_day else ""
        return f"{_amount(a.value)}{t}", f"{_amount(a.limit)}{t}"
    if a.measure == Measure.PER_MINUTE:
        return f"{a.value:.3g}{u}/min", f"{a.limit:g}{u}/min"
    return f"{a.value:g}{u}", f"{a.limit:g}{u}"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.0f} %"


def _amount(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


class Notifier:
    def __init__(
        self,
        routes: list[Route],
        metrics: Metrics,
        zones: Mapping[str, str],
        grafana_url: str = "",
        send: Send = default_send,
        backoff: Callable[[], Backoff] = lambda: Backoff(initial=2.0, maximum=60.0),
    ) -> None:
        self.routes = {r.name: r for r in routes}
        self._metrics = metrics
        self._zones = zones
        self._grafana = grafana_url
        self.console_url = ""  # the alerts page's address, linked from each message (``notify.console_url``)
        self._send = send
        self._backoff = backoff
        self._queues: dict[str, asyncio.Queue[Message]] = {}  # per channel (ROUTE#INDEX)
        self._workers: dict[str, asyncio.Task[None]] = {}  # per channel, while it has messages
        self._running: tuple[asyncio.Event, asyncio.Future[None]] | None = None  # stop, crashed
        self._drain_timeout = 10.0
        self.in_flight: set[str] = set()  # message keys queued or being sent
        self._unreported: dict[str, list[Message]] = {}  # message key -> its parts not reported yet
        self.on_result: OnResult | None = None

    def submit(self, message: Message) -> None:
        if message.key in self.in_flight:
            return
        self.in_flight.add(message.key)
        self._queues.setdefault(message.channel, asyncio.Queue()).put_nowait(message)
        if self._running is not None and message.channel not in self._workers:
            self._start(message.channel, *self._running)

    async def run(self, stop: asyncio.Event, drain_timeout: float = 10.0) -> None:
        """Send messages as they come, each target on its own; on stop, each target tries what
        it has queued for a bounded time."""
        crashed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._running, self._drain_timeout = (stop, crashed), drain_timeout
        for channel, queue in self._queues.items():
            if not queue.empty() and channel not in self._workers:
                self._start(channel, stop, crashed)
        stopped = asyncio.ensure_future(_until(stop))
        try:
            await asyncio.wait([stopped, crashed], return_when=asyncio.FIRST_COMPLETED)
            while self._workers and not crashed.done():  # a message submitted meanwhile starts one too
                await asyncio.wait([*self._workers.values(), crashed], return_when=asyncio.FIRST_COMPLETED)
            if crashed.done():
                crashed.result()
        finally:
            self._running = None
            stopped.cancel()
            workers = list(self._workers.values())
            for task in workers:  # only after a crash or a cancel: a clean stop has none left
                task.cancel()
            await asyncio.gather(stopped, *workers, return_exceptions=True)

    def _start(self, channel: str, stop: asyncio.Event, crashed: asyncio.Future[None]) -> None:
        task = asyncio.create_task(self._work(channel, stop), name=f"notify:{channel}")
        self._workers[channel] = task
        task.add_done_callback(functools.partial(_pass_on_crash, crashed))

    async def _work(self, channel: str, stop: asyncio.Event) -> None:
        """Send one target's messages in order until its queue is empty, then end: ``submit``
        starts a new worker for the next message (the empty check and the removal below run
        without a pause between them, so no message is left without a worker)."""
        queue = self._queues[channel]
        try:
            while not queue.empty():
                message = queue.get_nowait()
                try:
                    if stop.is_set():
                        await asyncio.wait_for(self.deliver(message, None), self._drain_timeout)
                    else:
                        await self.deliver(message, stop)
                except TimeoutError:
                    for part in self._unreported.get(message.key) or [message]:
                        self._report(part, False, "shutdown before delivery")
                finally:
                    self._unreported.pop(message.key, None)
                    self.in_flight.discard(message.key)
        finally:
            if self._workers.get(channel) is asyncio.current_task():
                del self._workers[channel]

    async def deliver(self, message: Message, stop: asyncio.Event | None) -> bool:
        """Send the message in as many parts as its target's limit needs, in order, each
        reported on its own; after a part fails, the rest are reported failed unsent (they are
        offered again, as any failure). True when every part went out."""
        route = self.routes[message.route]
        url = route.urls[message.target].get_secret_value()
        parts = compose(message, route, self._zones, self._grafana, url, console_url=self.console_url)
        unreported = self._unreported[message.key] = [p.message for p in parts]
        failed = 0
        for k, part in enumerate(parts, 1):
            of = f" (part {k} of {len(parts)})" if len(parts) > 1 else ""
            if failed:
                self._report(part.message, False, f"not sent: part {failed} of {len(parts)} failed")
            else:
                result = await self._attempts(url, part, route, stop)
                self._report(part.message, result.ok, result.detail + of)
                failed = 0 if result.ok else k
            unreported.pop(0)
        self._unreported.pop(message.key, None)
        return not failed

    async def _attempts(self, url: str, part: Part, route: Route, stop: asyncio.Event | None) -> Result:
        backoff = self._backoff()
        result = Result(False, "not sent")
        for attempt in range(route.retries + 1):
            try:
                result = await self._send(url, part.title, part.body, route, bool(part.message.firing))
            except Exception as err:  # a plugin's bug must not kill delivery
                result = Result(False, f"{type(err).__name__}")
            self._metrics.notifications.labels(route.name, "sent" if result.ok else "failed").inc()
            if result.ok:
                break
            if attempt < route.retries and (stop is None or not await wait_event(stop, backoff.next())):
                continue
            break
        return result

    def _report(self, message: Message, ok: bool, detail: str) -> None:
        if not ok:
            ids = ", ".join(a.id for a in message.firing + message.resolved)
            log.error(
                "route %s target #%d: could not deliver (%s) for alerts %s",
                message.route,
                message.target,
                detail,
                ids,
            )
        if self.on_result is not None:
            self.on_result(message, ok, detail)


async def _until(event: asyncio.Event) -> None:
    await event.wait()


def _pass_on_crash(crashed: asyncio.Future[None], task: asyncio.Task[None]) -> None:
    """A worker's bug ends ``run`` (and with it the daemon, loudly), as when one task sent all."""
    if not task.cancelled() and (err := task.exception()) is not None and not crashed.done():
        crashed.set_exception(err)
