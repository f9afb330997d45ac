"""InfluxDB sinks: the v2 write API through influxdb-client, and the v1 ``/write`` API.

A sink only writes one batch of line-protocol lines and classifies failures; it
never buffers or retries on its own (the delivery loop does, from the outbox).
Blocking I/O: the delivery loop calls ``write`` in a worker thread.

Every request, the health check included, is bounded by the sink's ``timeout``: a
server that accepts and never answers fails it (reason ``timeout``) instead of
holding a thread for ever.

Failure classes (``SinkError.retryable`` and ``SinkError.reason``):
- network errors, timeouts, 5xx, 429, 401/403/404 (a fixable setting): retried,
  never dropped;
- 400/422 (a bad point): not retryable; the caller isolates it, helped by what the
  server says about which lines it refused (``telemetry.refusal``);
- 413 (batch too large): not retryable as is; the caller splits the batch.
"""

from __future__ import annotations

import base64
import gzip
import logging
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlencode

import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from telemetry import refusal
from telemetry.config import InfluxV1, InfluxV2
from telemetry.errors import SinkError

log = logging.getLogger(__name__)

BAD_DATA = "bad_data"
TOO_LARGE = "too_large"


class Sink(Protocol):
    name: str
    batch_size: int
    flush_interval: float
    timeout: float  # seconds; bounds every request, the health check's too

    def write(self, lines: list[str]) -> None: ...

    def healthcheck(self) -> None: ...

    def close(self) -> None: ...


def classify(sink: str, status: int, body: str, retry_after: str | None, lines: Sequence[str] = ()) -> SinkError:
    """The error for an HTTP answer to ``lines``; a refusal of bad points says which lines it
    names and how many points the server dropped, as far as the server says."""
    message = f"HTTP {status}: {body.strip()[:300]}"
    if status in (400, 422):
        said = refusal.read(body, lines)
        named = {i: f"{sink}: HTTP {status}: {words}" for i, words in said.named.items()}
        return SinkError(sink, message, retryable=False, reason=BAD_DATA, named=named, dropped=said.dropped)
    if status == 413:
        return SinkError(sink, message, retryable=False, reason=TOO_LARGE)
    delay = None
    if retry_after and retry_after.strip().isdigit():
        delay = float(retry_after.strip())
    reason = "auth" if status in (401, 403) else "not_found" if status == 404 else f"http_{status // 100}xx"
    return SinkError(sink, message, retryable=True, retry_after=delay, reason=reason)


class InfluxV1Sink:
    """InfluxDB 1.x ``POST /write?db=&rp=&precision=ns``, gzip, basic auth."""

    def __init__(self, cfg: InfluxV1) -> None:
        self.name = cfg.name
        self.batch_size = cfg.batch_size
        self.flush_interval = cfg.flush_interval
        self.timeout = cfg.timeout
        self._cfg = cfg
        base = cfg.url.rstrip("/")
        query = {"db": cfg.database, "precision": "ns"}
        if cfg.retention_policy:
            query["rp"] = cfg.retention_policy
        self._write_url = f"{base}/write?{urlencode(query)}"
        self._ping_url = f"{base}/ping"
        self._query_url = f"{base}/query"
        self._headers = {"Content-Type": "text/plain; charset=utf-8", "Content-Encoding": "gzip"}
        if cfg.username:
            token = f"{cfg.username}:{cfg.password.get_secret_value()}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        self._http = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED" if cfg.verify_tls else "CERT_NONE",
            timeout=urllib3.Timeout(total=cfg.timeout),
            retries=False,
        )

    def write(self, lines: list[str]) -> None:
        body = gzip.compress("\n".join(lines).encode(), compresslevel=5)
        resp = self._request("POST", self._write_url, body=body, headers=self._headers)
        if resp.status == 404 and self._cfg.create_database and b"database not found" in resp.data:
            self._create_database()
            resp = self._request("POST", self._write_url, body=body, headers=self._headers)
        if resp.status >= 300:
            body_text = resp.data.decode(errors="replace")
            raise classify(self.name, resp.status, body_text, resp.headers.get("Retry-After"), lines)

    def _create_database(self) -> None:
        """CREATE DATABASE is idempotent in InfluxDB 1.x; used when ``create_database`` is set."""
        name = self._cfg.database.replace("\\", "\\\\").replace('"', '\\"')
        headers = {k: v for k, v in self._headers.items() if k == "Authorization"}
        resp = self._request(
            "POST",
            self._query_url,
            fields={"q": f'CREATE DATABASE "{name}"'},
            headers=headers,
            encode_multipart=False,
        )
        if resp.status >= 300:
            raise classify(self.name, resp.status, resp.data.decode(errors="replace"), None)
        log.info("sink %s: created database %s", self.name, self._cfg.database)

    def healthcheck(self) -> None:
        resp = self._request("GET", self._ping_url)
        if resp.status >= 300:
            raise classify(self.name, resp.status, resp.data.decode(errors="replace"), None)

    def close(self) -> None:
        self._http.clear()

    def _request(self, method: str, url: str, **kw: Any) -> urllib3.BaseHTTPResponse:
        try:
            return self._http.request(method, url, **kw)
        except urllib3.exceptions.HTTPError as err:
            raise _unreachable(self.name, err) from None


