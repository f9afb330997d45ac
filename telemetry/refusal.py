"""What a server's 400/422 says about which lines of a batch it refused.

Isolating refused points by halving alone costs a request per refused point (2N-1 for a
batch the server refuses whole), because "something in here is bad" is all a bare 400
says. The servers say more, and this module reads it:

- InfluxDB 1.x and 2.x quote each line they cannot parse:
  ``unable to parse 'LINE': REASON`` (one per line, joined by newlines);
- InfluxDB 1.x and 2.x count the parsed points they dropped (type conflicts, outside the
  retention policy, too many values per tag): ``partial write: ... dropped=N``; influxd
  1.6 leaves unparseable lines out of that count;
- InfluxDB 3.x lists rejected lines as ``{"data": [{"original_line": ...}]}``.

VictoriaMetrics answers 204 and skips lines it cannot parse (its log says which), and a 400
without naming the line for a line over ``-influx.maxLineSize``: halving handles that.

Is: a parser of the server's words into line indices and a count. Is not: a judge of
what the server wrote; the caller re-sends everything not known to be refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_DROPPED = re.compile(r"dropped=(\d+)")
_UNPARSEABLE = "unable to parse '"
_REASON_MAX = 300


@dataclass(frozen=True)
class Refusal:
    """``named``: index of a line the server singled out → the server's words about it.
    ``dropped``: how many points the server says it dropped, when it says."""

    named: dict[int, str] = field(default_factory=dict)
    dropped: int | None = None


def read(body: str, lines: Sequence[str]) -> Refusal:
    """The refusal in ``body`` (the server's answer to ``lines`` sent as one request)."""
    text, quoted = _message(body)
    where: dict[str, list[int]] = {}
    for i, text_line in enumerate(lines):
        where.setdefault(text_line, []).append(i)
    named: dict[int, str] = {}
    for quoted_line, reason in [*_unparseable(text, where), *quoted]:
        for i in where.get(quoted_line, ()):
            named.setdefault(i, reason[:_REASON_MAX])
    counts = _DROPPED.findall(text)
    return Refusal(named, int(counts[-1]) if counts else None)


def _message(body: str) -> tuple[str, list[tuple[str, str]]]:
    """The message text of a JSON error body (``error`` in 1.x, ``message`` in 2.x/3.x), and
    the lines a 3.x body lists with their error; the body itself when it is not JSON."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body, []
    if not isinstance(parsed, dict):
        return body, []
    text = parsed.get("error") or parsed.get("message") or ""
    quoted = [
        (str(entry["original_line"]), str(entry.get("error_message") or text))
        for entry in parsed.get("data") or ()
        if isinstance(entry, dict) and "original_line" in entry
    ]
    return (text if isinstance(text, str) else body), quoted


def _unparseable(text: str, where: dict[str, list[int]]) -> list[tuple[str, str]]:
    """Each ``unable to parse 'LINE': REASON`` whose LINE is one of the batch's lines.

    A line may itself contain ``': `` (a tag value with a quote), so the end of the quote is
    the first ``': `` after which the quoted text is one of the lines sent."""
    found: list[tuple[str, str]] = []
    start = text.find(_UNPARSEABLE)
    while start >= 0:
        begin = start + len(_UNPARSEABLE)
        following = text.find(_UNPARSEABLE, begin)
        limit = len(text) if following < 0 else following
        end = text.find("': ", begin, limit)
        while end >= 0 and text[begin:end] not in where:
            end = text.find("': ", end + 1, limit)
        if end >= 0:
            reason_end = text.find("\n", end, limit)
            why = _DROPPED.sub("", text[end + 3 : limit if reason_end < 0 else reason_end]).rstrip()
            found.append((text[begin:end], f"{_UNPARSEABLE}{_clip(text[begin:end])}': {why}"))
        start = following
    return found


def _clip(text: str, keep: int = 120) -> str:
    """A quoted line shortened for the record's reason (the record itself is kept whole)."""
    return text if len(text) <= keep else text[: keep // 2] + "…" + text[-keep // 2 :]
