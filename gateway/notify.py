"""Webhook notifications for approval requests: JSON with a Slack-compatible ``text`` field.

Sent when a request is created and when it is decided (approved, denied, expired, withdrawn),
to ``[approvals] webhook`` and to the deciding rule's own ``webhook``. Delivery runs off the
event loop and never holds a command up: a failing webhook is logged, and the request still
waits for its decision through the admin API.
"""

from __future__ import annotations

import asyncio
import logging
import os
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import msgspec

from gateway.broker import held_message, refusal

if TYPE_CHECKING:
    from gateway.approval import ApprovalRecord
    from gateway.config import Config

log = logging.getLogger("wiregate.approvals")

TIMEOUT_S = 5.0
# a command shown in a chat message is clipped: the request in the admin API has it whole
MAX_TEXT = 400


class Notifier:
    def __init__(self, cfg: "Config") -> None:
        self.reload(cfg)

    def reload(self, cfg: "Config") -> None:
        self.url = cfg.approvals.webhook
        self.token_env = cfg.approvals.webhook_token_env
        self.admin_url = admin_url(cfg)

    async def send(self, event: str, record: "ApprovalRecord", rule_webhook: str | None = None) -> None:
        urls = [u for u in dict.fromkeys((self.url, rule_webhook)) if u]
        if not urls:
            return
        body = msgspec.json.encode({"event": f"approval.{event}", "approval": record,
                                    "text": self.text(event, record)})
        token = os.environ.get(self.token_env) if self.token_env else None
        await asyncio.gather(*(asyncio.to_thread(_post, url, body, token) for url in urls))

    def text(self, event: str, record: "ApprovalRecord") -> str:
        command = record.command if len(record.command) <= MAX_TEXT else record.command[:MAX_TEXT] + "…"
        command = command.replace("```", "'''")
        if event == "requested":
            return (f"*{record.requester}* asks to run on *{record.target}* ({record.protocol}):\n"
                    f"```{command}```\n{held_message(record, self.admin_url)}")
        if record.status == "approved":
            span = ""
            if record.grant_until is not None and record.decided_at is not None:
                span = f", and the same command for {round((record.grant_until - record.decided_at) / 60)} min"
            return f"Request {record.id} by *{record.requester}* on *{record.target}* was approved by *{record.decided_by}*{span}."
        return refusal(record).removeprefix("wiregate: ") + "."


def admin_url(cfg: "Config") -> str | None:
    if cfg.approvals.url:
        return cfg.approvals.url.rstrip("/")
    if cfg.listen.admin:
        return f"http://{cfg.listen.admin}"
    return None


def _post(url: str, body: bytes, token: str | None) -> None:
    headers = {"Content-Type": "application/json", "User-Agent": "wiregate"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            response.read(65536)
    except urllib.error.HTTPError as e:
        log.warning("approval webhook %s answered %s", _safe(url), e.code)
    except (OSError, ValueError) as e:
        log.warning("approval webhook %s failed: %s", _safe(url), e)


def _safe(url: str) -> str:
    """Slack-style webhook URLs carry their secret in the path: log the host only."""
    parsed = urllib.request.urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}/…"
