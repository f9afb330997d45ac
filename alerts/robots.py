"""DingTalk, WeCom and Feishu group robots, sent directly so their refusals are seen.

These robots answer HTTP 200 even when they refuse a message (bad token, rate
limit, keyword filter), with ``{"errcode": 310000, ...}`` (DingTalk, WeCom) or
``{"code": 19021, ...}`` (Feishu) in the body; apprise counts that as sent. Here
the body decides. URLs follow apprise's forms: ``dingtalk://[SECRET@]TOKEN``,
``wecombot://KEY``, ``feishu://[SECRET@]TOKEN`` (SECRET enables signing).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from dataclasses import dataclass

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


def send_robot(url: str, title: str, body: str, base_url: str = "", timeout: float = 10.0) -> Result:
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    userinfo, _, host = parsed.netloc.rpartition("@")
    token = host + parsed.path.rstrip("/")
    secret = urllib.parse.unquote(userinfo)
    base = (base_url or ENDPOINTS[scheme]).rstrip("/")
    text = f"{title}\n{body}"
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
    try:
        resp = urllib3.request(
            "POST",
            target,
            body=json.dumps(payload, ensure_ascii=False).encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=timeout,
            retries=False,
        )
    except urllib3.exceptions.HTTPError as err:
        return Result(False, f"{scheme}: network error {type(err).__name__}")
    if resp.status >= 300:
        return Result(False, f"{scheme}: HTTP {resp.status}")
    return _verdict(scheme, resp.data)


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
