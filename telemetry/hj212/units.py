"""The units HJ 212-2017 prescribes for each pollutant code, and conversion into them.

A value goes on the wire in its code's unit, whatever the reading's own unit: water
flow ``w00000`` in L/s and flue-gas flow ``a00000`` in m3/s (their ``-Cou`` in m3),
concentrations in mg/L (water) or mg/m3 (gas), pollutant ``-Cou`` in kg. Sent as the
reading's unit, 36 m3/h went out as ``w00000-Rtd=36`` and the platform read 129.6 m3/h.

Sources: DOMAIN.md section 5 and DOMAIN-incinerator.md B7/A4 (two implementations of
the appendix tables agree). A code outside this table (a site's own ``codes``) is sent
in the reading's unit.
"""

from __future__ import annotations

# code -> the unit of its -Rtd/-Min/-Avg/-Max values
CODE_UNITS: dict[str, str] = {
    # water (HJ 212-2017 appendix, pollution source water)
    "w00000": "L/s",
    "w01001": "pH",
    "w01010": "degC",
    "w01012": "mg/L",
    "w01017": "mg/L",
    "w01018": "mg/L",
    "w01020": "mg/L",
    "w21001": "mg/L",
    "w21003": "mg/L",
    "w21011": "mg/L",
    # flue gas
    "a00000": "m3/s",
    "a34013": "mg/m3",
    "a21026": "mg/m3",
    "a21002": "mg/m3",
    "a21003": "mg/m3",
    "a21004": "mg/m3",
    "a21005": "mg/m3",
    "a21024": "mg/m3",
    "a20057": "mg/m3",
    "a19001": "%",
    "a01011": "m/s",
    "a01012": "degC",
    "a01013": "kPa",
    "a01014": "%",
    "a01901": "degC",
    "a01902": "degC",
}
# 2005 codes for the same quantities (HJ/T 212-2005), same units.
CODE_UNITS.update({"B01": "L/s", "001": "pH", "003": "mg/L", "010": "mg/L", "011": "mg/L", "015": "mg/L"})
CODE_UNITS.update({"065": "mg/L", "060": "mg/L", "101": "mg/L"})
CODE_UNITS.update(
    {"B02": "m3/s", "01": "mg/m3", "02": "mg/m3", "03": "mg/m3", "04": "mg/m3", "08": "mg/m3", "S01": "%"}
)

FLOW_CODES = frozenset({"w00000", "a00000", "B01", "B02"})  # their -Cou is a volume (m3), not a mass

# Each dimension: unit -> factor to the dimension's base unit. The one table of units the
# daemon knows: the aggregator's volumes and masses and the wire's conversions both use it.
VOLUME_FLOW = {  # base m3/h; a tonne of water is a cubic metre
    "m3/h": 1.0,
    "m³/h": 1.0,
    "t/h": 1.0,
    "L/s": 3.6,
    "l/s": 3.6,
    "L/h": 1e-3,
    "l/h": 1e-3,
    "m3/s": 3600.0,
    "m³/s": 3600.0,
    "m3/min": 60.0,
    "L/min": 0.06,
    "l/min": 0.06,
    "m3/d": 1 / 24,
    "t/d": 1 / 24,
}
MASS_CONCENTRATION = {  # base mg/m3 (1 mg/L = 1 g/m3 = 1000 mg/m3)
    "mg/m3": 1.0,
    "mg/m³": 1.0,
    "ug/m3": 1e-3,
    "µg/m3": 1e-3,
    "mg/L": 1000.0,
    "mg/l": 1000.0,
    "g/m3": 1000.0,
    "ug/L": 1.0,
    "µg/L": 1.0,
    "g/L": 1e6,
}
_DIMENSIONS: list[dict[str, float]] = [
    VOLUME_FLOW,
    MASS_CONCENTRATION,
    {"degC": 1.0, "°C": 1.0, "℃": 1.0, "C": 1.0},
    {"kPa": 1.0, "Pa": 1e-3, "hPa": 0.1, "MPa": 1000.0},
    {"%": 1.0},
    {"m/s": 1.0},
    {"pH": 1.0},
]
_FACTOR: dict[str, tuple[int, float]] = {}
for _index, _units in enumerate(_DIMENSIONS):
    for _unit, _factor in _units.items():
        _FACTOR.setdefault(_unit, (_index, _factor))


def wire_unit(code: str) -> str | None:
    """The unit a code's values are sent in, or None when HJ 212 prescribes none known here."""
    return CODE_UNITS.get(code)


def factor(unit: str, code: str) -> float | None:
    """Multiply a value in ``unit`` by this to send it as ``code``; None when it cannot be converted.
    A code without a prescribed unit, or a reading without a unit (none declared, none in the
    payload: ``telemetry check`` warns of those it can see), takes the value as it is."""
    target = CODE_UNITS.get(code)
    if target is None or unit in ("", target):
        return 1.0
    have, want = _FACTOR.get(unit), _FACTOR.get(target)
    if have is None or want is None or have[0] != want[0]:
        return None
    return have[1] / want[1]


def m3_per_hour(unit: str) -> float | None:
    """Cubic metres per hour in one ``unit`` of flow; None for a unit that is not a volume flow
    (or none at all: a volume is never guessed)."""
    return VOLUME_FLOW.get(unit)


def kg_per_unit_m3(unit: str) -> float | None:
    """Kilograms in one cubic metre at one ``unit`` of concentration (mg/L: 1e-3, mg/m3: 1e-6)."""
    factor = MASS_CONCENTRATION.get(unit)
    return factor * 1e-6 if factor is not None else None
