"""The alert path's configuration: notification routes, silences, inhibitions (the ``notify``
section). The rules' own models are in ``alerts.rule_config``; ``telemetry.config`` composes
both into the deployment file."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic_core import PydanticCustomError

from alerts.rule_config import message_problem
from telemetry.config_base import Duration, Model, Name, Severity


class Route(Model):
    """Where notifications go and how often.

    ``urls``: ``dingtalk://[SECRET@]TOKEN``, ``wecombot://KEY`` and ``feishu://[SECRET@]TOKEN``
    are sent by the daemon itself, which reads the robot's ``errcode`` (apprise would
    report a refusal as success); any other apprise URL (``mailto://``, ``json://`` ...)
    goes through apprise. ``robot_base_url`` replaces the robots' public endpoints
    (a private relay, or a test receiver).
    """

    name: Name
    urls: list[SecretStr]
    sites: list[Name] = []
    severities: list[Severity] = []
    rules: list[Name] = []  # rule names; a standard's name stands for every limit it expands into
    send_resolved: bool = True
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    group_by: list[Literal["site", "rule", "severity"]] = ["site"]
    group_wait: Duration = 30.0
    group_interval: Duration = 300.0
    repeat_interval: Duration = 4 * 3600.0
    language: Literal["zh", "en"] = "zh"
    escalate_after: Duration | None = None
    escalate_to: Name | None = None
    robot_base_url: str = ""

    def passes(self, site: str | None, severity: str, rule: str) -> bool:
        """An alert of this site (None: any site, for a rule that names none), severity and rule
        gets past the route's filters."""
        return (
            (not self.sites or site is None or site in self.sites)
            and (not self.severities or severity in self.severities)
            and (not self.rules or rule in self.rules)
        )


class Matchers(Model):
    """Which alerts a silence or an inhibition side covers; unset keys match anything."""

    site: Name | None = None
    device: Name | None = None
    rule: Name | None = None
    severity: Severity | None = None


class Inhibit(Model):
    """While an alert matching ``source`` fires, alerts matching ``target`` with the same
    ``equal`` labels are not notified (e.g. communication lost inhibits that analyzer's limits)."""

    source: Matchers
    target: Matchers
    equal: list[Literal["site", "device", "quantity"]] = ["site", "device"]


def _time_text(value: object) -> object:
    """YAML reads an unquoted ``2026-12-01 08:00:00`` as a datetime: take it as written."""
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


TimeText = Annotated[str, BeforeValidator(_time_text)]


class SilenceConfig(Model):
    """A planned maintenance window: matching alerts are not notified between start and end.
    Times are ISO 8601; one without a zone is local time at the site the silence matches
    (Beijing time when it matches no single site)."""

    matchers: Matchers
    start: TimeText
    end: TimeText
    reason: str = ""


class Notify(Model):
    routes: list[Route] = []
    inhibit: list[Inhibit] = []
    silences: list[SilenceConfig] = []
    grafana_url: str = ""  # e.g. http://grafana:3000/d/plant-overview?var-site={site}
    console_url: str = ""  # the alerts page as supervisors reach it, e.g. https://plant.example/telemetry

    @model_validator(mode="after")
    def _link_template(self) -> Notify:
        """A typo in the link (``{sites}``) would otherwise fail every message with a link."""
        problem = message_problem(self.grafana_url, {"site": str, "rule": str})
        if problem is not None:  # the text goes in the context: it holds braces of its own
            raise PydanticCustomError("template", "{problem}", {"at": "grafana_url", "problem": problem})
        return self


class DailyReport(Model):
    """The daily report (日报) of each site for the previous local day, sent at ``at`` (the
    site's local time) through ``routes``: Markdown to the chat robots, HTML to e-mail. The
    rates' thresholds are unverified (DOMAIN-incinerator.md B5): marked below them."""

    at: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = "08:00"
    routes: list[Name] = []  # none: not sent (``telemetry report daily`` still prints it)
    sites: list[Name] = []  # default: every site
    transmission: Annotated[float, Field(gt=0, le=1)] = 0.9
    validity: Annotated[float, Field(gt=0, le=1)] = 0.9
    effective: Annotated[float, Field(gt=0, le=1)] = 0.9
    retry: Annotated[Duration, Field(ge=10)] = 300.0  # after a failed delivery


class Reports(Model):
    daily: DailyReport = DailyReport()
