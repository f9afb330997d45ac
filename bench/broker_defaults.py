"""The daemon against a stock Mosquitto, with the configuration a user writes: issue 18's table.

    .venv/bin/python bench/broker_defaults.py [--backlog 200000] [--live 200000] [--loss 60000]
                                              [--rates 6000,8000,10000] [--series 500] [--cases ...]

Workload: single-reading QoS 1 JSON messages ``{"value": V, "ts": MS}`` on
``plants/site{S}/dev{D}/cod``, SERIES series, from ``bench/publisher.py`` (its own process).
The daemon: QoS 1, a fixed client id, one InfluxDB 1.x sink, everything else default
(outbox ``synchronous: full``, acks after the commit, ``protocol: auto``).

- ``drain``: BACKLOG messages queued on the daemon's persistent session while it is down
  (Mosquitto's in-flight window at its default 20, and again at 100; the queue unlimited so
  the backlog fits), then the daemon starts: points/s into InfluxDB, CPU seconds, CPU per point.
- ``live``: the daemon running, LIVE messages at the publisher's full speed and at fixed rates
  (queue unlimited): points/s into InfluxDB and how far behind the publisher (the broker's
  acknowledgement of the last message) the last point landed in InfluxDB.
- ``loss``: Mosquitto's stock limits (1,000 queued, 20 in flight), LOSS messages at each RATE:
  how many never reached the daemon.

Starts its own mosquitto and influxd (as the test fixtures do). Prints ``name: value unit``.
SIGKILL mid-stream: tests/test_store_and_forward.py::test_kill_9_at_random_moments_during_ingest_and_drain
(nothing lost, nothing twice).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.mqtt import MqttDriver
from telemetry import app
from telemetry.pipeline import Pipeline
from tests import services

PUBLISHER = Path(__file__).resolve().parent / "publisher.py"


def write_config(tmp: Path, broker: services.Mosquitto, influx: services.Influx1, name: str) -> Path:
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(
        f"""
sites: [{", ".join(f"{{id: site{s}}}" for s in range(10))}]
devices:
  - id: broker
    kind: mqtt
    host: {broker.host}
    port: {broker.port}
    client_id: {name}-daemon
    subscriptions: [{{topic: "{name}/{{site}}/{{device}}/{{quantity}}", qos: 1, devices: ["*"]}}]
influxdb:
  - {{name: local, api: v1, url: "{influx.url}", database: bench, create_database: true}}
metrics: {{enabled: false}}
outbox: {{path: "{tmp}/{name}.sqlite"}}
log_level: WARNING
"""
    )
    return cfg


class Publisher:
    """``bench/publisher.py`` in its own process; ``wait`` returns the wall-clock times of its
    first send and of the broker's last acknowledgement, and how many it acknowledged."""

    def __init__(self, broker: services.Mosquitto, prefix: str, count: int, series: int, rate: float = 0) -> None:
        args = [broker.host, str(broker.port), prefix, str(count), str(series), str(rate)]
        self.proc = subprocess.Popen([sys.executable, str(PUBLISHER), *args], stdout=subprocess.PIPE, text=True)

    def wait(self) -> tuple[float, float, int]:
        out, _ = self.proc.communicate(timeout=900)
        start, end, acked = out.split()
        return float(start), float(end), int(acked)


class Daemon:
    """The daemon in this process (``app.serve``), counting committed and written points."""

    def __init__(self, cfg: Path) -> None:
        self.dep = app.load(str(cfg), {})
        self.registry = CollectorRegistry()
        self.stop = asyncio.Event()
        self.committed = 0
        self.task: asyncio.Task[None] | None = None
        self.cpu = os.times()

    def observe(self, readings: object, _events: object) -> None:
        self.committed += len(readings)  # type: ignore[arg-type]

    @property
    def written(self) -> int:
        return int(self.registry.get_sample_value("telemetry_sink_points_written_total", {"sink": "local"}) or 0)

    async def start(self) -> None:
        """Until the broker has confirmed the daemon's subscription."""
        ready: asyncio.Future[Pipeline] = asyncio.get_running_loop().create_future()
        self.cpu = os.times()
        self.task = asyncio.create_task(
            app.serve(self.dep, self.stop, observer=self.observe, registry=self.registry, pipeline_ready=ready)
        )
        mqtt = next(d for d in (await ready).drivers if isinstance(d, MqttDriver))
        await asyncio.wait_for(mqtt.subscribed.wait(), 10)

    def cpu_seconds(self) -> float:
        now = os.times()
        return now.user - self.cpu.user + now.system - self.cpu.system

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await self.task


async def until(predicate: Callable[[], bool], timeout: float = 900) -> float:
    """Poll a counter another thread or task advances, every 100 ms (collecting the registry
    costs the daemon's loop time); the wall-clock time it came true."""
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.1)  # the sink reports progress as a counter only: sampled
    return time.time()


