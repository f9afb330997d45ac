"""The ``telemetry`` command line: every subcommand, action and option, each with its help.

Actions are subcommands of their own (``telemetry hj212 receiver --port P``), so each
``--help`` lists only the options that action takes.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from telemetry import __version__

DESCRIPTION = (
    "Plant telemetry daemon: reads analyzers and meters over Modbus and MQTT, commits every reading to a"
    " durable outbox, writes it to InfluxDB, checks limits and capacity, alerts the supervisors and uploads"
    " HJ 212 data to the environmental platform."
)
EPILOG = (
    "Exit codes: 0 success; 2 invalid configuration or usage (every problem printed as"
    " FILE:LINE: path: expected ..., found ...); 1 any other failure."
    " Run 'telemetry COMMAND --help' for a command's options."
)
CONFIG_HELP = "deployment YAML file"
_USER = os.environ.get("USER", "cli")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="telemetry", description=DESCRIPTION, epilog=EPILOG)
    top.add_argument("--version", action="version", version=f"telemetry {__version__}", help="print the version")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")
    run = _command(sub, "run", "run the daemon until SIGTERM or SIGINT")
    _config(run)
    run.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="text lines, or one JSON object per line for journald/Loki (default: %(default)s)",
    )
    _config(_command(sub, "check", "validate a configuration: a summary, or every problem with its line"))
    _command(sub, "schema", "print the JSON Schema of the configuration (for editors' completion and checks)")
    status = _command(sub, "status", "what the running daemon reads now: values, ages, links, MQTT subscriptions")
    _config(status)
    status.add_argument("--json", action="store_true", help="one JSON object per series (site, device, quantity, ...)")
    status.add_argument(
        "--watch", type=float, nargs="?", const=2.0, default=None, metavar="SECONDS", help="refresh (default every 2 s)"
    )
    _probe(sub)
    _alerting(sub)
    _marking(sub)
    _reporting(sub)
    _rules(sub)
    _hj212(sub)
    _stores(sub)
    demo = _command(sub, "demo", "a simulated plant and the daemon on loopback, with a live view")
    demo.add_argument("-c", "--config", default=None, metavar="FILE", help="demo YAML file (default: config/demo.yaml)")
    demo.add_argument("--minutes", type=float, default=None, help="stop after this many minutes (default: Ctrl-C)")
    return top


def _command(sub: Any, name: str, help_text: str, description: str | None = None, **kw: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=description or help_text, **kw)
    return parser


def _actions(parser: argparse.ArgumentParser, dest: str = "action") -> Any:
    return parser.add_subparsers(dest=dest, required=True, metavar="ACTION", help="one of:")


def _config(parser: argparse.ArgumentParser, what: str = CONFIG_HELP) -> None:
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help=what)


def _probe(sub: Any) -> None:
    probe = _command(
        sub,
        "probe",
        "read Modbus registers once: every device of a config (-c), or one address decoded every way",
        "Read Modbus registers once. 'telemetry probe -c FILE' polls each Modbus device of a config;"
        " 'telemetry probe modbus HOST[:PORT] --address A --count C' prints registers decoded as every"
        " type in all four byte orders, to find the one that matches the analyzer's display.",
        usage="telemetry probe -c FILE | telemetry probe modbus TARGET [options]",
    )
    probe.add_argument(
        "-c", "--config", default=None, metavar="FILE", help="poll each Modbus device of this deployment YAML once"
    )
    # prog: argparse would otherwise prefix the subcommand's usage with probe's own custom one
    protocols = probe.add_subparsers(
        dest="protocol", metavar="PROTOCOL", help="or one address of one device:", prog="telemetry probe"
    )
    modbus = _command(protocols, "modbus", "read registers of one Modbus device and decode them every way")
    modbus.add_argument(
        "target", metavar="TARGET", help="HOST[:PORT] (port 502 by default), or a serial port with --rtu"
    )
    modbus.add_argument("--unit", type=int, default=1, help="Modbus unit (slave) id (default: %(default)s)")
    modbus.add_argument("--address", type=int, default=0, help="first PDU address, 0-based (default: %(default)s)")
    modbus.add_argument("--count", type=int, default=10, help="registers to read, 1-125 (default: %(default)s)")
    modbus.add_argument(
        "--table", choices=["holding", "input"], default="holding", help="register table (default: %(default)s)"
    )
    modbus.add_argument(
        "--type", dest="types", action="append", metavar="TYPE", help="only this type, e.g. float32 (repeatable)"
    )
    framing = modbus.add_mutually_exclusive_group()
    framing.add_argument("--rtu-over-tcp", action="store_true", help="RTU framing over TCP (serial servers, DTUs)")
    framing.add_argument("--rtu", action="store_true", help="TARGET is a serial port, RTU framing")
    modbus.add_argument("--baudrate", type=int, default=9600, help="serial speed with --rtu (default: %(default)s)")
    modbus.add_argument(
        "--parity", choices=["N", "E", "O"], default="N", help="serial parity with --rtu (default: %(default)s)"
    )
    modbus.add_argument("--bytesize", type=int, choices=[7, 8], default=8, help="data bits with --rtu (default: 8)")
    modbus.add_argument("--stopbits", type=int, choices=[1, 2], default=1, help="stop bits with --rtu (default: 1)")
    modbus.add_argument(
        "--expect", metavar="VALUE", help="the value the analyzer's display shows: the decodings that match are starred"
    )
    modbus.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default: 3)")


def _alerting(sub: Any) -> None:
    alerts = _actions(_command(sub, "alerts", "alerts of the running daemon: list, acknowledge"))
    _config(
        _command(alerts, "list", "alerts, who was told, and failed deliveries"), CONFIG_HELP + " (for the state path)"
    )
    ack = _command(alerts, "ack", "acknowledge an alert: stops its repeats and escalation")
    ack.add_argument("id", metavar="ID", help="alert id, as 'alerts list' shows it")
    _config(ack, CONFIG_HELP + " (for the state path)")
    ack.add_argument("--by", default=_USER, metavar="NAME", help="who acknowledges (default: $USER)")

    silence = _actions(_command(sub, "silence", "maintenance windows the running daemon applies: add, list, expire"))
    add = _command(
        silence,
        "add",
        "hold back notifications of matching alerts for a while",
        "Hold back notifications of the alerts matching every given --site, --device, --rule and --severity"
        " (at least one) from now on; the running daemon applies it within a second.",
    )
    _config(add, CONFIG_HELP + " (for the state path)")
    add.add_argument("--site", help="only alerts of this site")
    add.add_argument("--device", help="only alerts of this device")
    add.add_argument("--rule", help="only alerts of this rule (an expanded name, e.g. gb16889_t2_cod_1h)")
    add.add_argument("--severity", choices=["info", "warning", "critical"], help="only alerts of this severity")
    add.add_argument("--for", dest="duration", default="1h", help="how long, e.g. 2h or 30m (default: %(default)s)")
    add.add_argument("--reason", default="", help="why, shown in 'silence list' (e.g. calibration)")
    add.add_argument("--by", default=_USER, metavar="NAME", help="who adds it (default: $USER)")
    _config(_command(silence, "list", "silences added by command and from the config"), CONFIG_HELP)
    expire = _command(silence, "expire", "end a silence now")
    expire.add_argument("id", metavar="ID", help="silence id, as 'silence list' shows it")
    _config(expire, CONFIG_HELP + " (for the state path)")


def _marking(sub: Any) -> None:
    mark = _actions(
        _command(sub, "mark", "operating marks of incinerator furnaces (烘炉 启炉 停炉 停运 故障 事故): set, end, list")
    )
    put = _command(
        mark,
        "set",
        "mark a furnace: drying (烘炉), startup (启炉), shutdown (停炉), out_of_service (停运), fault (故障),"
        " accident (事故)",
        "Mark a furnace from --start (default now) until --end, or until the next mark or 'mark end'; the running"
        " daemon applies it within a second. Start-up, shutdown, fault and accident hours use the furnace's yearly"
        " budget of exempt hours.",
    )
    put.add_argument("furnace", metavar="FURNACE", help="furnace id, as in the config's furnaces")
    put.add_argument(
        "kind", metavar="MARK", help="drying, startup, shutdown, out_of_service, fault, accident (or 烘炉 ...)"
    )
    _config(put, CONFIG_HELP + " (furnaces, state path)")
    put.add_argument("--start", help="when it began (ISO 8601 with a zone, or epoch; default: now)")
    put.add_argument("--end", help="when it ended, for a mark entered afterwards")
    put.add_argument("--note", default="", help="why (shown in notifications and 'mark list')")
    put.add_argument("--by", default=_USER, metavar="NAME", help="who marks (default: $USER)")
    end = _command(mark, "end", "end a furnace's open mark")
    end.add_argument("furnace", metavar="FURNACE", help="furnace id")
    _config(end, CONFIG_HELP + " (furnaces, state path)")
    end.add_argument("--at", help="when it ended (default: now)")
    listing = _command(mark, "list", "marks of the running daemon and each furnace's exempt hours used this year")
    _config(listing, CONFIG_HELP + " (furnaces, state path)")


def _reporting(sub: Any) -> None:
    reports = _actions(_command(sub, "report", "compliance reports: the daily report of each site"))
    daily = _command(
        reports,
        "daily",
        "a site's daily report: means against limits, completeness, capacity, alerts, uploads",
        "Print a site's daily compliance report for a local day, from what the daemon stored (read-only,"
        " safe while it runs) or, with --input, from recorded readings replayed through the rules.",
    )
    _config(daily, CONFIG_HELP + " (sites, rules, outbox path)")
    daily.add_argument("--date", help="the local day, YYYY-MM-DD (default: yesterday in the site's zone)")
    daily.add_argument("--site", help="only this site (default: every site)")
    daily.add_argument("--format", choices=["md", "html", "csv", "json"], default="md", help="(default: md)")
    daily.add_argument("--lang", choices=["zh", "en"], default="zh", help="language of md and html (default: zh)")
    daily.add_argument("--input", help="CSV of readings to replay (as 'rules test' takes) instead of the stored data")
    daily.add_argument("--out", help="write to this file instead of standard output")


def _rules(sub: Any) -> None:
    rules = _actions(_command(sub, "rules", "replay recorded readings through the aggregation and the rules"))
    test = _command(
        rules,
        "test",
        "print the alerts recorded readings would raise",
        "Replay recorded readings through the aggregation and the rules in event time and print the alerts"
        " they would raise; the figures to check by hand before go-live.",
    )
    _config(test, CONFIG_HELP + " (rules, sites, aggregation)")
    test.add_argument(
        "--input",
        required=True,
        help="CSV of readings: ts,site,device,quantity,value[,unit][,flag], with or without that header line",
    )
    test.add_argument("--at", default=None, help="evaluate up to this time (ISO 8601 or epoch; default: last reading)")
    test.add_argument(
        "--windows", default="", help="also print the closed windows of these sizes (e.g. 1h,1d): means, validity, cou"
    )
    test.add_argument("--hj212", default=None, metavar="PLATFORM", help="also print what that platform would receive")
    test.add_argument("--marks", default=None, metavar="FILE", help="CSV of furnace marks: furnace,mark,start[,end]")


def _hj212(sub: Any) -> None:
    hj = _actions(_command(sub, "hj212", "HJ 212 tools: crc, decode, encode, receiver"))
    crc = _command(hj, "crc", "print the CRC of a data segment")
    crc.add_argument("data", metavar="SEGMENT", help="a data segment (QN=...;ST=...;...&&...&&)")
    decode = _command(hj, "decode", "print a frame as JSON, or what is wrong with it")
    decode.add_argument("data", metavar="FRAME", help="a frame (##0101QN=...\\r\\n)")
    decode.add_argument("--modbus-crc", action="store_true", help="accept a CRC-16/MODBUS too (some platforms' CRC)")
    decode.add_argument(
        "--lenient", action="store_true", help="accept the field variants data acquisition units send, each named"
    )
    encode = _command(hj, "encode", "print a frame built from fields (split into packets when long)")
    encode.add_argument("--cn", default="2011", help="command code, e.g. 2011 real-time data (default: %(default)s)")
    encode.add_argument("--st", default="32", help="system code: 32 water, 31 gas (default: %(default)s)")
    encode.add_argument("--mn", default="", help="station id (MN)")
    encode.add_argument("--pw", default="123456", help="access password (PW) (default: %(default)s)")
    encode.add_argument("--qn", default="", help="request id yyyyMMddHHmmssSSS (default: now)")
    encode.add_argument(
        "--version",
        dest="hj_version",
        choices=["2017", "2025"],
        default="2017",
        help="HJ 212 edition, for the Flag field (default: %(default)s)",
    )
    encode.add_argument("--ack", action="store_true", help="ask for a 9014 acknowledgement")
    encode.add_argument("--cp", default="", help="CP body: items separated by ';', values by ','")
    receiver = _command(hj, "receiver", "a platform stand-in that prints and acknowledges what a station sends")
    receiver.add_argument("--listen", default="0.0.0.0", help="address to listen on (default: %(default)s)")  # noqa: S104 - a tool
    receiver.add_argument("--port", type=int, default=0, help="TCP port to listen on (default: any free port)")
    receiver.add_argument(
        "--request", choices=["2031", "2051", "2061"], help="ask the first station that connects for this history"
    )
    receiver.add_argument("--begin", help="history from: BeginTime yyyyMMddHHmmss (platform local time)")
    receiver.add_argument("--end", help="history to: EndTime yyyyMMddHHmmss (platform local time)")


def _stores(sub: Any) -> None:
    outbox = _actions(_command(sub, "outbox", "the local store-and-forward buffer (read-only, safe while running)"))
    _config(
        _command(outbox, "status", "backlog per sink, disk used against the budget, side tables"),
        CONFIG_HELP + " (for the outbox path)",
    )
    quarantine = _actions(_command(outbox, "quarantine", "points a server refused as invalid"), dest="what")
    listing = _command(quarantine, "list", "the refused points as line protocol, with the server's message")
    _config(listing, CONFIG_HELP + " (for the outbox path)")
    listing.add_argument("--limit", type=int, default=20, help="show at most this many, newest first (default: 20)")
    dead = _actions(_command(sub, "deadletter", "inputs that could not become readings (bad MQTT payloads)"))
    letters = _command(dead, "list", "the newest dead letters: source, topic, reason, payload")
    _config(letters, CONFIG_HELP + " (for the outbox path)")
    letters.add_argument("--limit", type=int, default=20, help="show at most this many, newest first (default: 20)")
