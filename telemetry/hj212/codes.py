"""Pollutant codes both ways: quantity -> code for what the uplink sends (``Platform.code_map``),
code -> quantity for what stations send (the input driver, MQTT ``format: hj212``).

One table serves both directions: the 2017 and 2005 code sets, water and gas
(``telemetry.hj212.config``). The sets do not collide (2017 codes start with a letter,
2005 water codes have 3 digits, 2005 gas codes 2 digits or a letter and digits), so a
station may mix them; ``flow`` and ``temperature`` are the same quantity at a water and a
gas point. A station's own ``codes`` (quantity -> code, as a platform's) win.
"""

from __future__ import annotations

from collections.abc import Mapping

from telemetry.hj212 import units
from telemetry.hj212.config import CODES_2005, CODES_2017, GAS_CODES_2005, GAS_CODES_2017

STANDARD_QUANTITIES: dict[str, str] = {
    code: quantity
    for table in (CODES_2017, GAS_CODES_2017, CODES_2005, GAS_CODES_2005)
    for quantity, code in table.items()
}


def quantities(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """code -> quantity: the standard code sets, with ``overrides`` (quantity -> code) winning."""
    out = dict(STANDARD_QUANTITIES)
    out.update({code: quantity for quantity, code in (overrides or {}).items()})
    return out


def unit_of(code: str, suffix: str) -> str:
    """The unit a station's value of ``code`` is in: the code's prescribed unit; ``-Cou`` in m3
    for a flow and kg for a pollutant; "" where HJ 212 prescribes none known here."""
    if suffix == "Cou":
        return "m3" if code in units.FLOW_CODES else "kg"
    return units.wire_unit(code) or ""