class InfluxV2Sink:
    """``/api/v2/write`` through influxdb-client: InfluxDB 2.x/3.x, 1.8+, VictoriaMetrics."""

    def __init__(self, cfg: InfluxV2) -> None:
        self.name = cfg.name
        self.batch_size = cfg.batch_size
        self.flush_interval = cfg.flush_interval
        self.timeout = cfg.timeout
        self._cfg = cfg
        self._client = InfluxDBClient(
            url=cfg.url,
            token=cfg.token.get_secret_value(),
            org=cfg.org or "-",
            timeout=int(cfg.timeout * 1000),
            enable_gzip=True,
            verify_ssl=cfg.verify_tls,
        )
        self._write = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: list[str]) -> None:
        try:
            self._write.write(bucket=self._cfg.bucket, org=self._cfg.org or "-", record="\n".join(lines))
        except ApiException as err:
            headers: dict[str, str] = dict(err.headers or {})
            raise classify(
                self.name, int(err.status or 0), str(err.body or err.reason), headers.get("Retry-After"), lines
            ) from None
        except urllib3.exceptions.HTTPError as err:
            raise _unreachable(self.name, err) from None

    def healthcheck(self) -> None:
        # The client's pool has no timeout of its own (influxdb-client passes one per API call).
        pool = self._client.api_client.rest_client.pool_manager
        try:
            resp = pool.request(
                "GET", self._cfg.url.rstrip("/") + "/ping", timeout=urllib3.Timeout(total=self.timeout), retries=False
            )
        except urllib3.exceptions.HTTPError as err:
            raise _unreachable(self.name, err) from None
        if resp.status >= 300:
            raise classify(self.name, resp.status, resp.data.decode(errors="replace"), None)

    def close(self) -> None:
        self._write.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]


def _network(err: Exception) -> str:
    """A network error without the URL's query string (it may carry credentials)."""
    reason = getattr(err, "reason", None) or err
    return f"network error: {type(reason).__name__}"


def _unreachable(sink: str, err: urllib3.exceptions.HTTPError) -> SinkError:
    """A request that got no answer: retried; a timeout (a hung server) told from other network
    errors. urllib3's NewConnectionError (refused, no route) derives from its ConnectTimeoutError."""
    cause = getattr(err, "reason", None) or err
    timed_out = isinstance(cause, urllib3.exceptions.TimeoutError) and not isinstance(
        cause, urllib3.exceptions.NewConnectionError
    )
    return SinkError(sink, _network(err), retryable=True, reason="timeout" if timed_out else "network")


def build(cfg: InfluxV1 | InfluxV2) -> Sink:
    return InfluxV1Sink(cfg) if isinstance(cfg, InfluxV1) else InfluxV2Sink(cfg)
