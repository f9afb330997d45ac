"""The durable hand-off between sources and consumers (SQLite in WAL mode), by job:

- ``store``: ``Outbox``, the connection and the commit every part shares;
- ``records``: the record queue, per-consumer cursors and batches (kept until every sink has them);
- ``side``: windows, HJ 212 acknowledgements, snapshots, commands and diagnostics, with retention;
- ``budget``: the disk budget, free space and the reserve file;
- ``schema``: the tables, upgrades, and the file kept private;
- ``readonly``: what the CLI and HTTP read while the daemon runs.
"""

from telemetry.outbox.readonly import (
    ConsumerStatus,
    Status,
    add_command,
    read_alert_log,
    read_dead_letters,
    read_deliveries,
    read_hj212_acked,
    read_quarantine,
    read_state,
    read_status,
    read_windows,
)
from telemetry.outbox.records import Batch, decode, encode
from telemetry.outbox.side import Retention
from telemetry.outbox.store import Outbox

__all__ = [
    "Batch",
    "ConsumerStatus",
    "Outbox",
    "Retention",
    "Status",
    "add_command",
    "decode",
    "encode",
    "read_alert_log",
    "read_dead_letters",
    "read_deliveries",
    "read_hj212_acked",
    "read_quarantine",
    "read_state",
    "read_status",
    "read_windows",
]
