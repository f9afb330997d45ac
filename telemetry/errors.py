"""One exception hierarchy for the daemon; every error names what it concerns."""

from __future__ import annotations


class TelemetryError(Exception):
    """Base of every error the daemon raises on purpose."""


class ConfigError(TelemetryError):
    """The configuration is invalid; ``problems`` holds one line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class DriverError(TelemetryError):
    """A device could not be read; names the device."""

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        super().__init__(f"{device}: {message}")


class SinkError(TelemetryError):
    """A sink refused or failed a write.

    ``retryable`` says whether the same batch may succeed later; ``reason`` is a
    bounded error type for metrics; ``retry_after`` is the server's hint in seconds.
    For a refusal of bad points, ``named`` maps the index of each line the server
    singled out to its message about it, and ``dropped`` is the number of points the
    server says it dropped (None when it does not say): they let the caller isolate
    refused points without a request per point.
    """

    def __init__(
        self,
        sink: str,
        message: str,
        *,
        retryable: bool,
        reason: str = "other",
        retry_after: float | None = None,
        named: dict[int, str] | None = None,
        dropped: int | None = None,
    ) -> None:
        self.sink = sink
        self.retryable = retryable
        self.reason = reason
        self.retry_after = retry_after
        self.named = named or {}
        self.dropped = dropped
        super().__init__(f"{sink}: {message}")


class OutboxError(TelemetryError):
    """The durable outbox could not be written or read."""


class OutboxFull(OutboxError):
    """The outbox is over its disk budget and its policy is to apply back-pressure."""


class OutboxFullDisk(OutboxError):
    """The disk under the outbox is full (SQLITE_FULL)."""


class TaskFailed(TelemetryError):
    """A task of the daemon (a driver, the committer, a sink, the notifier, the ticker)
    ended while nobody asked it to stop: the daemon shuts down and exits non-zero, so that
    its supervisor (systemd ``Restart=on-failure``, Docker) starts it again."""

    def __init__(self, task: str, why: str) -> None:
        self.task = task
        super().__init__(f"{task} stopped unexpectedly: {why}")
