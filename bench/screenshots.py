"""Screenshots for the README: the daily report's HTML and the alerts page, in headless Chromium
at a phone's width, from a real daemon on a simulated day (not mock-ups).

    .venv/bin/python bench/screenshots.py      # writes bench/screenshots/*.png and prints their paths

Needs Debian's chromium and chromium-driver (`.ci/setup` installs them).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from telemetry import app  # noqa: E402 - after the path
from telemetry.cli_report import replayed  # noqa: E402
from telemetry.model import Reading  # noqa: E402
from telemetry.report_render import page  # noqa: E402
from tests.daemon import start_daemon  # noqa: E402
from tests.services import free_port  # noqa: E402

OUT = ROOT / "bench" / "screenshots"
BJ = ZoneInfo("Asia/Shanghai")
NS = 1_000_000_000
SITE = """
sites: [{id: diaoyushan, name: 钓鱼山垃圾渗滤液处理站, timezone: Asia/Shanghai}]
points:
  - {id: outlet, site: diaoyushan, devices: [effluent, flowmeter], flow: {device: flowmeter}}
rules:
  - {kind: standard, name: gb16889_t2, point: outlet, tables: [gb16889-2008-table2], windows: [1h, 1d]}
  - {kind: capacity, name: treated, site: diaoyushan, quantity: flow, design: 50}
  - {kind: limit, name: cod_instant, site: diaoyushan, quantity: cod, above: 100, severity: critical}
"""


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp()}")
    options.add_argument("--window-size=430,1400")
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def a_day(day: datetime) -> list[Reading]:
    t0 = int(day.timestamp())
    out = []
    for m in range(1440):
        ts = (t0 + m * 60 + 5) * NS
        cod = 48.0 + 14 * ((m // 60) % 7 == 3) + (90.0 if 600 <= m < 660 else 0.0)
        out += [
            Reading(ts, "diaoyushan", "effluent", "cod", cod, "mg/L"),
            Reading(ts, "diaoyushan", "effluent", "nh3n", 6.5 + (m // 60) % 4, "mg/L"),
            Reading(ts, "diaoyushan", "flowmeter", "flow", 2.1, "m3/h"),
        ]
    return out


async def main() -> None:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "site.yaml"
        config.write_text(SITE)
        day = datetime(2026, 11, 30, tzinfo=BJ)
        csv = Path(tmp) / "day.csv"
        csv.write_text("".join(f"{r.ts},{r.site},{r.device},{r.quantity},{r.value},{r.unit}\n" for r in a_day(day)))
        dep = app.load(str(config))
        report = replayed(dep, app.report_setup(dep, "diaoyushan"), day.date(), str(csv))
        (Path(tmp) / "report.html").write_text(page(report), encoding="utf-8")
        port = free_port()
        config.write_text(
            SITE + f'metrics: {{listen: "127.0.0.1:{port}", ack_token: demo}}\noutbox: {{path: "{tmp}/o.sqlite"}}\n'
        )
        daemon = await start_daemon(config)
        try:
            await daemon.pipeline.started.wait()
            # Three hours of the same pattern ending an hour ago (its 10:00 excursion fires and resolves
            # the hourly limit), and a COD reading above the limit now (still firing).
            start = datetime.now(BJ).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
            shift = int(start.timestamp()) * NS - (int(day.timestamp()) + 9 * 3600) * NS
            morning = [r._replace(ts=r.ts + shift) for r in a_day(day)[9 * 180 : 12 * 180]]
            await daemon.pipeline.emit(morning)
            await daemon.pipeline.emit([Reading(time.time_ns(), "diaoyushan", "effluent", "cod", 131.0, "mg/L")])
            daemon.pipeline.tick(time.time_ns())
            await daemon.pipeline.emit([])
            await daemon.desk().save()
            driver = await asyncio.to_thread(browser)
            try:
                await asyncio.to_thread(driver.get, f"file://{tmp}/report.html")
                driver.save_screenshot(str(OUT / "daily-report.png"))
                await asyncio.to_thread(driver.get, f"http://127.0.0.1:{port}/ui")
                driver.save_screenshot(str(OUT / "alerts-page.png"))
            finally:
                await asyncio.to_thread(driver.quit)
        finally:
            await daemon.close()
    for name in ("daily-report.png", "alerts-page.png"):
        print(OUT / name)


if __name__ == "__main__":
    asyncio.run(main())
