"""The generic webhook: the notice's versioned JSON, signed like inbound SIEM signals.

Headers: ``X-Lockgate-Timestamp: <unix seconds>``, ``X-Lockgate-Signature: sha256=<hex
HMAC-SHA256 of "<timestamp>.<body>">`` (the channel's secret, from the vault),
``X-Lockgate-Event``, ``Idempotency-Key`` (the same for every retry of one notification:
a receiver that sees it twice has seen the same notification), ``X-Lockgate-Thread``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from gateway.notify.delivery import DeliveryError, post_json
from gateway.notify.settings import Channel
from gateway.signals import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from vault.secret import Secret


def signed_headers(secret: Secret, timestamp: str, body: bytes) -> dict[str, str]:
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(secret.reveal(), timestamp, body)}


async def deliver_webhook(
    http: aiohttp.ClientSession,
    channel: Channel,
    notice: Mapping[str, Any],
    secret: Secret | None,
    timestamp: str,
) -> None:
    if secret is None:
        raise DeliveryError(
            f"no signing secret for {channel.name}; run: lockgate notifications secret "
            f"{channel.name}"
        )
    body = json.dumps(dict(notice), separators=(",", ":"), ensure_ascii=False).encode()
    headers = {
        **signed_headers(secret, timestamp, body),
        "X-Lockgate-Event": str(notice["event"]),
        "Idempotency-Key": str(notice["id"]),
        "X-Lockgate-Thread": str(notice["thread"]),
    }
    await post_json(http, channel.url, body, headers)
