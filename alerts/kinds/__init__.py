"""One class per rule kind, in families (``limits``, ``capacity``, ``presence``) over the shared
per-series state of ``state``.

Every kind reports transitions through ``RuleState._judge``: a condition that holds (for
``for`` seconds) fires once, and resolves once when it stops holding. A window too thin to
judge yields an ``insufficient_data`` record, never a breach.
"""

from alerts.kinds.capacity import CapacityState, StockState
from alerts.kinds.furnace import FurnaceState
from alerts.kinds.limits import LimitState
from alerts.kinds.presence import FlatlineState, MaintenanceState, NodataState, RateState
from alerts.kinds.state import RuleState
from alerts.rule_config import EvaluatedRule

KINDS: dict[str, type[RuleState]] = {
    "limit": LimitState,
    "stock": StockState,
    "nodata": NodataState,
    "flatline": FlatlineState,
    "rate": RateState,
    "maintenance_too_long": MaintenanceState,
    "capacity": CapacityState,
    "furnace_temperature": FurnaceState,
}

__all__ = ["KINDS", "EvaluatedRule", "RuleState"]
