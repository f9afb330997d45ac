"""The alerts page (告警台) on the metrics listener: see alerts, acknowledge them, add and expire
silences, from a phone's browser, without a terminal.

- ``GET /ui``: firing alerts (told, or waiting for their group to go out), the day's history
  (the alert log), the silences; ``GET /ui/alerts/ID``: one alert's values, limit, rule,
  labels, who was told and the failed deliveries. Reading needs no login from loopback (the
  default listener), unless the request came through a proxy (it says so with
  X-Forwarded-For, Forwarded or X-Real-IP: configure the proxy to send one); from elsewhere it
  needs the login below.
- Changes (acknowledge, add a silence, expire one) need ``metrics.ack_token``: ``/ui/login``
  takes it once and starts a session (a random id in a cookie, ``HttpOnly``,
  ``SameSite=Strict``, ``Secure`` over https, 12 hours, ended by ``/ui/logout``, held in memory:
  a restart logs everyone out); each form carries a CSRF token bound to the session, checked on
  every POST; five wrong tokens from one client in five minutes make it wait. Why a login form
  rather than the token in the notification's link: links are copied into chat groups and
  browser histories, and a token there is a token for anyone who scrolls back. Without a
  configured token every change is refused (403).
- Chinese by default, ``?lang=en`` for English (kept in a cookie). No scripts from elsewhere,
  no external assets: one small inline stylesheet.

Changes go through the command table the CLI uses (``telemetry.outbox.add_command``); the
running daemon applies them within a second.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, quote
from zoneinfo import ZoneInfo

from telemetry.config_base import parse_duration
from telemetry.outbox import add_command, read_alert_log, read_deliveries, read_state

MAX_FORM = 16 * 1024
SESSION = "telemetry_session"
SESSION_NS = 12 * 3600 * 10**9  # a login lasts a shift
LOGIN_TRIES = 5  # failed logins per client within LOGIN_WINDOW_NS before it must wait
LOGIN_WINDOW_NS = 300 * 10**9
Reply = tuple[str, list[tuple[str, str]], bytes]  # status, headers, body

TEXT = {
    "zh": {
        "title": "告警台",
        "firing": "告警中",
        "history": "近期记录",
        "silences": "屏蔽",
        "none": "无",
        "ack": "确认",
        "acked": "已确认",
        "by": "确认人",
        "told": "已通知",
        "waiting": "待通知",
        "failed": "发送失败",
        "detail": "详情",
        "value": "数值",
        "limit": "限值",
        "rule": "规则",
        "since": "开始",
        "add_silence": "添加屏蔽",
        "expire": "结束屏蔽",
        "duration": "时长",
        "reason": "原因",
        "login": "登录",
        "logout": "退出",
        "token": "令牌",
        "need_login": "确认与屏蔽需要登录",
        "queued": "已提交，守护进程一秒内执行",
        "bad_token": "令牌不正确",
        "not_found": "没有这条告警",
        "deliveries": "发送记录",
        "labels": "标签",
        "back": "返回",
    },
    "en": {
        "title": "Alerts",
        "firing": "Firing",
        "history": "Recent history",
        "silences": "Silences",
        "none": "none",
        "ack": "Acknowledge",
        "acked": "acknowledged",
        "by": "by",
        "told": "told",
        "waiting": "waiting to be told",
        "failed": "delivery failed",
        "detail": "detail",
        "value": "value",
        "limit": "limit",
        "rule": "rule",
        "since": "since",
        "add_silence": "Add a silence",
        "expire": "Expire",
        "duration": "for",
        "reason": "reason",
        "login": "Log in",
        "logout": "Log out",
        "token": "token",
        "need_login": "Log in to acknowledge and silence",
        "queued": "queued: the daemon applies it within a second",
        "bad_token": "wrong token",
        "not_found": "no such alert",
        "deliveries": "deliveries",
        "labels": "labels",
        "back": "back",
    },
}
STYLE = (
    "body{font-family:sans-serif;margin:0 auto;max-width:760px;padding:8px}"
    "table{border-collapse:collapse;width:100%;font-size:14px}td,th{border:1px solid #ccc;padding:4px}"
    ".critical{color:#b00}.warning{color:#b60}form.inline{display:inline}.note{background:#eef;padding:6px}"
)


def _sign(token: str, what: str) -> str:
    return hmac.new(token.encode(), what.encode(), hashlib.sha256).hexdigest()


class Console:
    def __init__(self, outbox_path: str, token: str, zones: Mapping[str, str] | None = None) -> None:
        self.outbox_path = outbox_path
        self.token = token
        self.zones = dict(zones or {})
        self.now: Callable[[], int] = time.time_ns
        self._local = threading.local()  # per request thread: its session and whether to say "queued"
        self._lock = threading.Lock()
        self._sessions: dict[str, int] = {}  # session id -> expiry (ns); in memory: a restart logs out
        self._failures: dict[str, list[int]] = {}  # client -> times of its failed logins

    # -- requests ------------------------------------------------------------------------------

    def __call__(self, environ: Mapping[str, Any], path: str, method: str) -> Reply:
        lang = self._lang(environ)
        session = self._session(environ)
        self._local.note = "done=1" in str(environ.get("QUERY_STRING", ""))
        if path == "/ui/login":
            return self._login(environ, method, lang)
        if method == "POST":
            return self._change(environ, path, lang, session)
        if not (session or _direct_loopback(environ)):
            return self._redirect("/ui/login")
        body = None
        if path in ("/ui", "/ui/"):
            body = self._list(lang, session)
        elif path.startswith("/ui/alerts/"):
            body = self._detail(path.removeprefix("/ui/alerts/"), lang, session)
        if body is None:
            return self._page(f"<p>{TEXT[lang]['not_found']}</p>", lang, status="404 Not Found")
        return self._page(body, lang)

    def _lang(self, environ: Mapping[str, Any]) -> str:
        asked = parse_qs(str(environ.get("QUERY_STRING", ""))).get("lang", [""])[0]
        if asked in TEXT:
            return asked
        saved = _cookies(environ).get("telemetry_lang", "")
        return saved if saved in TEXT else "zh"

    def _session(self, environ: Mapping[str, Any]) -> bool:
        """Whether the request carries a live session (set per request thread for the forms)."""
        self._local.sid = ""
        if not self.token:
            return False
        given = _cookies(environ).get(SESSION, "")
        now = self.now()
        with self._lock:
            for sid in [s for s, expires in self._sessions.items() if expires <= now]:
                del self._sessions[sid]
            live = bool(given) and given in self._sessions
        if live:
            self._local.sid = given
        return live

    def _csrf(self) -> str:
        """Bound to the session: a page of another session, or none, cannot post."""
        return _sign(self.token, "csrf:" + str(getattr(self._local, "sid", "")))

    def _form(self, environ: Mapping[str, Any]) -> dict[str, str] | None:
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if not 0 <= size <= MAX_FORM:
            return None
        raw = environ["wsgi.input"].read(size).decode("utf-8", "replace") if size else ""
        return {k: v[0] for k, v in parse_qs(raw).items()}

    def _login(self, environ: Mapping[str, Any], method: str, lang: str) -> Reply:
        w = TEXT[lang]
        if not self.token:
            return self._page("<p>metrics.ack_token is not set: changes are off</p>", lang, status="403 Forbidden")
        message = ""
        if method == "POST":
            client = f"{environ.get('REMOTE_ADDR', '')}|{environ.get('HTTP_X_FORWARDED_FOR', '')}"[:200]
            now = self.now()
            with self._lock:
                recent = [t for t in self._failures.get(client, []) if t > now - LOGIN_WINDOW_NS]
                self._failures[client] = recent
                if len(self._failures) > 10_000:  # clients are not trusted to be few
                    self._failures = {client: recent}
            if len(recent) >= LOGIN_TRIES:
                return self._page(f"<p class='critical'>{w['bad_token']}</p>", lang, status="429 Too Many Requests")
            form = self._form(environ) or {}
            if hmac.compare_digest(form.get("token", "").encode(), self.token.encode()):
                sid = secrets.token_urlsafe(24)
                with self._lock:
                    self._sessions[sid] = now + SESSION_NS
                    if len(self._sessions) > 1000:  # the oldest go first
                        for old in sorted(self._sessions, key=self._sessions.__getitem__)[:-1000]:
                            del self._sessions[old]
                secure = "; Secure" if _https(environ) else ""
                cookie = f"{SESSION}={sid}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={SESSION_NS // 10**9}{secure}"
                return "303 See Other", [("Location", "/ui"), ("Set-Cookie", cookie)], b""
            with self._lock:
                self._failures.setdefault(client, []).append(now)
            message = f"<p class='critical'>{w['bad_token']}</p>"
        body = (
            f"{message}<form method='post' action='/ui/login'><label>{w['token']} "
            f"<input type='password' name='token' autocomplete='current-password'></label> "
            f"<button type='submit'>{w['login']}</button></form>"
        )
        return self._page(body, lang)

    def _change(self, environ: Mapping[str, Any], path: str, lang: str, session: bool) -> Reply:  # noqa: PLR0911 - one answer per route and refusal
        w = TEXT[lang]
        if not self.token:
            return self._page("<p>metrics.ack_token is not set: changes are off</p>", lang, status="403 Forbidden")
        if path == "/ui/logout":
            with self._lock:
                self._sessions.pop(str(getattr(self._local, "sid", "")), None)
            cookie = f"{SESSION}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"
            return "303 See Other", [("Location", "/ui"), ("Set-Cookie", cookie)], b""
        form = self._form(environ)
        if not session or form is None or not hmac.compare_digest(form.get("csrf", "").encode(), self._csrf().encode()):
            return self._page(f"<p class='critical'>{w['need_login']}</p>", lang, status="403 Forbidden")
        parts = path.strip("/").split("/")
        try:
            if len(parts) == 4 and parts[1] == "alerts" and parts[3] == "ack":
                return self._ack(parts[2], form, lang)
            if path == "/ui/silences":
                return self._silence(form)
            if len(parts) == 4 and parts[1] == "silences" and parts[3] == "expire":
                add_command(self.outbox_path, "expire", {"id": parts[2][:16]})
                return self._redirect("/ui?done=1")
        except ValueError as err:
            return self._page(f"<p class='critical'>{html.escape(str(err))}</p>", lang, status="400 Bad Request")
        return self._page(f"<p>{w['not_found']}</p>", lang, status="404 Not Found")

    def _ack(self, alert_id: str, form: Mapping[str, str], lang: str) -> Reply:
        alerts = {a["id"] for a in (read_state(self.outbox_path, "alerts") or {}).get("alerts", [])}
        if alert_id not in alerts:
            return self._page(f"<p>{TEXT[lang]['not_found']}</p>", lang, status="404 Not Found")
        add_command(self.outbox_path, "ack", {"id": alert_id, "by": (form.get("by") or "console")[:64]})
        return self._redirect(f"/ui/alerts/{quote(alert_id)}?done=1")

    def _silence(self, form: Mapping[str, str]) -> Reply:
        matchers = {k: form[k][:128] for k in ("site", "device", "rule", "severity") if form.get(k)}
        seconds = parse_duration(form.get("duration", "1h"))
        if not matchers or not 0 < seconds <= 30 * 86400:
            raise ValueError("expected at least one of site, device, rule, severity, and a duration up to 30 days")
        body = {"id": uuid.uuid4().hex[:8], "matchers": matchers, "seconds": seconds, "reason": form.get("reason", "")}
        add_command(self.outbox_path, "silence", {**body, "by": (form.get("by") or "console")[:64]})
        return self._redirect("/ui?done=1")

    # -- pages ---------------------------------------------------------------------------------

    def _list(self, lang: str, session: bool) -> str:
        w = TEXT[lang]
        e = html.escape
        state = read_state(self.outbox_path, "alerts") or {}
        alerts = [a for a in state.get("alerts", []) if a["state"] == "firing"]
        rows = []
        for a in sorted(alerts, key=lambda a: -a["started_ns"]):
            told = w["told"] if a["sent_firing"] else w["waiting"]
            acked = f"{w['acked']} ({e(a['acked_by'])})" if a["acked_by"] else self._ack_form(a["id"], lang, session)
            rows.append(
                f"<tr><td class='{e(a['severity'])}'>{e(a['severity'])}</td><td>{e(a['site'])}</td>"
                f"<td><a href='/ui/alerts/{quote(a['id'])}'>{e(a['rule'])}</a></td>"
                f"<td>{self._time(a['started_ns'], a['site'])}</td><td>{told}</td><td>{acked}</td></tr>"
            )
        firing = f"<table>{''.join(rows)}</table>" if rows else f"<p>{w['none']}</p>"
        history = []
        for site in sorted({a["site"] for a in state.get("alerts", [])} | set(self.zones)):
            for at, kind, body in read_alert_log(self.outbox_path, site, self.now() - 86400 * 10**9, self.now() + 1):
                what = body.get("rule", "") + (f" ({body.get('by')})" if kind == "acknowledged" else "")
                history.append((at, f"<li>{self._time(at, site)} {e(site)} {e(kind)}: {e(what)}</li>"))
        recent = "".join(line for _, line in sorted(history, reverse=True)[:50]) or f"<li>{w['none']}</li>"
        silences = (
            "".join(
                f"<li>{e(str(s['matchers']))} {self._time(s['starts_ns'])} → {self._time(s['ends_ns'])}"
                f" {e(s['reason'])} {self._expire_form(s['id'], lang, session)}</li>"
                for s in state.get("silences", [])
                if s["ends_ns"] > self.now()
            )
            or f"<li>{w['none']}</li>"
        )
        return (
            f"<h2>{w['firing']}</h2>{firing}<h2>{w['silences']}</h2><ul>{silences}</ul>"
            f"{self._silence_form(lang, session)}<h2>{w['history']}</h2><ul>{recent}</ul>"
        )

    def _detail(self, alert_id: str, lang: str, session: bool) -> str | None:
        w = TEXT[lang]
        e = html.escape
        state = read_state(self.outbox_path, "alerts") or {}
        alert = next((a for a in state.get("alerts", []) if a["id"] == alert_id), None)
        if alert is None:
            return None
        labels = ", ".join(f"{e(k)}={e(v)}" for k, v in sorted(alert["labels"].items()))
        deliveries = [d for d in read_deliveries(self.outbox_path, 500) if alert_id in d[2].split(",")]
        sent = (
            "".join(
                f"<li>{self._time(at, alert['site'])} {e(channel)}: {'ok' if ok else w['failed']} {e(detail)}</li>"
                for at, channel, _, ok, detail in deliveries
            )
            or f"<li>{w['none']}</li>"
        )
        acked = (
            f"{w['acked']}: {e(alert['acked_by'])} {self._time(alert['acked_ns'], alert['site'])}"
            if alert["acked_by"]
            else self._ack_form(alert_id, lang, session)
        )
        return (
            f"<h2 class='{e(alert['severity'])}'>{e(alert['rule'])} · {e(alert['site'])} · {e(alert['state'])}</h2>"
            f"<p>{e(alert['message'])}</p><table>"
            f"<tr><th>{w['value']}</th><td>{alert['value']:g}</td></tr>"
            f"<tr><th>{w['limit']}</th><td>{alert['limit']:g}</td></tr>"
            f"<tr><th>{w['since']}</th><td>{self._time(alert['started_ns'], alert['site'])}</td></tr>"
            f"<tr><th>{w['labels']}</th><td>{labels}</td></tr>"
            f"<tr><th>{w['told']}</th><td>{e(', '.join(sorted(alert['sent_firing']))) or '-'}</td></tr>"
            f"<tr><th>{w['failed']}</th><td>{e(', '.join(sorted(alert['failed']))) or '-'}</td></tr>"
            f"</table><p>{acked}</p><h3>{w['deliveries']}</h3><ul>{sent}</ul>"
            f"<p><a href='/ui'>{w['back']}</a></p>"
        )

    def _ack_form(self, alert_id: str, lang: str, session: bool) -> str:
        if not session:
            return f"<a href='/ui/login'>{TEXT[lang]['need_login']}</a>"
        return (
            f"<form class='inline' method='post' action='/ui/alerts/{quote(alert_id)}/ack'>"
            f"<input type='hidden' name='csrf' value='{self._csrf()}'>"
            f"<input name='by' size='8' placeholder='{TEXT[lang]['by']}' aria-label='{TEXT[lang]['by']}'> "
            f"<button type='submit' name='ack' value='1'>{TEXT[lang]['ack']}</button></form>"
        )

    def _expire_form(self, silence_id: str, lang: str, session: bool) -> str:
        if not session:
            return ""
        return (
            f"<form class='inline' method='post' action='/ui/silences/{quote(silence_id)}/expire'>"
            f"<input type='hidden' name='csrf' value='{self._csrf()}'>"
            f"<button type='submit'>{TEXT[lang]['expire']}</button></form>"
        )

    def _silence_form(self, lang: str, session: bool) -> str:
        w = TEXT[lang]
        if not session:
            return f"<p><a href='/ui/login'>{w['need_login']}</a></p>"
        fields = "".join(
            f"<label>{name} <input name='{name}' size='12'></label> " for name in ("site", "device", "rule", "severity")
        )
        return (
            f"<form method='post' action='/ui/silences'><b>{w['add_silence']}</b><br>{fields}"
            f"<label>{w['duration']} <input name='duration' value='1h' size='5'></label> "
            f"<label>{w['reason']} <input name='reason' size='20'></label>"
            f"<input type='hidden' name='csrf' value='{self._csrf()}'>"
            f" <button type='submit'>{w['add_silence']}</button></form>"
        )

    def _time(self, ns: int | None, site: str = "") -> str:
        if ns is None:
            return "-"
        zone = ZoneInfo(self.zones.get(site, "Asia/Shanghai"))
        return datetime.fromtimestamp(ns / 1e9, zone).strftime("%m-%d %H:%M")

    def _page(self, body: str, lang: str, status: str = "200 OK") -> Reply:
        w = TEXT[lang]
        other = "en" if lang == "zh" else "zh"
        done = f"<p class='note'>{w['queued']}</p>" if getattr(self._local, "note", False) else ""
        page = (
            f"<!DOCTYPE html><html lang='{'zh-CN' if lang == 'zh' else 'en'}'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{w['title']}</title>"
            f"<style>{STYLE}</style></head><body><h1><a href='/ui'>{w['title']}</a></h1>"
            f"<p><a href='?lang={other}'>{'English' if other == 'en' else '中文'}</a> · "
            f"<a href='/ui/login'>{w['login']}</a></p>{done}{body}</body></html>"
        )
        cookie = f"telemetry_lang={lang}; Path=/ui; SameSite=Strict"
        headers = [("Content-Type", "text/html; charset=utf-8"), ("Set-Cookie", cookie), ("Cache-Control", "no-store")]
        headers.append(("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"))
        return status, headers, page.encode()

    def _redirect(self, where: str) -> Reply:
        return "303 See Other", [("Location", where)], b""


def _direct_loopback(environ: Mapping[str, Any]) -> bool:
    """A client on this machine itself. A reverse proxy on this machine makes every request come
    from loopback: one that says it forwards (X-Forwarded-For, Forwarded, X-Real-IP) is not."""
    if any(environ.get(h) for h in ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")):
        return False
    try:
        return ipaddress.ip_address(str(environ.get("REMOTE_ADDR", ""))).is_loopback
    except ValueError:
        return False


def _https(environ: Mapping[str, Any]) -> bool:
    return environ.get("wsgi.url_scheme") == "https" or environ.get("HTTP_X_FORWARDED_PROTO") == "https"


def _cookies(environ: Mapping[str, Any]) -> dict[str, str]:
    """Cookies by name; one malformed cookie of another application does not hide the others
    (``http.cookies`` drops them all)."""
    out: dict[str, str] = {}
    for part in str(environ.get("HTTP_COOKIE", "")).split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in out:
            out[name] = value.strip().strip('"')
    return out
