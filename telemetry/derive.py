"""Readings the daemon computes from readings, committed with them: a stack's O2-corrected
concentrations and a furnace's representative temperature.

Derived readings are committed in the same transaction as the readings they come from
(``Pipeline._commit``) and replayed the same way (``alerts.replay``), so InfluxDB, the
aggregator, the rules and the HJ 212 uplink all see them as ordinary series; nothing
downstream recomputes them.

O2 correction (DOMAIN-incinerator.md A1, formula [V2], 11 % reference from the standard
table, overridable per rule): each pollutant reading of a stack with a reference gets a
``<quantity>_zs`` reading beside it, ``c * (21 - O2_ref) / (21 - O2)``, using the stack's
O2 reading of the same sample (at most ``max_age`` apart). When that O2 is missing, flagged,
negative or at or above ``o2_max`` (20 %: the stack is drawing air), the converted reading
carries the measured value unconverted and a flag (the pollutant's own when it has one,
else the O2's, else ``D``): never averaged, never judged, never a division blow-up. The
HJ 212 uplink sends ``_zs`` series as the pollutant code's ``Zs`` values.

Furnace temperature: see ``telemetry.furnaces``. The representative reading is formed once
per sample time at which any of the furnace's thermocouples reported, from each
thermocouple's newest valid value within the furnace's ``max_age``. A section without a
valid value is left out and the sample judged on the other one (as plants with a single
probe per section are), logged when it starts and ends: a faulted section must not take
the furnace out of the 850 degC audit. No reading is formed when no section has a value.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from telemetry.calendar import NS
from telemetry.furnaces import FURNACE_TEMP, FurnaceConfig, representative
from telemetry.model import Flag, Reading
from telemetry.points import Points

log = logging.getLogger(__name__)

ZS = "_zs"  # a converted series' quantity suffix: so2 -> so2_zs
O2_AIR = 21.0
_O2, _THERMO, _POLLUTANT = 0, 1, 2  # at one sample time: O2 and thermocouples first


def converted(quantity: str) -> str:
    return quantity + ZS


def measured_of(quantity: str) -> str | None:
    """The measured quantity a converted one (``so2_zs``) comes from, or None."""
    return quantity[: -len(ZS)] if quantity.endswith(ZS) and len(quantity) > len(ZS) else None


def correct(value: float, o2: float, reference: float) -> float:
    """A concentration at the reference oxygen: c * (21 - O2_ref) / (21 - O2)."""
    return value * (O2_AIR - reference) / (O2_AIR - o2)


@dataclass(frozen=True)
class O2Reference:
    """A stack whose pollutants are judged at a reference oxygen (a standard table's, or a rule's)."""

    point: str
    reference: float
    pollutants: frozenset[str]
    o2_quantity: str = "o2"
    o2_max: float = 20.0
    max_age_s: float = 60.0


class Deriver:
    """Called with each commit's readings; returns the readings derived from them."""

    def __init__(
        self, points: Points, references: Iterable[O2Reference] = (), furnaces: Iterable[FurnaceConfig] = ()
    ) -> None:
        self.points = points
        self._refs = {r.point: r for r in references}
        self._furnaces = {f.id: f for f in furnaces}
        self._thermocouples = {
            (f.site, t.device, t.quantity): (f, t.section) for f in self._furnaces.values() for t in f.thermocouples
        }
        self._o2: dict[str, Reading] = {}  # per point: its newest O2 reading
        self._tc: dict[str, dict[tuple[str, str], tuple[Reading, str]]] = {}  # per furnace: newest per thermocouple
        self._roles: dict[tuple[str, str, str], tuple[int, Any] | None] = {}
        self._short: set[str] = set()  # furnaces judged on fewer sections than wired (logged once)
        self.counts: Counter[str] = Counter()  # converted values left invalid, samples without a temperature

    def __bool__(self) -> bool:
        return bool(self._refs or self._thermocouples)

    def _role(self, r: Reading) -> tuple[int, Any] | None:
        key = (r.site, r.device, r.quantity)
        try:
            return self._roles[key]
        except KeyError:
            pass
        role: tuple[int, Any] | None = None
        if key in self._thermocouples:
            role = (_THERMO, self._thermocouples[key])
        else:
            point = self.points.point_of(*key)
            ref = self._refs.get(point.id) if point is not None else None
            if ref is not None and r.quantity == ref.o2_quantity:
                role = (_O2, ref)
            elif ref is not None and r.quantity in ref.pollutants:
                role = (_POLLUTANT, ref)
        if len(self._roles) > 100_000:  # series come from topics others control: stay bounded
            self._roles.clear()
        self._roles[key] = role
        return role

    def __call__(self, readings: Sequence[Reading]) -> list[Reading]:
        picked = [(role, r) for r in readings if (role := self._role(r)) is not None]
        if not picked:
            return []
        picked.sort(key=lambda item: (item[1].ts, item[0][0]))
        out: list[Reading] = []
        pending: dict[str, int] = {}  # furnace -> the sample time its next representative is for
        for (kind, what), r in picked:
            if kind == _O2:
                current = self._o2.get(what.point)
                if current is None or r.ts >= current.ts:
                    self._o2[what.point] = r
            elif kind == _POLLUTANT:
                out.append(self._convert(r, what))
            else:
                furnace, section = what
                at = pending.get(furnace.id)
                if at is not None and at != r.ts:
                    out += self._furnace_sample(furnace, at)
                pending[furnace.id] = r.ts
                newest = self._tc.setdefault(furnace.id, {})
                held = newest.get((r.device, r.quantity))
                if held is None or r.ts >= held[0].ts:
                    newest[(r.device, r.quantity)] = (r, section)
        for furnace_id, at in pending.items():
            out += self._furnace_sample(self._furnaces[furnace_id], at)
        return out

    def _convert(self, r: Reading, ref: O2Reference) -> Reading:
        o2 = self._o2.get(ref.point)
        why = ""
        if o2 is None or abs(r.ts - o2.ts) > ref.max_age_s * NS:
            why = "o2_missing"
        elif o2.flag is not Flag.N:
            why = "o2_flagged"
        elif not 0.0 <= o2.value < ref.o2_max:
            why = "o2_out_of_range"
        if not why:
            assert o2 is not None
            return r._replace(quantity=converted(r.quantity), value=correct(r.value, o2.value, ref.reference))
        self.counts[why] += 1
        flag = r.flag if r.flag is not Flag.N else o2.flag if why == "o2_flagged" and o2 is not None else Flag.D
        return r._replace(quantity=converted(r.quantity), flag=flag)

    def _furnace_sample(self, furnace: FurnaceConfig, ts: int) -> list[Reading]:
        by_section: dict[str, list[float]] = {}
        unit = ""
        oldest = ts - int(furnace.max_age * NS)
        for r, section in self._tc.get(furnace.id, {}).values():
            unit = unit or r.unit
            if r.flag is Flag.N and oldest <= r.ts <= ts:
                by_section.setdefault(section, []).append(r.value)
        value = representative(by_section, furnace.representative, furnace.sections)
        if value is None:
            self.counts["furnace_no_valid_thermocouple"] += 1
            return []
        wired = {t.section for t in furnace.thermocouples} & set(furnace.sections)
        missing = sorted(s for s in wired if not by_section.get(s))
        if missing:
            self.counts["furnace_section_missing"] += 1
        if bool(missing) != (furnace.id in self._short):
            self._short.symmetric_difference_update({furnace.id})
            if missing:
                log.warning(
                    "furnace %s at %s: no valid thermocouple in the %s section; its temperature is judged on the"
                    " other section alone until one is back",
                    furnace.id,
                    furnace.site,
                    " and ".join(missing),
                )
            else:
                log.info("furnace %s at %s: every section has a valid thermocouple again", furnace.id, furnace.site)
        return [Reading(ts, furnace.site, furnace.device, FURNACE_TEMP, value, unit or "degC", Flag.N)]
