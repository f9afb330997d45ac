"""A kill -9 between receiving a station's upload and committing it: the upload was never
acknowledged, the station sends it again to the restarted daemon, and it is stored once."""

from __future__ import annotations

import asyncio
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.dau import Dau, Upload, rtd_cp
from tests.faults.harness import Daemon, committed, site_config
from tests.services import Influx1, eventually, free_port

pytestmark = pytest.mark.service
BJ = timezone(timedelta(hours=8))
MN, PW = "41050022000017", "dau-pw1"


def config(tmp: Path, unique: str, influx: Influx1, listen: int, metrics: int, outbox: str) -> Path:
    device = f'{{id: dau, kind: hj212, listen: "127.0.0.1:{listen}", stations: [{{mn: "{MN}", pw: "{PW}", site: {unique}}}]}}'
    return site_config(tmp, unique, metrics, device, influx.url, outbox=outbox)


async def connected(dau: Dau) -> None:
    """Connect to a daemon process that may still be starting (its listener is not up yet)."""
    for _ in range(300):
        try:
            await dau.connect()
            return
        except OSError:
            await asyncio.sleep(0.1)  # a process coming up offers nothing to wait on but its port
    raise AssertionError("the daemon never listened")


async def test_an_upload_killed_before_its_commit_is_sent_again_and_stored_once(
    tmp_path: Path, unique: str, influx1: Influx1
) -> None:
    listen, metrics = free_port(), free_port()
    outbox = f'path: "{tmp_path}/outbox.sqlite"'
    # Commits wait while the disk has less than min_free: far more than any disk, so the upload
    # is received and its commit waits, unacknowledged, until the kill.
    config(tmp_path, unique, influx1, listen, metrics, outbox + ", min_free: 1000TB")
    daemon = Daemon(tmp_path / "site.yaml", metrics)
    dau = Dau("127.0.0.1", listen, MN, PW, overtime=30)
    value = 4242.5
    try:
        await connected(dau)
        when = datetime.now(BJ).replace(microsecond=0)
        qn, frame = dau.frame("2011", rtd_cp(when, {"w01018": (value, "N")}))
        dau.unacked[qn] = Upload(qn, frame)
        await dau.send_raw(frame)
        # The commit was tried (and is waiting for room): the outbox_full alert says so.
        await asyncio.to_thread(daemon.wait, "telemetry_alert_events_total", 1, 30, rule="outbox_full", state="firing")
        assert dau.answer("9014") is None  # received, not committed: never acknowledged
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)
        await dau.wait_for(lambda: dau.answer("closed") is not None, 10)
        await dau.close()
        config(tmp_path, unique, influx1, listen, metrics, outbox)  # room again
        daemon.start()
        dau.answers.clear()
        await connected(dau)
        await dau.resend_unacked()  # as a data acquisition unit does after a reconnect
        acked = dau.answer("9014", qn)
        rows = await asyncio.to_thread(
            eventually,
            lambda: influx1.query(unique, "SELECT value FROM telemetry"),
            30,
            "the upload in InfluxDB",
        )
    finally:
        await dau.close()
        code = daemon.stop()
    assert acked is not None
    assert not dau.unacked
    assert [row["value"] for row in rows] == [value]
    assert committed(tmp_path / "outbox.sqlite") == 1  # stored once: the first copy never was
    assert code == 0, daemon.log.read_text()[-3000:]
