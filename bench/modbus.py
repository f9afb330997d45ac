"""Modbus poll capacity: devices x registers per second at a 1 s interval.

    .venv/bin/python bench/modbus.py [--seconds 20] [--cases 20x20,100x20,200x20,200x100]

Each case starts DEVICES pymodbus TCP servers (one per device, as separate
analyzers would be) in a child process, so the CPU figure is the daemon's
drivers alone, then polls every device at 1 s for ``--seconds``. Prints one
figure per line as ``name: value unit``: registers and readings per second,
CPU % of one core, and the poll start jitter (p50/p99) against the schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import resource
import socket
import statistics
import time
from typing import Any

from prometheus_client import CollectorRegistry

from drivers.modbus import ModbusDriver
from drivers.modbus_config import ModbusConfig
from telemetry.metrics import Metrics
from telemetry.sim.plant import RegisterServer


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def serve(ports: list[int], registers: int, ready: Any, stop: Any) -> None:
    async def main() -> None:
        servers = [RegisterServer(port=p, units=(1,), size=max(registers, 16)) for p in ports]
        for srv in servers:
            await srv.start_async()
            srv.set(1, "holding", 0, [0x4142, 0x0000] * (registers // 2))  # 12.125 as float32
        ready.set()
        await asyncio.to_thread(stop.wait)
        for srv in servers:
            await srv.stop_async()

    asyncio.run(main())


async def run_case(ports: list[int], registers: int, seconds: float) -> dict[str, float]:
    metrics = Metrics(CollectorRegistry())
    points = [{"quantity": f"q{i}", "address": i * 2} for i in range(registers // 2)]
    drivers = [
        ModbusDriver(
            ModbusConfig.model_validate(
                {
                    "id": f"d{i}",
                    "kind": "modbus",
                    "site": "bench",
                    "host": "127.0.0.1",
                    "port": port,
                    "interval": "1s",
                    "timeout": "400ms",
                    "points": points,
                }
            ),
            metrics,
            {},
        )
        for i, port in enumerate(ports)
    ]
    stamps: dict[str, list[int]] = {d.name: [] for d in drivers}
    count = 0

    async def emit(readings: Any) -> None:
        nonlocal count
        count += len(readings)
        stamps[readings[0].device].append(readings[0].ts)

    stop = asyncio.Event()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    tasks = [asyncio.create_task(d.run(emit, stop)) for d in drivers]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    jitter = sorted(abs((b - a) / 1e9 - 1.0) * 1000 for s in stamps.values() for a, b in itertools.pairwise(s))
    return {
        "readings_per_s": count / wall,
        "registers_per_s": count * 2 / wall,
        "cpu_percent": 100 * cpu / wall,
        "jitter_p50_ms": statistics.median(jitter) if jitter else float("nan"),
        "jitter_p99_ms": jitter[min(len(jitter) - 1, int(len(jitter) * 0.99))] if jitter else float("nan"),
        "devices_answering": sum(1 for s in stamps.values() if s),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--cases", default="20x20,100x20,200x20,200x100")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    print(f"seconds_per_case: {args.seconds:g}")
    for case in args.cases.split(","):
        devices, registers = (int(x) for x in case.split("x"))
        ports = free_ports(devices)
        ready, stop = multiprocessing.Event(), multiprocessing.Event()
        child = multiprocessing.Process(target=serve, args=(ports, registers, ready, stop))
        child.start()
        ready.wait(120)
        try:
            result = asyncio.run(run_case(ports, registers, args.seconds))
        finally:
            stop.set()
            child.join(30)
        tag = f"{devices}dev_x_{registers}reg"
        print(f"devices_answering_{tag}: {result['devices_answering']} devices")
        print(f"poll_rate_{tag}: {result['registers_per_s']:.0f} registers/s")
        print(f"reading_rate_{tag}: {result['readings_per_s']:.0f} readings/s")
        print(f"cpu_{tag}: {result['cpu_percent']:.1f} % of one core")
        print(f"poll_jitter_p50_{tag}: {result['jitter_p50_ms']:.2f} ms")
        print(f"poll_jitter_p99_{tag}: {result['jitter_p99_ms']:.2f} ms")
    print(f"max_rss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
