"""Sends alert events to the configured routes through apprise.

Each event goes to every route whose filters (sites, severities, rules) match;
resolved events only to routes with ``send_resolved``. A URL that fails is
retried with back-off, and a send is counted only after apprise reports success.
URLs carry tokens: they are never logged; routes are named by ``name`` instead.
"""

from __future__ import annotations

import asyncio
import logging
import zoneinfo
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

import apprise

from telemetry.config import Route
from telemetry.metrics import Metrics
from telemetry.model import AlertEvent, AlertState
from telemetry.timing import Backoff, wait_event

log = logging.getLogger(__name__)

Send = Callable[[str, str, str, AlertState], Awaitable[bool]]


async def apprise_send(url: str, title: str, body: str, state: AlertState) -> bool:
    target = apprise.Apprise()
    if not target.add(url):
        return False
    kind = apprise.NotifyType.FAILURE if state is AlertState.FIRING else apprise.NotifyType.SUCCESS
    return bool(await target.async_notify(body=body, title=title, notify_type=kind))


def render(event: AlertEvent, zone: str) -> tuple[str, str]:
    """Title and body, bilingual: supervisors read Chinese, integrators often English."""
    head = "【告警 FIRING】" if event.state is AlertState.FIRING else "【恢复 RESOLVED】"
    title = f"{head} {event.site} · {event.rule} ({event.severity})"
    local = datetime.fromtimestamp(event.ts / 1e9, zoneinfo.ZoneInfo(zone))
    lines = [
        event.message,
        f"站点 site: {event.site}",
        f"设备 device: {event.labels.get('device', '-')}",
        f"因子 quantity: {event.labels.get('quantity', '-')}",
        f"数值 value: {event.value:g} {event.labels.get('unit', '')}".rstrip(),
        f"限值 limit: {event.limit:g} {event.labels.get('unit', '')}".rstrip(),
        f"时间 time: {local:%Y-%m-%d %H:%M:%S %Z}",
    ]
    return title, "\n".join(lines)


class Notifier:
    def __init__(
        self,
        routes: list[Route],
        metrics: Metrics,
        zones: Mapping[str, str],
        send: Send = apprise_send,
        backoff: Callable[[], Backoff] = lambda: Backoff(initial=2.0, maximum=60.0),
    ) -> None:
        self._routes = routes
        self._metrics = metrics
        self._zones = zones
        self._send = send
        self._backoff = backoff
        self._queue: asyncio.Queue[AlertEvent] = asyncio.Queue()

    def submit(self, event: AlertEvent) -> None:
        self._queue.put_nowait(event)

    def routes_for(self, event: AlertEvent) -> list[Route]:
        return [
            r
            for r in self._routes
            if (not r.sites or event.site in r.sites)
            and (not r.severities or event.severity in r.severities)
            and (not r.rules or event.rule in r.rules)
            and (event.state is AlertState.FIRING or r.send_resolved)
        ]

    async def run(self, stop: asyncio.Event, drain_timeout: float = 10.0) -> None:
        """Send events as they come; on stop, try to send what is queued for a bounded time."""
        while not (stop.is_set() and self._queue.empty()):
            if self._queue.empty():
                getter = asyncio.ensure_future(self._queue.get())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not getter.done():
                    getter.cancel()
                    continue
                event = getter.result()
            else:
                event = self._queue.get_nowait()
            if stop.is_set():
                await asyncio.wait_for(self.deliver(event, None), drain_timeout)
            else:
                await self.deliver(event, stop)

    async def deliver(self, event: AlertEvent, stop: asyncio.Event | None) -> None:
        title, body = render(event, self._zones.get(event.site, "Asia/Shanghai"))
        for route in self.routes_for(event):
            await asyncio.gather(
                *(
                    self._one(route, i, url.get_secret_value(), title, body, event, stop)
                    for i, url in enumerate(route.urls)
                )
            )

    async def _one(
        self,
        route: Route,
        index: int,
        url: str,
        title: str,
        body: str,
        event: AlertEvent,
        stop: asyncio.Event | None,
    ) -> None:
        backoff = self._backoff()
        for attempt in range(route.retries + 1):
            try:
                ok = await self._send(url, title, body, event.state)
            except Exception as err:  # a plugin bug must not kill the notifier
                log.debug("route %s url #%d: %s", route.name, index, type(err).__name__)
                ok = False
            if ok:
                self._metrics.notifications.labels(route.name, "sent").inc()
                return
            self._metrics.notifications.labels(route.name, "failed").inc()
            if attempt < route.retries and stop is not None and await wait_event(stop, backoff.next()):
                break
        log.error(
            "route %s url #%d: could not deliver %s alert %s for %s after %d attempts",
            route.name,
            index,
            event.state.value,
            event.rule,
            event.site,
            route.retries + 1,
        )
