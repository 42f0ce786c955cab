"""What every HTTP channel shares: one POST with a timeout, and the error a failed attempt
raises (its text goes into the outbox row, so it never holds a secret or a body)."""

from __future__ import annotations

import aiohttp

TIMEOUT = aiohttp.ClientTimeout(total=10)


class DeliveryError(Exception):
    """One attempt failed; the outbox retries with backoff, then keeps a dead letter."""


async def post_json(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> None:
    try:
        async with http.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", **headers},
            timeout=TIMEOUT,
            allow_redirects=False,
        ) as response:
            await response.read()
            if not 200 <= response.status < 300:
                raise DeliveryError(f"the receiver answered HTTP {response.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DeliveryError(f"the receiver cannot be reached ({type(exc).__name__})") from None
