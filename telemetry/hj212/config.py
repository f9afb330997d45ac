"""Configuration of one HJ 212 platform connection (the station is the TCP client)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, model_validator
from pydantic_core import PydanticCustomError

from telemetry.config_base import Duration, Model, Name, TimeZone

# quantity -> pollutant code (DOMAIN.md): HJ 212-2017/2025 codes, and the 2005 ones.
CODES_2017 = {
    "flow": "w00000",
    "ph": "w01001",
    "ss": "w01012",
    "bod5": "w01017",
    "cod": "w01018",
    "toc": "w01020",
    "tn": "w21001",
    "nh3n": "w21003",
    "tp": "w21011",
    "temperature": "w01010",
}
# A stack's quantities (DOMAIN-incinerator.md A4): flow is the flue-gas flow there.
GAS_CODES_2017 = {
    # Earlier names first: a code maps back to the last (canonical) name of it.
    "particulate": "a34013",
    "furnace_temperature": "a01901",
    "flow": "a00000",  # ``flow`` at a stack is its flue-gas flow; ``flue_flow`` is the canonical name
    "flue_flow": "a00000",
    "dust": "a34013",
    "so2": "a21026",
    "nox": "a21002",
    "no": "a21003",
    "no2": "a21004",
    "co": "a21005",
    "hcl": "a21024",
    "hg": "a20057",
    "o2": "a19001",
    "velocity": "a01011",
    "temperature": "a01012",
    "pressure": "a01013",
    "humidity": "a01014",
    "furnace_temp": "a01901",  # the representative furnace temperature (``telemetry.furnaces``)
}
GAS_CODES_2005 = {
    "particulate": "01",
    "flow": "B02",
    "flue_flow": "B02",
    "dust": "01",
    "so2": "02",
    "nox": "03",
    "co": "04",
    "hcl": "08",
    "o2": "S01",
}
CODES_2005 = {
    "flow": "B01",
    "ph": "001",
    "ss": "003",
    "bod5": "010",
    "cod": "011",
    "toc": "015",
    "tn": "065",
    "nh3n": "060",
    "tp": "101",
}


PW_CHARS = re.compile(r"[A-Za-z0-9_.@#$%^*+-]{1,16}")  # no ; , = & that separate HJ 212 fields
MN_CHARS = re.compile(r"[A-Za-z0-9]{1,24}")
CODE_CHARS = re.compile(r"[A-Za-z0-9]{1,12}")


def frame_safe_secret(value: SecretStr) -> SecretStr:
    if not PW_CHARS.fullmatch(value.get_secret_value()):
        raise PydanticCustomError("pw", "expected 1-16 letters, digits or _.@#$%^*+- (no ; , = & in an HJ 212 PW)")
    return value


def quoted(value: object) -> object:
    """MN and PW are text: YAML reads 41050022000017 as a number (and 0123 as octal), losing digits."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise PydanticCustomError("quoted", "expected text: put it in quotes, so YAML keeps every digit")
    return value


def _divides_an_hour(minutes: int) -> int:
    if 60 % minutes:
        raise PydanticCustomError("interval", "expected a MinInterval that divides an hour")
    return minutes


Code = Annotated[str, Field(pattern=f"^{CODE_CHARS.pattern}$")]
# Everything that goes into a frame's header or CP keys is restricted to characters with no
# meaning in HJ 212 (';', ',', '=', '&&' separate fields): no field can be injected.
Mn = Annotated[str, BeforeValidator(quoted), Field(pattern=f"^{MN_CHARS.pattern}$")]
Pw = Annotated[SecretStr, BeforeValidator(quoted), AfterValidator(frame_safe_secret)]
MinInterval = Annotated[int, Field(ge=1, le=60), AfterValidator(_divides_an_hour)]  # minutes of 2051 data


class Equipment(Model):
    """An equipment (HJ 212 ``SBn``) whose status a series reports: 0 stopped, 1 running. Its
    value goes up as ``SBn-RS`` (2021) and its running hours per day as ``SBn-RT`` (2041)."""

    id: Code  # SB1, SB2 ... as the platform knows the equipment
    device: Name
    quantity: Name


class Control(Model):
    """One remote-control command (3011-3021) the platform may send, allowed as one fixed write
    of ``value`` to holding register ``address`` of a Modbus device. Nothing the platform sends
    is written: the allow-list is the CN, the register and the value configured here."""

    device: Name
    address: Annotated[int, Field(ge=0, le=65535)]
    value: Annotated[int, Field(ge=0, le=65535)]


def _control_cns(value: dict[str, Control]) -> dict[str, Control]:
    for cn in value:
        if not (cn.isdigit() and 3011 <= int(cn) <= 3021):
            message = "expected remote-control commands 3011-3021 as keys, found {cn}"
            raise PydanticCustomError("cn", message, {"cn": cn})
    return value


class Platform(Model):
    name: Name
    host: str
    port: Annotated[int, Field(gt=0, lt=65536)]
    # The monitoring point this connection uploads (its MN is the point's station id on this
    # platform); ``site`` alone names a site's only point.
    point: Name | None = None
    site: Name | None = None
    mn: Mn
    pw: Pw
    st: Annotated[str, Field(pattern=r"^[0-9]{2}$")] | None = None  # default: 32 for water, 31 for a stack
    version: Literal["2017", "2025"] = "2017"
    timezone: TimeZone = "Asia/Shanghai"
    code_set: Literal["2017", "2005"] = "2017"
    codes: dict[Name, Code] = {}  # overrides and additions
    send: list[Literal["rtd", "min", "hour", "day"]] = ["rtd", "min", "hour", "day"]
    rtd_interval: Duration = 30.0
    min_interval_minutes: MinInterval = 10
    ack: bool = True
    overtime: Duration = 5.0
    recount: Annotated[int, Field(ge=0, le=10)] = 3
    heartbeat: Duration = 60.0  # 2025 only
    backfill: Duration = 7 * 86400.0
    grace: Duration = 180.0  # wait after a period ends (and its windows have closed) before sending it
    stale_after: Duration | None = None  # real-time: a value not refreshed for this long is left out (3 x rtd)
    min_valid_fraction: Annotated[float, Field(gt=0, le=1)] = 0.75  # of a 2051 period's minutes, for flag N
    equipment: list[Equipment] = []  # 2021/2022 running status and 2041 running time
    controls: Annotated[dict[str, Control], AfterValidator(_control_cns)] = {}  # 3011-3021 allowed as writes

    @model_validator(mode="after")
    def _interval_divides_an_hour(self) -> Platform:
        if self.site is None and self.point is None:
            raise PydanticCustomError("where", "expected 'point' (or 'site' for a site with one point), found neither")
        return self

    def code_map(self, kind: str = "water") -> dict[str, str]:
        """quantity -> pollutant code for a point of this kind (``water`` or ``gas``)."""
        if kind == "gas":
            base = GAS_CODES_2017 if self.code_set == "2017" else GAS_CODES_2005
        else:
            base = CODES_2017 if self.code_set == "2017" else CODES_2005
        return {**base, **self.codes}