async def settled(count: Callable[[], int], expected: int, quiet: float = 3.0) -> int:
    """``count()`` once it reaches ``expected`` or stops moving for ``quiet`` seconds."""
    last, since = -1, time.perf_counter()
    while (now := count()) < expected:
        if now != last:
            last, since = now, time.perf_counter()
        elif time.perf_counter() - since > quiet:
            break
        await asyncio.sleep(0.05)
    return count()


async def drain(
    tmp: Path, broker: services.Mosquitto, influx: services.Influx1, name: str, args: argparse.Namespace
) -> None:
    cfg = write_config(tmp, broker, influx, name)
    services.register_session(broker, f"{name}-daemon", f"{name}/+/+/+", v5=True)  # as protocol auto connects
    _, _, acked = await asyncio.to_thread(Publisher(broker, name, args.backlog, args.series).wait)
    assert acked == args.backlog, f"the broker acknowledged {acked} of {args.backlog}"
    daemon = Daemon(cfg)
    start = time.time()
    await daemon.start()
    done = await until(lambda: daemon.written >= args.backlog)
    cpu = daemon.cpu_seconds()
    await daemon.close()
    print(f"{name}_points_per_s: {args.backlog / (done - start):.0f} points/s into InfluxDB")
    print(f"{name}_cpu: {cpu:.1f} s")
    print(f"{name}_cpu_per_point: {cpu / args.backlog * 1e6:.0f} us")


async def live(
    tmp: Path, broker: services.Mosquitto, influx: services.Influx1, name: str, args: argparse.Namespace, rate: float
) -> None:
    daemon = Daemon(write_config(tmp, broker, influx, name))
    await daemon.start()
    cpu = daemon.cpu_seconds()
    first, last, _ = await asyncio.to_thread(Publisher(broker, name, args.live, args.series, rate).wait)
    done = await until(lambda: daemon.written >= args.live)
    cpu = daemon.cpu_seconds() - cpu
    await daemon.close()
    print(f"{name}_publisher_rate: {args.live / (last - first):.0f} msg/s")
    print(f"{name}_points_per_s: {args.live / (done - first):.0f} points/s into InfluxDB")
    behind = max(0.0, done - last)
    print(f"{name}_behind_publisher: {behind:.2f} s (last point in InfluxDB after the broker took the last)")
    print(f"{name}_cpu_per_point: {cpu / args.live * 1e6:.0f} us")


async def loss(
    tmp: Path, broker: services.Mosquitto, influx: services.Influx1, name: str, rate: float, count: int, series: int
) -> None:
    daemon = Daemon(write_config(tmp, broker, influx, name))
    await daemon.start()
    first, last, _ = await asyncio.to_thread(Publisher(broker, name, count, series, rate).wait)
    got = await settled(lambda: daemon.committed, count)
    await daemon.close()
    print(f"{name}_offered: {count} messages at {count / (last - first):.0f} msg/s")
    print(f"{name}_lost: {count - got} messages")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--live", type=int, default=200_000)
    parser.add_argument("--loss", type=int, default=60_000)
    parser.add_argument("--rates", default="6000,8000,10000")
    parser.add_argument("--live-rates", default="0,15000,20000", help="msg/s for the live runs; 0: flat out")
    parser.add_argument("--series", type=int, default=500)
    parser.add_argument("--cases", default="drain20,drain100,live,loss")
    args = parser.parse_args()
    cases = set(args.cases.split(","))
    print(f"cores: {os.cpu_count()}")
    print("daemon: protocol auto, QoS 1, one InfluxDB 1.x sink, outbox synchronous full, acks after commit")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "influx").mkdir()
        with services.influxd(tmp / "influx") as influx:
            for inflight in (20, 100):
                if f"drain{inflight}" not in cases:
                    continue
                (tmp / f"m{inflight}").mkdir()
                limits = ["max_queued_messages 0", f"max_inflight_messages {inflight}"]
                with services.mosquitto(tmp / f"m{inflight}", default_limits=True, extra=limits) as broker:
                    asyncio.run(drain(tmp, broker, influx, f"drain_inflight{inflight}", args))
            if "live" in cases:
                (tmp / "ml").mkdir()
                with services.mosquitto(tmp / "ml", default_limits=True, extra=["max_queued_messages 0"]) as broker:
                    for rate in (float(r) for r in args.live_rates.split(",")):
                        name = f"live_at_{rate:.0f}" if rate else "live_full_speed"
                        asyncio.run(live(tmp, broker, influx, name, args, rate))
            if "loss" in cases:
                (tmp / "mq").mkdir()
                with services.mosquitto(tmp / "mq", default_limits=True) as broker:
                    for rate in (float(r) for r in args.rates.split(",")):
                        asyncio.run(loss(tmp, broker, influx, f"loss_at_{rate:.0f}", rate, args.loss, args.series))
    print(f"peak_rss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
