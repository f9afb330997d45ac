"""Incinerator furnaces (焚烧炉): the thermocouples the furnace temperature is judged from.

The furnace temperature the Ministry judges is one representative value per sample,
formed from the thermocouples of the main temperature-control zone (DOMAIN-incinerator.md
A1, "Which value counts"; the method is [V-code], so it is a setting): the median of the
upper section's thermocouples and the median of the middle section's, then the mean of
those medians (``median_of_sections``); ``mean`` takes the plain mean of every thermocouple
listed. The lower section is not used by default. The representative value is stored as
``furnace_temp`` of the furnace's ``device`` (``telemetry.derive``), so it is aggregated,
judged (``kind: furnace_temperature``) and uploaded (``a01901``) like any reading.

A furnace without ``thermocouples`` has its representative value read directly: a
``furnace_temp`` series of its ``device`` (a DCS that computes it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from statistics import median
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from telemetry.config_base import Duration, Model, Name

FURNACE_TEMP = "furnace_temp"
Section = Literal["upper", "middle", "lower"]


class Thermocouple(Model):
    """One thermocouple: a device's ``furnace_temp`` (one device per probe), or any quantity."""

    device: Name
    quantity: Name = "furnace_temp"
    section: Section


MarkName = Literal["drying", "startup", "shutdown", "out_of_service", "fault", "accident"]


class FurnaceStatus(Model):
    """A series (a Modbus register) whose value is the furnace's mark: ``values`` maps each
    value to a mark; any other value ends a mark the register set."""

    device: Name
    quantity: Name
    values: Annotated[dict[int, MarkName], Field(min_length=1)]


class Feeding(Model):
    """A series saying waste is being fed: a feeder or grate running signal, or steam flow;
    feeding while its value is above ``above``."""

    device: Name
    quantity: Name
    above: float = 0.5


class FurnaceConfig(Model):
    """One furnace (a grate line), its stack, how its temperature is formed, and its marks.
    The mark settings' defaults rest on [U] facts (DOMAIN-incinerator.md A1-A3)."""

    id: Name
    site: Name
    point: Name | None = None  # the stack its flue gas leaves by
    device: Name  # the representative temperature is stored as ``furnace_temp`` of this device
    thermocouples: list[Thermocouple] = []
    representative: Literal["median_of_sections", "mean"] = "median_of_sections"
    sections: Annotated[list[Section], Field(min_length=1)] = ["upper", "middle"]
    max_age: Annotated[Duration, Field(gt=0)] = 60.0  # a thermocouple older than this at a sample is left out
    min_temperature: float = 850.0  # no waste may be fed below this
    feeding: Feeding | None = None
    status: FurnaceStatus | None = None
    budget_hours: Annotated[float, Field(gt=0, le=8784)] = 60.0  # exempt hours per local calendar year
    budget_warn: Annotated[float, Field(gt=0, le=1)] = 0.8  # warn once this share of the budget is used
    budget_marks: list[MarkName] = ["startup", "shutdown", "fault", "accident"]
    not_normal: list[MarkName] = ["drying", "startup", "shutdown", "out_of_service"]
    exempt_fraction: Annotated[float, Field(gt=0, le=1)] = 0.5  # of a window or hour, for it to count as marked
    max_episode_hours: dict[MarkName, Annotated[float, Field(gt=0)]] = {"fault": 4.0, "accident": 4.0, "startup": 4.0}

    @model_validator(mode="after")
    def _check(self) -> FurnaceConfig:
        if FURNACE_TEMP in {t.quantity for t in self.thermocouples if t.device == self.device}:
            message = "expected thermocouples named apart from furnace_temp of the furnace's device (it is derived)"
            raise PydanticCustomError("thermocouples", message, {"at": "thermocouples"})
        used = [t for t in self.thermocouples if t.section in self.sections]
        if self.thermocouples and not used:
            message = "expected a thermocouple in one of the sections used ({sections})"
            raise PydanticCustomError(
                "sections", message, {"at": "thermocouples", "sections": ", ".join(self.sections)}
            )
        return self


def representative(values: Mapping[str, Iterable[float]], method: str, sections: Iterable[str]) -> float | None:
    """The furnace temperature of one sample from its thermocouples' values by section;
    None when no section used has a value."""
    used = [list(values.get(s, ())) for s in sections]
    if method == "mean":
        flat = [v for group in used for v in group]
        return sum(flat) / len(flat) if flat else None
    medians = [median(group) for group in used if group]
    return sum(medians) / len(medians) if medians else None
