"""Who may call a deployment, how often, and how much they may send.

- A Bearer key (``keys.verify_key``) opens it from anywhere; a studio key (``gs-...``) that is wrong or revoked is
  refused everywhere. Without one (or with a token that is no studio key: client libraries such as openai's insist
  on sending some key), only a local client is served: its
  address is loopback AND the Host header names a loopback host (a web page on another site can make a browser
  resolve its own name to 127.0.0.1: DNS rebinding) AND no cross-site ``Origin`` came with it (a page elsewhere
  posting to localhost).
- Each key has a rate (its own, else the deployment's default) over a sliding minute. Local requests without a key
  are not limited: they come from the machine itself (the bench, the try-it page).
- A body is read a chunk at a time and refused (413) as soon as it passes the limit, whatever Content-Length says.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from urllib.parse import urlsplit

from studio.serving.api import ApiError
from studio.serving.keys import PREFIX, verify_key

LOOPBACK_ADDRESSES = {"127.0.0.1", "::1"}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
NEEDS_KEY = ("this deployment needs an API key: send 'Authorization: Bearer KEY' (an editor makes one with "
             "`studio deploy keys add NAME`); without a key only local clients are served")


def _hostname(value: str | None, url: bool = False) -> str | None:
    if not value:
        return None
    try:
        return urlsplit(value if url else f"//{value}").hostname
    except ValueError:
        return None


def is_local(client_host: str | None, host_header: str | None, origin: str | None) -> bool:
    """A request from this machine to a loopback name, not sent by a page of another site."""
    if client_host not in LOOPBACK_ADDRESSES or _hostname(host_header) not in LOOPBACK_NAMES:
        return False
    return origin is None or _hostname(origin, url=True) in LOOPBACK_NAMES


def bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    if not authorization:
        return None
    if scheme.lower() != "bearer":
        raise ApiError(401, "send the API key as 'Authorization: Bearer KEY'", type="invalid_request_error",
                       code="invalid_api_key")
    return token.strip() or None


def authorise(store, authorization: str | None, client_host: str | None, host_header: str | None,
              origin: str | None) -> dict | None:
    """The key a request carries (None: a local request without one); a 401 ``ApiError`` when it may not call."""
    token = bearer(authorization)
    if token is None or not token.startswith(PREFIX):
        # A client library that insists on some key (openai's does) may send any other token from this machine.
        if is_local(client_host, host_header, origin):
            return None
        raise ApiError(401, NEEDS_KEY, code="invalid_api_key")
    key = verify_key(store, token)
    if key is None:
        raise ApiError(401, "the API key is wrong or has been revoked (see `studio deploy keys list`)",
                       code="invalid_api_key")
    return key


class RateLimiter:
    """Requests per key name over a sliding minute."""

    def __init__(self, default_per_minute: int, clock=time.monotonic):
        self.default = int(default_per_minute)
        self.clock = clock
        self._seen: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def check(self, key: dict | None) -> None:
        """Counts a request of ``key``; a 429 with Retry-After when its minute is full."""
        if key is None:
            return
        rate = key.get("rate_per_minute") or self.default
        now = self.clock()
        with self._lock:
            seen = self._seen[key["name"]]
            while seen and seen[0] <= now - 60:
                seen.popleft()
            if len(seen) >= rate:
                wait = max(1, math.ceil(seen[0] + 60 - now))
                raise ApiError(429, f"rate limit reached: key '{key['name']}' may send {rate} requests a minute; "
                                    f"try again in {wait} s", type="requests", code="rate_limit_exceeded",
                               headers={"Retry-After": str(wait)})
            seen.append(now)


async def read_body(request, limit: int) -> bytes:
    """The body, refused (413) past ``limit`` bytes: by its Content-Length when it says so, else as it arrives."""
    too_big = ApiError(413, f"the request body is larger than this deployment takes ({limit} bytes; "
                            "STUDIO_SERVE_MAX_REQUEST_BYTES)", code="request_too_large")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)
