"""The daily report as text: Markdown for the chat robots, HTML (inline SVG charts, no external
assets, readable on a phone) for e-mail, CSV and JSON for checking the figures by hand.
Chinese by default, English on request."""

from __future__ import annotations

import csv
import html
import io
from dataclasses import asdict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from telemetry.report import DailyReport, QuantityDay

VERDICT = {
    "zh": {"pass": "达标", "exceeded": "超标", "insufficient": "数据不足", "no_limit": "无日均限值"},
    "en": {"pass": "pass", "exceeded": "EXCEEDED", "insufficient": "insufficient data", "no_limit": "no daily limit"},
}
MARK = {"pass": "✅", "exceeded": "❌", "insufficient": "⚠️", "no_limit": "·"}
NAMES_ZH = {
    "cod": "化学需氧量",
    "nh3n": "氨氮",
    "tp": "总磷",
    "tn": "总氮",
    "ph": "pH",
    "ss": "悬浮物",
    "bod5": "五日生化需氧量",
    "flow": "流量",
    "dust_zs": "颗粒物(折算)",
    "so2_zs": "二氧化硫(折算)",
    "nox_zs": "氮氧化物(折算)",
    "hcl_zs": "氯化氢(折算)",
    "co_zs": "一氧化碳(折算)",
}
WORDS = {
    "zh": {
        "title": "【日报】",
        "point": "监测点",
        "mean": "日均",
        "limit": "限值",
        "hours_above": "超小时限值",
        "completeness": "传输率 {t} · 有效率 {v} · 有效传输率 {e}",
        "capacity": "处理量",
        "stock": "库容",
        "alerts": "告警",
        "none": "无",
        "uplink": "上报平台",
        "acked": "已确认 {a}/{d}",
        "still": "至今未恢复",
        "by": "确认人",
        "unacked": "未确认",
        "hours": "小时",
        "summary": "超标 {exceeded} 项 · 数据不足 {insufficient} 项 · 达标 {passed} 项 · 告警 {alerts} 条",
        "low": "（低于 {x}）",
    },
    "en": {
        "title": "[Daily report]",
        "point": "point",
        "mean": "daily mean",
        "limit": "limit",
        "hours_above": "hours above the hourly limit",
        "completeness": "transmission {t} · validity {v} · effective {e}",
        "capacity": "capacity",
        "stock": "stock",
        "alerts": "alerts",
        "none": "none",
        "uplink": "platform uploads",
        "acked": "acknowledged {a}/{d}",
        "still": "still firing",
        "by": "acknowledged by",
        "unacked": "not acknowledged",
        "hours": "h",
        "summary": "{exceeded} exceeded · {insufficient} insufficient · {passed} passed · {alerts} alerts",
        "low": " (under {x})",
    },
}


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" + (f" {unit}" if unit else "")


def _esc(value: float | None, unit: str = "") -> str:
    """A number and its unit for HTML: the unit comes from payloads others control."""
    return html.escape(_num(value, unit))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _name(quantity: str, lang: str) -> str:
    return f"{NAMES_ZH[quantity]} {quantity}" if lang == "zh" and quantity in NAMES_ZH else quantity


def _time(ns: int, zone: str) -> str:
    return datetime.fromtimestamp(ns / 1e9, ZoneInfo(zone)).strftime("%H:%M")


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def title(report: DailyReport, lang: str = "zh") -> str:
    return f"{WORDS[lang]['title']} {report.name or report.site} {report.day}"


