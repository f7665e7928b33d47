"""What one deployment's application holds while it serves: its engine and batcher, response cache, metrics, rate
limiter and blocklist, and how each request is let in (``admit``) and written down (``record``).

Every request answered or refused becomes a ``ServedRequest`` row (the request log, which feedback and the quality
panel read) and counts in the metrics."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from studio.generation.blocklist import load_blocklist
from studio.serving.api import ApiError, Request, new_id, parse
from studio.serving.batching import Batcher
from studio.serving.cache import ResponseCache
from studio.serving.engine import Engine
from studio.serving.limits import RateLimiter, authorise, read_body
from studio.serving.metrics import ServingMetrics
from studio.store.tables import ServedRequest

# The settings a deployment may set for itself (Deployment.settings, by these names); else the studio's.
SERVING_SETTINGS = ("serve_batch_window_ms", "serve_max_batch", "serve_cache_entries", "serve_max_request_bytes",
                    "serve_rate_per_minute")
ROUTES = {"text": ("/v1/completions", "/v1/chat/completions"), "image": ("/v1/images/generations",),
          "audio": ("/v1/audio/speech",)}


def serving_settings(studio_settings, own: dict | None) -> dict:
    """The deployment's serving settings: its own values over the studio's (STUDIO_SERVE_*)."""
    own = own or {}
    return {name: own.get(name, getattr(studio_settings, name)) for name in SERVING_SETTINGS}


@dataclass
class Call:
    """One request on its way: what the request log and the metrics need of it."""
    route: str
    id_prefix: str
    started: float = field(default_factory=time.perf_counter)
    key: dict | None = None
    model: str = ""
    prompt: str = ""
    request: dict = field(default_factory=dict)

    def __post_init__(self):
        self.response_id = new_id(self.id_prefix)

    def seconds(self) -> float:
        return time.perf_counter() - self.started


class Server:
    def __init__(self, store, deployment_id: int, engine: Engine, settings: dict):
        self.store, self.deployment_id, self.engine = store, deployment_id, engine
        self.settings = settings
        self.metrics = ServingMetrics()
        self.cache = ResponseCache(settings["serve_cache_entries"])
        self.limiter = RateLimiter(settings["serve_rate_per_minute"])
        self.blocklist = load_blocklist(store.settings.blocklist)
        self.outputs = store.path(f"deployments/{deployment_id}/outputs")
        self.batcher = None
        if engine.modality == "text":
            self.batcher = Batcher(engine.generate_text, settings["serve_batch_window_ms"] / 1000,
                                   settings["serve_max_batch"], on_batch=self._batch_done,
                                   on_queue=self.metrics.queue_length.set)

    def _batch_done(self, model: str, rows, results, seconds: float) -> None:
        self.metrics.batch(model, len(rows), sum(r.tokens for r in results), seconds)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()

    # -- letting a request in

    async def admit(self, request, call: Call, model: type[Request]) -> Request:
        """The request's parameters once it may be served: its key checked (401), its rate (429), its size (413),
        its JSON and fields (400), its model (404) and the model's modality for this route (400)."""
        await self.let_in(request, call)
        body = await self.body(request)
        try:
            data = json.loads(body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ApiError(400, f"the request body is not valid JSON ({error})") from None
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            call.model = data["model"][:200]
        asked = parse(model, data)
        call.request = asked.model_dump(exclude_none=True)
        self.check_model(asked.model, call.route)
        return asked

    async def let_in(self, request, call: Call) -> None:
        """The caller's key checked (401, or None for a local caller without one) and counted against its rate."""
        call.key = await run_in_threadpool(authorise, self.store, request.headers.get("authorization"),
                                           request.client.host if request.client else None,
                                           request.headers.get("host"), request.headers.get("origin"))
        self.limiter.check(call.key)

    async def body(self, request) -> bytes:
        return await read_body(request, self.settings["serve_max_request_bytes"])

    def check_model(self, name: str, route: str) -> None:
        if name not in self.engine.variants:
            raise ApiError(404, f"the model '{name}' is not served here; this deployment serves "
                                f"{', '.join(self.engine.names)} (GET /v1/models)", param="model",
                           code="model_not_found")
        modality = self.engine.modality
        if route not in ROUTES[modality]:
            raise ApiError(400, f"the model '{name}' makes {modality}, which {route} does not serve: use POST "
                                f"{' or '.join(ROUTES[modality])}", param="model", code="wrong_route")

    # -- writing it down

    async def record(self, call: Call, status: int, outputs: list[dict] | None = None, tokens: int = 0,
                     cache_hit: bool = False, blocklist_hits: int = 0, error: ApiError | None = None) -> None:
        seconds = call.seconds()
        self.metrics.answered(call.model or "-", call.route, status, seconds, error.type if error else None)
        row = ServedRequest(response_id=call.response_id, deployment_id=self.deployment_id, model=call.model,
                            route=call.route, key_name=call.key["name"] if call.key else None, prompt=call.prompt,
                            request=json.loads(json.dumps(call.request, default=str)), outputs=outputs or [],
                            status_code=status, cache_hit=cache_hit, latency_ms=seconds * 1000, tokens=tokens,
                            blocklist_hits=blocklist_hits)
        await run_in_threadpool(self._save, row)

    def _save(self, row: ServedRequest) -> None:
        with self.store.session() as session:
            session.add(row)

    def masked(self, texts: list[str]) -> tuple[list[str], int]:
        """The texts through the blocklist, and how many blocked words were masked in all."""
        return [self.blocklist.mask(t) for t in texts], sum(len(self.blocklist.found(t)) for t in texts)

    def visible(self, text: str) -> str:
        """Streamed text that may be shown now: masked, and without a last word that may still grow into a
        blocked one."""
        if self.blocklist:
            text = re.sub(r"\w+$", "", text)
        return self.blocklist.mask(text)
