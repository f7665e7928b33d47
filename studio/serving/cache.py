"""The response cache: a seeded request asked again (the same model, route, input and settings) is answered from
memory without running the model. Only seeded requests: without a seed each answer is meant to differ.

Bounded, least recently used out; thread-safe (the batch worker and the request handlers share it)."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict


def cache_key(model: str, route: str, request: dict) -> str | None:
    """The key of a request (its parameters as sent, minus how it is delivered), or None when it has no seed."""
    if request.get("seed") is None:
        return None
    asked = {k: v for k, v in request.items() if k not in ("stream", "stream_options", "user")}
    return json.dumps([model, route, asked], sort_keys=True, ensure_ascii=False)


class ResponseCache:
    def __init__(self, entries: int):
        self.entries = max(0, int(entries))
        self._items: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str | None):
        if key is None:
            return None
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: str | None, value) -> None:
        if key is None or not self.entries:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)

    def drop(self, key: str | None) -> None:
        with self._lock:
            self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


def cache_header(seed, hit: bool) -> dict:
    """``X-Cache: hit|miss`` on the answers to seeded requests (the others never touch the cache)."""
    return {} if seed is None else {"X-Cache": "hit" if hit else "miss"}
