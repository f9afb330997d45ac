"""A Modbus device timing out, answering exceptions, answering garbage and closing the
connection mid-frame, each with a SIGKILL of the daemon during the fault: the daemon keeps
polling, counts and reports the fault, recovers by itself, and every reading it committed
is in InfluxDB exactly once."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from telemetry.sim.plant import RegisterServer
from tests.faults.harness import Daemon, ModbusFaultProxy, committed, count_in, site_config
from tests.services import Influx1, eventually, free_port

pytestmark = pytest.mark.service


def config(tmp: Path, unique: str, modbus_port: int, influx: Influx1, port: int) -> Path:
    device = f"""{{id: analyzer, kind: modbus, site: {unique}, host: 127.0.0.1, port: {modbus_port}, interval: 500ms,
     timeout: 200ms, retries: 0,
     points: [{{quantity: cod, address: 0, type: float32, unit: mg/L}}, {{quantity: ph, address: 2, type: float32}}]}}"""
    return site_config(tmp, unique, port, device, influx.url, sections="aggregation: {enabled: false}")


@pytest.fixture
def device() -> Iterator[RegisterServer]:
    server = RegisterServer().start()
    for address, value in ((0, 42.5), (2, 7.1)):
        hi, lo = struct.unpack(">HH", struct.pack(">f", value))
        server.memory[1]["holding"].update({address: hi, address + 1: lo})
    yield server
    server.stop()


# mode -> the error type the daemon must count for it
FAULTS = {"silent": "timeout", "exception": "exception", "garbage": "", "cut": ""}


@pytest.mark.parametrize("mode", list(FAULTS))
def test_device_fault_with_a_kill_in_the_middle(
    mode: str, tmp_path: Path, unique: str, influx1: Influx1, device: RegisterServer
) -> None:
    proxy = ModbusFaultProxy(device.port)
    port = free_port()
    daemon = Daemon(config(tmp_path, unique, proxy.port, influx1, port), port)
    try:
        daemon.until(lambda: count_in(influx1, unique) >= 4, 30, "the first readings in InfluxDB")
        errors_before = daemon.metric("telemetry_device_errors_total", device="analyzer")
        if mode == "exception":
            device.failing.add(1)
        else:
            proxy.mode = mode
        labels = {"error_type": FAULTS[mode]} if FAULTS[mode] else {}
        daemon.wait("telemetry_device_errors_total", errors_before + 1, where={"device": "analyzer", **labels})
        # A device that answers with an exception still answers: up, but no readings.
        up_during = 1 if mode == "exception" else 0
        eventually(lambda: daemon.metric("telemetry_device_up", device="analyzer") == up_during, 30, "device state")
        daemon.kill9()  # during the fault
        daemon.wait(
            "telemetry_device_errors_total", where={"device": "analyzer", **labels}
        )  # the new process meets it too
        assert daemon.metric("telemetry_device_up", device="analyzer") == up_during
        during = count_in(influx1, unique)
        time.sleep(1.5)  # three poll intervals of the broken device: nothing may be fabricated meanwhile
        assert count_in(influx1, unique) == during
        device.failing.clear()
        proxy.mode = "pass"
        daemon.wait("telemetry_device_up", device="analyzer", timeout=60)
        daemon.until(lambda: count_in(influx1, unique) >= during + 4, 30, "readings again after the fault")
    finally:
        code = daemon.stop()
        proxy.close()
    assert code == 0, daemon.log.read_text()[-3000:]
    # Every reading any of the processes committed is in InfluxDB, once.
    assert count_in(influx1, unique) == committed(tmp_path / "outbox.sqlite")
    # Logged when it went wrong (per process: the device, each point), not at every failed poll.
    complaints = [line for line in daemon.log.read_text().splitlines() if "ERROR" in line and "analyzer" in line]
    assert 1 <= len(complaints) <= 6, complaints
