"""Line protocol encoding and the identifier checks that keep it safe."""

from __future__ import annotations

import pytest

from telemetry.lineproto import alert_line, reading_line
from telemetry.model import Aggregate, AlertEvent, AlertState, Flag, InvalidReading, Reading


def test_reading_line_schema() -> None:
    line = reading_line(Reading(1700000000123456789, "diaoyushan", "an-1", "cod", 41.5, "mg/L", Flag.N))
    assert (
        line == 'telemetry,device=an-1,quantity=cod,site=diaoyushan,unit=mg/L flag="N",value=41.5 1700000000123456789'
    )


def test_tag_values_escape_comma_equals_and_space() -> None:
    line = reading_line(Reading(1, "a,b=c d", "x", "q", 1.0))
    assert line.startswith(r"telemetry,device=x,quantity=q,site=a\,b\=c\ d flag=")


def test_alert_line_escapes_message() -> None:
    event = AlertEvent(5, "s", "r", "critical", AlertState.FIRING, 'say "hi"\\now\nnext', 1.5, 1.0)
    assert alert_line(event) == (
        'alerts,rule=r,severity=critical,site=s,state=firing limit=1.0,message="say \\"hi\\"\\\\now\\nnext",value=1.5 5'
    )


@pytest.mark.parametrize("bad", ["", "a\nb", "a\\", "x" * 129, "tab\there", "\x7f"])
def test_identifiers_that_line_protocol_cannot_carry_are_refused(bad: str) -> None:
    with pytest.raises(InvalidReading, match="site"):
        Reading(1, bad, "d", "q", 1.0).check()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_values_are_refused(value: float) -> None:
    with pytest.raises(InvalidReading, match="finite"):
        Reading(1, "s", "d", "q", value).check()


def test_aggregates_carry_their_point_and_method_and_alerts_their_series() -> None:
    from telemetry.lineproto import agg_line  # noqa: PLC0415

    agg = Aggregate(
        7, "1d", "s", "eff", "cod", "mg/L", 40.0, 48.0, 60.0, 1440, 1440, True, 4.5, point="outlet", method="flow"
    )
    assert agg_line(agg) == (
        "telemetry_agg,device=eff,point=outlet,quantity=cod,site=s,unit=mg/L,window=1d"
        ' avg=48.0,cou=4.5,count=1440i,flag="N",max=60.0,method="flow",min=40.0,valid=true,valid_count=1440i 7'
    )
    labels = {"device": "an 2", "quantity": "cod", "point": "outlet", "unit": "mg/L"}
    event = AlertEvent(5, "s", "r", "critical", AlertState.FIRING, "m", 1.5, 1.0, labels)
    other = AlertEvent(5, "s", "r", "critical", AlertState.FIRING, "m", 1.5, 1.0, labels | {"device": "an-3"})
    assert alert_line(event).startswith(
        r"alerts,device=an\ 2,point=outlet,quantity=cod,rule=r,severity=critical,site=s,state=firing "
    )
    assert alert_line(event).split(" ")[0] != alert_line(other).split(" ")[0]  # two devices: two series


def test_a_capacity_rules_two_conditions_at_one_tick_are_two_points() -> None:
    """At midnight a day's projection and the previous day's overload of one rule and series
    both resolve: the condition keeps them apart in InfluxDB."""
    labels = {"device": "wb", "quantity": "throughput", "point": "s", "unit": "t/h"}
    projection = AlertEvent(
        9, "s", "cap", "warning", AlertState.RESOLVED, "m", 1.0, 1.0, labels | {"condition": "projection"}
    )
    overload = AlertEvent(
        9, "s", "cap", "warning", AlertState.RESOLVED, "m", 1.0, 1.0, labels | {"condition": "overload"}
    )
    series = {alert_line(e).split(" ")[0] for e in (projection, overload)}
    assert len(series) == 2
    assert all(",unit=" not in s for s in series)  # a unit describes the value, it is no series
