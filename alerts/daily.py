"""Sending each site's daily report (``telemetry.report``) at its local time through its routes.

At ``reports.daily.at`` on a site's local day D, the report of D-1 is due for each configured
route. It is built from the outbox (the windows, the alert log, the HJ 212 acknowledgements),
rendered as Markdown for the chat robots (cut to what the robot takes, with the command that
prints the rest) and as HTML for e-mail, and sent to every URL of the route (of the site, where
the route names sites) from a task of its own (a slow mail server never holds the daemon's
ticks). Each URL that took it is recorded and saved with the alert state: a restart or a retry
(after ``retry``) sends only where it was not delivered. A report waits until the day's last
windows have closed (the aggregation's grace after midnight). After an outage of days, only
the latest due day is sent (the others: ``telemetry report daily``); the day before the daemon
first ran at a site is sent only if something was stored for it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

import apprise

from alerts.alert import alert_id
from alerts.config import DailyReport, Route
from alerts.robots import LIMITS, Result, counted_bytes, is_robot, send_robot
from telemetry import report, report_render
from telemetry.calendar import NS, calendar
from telemetry.model import AlertEvent
from telemetry.protocols import Db

log = logging.getLogger(__name__)

LOOK_BACK_S = 7 * 86400  # alerts that started up to a week before the day and were still firing
SendReport = Callable[[str, str, str, str, Route], Awaitable[Result]]  # url, title, markdown, html, route


def event_id(body: Mapping[str, Any]) -> str:
    """The alert id of a logged transition, as the alert manager names the alert."""
    return alert_id(AlertEvent.from_dict(dict(body)))


def fit_markdown(url: str, title: str, body: str, day: str, site: str) -> str:
    """``body`` cut at a line so that the robot behind ``url`` takes it, ending with how to get
    the rest; unchanged where it fits or the target has no limit."""
    limit = LIMITS.get(url.split("://", 1)[0].lower())
    if limit is None or counted_bytes(url, title, body) <= limit.max_bytes:
        return body
    tail = f"\n……（完整日报 full report: telemetry report daily --site {site} --date {day}）"
    lines = body.splitlines()
    while lines and counted_bytes(url, title, "\n".join(lines) + tail) > limit.max_bytes:
        lines.pop()
    return "\n".join(lines) + tail


async def send_report(url: str, title: str, markdown: str, page: str, route: Route) -> Result:
    """Markdown to a robot (its ``errcode`` read), HTML to e-mail, Markdown to other apprise URLs."""
    if is_robot(url):
        return await asyncio.to_thread(send_robot, url, title, markdown, route.robot_base_url)
    target = apprise.Apprise()
    if not target.add(url):
        return Result(False, f"{url.split('://', 1)[0]}: not an apprise URL")
    mail = url.split("://", 1)[0].lower() in ("mailto", "mailtos")
    body, fmt = (page, apprise.NotifyFormat.HTML) if mail else (markdown, apprise.NotifyFormat.MARKDOWN)
    ok = bool(await target.async_notify(body=body, title=title, body_format=fmt))
    return Result(ok, f"{url.split('://', 1)[0]}: {'sent' if ok else 'apprise reported failure'}")


class DailyReports:
    def __init__(
        self,
        cfg: DailyReport,
        setups: Mapping[str, report.SiteSetup],
        routes: Mapping[str, Route],
        send: SendReport = send_report,
        grace_s: float = 120.0,
    ) -> None:
        self.cfg = cfg
        self.setups = {s: setup for s, setup in setups.items() if not cfg.sites or s in cfg.sites}
        self.routes = {name: routes[name] for name in cfg.routes if name in routes}
        self.grace_ns = int((grace_s + 60) * NS)  # the day's own windows close this long after midnight
        self.send = send
        hour, minute = (int(x) for x in cfg.at.split(":"))
        self._at = time(hour, minute)
        self.delivered: dict[str, str] = {}  # "site/route#url" -> the last day delivered there (ISO)
        self.first_day: dict[str, str] = {}  # site -> its local day when reports were first looked at
        self._retry_at: dict[str, int] = {}
        self._running: dict[str, asyncio.Task[bool]] = {}
        self.on_change: Callable[[], None] = lambda: None  # the desk saves the state
        self.exempt_hour: Callable[[str, int, int], bool] | None = None  # the rules' (furnace marks)

    def due(self, now: int) -> list[tuple[str, str, date]]:
        """(site, route, day) whose report is due and not delivered."""
        out = []
        for site, setup in self.setups.items():
            local = datetime.fromtimestamp(now // NS, calendar(setup.zone).zone)
            day = local.date() - timedelta(days=1 if local.time() >= self._at else 2)
            first = self.first_day.setdefault(site, local.date().isoformat())
            if day < date.fromisoformat(first) - timedelta(days=1):
                continue  # before the daemon first ran here: not sent (``telemetry report daily`` prints it)
            if now < report.day_bounds(setup.zone, day)[1] + self.grace_ns:
                continue  # its last windows have not closed yet (an ``at`` just after midnight)
            for name, route in self.routes.items():
                if route.sites and site not in route.sites:
                    continue  # a route for other sites: one plant's report never reaches another's group
                if any(
                    self.delivered.get(self._key(site, name, i), "") < day.isoformat() for i in range(len(route.urls))
                ):
                    out.append((site, name, day))
        return out

    async def tick(self, now: int, db: Db, outbox: Any) -> None:
        """Start the deliveries that are due (each in a task of its own)."""
        for site, route, day in self.due(now):
            key = f"{site}/{route}"
            if key in self._running or now < self._retry_at.get(key, 0):
                continue
            task = asyncio.create_task(self._deliver(site, route, day, now, db, outbox), name=f"report:{key}")
            self._running[key] = task
            task.add_done_callback(functools.partial(self._done, key, day, now))

    @staticmethod
    def _key(site: str, route: str, index: int) -> str:
        return f"{site}/{route}#{index}"

    def _done(self, key: str, day: date, started: int, task: asyncio.Task[bool]) -> None:
        del self._running[key]
        failure = None if task.cancelled() else task.exception()
        ok = not task.cancelled() and failure is None and task.result()
        if failure is not None:
            log.error("daily report %s of %s could not be built: %r", key, day, failure)
        self.on_change()  # each URL that took it is recorded, whatever the others did
        if ok:
            self._retry_at.pop(key, None)
        else:
            self._retry_at[key] = started + int(self.cfg.retry * NS)

    async def settled(self) -> None:
        """Until the deliveries started have ended (tests, shutdown)."""
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _deliver(self, site: str, route_name: str, day: date, started: int, db: Db, outbox: Any) -> bool:
        setup = self.setups[site]
        built = await build_stored(setup, day, db, outbox, started, self.exempt_hour)
        route = self.routes[route_name]
        if day < date.fromisoformat(self.first_day[site]) and not built.has_data():
            for index in range(len(route.urls)):  # the day before the daemon first ran, and empty: not sent
                self.delivered[self._key(site, route_name, index)] = day.isoformat()
            log.info("daily report of %s for %s: no data before the daemon first ran; not sent", site, built.day)
            return True
        lang = route.language
        title = report_render.title(built, lang)
        markdown, page = report_render.markdown(built, lang), report_render.page(built, lang)
        ok = True
        for index, secret in enumerate(route.urls):
            if self.delivered.get(self._key(site, route_name, index), "") >= day.isoformat():
                continue  # this URL took it already (a retry goes only where it failed)
            url = secret.get_secret_value()
            body = fit_markdown(url, title, markdown, built.day, site) if is_robot(url) else markdown
            result = await self.send(url, title, body, page, route)
            scheme = url.split("://", 1)[0]
            if result.ok:
                log.info("daily report of %s for %s sent to %s (%s)", site, built.day, route_name, scheme)
            else:
                log.warning(
                    "daily report of %s for %s not delivered to %s: %s", site, built.day, route_name, result.detail
                )
            if result.ok:
                self.delivered[self._key(site, route_name, index)] = day.isoformat()
            ok = ok and result.ok
        return ok

    def dump(self) -> dict[str, Any]:
        return {"delivered": dict(self.delivered), "first_day": dict(self.first_day)}

    def restore(self, data: Mapping[str, Any]) -> None:
        self.delivered = {str(k): str(v) for k, v in data.get("delivered", {}).items()}
        self.first_day = {str(k): str(v) for k, v in data.get("first_day", {}).items()}


async def build_stored(
    setup: report.SiteSetup,
    day: date,
    db: Db,
    outbox: Any,
    now: int,
    exempt_hour: Callable[[str, int, int], bool] | None = None,
) -> report.DailyReport:
    """The report from the daemon's own outbox, read on its thread (acknowledgements until ``now``)."""
    start, end = report.day_bounds(setup.zone, day)
    windows = []
    for size in ("1m", "1h", "1d"):
        windows += await db(outbox.windows, setup.site, size, start, end)
    log_rows = await db(outbox.alert_log, setup.site, start - LOOK_BACK_S * NS, max(end, now + 1))
    acked = {p.name: await db(outbox.hj212_acked_counts, p.name, start, end) for p in setup.platforms}
    before = await db(outbox.windows, setup.site, "1h", start - 2 * 86400 * NS, start)
    recent = {(w.point, w.device, w.quantity) for w in before}  # reported before: expected that day too
    return report.build(setup, day, windows, log_rows, event_id, acked, recent, exempt_hour)
