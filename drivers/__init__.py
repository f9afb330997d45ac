"""Sources of readings, keyed by the ``kind`` of a ``devices`` entry in the config.

A new driver is one module with its config class next to it, and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivers.hj212 import Hj212Config, Hj212Driver
from drivers.modbus import ModbusConfig, ModbusDriver
from drivers.mqtt import MqttConfig, MqttDriver
from telemetry.config import DeviceConfig
from telemetry.metrics import Metrics
from telemetry.protocols import Driver


@dataclass(frozen=True)
class DriverKind:
    """``build(config, metrics, shared)``: ``shared`` holds what drivers of one pipeline
    share, such as the Modbus links several devices sit behind."""

    config: type[DeviceConfig]
    build: Callable[[Any, Metrics, dict[str, Any]], Driver]


DRIVERS: dict[str, DriverKind] = {
    "modbus": DriverKind(ModbusConfig, ModbusDriver),
    "mqtt": DriverKind(MqttConfig, MqttDriver),
    "hj212": DriverKind(Hj212Config, Hj212Driver),
}