def markdown(report: DailyReport, lang: str = "zh") -> str:
    """Compact Markdown (lists, no tables: WeCom's robot renders none) for the chat robots."""
    w = WORDS[lang]
    out = [f"### {title(report, lang)}", "", w["summary"].format(**report.summary()), ""]
    point = None
    for q in report.quantities:
        if q.point != point:
            point = q.point
            out += ["", f"**{w['point']} {point}**"]
        limit = f"（{w['limit']} {_num(q.limit)}）" if q.limit is not None else ""
        line = (
            f"- {MARK[q.verdict]} {_name(q.quantity, lang)} {w['mean']} {_num(q.mean, q.unit)}{limit}"
            f" {VERDICT[lang][q.verdict]}"
        )
        if q.hourly_limit is not None:
            line += f"；{w['hours_above']} {q.hours_above} {w['hours']}"
        if q.exempt_hours:
            line += f"（{q.exempt_hours} 小时工况豁免）" if lang == "zh" else f" ({q.exempt_hours} marked hours exempt)"
        rates = w["completeness"].format(t=_pct(q.transmission), v=_pct(q.validity), e=_pct(q.effective))
        low = w["low"].format(x=_pct(report.thresholds.effective)) if q.below_threshold else ""
        out += [line, f"  {rates}{low}"]
    if report.capacities or report.stocks:
        out += ["", f"**{w['capacity']}**"]
        out += [
            f"- {c.name} {c.device}: {_num(c.total, c.unit)} / {_num(c.design, c.unit)} = {_pct(c.use)}"
            for c in report.capacities
        ]
        out += [
            f"- {s.name} {s.device}: {_num(s.last, s.unit)} / {_num(s.capacity, s.unit)} = {_pct(s.fraction)}"
            f"（{w['limit']} {_pct(s.cap_fraction)}）"
            for s in report.stocks
        ]
    out += ["", f"**{w['alerts']}**"]
    if not report.alerts:
        out.append(f"- {w['none']}")
    for a in report.alerts:
        end = _time(a.resolved_ns, report.zone) if a.resolved_ns is not None else w["still"]
        acked = f"{w['by']} {a.acked_by}" if a.acked_by else w["unacked"]
        out.append(
            f"- [{a.severity}] {a.rule} {_time(a.started_ns, report.zone)}-{end} ({_duration(a.seconds)}), {acked}"
        )
    if report.uplinks is not None:
        out += ["", f"**{w['uplink']}**"]
        for u in report.uplinks:
            parts = [f"{cn} " + w["acked"].format(a=u.acked.get(cn, 0), d=n) for cn, n in sorted(u.due.items())]
            out.append(f"- {u.platform} ({u.point}): " + "，".join(parts))
    return "\n".join(out) + "\n"


