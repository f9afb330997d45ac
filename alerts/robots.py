"""DingTalk, WeCom and Feishu group robots, sent directly so their refusals are seen.

These robots answer HTTP 200 even when they refuse a message (bad token, rate
limit, keyword filter), with ``{"errcode": 310000, ...}`` (DingTalk, WeCom) or
``{"code": 19021, ...}`` (Feishu) in the body; apprise counts that as sent. Here
the body decides. URLs follow apprise's forms: ``dingtalk://[SECRET@]TOKEN``,
``wecombot://KEY``, ``feishu://[SECRET@]TOKEN`` (SECRET enables signing).

Each service refuses a message over its size (``LIMITS``), also with HTTP 200 and a code;
``counted_bytes`` measures a message as the service does, so the notifier can split it first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Literal

import urllib3

ENDPOINTS = {
    "dingtalk": "https://oapi.dingtalk.com",
    "wecombot": "https://qyapi.weixin.qq.com",
    "feishu": "https://open.feishu.cn",
}


@dataclass(frozen=True)
class Result:
    ok: bool
    detail: str  # never the token or the URL


def is_robot(url: str) -> bool:
    return url.split("://", 1)[0].lower() in ENDPOINTS


@dataclass(frozen=True)
class Limit:
    """How much one message to a kind of target may hold: ``max_bytes`` of what the service
    counts (``counts``: the whole JSON ``request`` body, or the text ``content``, UTF-8). A
    longer group goes out in at most ``max_parts`` messages of at most ``max_alerts`` alerts
    each; what is left is summarised in the last one and follows in the next message."""

    max_bytes: int
    counts: Literal["request", "content"]
    max_parts: int = 3  # DingTalk and WeCom robots take 20 messages a minute, then refuse
    max_alerts: int = 50


LIMITS = {
    # Refused by the service with errcode 460101 "message too long, exceed 20000 bytes" (also seen
    # as "body 大小不合法 ... 请保持大小在 20000bytes 以内"); not stated on the documentation pages found.
    "dingtalk": Limit(20_000, "request"),
    # Text message: content "at most 2048 bytes, UTF-8" (最长不超过2048个字节, 必须是utf8编码;
    # developer.work.weixin.qq.com/document/path/91770); markdown would take 4,096 bytes.
    "wecombot": Limit(2_048, "content"),
    # "the request body must not exceed 20 KB" (请求体的数据大小不能超过 20 KB;
    # open.feishu.cn/document/client-docs/bot-v3/add-custom-bot), read as 20,000 bytes, the stricter reading.
    "feishu": Limit(20_000, "request"),
}


def counted_bytes(url: str, title: str, body: str) -> int:
    """The size the robot's service holds against its ``LIMITS`` entry, of exactly what
    ``send_robot`` would send."""
    scheme = url.split("://", 1)[0].lower()
    if LIMITS[scheme].counts == "content":
        return len(_text(title, body).encode())
    return len(_request(url, title, body, "")[1])


def send_robot(url: str, title: str, body: str, base_url: str = "", timeout: float = 10.0) -> Result:
    scheme = url.split("://", 1)[0].lower()
    target, data = _request(url, title, body, base_url)
    try:
        resp = urllib3.request(
            "POST",
            target,
            body=data,
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=timeout,
            retries=False,
        )
    except urllib3.exceptions.HTTPError as err:
        return Result(False, f"{scheme}: network error {type(err).__name__}")
    if resp.status >= 300:
        return Result(False, f"{scheme}: HTTP {resp.status}")
    return _verdict(scheme, resp.data)


def _text(title: str, body: str) -> str:
    return f"{title}\n{body}"


def _request(url: str, title: str, body: str, base_url: str) -> tuple[str, bytes]:
    """The robot's address (with the signature, DingTalk) and the JSON body to post."""
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    userinfo, _, host = parsed.netloc.rpartition("@")
    token = host + parsed.path.rstrip("/")
    secret = urllib.parse.unquote(userinfo)
    base = (base_url or ENDPOINTS[scheme]).rstrip("/")
    text = _text(title, body)
    if scheme == "dingtalk":
        target = f"{base}/robot/send?access_token={urllib.parse.quote(token)}"
        if secret:
            stamp = str(int(time.time() * 1000))
            sign = base64.b64encode(
                hmac.new(secret.encode(), f"{stamp}\n{secret}".encode(), hashlib.sha256).digest()
            ).decode()
            target += f"&timestamp={stamp}&sign={urllib.parse.quote(sign)}"
        payload: dict[str, object] = {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
    elif scheme == "wecombot":
        target = f"{base}/cgi-bin/webhook/send?key={urllib.parse.quote(token)}"
        payload = {"msgtype": "text", "text": {"content": text}}
    else:
        target = f"{base}/open-apis/bot/v2/hook/{urllib.parse.quote(token)}"
        payload = {"msg_type": "text", "content": {"text": text}}
        if secret:
            stamp = str(int(time.time()))
            key = f"{stamp}\n{secret}".encode()
            payload["timestamp"] = stamp
            payload["sign"] = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    return target, json.dumps(payload, ensure_ascii=False).encode()


def _verdict(scheme: str, data: bytes) -> Result:
    try:
        answer = json.loads(data or b"{}")
    except ValueError:
        return Result(False, f"{scheme}: answer is not JSON")
    if not isinstance(answer, dict):
        return Result(False, f"{scheme}: unexpected answer")
    code = answer.get("errcode", answer.get("code", answer.get("StatusCode", 0)))
    if code in (0, "0", None):
        return Result(True, f"{scheme}: ok")
    message = str(answer.get("errmsg") or answer.get("msg") or answer.get("StatusMessage") or "")[:120]
    return Result(False, f"{scheme}: refused with code {code}: {message}")
