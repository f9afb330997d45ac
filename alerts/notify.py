"""Render and deliver the messages the alert manager decides on.

Delivery never blocks ingestion or rule evaluation: messages queue here and go
out from their own tasks. Each message goes to one target (one URL of a route),
and each target has its own queue and worker: its messages go in order, its
retries with back-off hold only its own queue, so a dead mail server never holds
back the DingTalk robot. Each outcome is reported to ``on_result`` with a
secret-free detail; the manager marks alerts as told, per target, only on success. Robot
webhooks (DingTalk, WeCom, Feishu) are sent directly so their ``errcode`` is
read; other apprise URLs (e-mail, JSON webhooks, ...) go through apprise.
Templates: Chinese by default, English per route.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import zoneinfo
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

import apprise

from alerts.alert import Alert, Message
from alerts.robots import Result, is_robot, send_robot
from telemetry.config import Route
from telemetry.metrics import Metrics
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


def render(message: Message, route: Route, zones: Mapping[str, str], grafana_url: str = "") -> tuple[str, str]:
    """Title and body: site, what, value against limit with unit, since when, id, link."""
    zh = route.language == "zh"
    firing, resolved = message.firing, message.resolved
    site = (firing or resolved)[0].site
    if message.escalation:
        head = "【升级 未确认告警】" if zh else "[ESCALATED, not acknowledged]"
    elif firing and resolved:
        head = (
            f"【告警 {len(firing)} · 恢复 {len(resolved)}】"
            if zh
            else f"[FIRING {len(firing)}, RESOLVED {len(resolved)}]"
        )
    elif firing:
        head = "【告警 FIRING】" if zh else "[FIRING]"
    else:
        head = "【恢复 RESOLVED】" if zh else "[RESOLVED]"
    only = firing or resolved
    what = (
        only[0].rule
        if len(only) == 1 and not (firing and resolved)
        else (f"{len(firing) + len(resolved)} 条" if zh else f"{len(firing) + len(resolved)} alerts")
    )
    title = f"{head} {site} · {what}"
    zone = zoneinfo.ZoneInfo(zones.get(site, "Asia/Shanghai"))
    lines = [_line(a, zh, zone, resolved=False) for a in firing] + [_line(a, zh, zone, resolved=True) for a in resolved]
    if grafana_url:
        link = grafana_url.format(site=site, rule=only[0].rule)
        lines.append(("查看曲线 " if zh else "Dashboard: ") + link)
    return title, "\n".join(lines)


def _line(a: Alert, zh: bool, zone: zoneinfo.ZoneInfo, resolved: bool) -> str:
    unit = a.labels.get("unit", "")
    u = f" {unit}" if unit else ""
    since = datetime.fromtimestamp(a.started_ns / NS, zone).strftime("%Y-%m-%d %H:%M")
    device = a.labels.get("device", "")
    quantity = a.labels.get("quantity", "")
    if zh:
        name = QUANTITY_ZH.get(quantity, quantity)
        state = "已恢复" if resolved else f"自 {since} 起"
        return (
            f"• {a.rule}（{SEVERITY_ZH.get(a.severity, a.severity)}）{a.site}/{device} {name}："
            f"数值 {a.value:g}{u}，限值 {a.limit:g}{u}，{state}\n  {a.message}\n  编号 {a.id}"
        )
    state = "resolved" if resolved else f"since {since}"
    return (
        f"• {a.rule} [{a.severity}] {a.site}/{device} {quantity}: {a.value:g}{u} against limit {a.limit:g}{u},"
        f" {state}\n  {a.message}\n  id {a.id}"
    )


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
        self._send = send
        self._backoff = backoff
        self._queues: dict[str, asyncio.Queue[Message]] = {}  # per channel (ROUTE#INDEX)
        self._workers: dict[str, asyncio.Task[None]] = {}  # per channel, while it has messages
        self._running: tuple[asyncio.Event, asyncio.Future[None]] | None = None  # stop, crashed
        self._drain_timeout = 10.0
        self.in_flight: set[str] = set()  # message keys queued or being sent
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
                    self._report(message, False, "shutdown before delivery")
                finally:
                    self.in_flight.discard(message.key)
        finally:
            if self._workers.get(channel) is asyncio.current_task():
                del self._workers[channel]

    async def deliver(self, message: Message, stop: asyncio.Event | None) -> bool:
        route = self.routes[message.route]
        url = route.urls[message.target].get_secret_value()
        title, body = render(message, route, self._zones, self._grafana)
        backoff = self._backoff()
        result = Result(False, "not sent")
        for attempt in range(route.retries + 1):
            try:
                result = await self._send(url, title, body, route, bool(message.firing))
            except Exception as err:  # a plugin's bug must not kill delivery
                result = Result(False, f"{type(err).__name__}")
            self._metrics.notifications.labels(route.name, "sent" if result.ok else "failed").inc()
            if result.ok:
                break
            if attempt < route.retries and (stop is None or not await wait_event(stop, backoff.next())):
                continue
            break
        self._report(message, result.ok, result.detail)
        return result.ok

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
