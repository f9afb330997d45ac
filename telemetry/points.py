"""Monitoring points (排放口): what the regulator judges, and which series belong to each.

A station usually has an inlet and an outlet; only the outlet is regulated, and the
two must never be mixed: flow volume, flow weighting, pollutant mass, standards and
the HJ 212 uplink all work per point. A point is one site's devices (as readings name
them) and optionally a subset of their quantities, with its own flow series.

A site with no ``points`` gets one inferred point, named after the site, holding every
device of the site, its flow being any device's ``aggregation.flow_quantity``: what a
configuration meant before points existed. A site that declares points has exactly
those; a series of such a site outside every point belongs to none (it is stored and
aggregated, never weighted, massed or uploaded).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from telemetry.config_base import Model, Name

PointKind = Literal["water", "gas"]


class FlowSource(Model):
    """The series whose volume weights the point's daily means and gives its pollutant mass."""

    device: Name | None = None  # default: any of the point's devices
    quantity: Name | None = None  # default: aggregation.flow_quantity


class PointConfig(Model):
    """A monitoring point: an effluent outfall (``water``) or a stack (``gas``)."""

    id: Name
    site: Name
    name: str = ""
    kind: PointKind = "water"
    devices: Annotated[list[Name], Field(min_length=1)]
    quantities: list[Name] = []  # default: every quantity of its devices
    flow: FlowSource = FlowSource()


@dataclass(frozen=True)
class Point:
    id: str
    site: str
    kind: PointKind
    devices: frozenset[str] | None  # None: every device of the site (an inferred point)
    quantities: frozenset[str] | None  # None: every quantity
    flow_device: str | None
    flow_quantity: str
    inferred: bool = False
    name: str = ""

    def holds(self, device: str, quantity: str) -> bool:
        return (self.devices is None or device in self.devices) and (
            self.quantities is None or quantity in self.quantities
        )

    def is_flow(self, device: str, quantity: str) -> bool:
        return quantity == self.flow_quantity and (self.flow_device is None or device == self.flow_device)


class Points:
    """Which point a series belongs to; remembered per series (a lookup per reading)."""

    def __init__(self, points: Iterable[Point], flow_quantity: str = "flow", infer_unknown: bool = True) -> None:
        self.all = list(points)
        self.by_id = {p.id: p for p in self.all}
        self._by_site: dict[str, list[Point]] = {}
        for point in self.all:
            self._by_site.setdefault(point.site, []).append(point)
        self.flow_quantity = flow_quantity
        self._infer_unknown = infer_unknown
        self._cache: dict[tuple[str, str, str], Point | None] = {}

    @classmethod
    def from_config(cls, sites: Iterable[str], points: Iterable[PointConfig], flow_quantity: str = "flow") -> Points:
        declared = list(points)
        out = [
            Point(
                p.id,
                p.site,
                p.kind,
                frozenset(p.devices),
                frozenset(p.quantities) if p.quantities else None,
                p.flow.device,
                p.flow.quantity or flow_quantity,
                name=p.name,
            )
            for p in declared
        ]
        with_points = {p.site for p in declared}
        out += [_inferred(site, flow_quantity) for site in sites if site not in with_points]
        return cls(out, flow_quantity)

    def point_of(self, site: str, device: str, quantity: str) -> Point | None:
        key = (site, device, quantity)
        try:
            return self._cache[key]
        except KeyError:
            pass
        candidates = self._by_site.get(site)
        if candidates is None and self._infer_unknown:  # a site outside the config: as if it had no points
            candidates = [_inferred(site, self.flow_quantity)]
        found = next((p for p in candidates or () if p.holds(device, quantity)), None)
        if len(self._cache) > 200_000:  # series come from topics others control: stay bounded
            self._cache.clear()
        self._cache[key] = found
        return found

    def is_flow(self, site: str, device: str, quantity: str) -> bool:
        point = self.point_of(site, device, quantity)
        return point is not None and point.is_flow(device, quantity)

    def of_site(self, site: str) -> list[Point]:
        return list(self._by_site.get(site, ()))


def _inferred(site: str, flow_quantity: str) -> Point:
    return Point(site, site, "water", None, None, None, flow_quantity, inferred=True)
