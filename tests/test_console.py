"""The alerts page in a real headless Chromium (Debian's chromium and chromedriver, driven by
Selenium): list, detail, acknowledge without and with the token, silence creation and expiry,
each change checked in the running daemon's state."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from alerts.desk import AlertDesk
from telemetry.model import Reading
from tests.daemon import RunningDaemon, start_daemon
from tests.services import free_port, require

T = TypeVar("T")
TOKEN = "s3cret-console"
NS = 1_000_000_000


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    chromium = require("chromium")
    driver_path = require("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        "--window-size=412,915",  # a phone's screen
    ):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            yield driver
        finally:
            driver.quit()


async def loaded(browser: webdriver.Chrome, condition: Callable[[webdriver.Chrome], T]) -> T:
    """Until the browser shows what a submitted form leads to (Selenium's wait on the page)."""
    # While the next page loads, an element of the old one is stale: look again, as for a missing one.
    wait = WebDriverWait(browser, 15, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
    result: T = await asyncio.to_thread(wait.until, condition)
    return result


async def settle(desk: AlertDesk, check: Callable[[], T | None]) -> T:
    """One tick of the desk applies what the page queued (its POST had written the command before
    it answered; a tick of the daemon's own that took it first applies it before ours returns,
    the outbox thread answering in order); then ``check`` must hold."""
    await desk.tick(time.time_ns())
    found = check()
    assert found, "the daemon did not apply the change"
    return found


async def firing_daemon(tmp_path: Path) -> tuple[RunningDaemon, str, str]:
    port = free_port()
    path = tmp_path / "site.yaml"
    path.write_text(
        f"""
sites: [{{id: s, timezone: Asia/Shanghai}}]
rules: [{{kind: limit, name: cod_high, site: s, quantity: cod, above: 100}}]
metrics: {{listen: "127.0.0.1:{port}", ack_token: {TOKEN}}}
outbox: {{path: "{tmp_path}/outbox.sqlite"}}
"""
    )
    daemon = await start_daemon(path)
    await asyncio.wait_for(daemon.pipeline.started.wait(), 10)
    await daemon.pipeline.emit([Reading(time.time_ns(), "s", "an", "cod", 130.0, "mg/L")])
    desk = daemon.desk()
    await desk.save()  # what the page reads: the alert state in the outbox
    [alert] = desk.manager.alerts.values()
    return daemon, f"http://127.0.0.1:{port}", alert.id


async def test_list_detail_and_acknowledge_without_then_with_the_token(
    tmp_path: Path, browser: webdriver.Chrome
) -> None:
    daemon, base, alert_id = await firing_daemon(tmp_path)
    desk = daemon.desk()
    try:
        await asyncio.to_thread(browser.get, f"{base}/ui")
        assert browser.find_element(By.TAG_NAME, "h1").text == "告警台"  # Chinese by default
        link = browser.find_element(By.LINK_TEXT, "cod_high")
        await asyncio.to_thread(link.click)
        assert f"/ui/alerts/{alert_id}" in browser.current_url
        page = browser.find_element(By.TAG_NAME, "body").text
        assert "cod_high · s · firing" in page
        assert "130" in page
        assert "100" in page
        # Without the token: no acknowledge button, a way to log in instead.
        assert browser.find_elements(By.CSS_SELECTOR, "button[name=ack]") == []
        await asyncio.to_thread(browser.find_element(By.LINK_TEXT, "确认与屏蔽需要登录").click)
        browser.find_element(By.NAME, "token").send_keys("wrong")
        await asyncio.to_thread(browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click)
        await loaded(browser, lambda d: "令牌不正确" in d.find_element(By.TAG_NAME, "body").text)
        browser.find_element(By.NAME, "token").send_keys(TOKEN)
        await asyncio.to_thread(browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click)
        session = await loaded(browser, lambda d: d.get_cookie("telemetry_session"))
        assert session is not None
        assert session["httpOnly"]
        assert session["value"] != TOKEN  # a session derived from the token, not the token
        await asyncio.to_thread(browser.get, f"{base}/ui/alerts/{alert_id}")
        await asyncio.to_thread(browser.find_element(By.CSS_SELECTOR, "button[name=ack]").click)
        await loaded(browser, lambda d: "done=1" in d.current_url)  # the POST was answered: the command is queued
        assert "已提交" in browser.find_element(By.TAG_NAME, "body").text
        acked = await settle(desk, lambda: desk.manager.alerts[alert_id].acked_by)
        assert acked == "console"
        # A forged POST from another page carries no CSRF token: refused, nothing queued.
        await asyncio.to_thread(
            browser.execute_script,
            "var f=document.createElement('form');f.method='post';f.action='/ui/silences';"
            "var i=document.createElement('input');i.name='site';i.value='s';f.appendChild(i);"
            "document.body.appendChild(f);f.submit();",
        )
        await loaded(browser, lambda d: d.current_url.endswith("/ui/silences"))
        assert "确认与屏蔽需要登录" in browser.find_element(By.TAG_NAME, "body").text
        await desk.tick(time.time_ns())
        assert desk.manager.silences == {}
    finally:
        await daemon.close()


async def test_silence_created_and_expired_in_english(tmp_path: Path, browser: webdriver.Chrome) -> None:
    daemon, base, _ = await firing_daemon(tmp_path)
    desk = daemon.desk()
    try:
        await asyncio.to_thread(browser.get, f"{base}/ui/login?lang=en")
        browser.find_element(By.NAME, "token").send_keys(TOKEN)
        await asyncio.to_thread(browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click)
        await loaded(browser, lambda d: d.current_url.endswith("/ui"))
        assert browser.find_element(By.TAG_NAME, "h1").text == "Alerts"  # English kept in a cookie
        form = browser.find_element(By.CSS_SELECTOR, "form[action='/ui/silences']")
        form.find_element(By.NAME, "site").send_keys("s")
        form.find_element(By.NAME, "duration").clear()
        form.find_element(By.NAME, "duration").send_keys("2h")
        form.find_element(By.NAME, "reason").send_keys("calibration")
        await asyncio.to_thread(form.find_element(By.CSS_SELECTOR, "button[type=submit]").click)
        await loaded(browser, lambda d: "done=1" in d.current_url)
        silences = await settle(desk, lambda: desk.manager.silences)
        [silence] = silences.values()
        assert silence.matchers == {"site": "s"}
        assert silence.reason == "calibration"
        assert silence.ends_ns - silence.starts_ns == 2 * 3600 * NS
        await desk.save()
        await asyncio.to_thread(browser.get, f"{base}/ui")
        assert "calibration" in browser.find_element(By.TAG_NAME, "body").text
        now = time.time_ns()
        await asyncio.to_thread(browser.find_element(By.XPATH, "//button[text()='Expire']").click)
        await loaded(browser, lambda d: "done=1" in d.current_url)
        await settle(desk, lambda: silence.ends_ns <= time.time_ns() and silence.ends_ns >= now)
    finally:
        await daemon.close()


async def test_reading_from_elsewhere_needs_the_login_and_unknown_alerts_are_404(tmp_path: Path) -> None:
    from telemetry.console import Console  # noqa: PLC0415 - the page without a browser

    daemon, _, _ = await firing_daemon(tmp_path)
    await daemon.close()
    console = Console(str(tmp_path / "outbox.sqlite"), TOKEN)
    remote = {"REMOTE_ADDR": "192.0.2.7", "QUERY_STRING": ""}
    assert console(remote, "/ui", "GET")[:2] == ("303 See Other", [("Location", "/ui/login")])
    status, _, _ = console({"REMOTE_ADDR": "127.0.0.1"}, "/ui/alerts/nope", "GET")
    assert status == "404 Not Found"
    assert Console(str(tmp_path / "outbox.sqlite"), "")({"REMOTE_ADDR": "127.0.0.1"}, "/ui/login", "GET")[0] == (
        "403 Forbidden"
    )


def test_sessions_proxies_csrf_and_login_attempts(tmp_path: Path) -> None:
    import io  # noqa: PLC0415 - only here

    from telemetry.console import Console  # noqa: PLC0415
    from telemetry.outbox import Outbox  # noqa: PLC0415

    Outbox(str(tmp_path / "outbox.sqlite")).close()
    console = Console(str(tmp_path / "outbox.sqlite"), TOKEN)

    def post(path: str, body: str, cookie: str = "", addr: str = "192.0.2.7") -> tuple[str, dict[str, str]]:
        data = body.encode()
        environ = {
            "REMOTE_ADDR": addr,
            "CONTENT_LENGTH": str(len(data)),
            "wsgi.input": io.BytesIO(data),
            "HTTP_COOKIE": cookie,
        }
        status, headers, _ = console(environ, path, "POST")
        return status, dict(headers)

    # A proxy on this machine: loopback, but it says it forwards: the login is needed to read.
    proxied = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    assert console(proxied, "/ui", "GET")[0] == "303 See Other"
    # Without a session a POST changes nothing, CSRF token or not.
    assert post("/ui/silences", "site=s&duration=1h")[0] == "403 Forbidden"
    # Five wrong tokens, then even the right one waits.
    for _ in range(5):
        assert post("/ui/login", "token=nope")[0] == "200 OK"
    assert post("/ui/login", f"token={TOKEN}")[0] == "429 Too Many Requests"
    status, headers = post("/ui/login", f"token={TOKEN}", addr="192.0.2.8")  # another client
    assert status == "303 See Other"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"]
    assert TOKEN not in headers["Set-Cookie"]
    # A malformed cookie of another application beside ours does not hide it.
    page = console({"REMOTE_ADDR": "192.0.2.8", "HTTP_COOKIE": f'other="{{"a": 1}}; {cookie}'}, "/ui", "GET")
    assert page[0] == "200 OK"
    # Logged out: the same cookie is dead.
    assert post("/ui/logout", "", cookie=cookie, addr="192.0.2.8")[0] == "303 See Other"
    assert console({"REMOTE_ADDR": "192.0.2.8", "HTTP_COOKIE": cookie}, "/ui", "GET")[0] == "303 See Other"
