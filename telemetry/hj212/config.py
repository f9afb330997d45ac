"""Configuration of one HJ 212 platform connection (the station is the TCP client)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, model_validator
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


def _frame_safe_secret(value: SecretStr) -> SecretStr:
    if not re.fullmatch(r"[A-Za-z0-9_.@#$%^*+-]{1,16}", value.get_secret_value()):
        raise PydanticCustomError("pw", "expected 1-16 letters, digits or _.@#$%^*+- (no ; , = & in an HJ 212 PW)")
    return value


class Platform(Model):
    name: Name
    host: str
    port: Annotated[int, Field(gt=0, lt=65536)]
    site: Name
    # Everything that goes into a frame's header or CP keys is restricted to characters with
    # no meaning in HJ 212 (';', ',', '=', '&&' separate fields): no field can be injected.
    mn: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{1,24}$")]
    pw: Annotated[SecretStr, AfterValidator(_frame_safe_secret)]
    st: Annotated[str, Field(pattern=r"^[0-9]{2}$")] = "32"
    version: Literal["2017", "2025"] = "2017"
    timezone: TimeZone = "Asia/Shanghai"
    code_set: Literal["2017", "2005"] = "2017"
    codes: dict[Name, Annotated[str, Field(pattern=r"^[A-Za-z0-9]{1,12}$")]] = {}  # overrides and additions
    send: list[Literal["rtd", "min", "hour", "day"]] = ["rtd", "min", "hour", "day"]
    rtd_interval: Duration = 30.0
    min_interval_minutes: Annotated[int, Field(ge=1, le=60)] = 10
    ack: bool = True
    overtime: Duration = 5.0
    recount: Annotated[int, Field(ge=0, le=10)] = 3
    heartbeat: Duration = 60.0  # 2025 only
    backfill: Duration = 7 * 86400.0
    grace: Duration = 180.0  # wait after a period ends before its window is final

    @model_validator(mode="after")
    def _interval_divides_an_hour(self) -> Platform:
        if 60 % self.min_interval_minutes:
            raise PydanticCustomError(
                "interval", "expected a MinInterval that divides an hour", {"at": "min_interval_minutes"}
            )
        return self

    def code_map(self) -> dict[str, str]:
        return {**(CODES_2017 if self.code_set == "2017" else CODES_2005), **self.codes}
