"""Sources of readings, keyed by the ``kind`` of a ``devices`` entry in the config."""

from __future__ import annotations

from drivers.modbus import ModbusDriver
from drivers.mqtt import MqttDriver

DRIVERS: dict[str, type[ModbusDriver] | type[MqttDriver]] = {
    "modbus": ModbusDriver,
    "mqtt": MqttDriver,
}