def chart(q: QuantityDay, zone: str, width: int = 640, height: int = 200) -> str:
    """The day's hourly means (bars; invalid hours hollow) against the hourly and daily limits
    (lines), as an inline SVG that scales to the screen."""
    pad_l, pad_b, pad_t = 44, 22, 10
    values = [v for _, v, _ in q.hours if v is not None]
    top = max([*values, q.limit or 0.0, q.hourly_limit or 0.0, 1e-9]) * 1.15
    plot_w, plot_h = width - pad_l - 6, height - pad_b - pad_t
    n = max(1, len(q.hours))
    bar = plot_w / max(24, n)

    def y(v: float) -> float:
        return pad_t + plot_h * (1 - v / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img"'
        f' aria-label="{html.escape(q.quantity)} hourly means">',
        f'<line x1="{pad_l}" y1="{y(0):.1f}" x2="{width - 6}" y2="{y(0):.1f}" stroke="#888"/>',
        f'<text x="4" y="{pad_t + 8}" font-size="11">{_esc(top / 1.15)}</text>',
        f'<text x="4" y="{y(0):.1f}" font-size="11">0</text>',
    ]
    for i, (ts, value, valid) in enumerate(q.hours):
        x = pad_l + i * bar + 1
        if value is not None:
            over = (q.hourly_limit is not None and value > q.hourly_limit) or (q.limit is not None and value > q.limit)
            fill = ("#d9534f" if over else "#4a90d9") if valid else "none"
            top_y = y(max(value, 0))
            parts.append(
                f'<rect x="{x:.1f}" y="{top_y:.1f}" width="{bar - 2:.1f}" height="{y(0) - top_y:.1f}"'
                f' fill="{fill}" stroke="#4a90d9"><title>{_time(ts, zone)} {_esc(value, q.unit)}</title></rect>'
            )
        if i % 6 == 0:
            parts.append(f'<text x="{x:.1f}" y="{height - 6}" font-size="11">{_time(ts, zone)}</text>')
    for value, colour, dash in ((q.hourly_limit, "#f0ad4e", "6 3"), (q.limit, "#d9534f", "")):
        if value is not None:
            parts.append(
                f'<line x1="{pad_l}" y1="{y(value):.1f}" x2="{width - 6}" y2="{y(value):.1f}" stroke="{colour}"'
                f' stroke-width="2" stroke-dasharray="{dash}"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


def page(report: DailyReport, lang: str = "zh") -> str:
    """One self-contained HTML page (no scripts, no external assets)."""
    w = WORDS[lang]
    e = html.escape
    rows = []
    for q in report.quantities:
        rows.append(
            f"<tr class='{q.verdict}'><td>{e(q.point)}</td><td>{e(_name(q.quantity, lang))}</td>"
            f"<td>{_esc(q.mean, q.unit)}</td><td>{_esc(q.limit)}</td><td>{e(VERDICT[lang][q.verdict])}</td>"
            f"<td>{q.hours_above}</td><td>{_pct(q.transmission)}</td><td>{_pct(q.validity)}</td>"
            f"<td{' class=low' if q.below_threshold else ''}>{_pct(q.effective)}</td></tr>"
        )
    head = (
        f"<tr><th>{e(w['point'])}</th><th></th><th>{e(w['mean'])}</th><th>{e(w['limit'])}</th><th></th>"
        f"<th>{e(w['hours_above'])}</th><th colspan=3>{e(w['completeness'].format(t='', v='', e=''))}</th></tr>"
    )
    charts = "".join(
        f"<h3>{e(q.point)} · {e(_name(q.quantity, lang))}</h3>{chart(q, report.zone)}" for q in report.quantities
    )
    alerts = (
        "".join(
            f"<li>[{e(a.severity)}] {e(a.rule)} {_time(a.started_ns, report.zone)}-"
            f"{_time(a.resolved_ns, report.zone) if a.resolved_ns is not None else e(w['still'])}"
            f" ({_duration(a.seconds)}), {e(w['by'] + ' ' + a.acked_by if a.acked_by else w['unacked'])}<br>"
            f"<small>{e(a.message)}</small></li>"
            for a in report.alerts
        )
        or f"<li>{e(w['none'])}</li>"
    )
    capacity = "".join(
        f"<li>{e(c.name)} {e(c.device)}: {_esc(c.total, c.unit)} / {_esc(c.design, c.unit)} = {_pct(c.use)}</li>"
        for c in report.capacities
    ) + "".join(
        f"<li>{e(s.name)} {e(s.device)}: {_esc(s.last, s.unit)} / {_esc(s.capacity, s.unit)} = {_pct(s.fraction)}</li>"
        for s in report.stocks
    )
    uplinks = ""
    if report.uplinks is not None:
        uplinks = (
            f"<h2>{e(w['uplink'])}</h2><ul>"
            + "".join(
                f"<li>{e(u.platform)} ({e(u.point)}): "
                + ", ".join(f"{cn} " + w["acked"].format(a=u.acked.get(cn, 0), d=n) for cn, n in sorted(u.due.items()))
                + "</li>"
                for u in report.uplinks
            )
            + "</ul>"
        )
    style = (
        "body{font-family:sans-serif;margin:0 auto;max-width:720px;padding:8px}"
        "table{border-collapse:collapse;width:100%;font-size:13px}td,th{border:1px solid #ccc;padding:3px}"
        "tr.exceeded td{background:#f8d7da}tr.insufficient td{background:#fff3cd}td.low{color:#b00}"
    )
    return (
        f"<!DOCTYPE html><html lang='{'zh-CN' if lang == 'zh' else 'en'}'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{e(title(report, lang))}</title>"
        f"<style>{style}</style></head><body><h1>{e(title(report, lang))}</h1>"
        f"<p>{e(w['summary'].format(**report.summary()))}</p><table>{head}{''.join(rows)}</table>{charts}"
        f"<h2>{e(w['capacity'])}</h2><ul>{capacity or '<li>' + e(w['none']) + '</li>'}</ul>"
        f"<h2>{e(w['alerts'])}</h2><ul>{alerts}</ul>{uplinks}</body></html>\n"
    )


CSV_COLUMNS = (
    "site",
    "day",
    "point",
    "device",
    "quantity",
    "unit",
    "mean",
    "limit",
    "verdict",
    "hours_above",
    "hourly_limit",
    "expected",
    "received",
    "valid",
    "basis",
    "transmission",
    "validity",
    "effective",
)


def table(report: DailyReport) -> str:
    """One CSV row per point and quantity: the figures to check by hand."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for q in report.quantities:
        row = {**asdict(q), "site": report.site, "day": report.day}
        writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
    return buffer.getvalue()


def as_json(report: DailyReport) -> str:
    data: dict[str, Any] = asdict(report)
    data["summary"] = report.summary()
    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"


def render(report: DailyReport, fmt: str, lang: str = "zh") -> str:
    if fmt == "md":
        return markdown(report, lang)
    if fmt == "html":
        return page(report, lang)
    if fmt == "csv":
        return table(report)
    return as_json(report)
