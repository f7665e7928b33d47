"""A deployment's HTTP application: what its serving process answers.

``create_app`` is called once by the serving process (``studio.serving.process``), before it listens: the
deployment's models are loaded (and quantised, as ``deployment.quantize`` says, with the report written to the
row) when it returns, so ``/health`` means ready. It raises ``ServingError`` with a message for people when the
deployment cannot serve.

Routes: ``GET /health``; ``GET /v1/models``; ``POST /v1/completions``, ``/v1/chat/completions``,
``/v1/images/generations``, ``/v1/audio/speech`` (OpenAI's shapes: ``completions``, ``media``); ``POST
/v1/feedback``; ``GET /metrics`` (Prometheus); ``GET /`` (the try-it page). Everything but ``/health`` and the page
needs a key unless the call is local (``limits``); every refusal is in OpenAI's error shape."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from datetime import datetime, timezone

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from studio.serving import completions, media
from studio.serving.api import ApiError, ChatRequest, CompletionRequest, FeedbackRequest, ImageRequest, \
    SpeechRequest, parse
from studio.serving.engine import Engine, ServingError
from studio.serving.page import try_it_page
from studio.serving.server import Call, Server, serving_settings
from studio.store import Store
from studio.store.tables import DatasetVersion, Deployment, Run, ServedRequest

ANSWERS = {  # route → (request model, response id prefix, how it is answered)
    "/v1/completions": (CompletionRequest, "cmpl", completions.answer),
    "/v1/chat/completions": (ChatRequest, "chatcmpl", completions.answer),
    "/v1/images/generations": (ImageRequest, "img", media.images),
    "/v1/audio/speech": (SpeechRequest, "speech", media.speech),
}


def create_app(store: Store, deployment_id: int) -> FastAPI:
    """The application for deployment ``deployment_id``, its models loaded."""
    with store.session() as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None:
            raise LookupError(f"there is no deployment #{deployment_id}")
        models, quantize = list(deployment.models or []), deployment.quantize or "none"
        own = dict(deployment.settings or {})
        created = int(deployment.created_at.timestamp())
    engine = Engine(store, models, base_model=own.get("base_model"))
    report = quantise(store, engine, quantize)
    with store.session() as session:
        row = session.get(Deployment, deployment_id)
        row.report = {**(row.report or {}), **report}
    server = Server(store, deployment_id, engine, serving_settings(store.settings, own))
    return build(server, created)


def quantise(store: Store, engine: Engine, mode: str) -> dict:
    """The weights quantised as ``mode`` says (h-quant's ``studio.serving.quantize``, imported only then), with the
    quality check before and after on the first served model's dataset; the report for ``Deployment.report``."""
    size = engine.weight_bytes()
    if mode == "none":
        return {"quantize": {"mode": "none", "weight_bytes_before": size, "weight_bytes_after": size}}
    from studio.serving.quantize import quality_check, quantize_handle

    name = engine.names[0]
    variant = engine.variant(name)
    dataset = _dataset_of(store, next((v for v in engine.variants.values() if v.run_id), None))
    check = (lambda: quality_check(store, _handle(engine, name), variant, dataset)) if dataset else (lambda: None)
    before = check()
    results = [quantize_handle(handle, mode) for handle in engine.handles()]
    after = check()
    report = {"quantize": {"mode": mode, "weight_bytes_before": sum(r["weight_bytes_before"] for r in results),
                           "weight_bytes_after": sum(r["weight_bytes_after"] for r in results)}}
    if before and after:
        report["quality"] = {"metric": before["metric"], "before": before["value"], "after": after["value"],
                             "rows": before["rows"], "dataset": dataset}
    return report


def _handle(engine: Engine, name: str):
    with engine.lock:
        return engine.models.handle_for(engine.variant(name))


def _dataset_of(store: Store, variant) -> str | None:
    """The dataset version (DATASET_ID:VERSION) the variant's run trained on."""
    if variant is None:
        return None
    with store.session() as session:
        version = session.get(DatasetVersion, session.get(Run, variant.run_id).dataset_version_id)
        return f"{version.dataset_id}:{version.version}" if version else None


def build(server: Server, created: int) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app):
        yield
        server.close()

    app = FastAPI(title=f"Gen Studio deployment #{server.deployment_id}", docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan)
    app.state.server = server

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "deployment_id": server.deployment_id}

    @app.get("/v1/models")
    async def models(request: Request):
        async def answer(_call):
            return JSONResponse({"object": "list", "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "gen-studio"}
                for name in server.engine.names]})
        return await guarded(server, request, Call("/v1/models", "models"), answer, logged=False)

    @app.get("/metrics")
    async def metrics(request: Request):
        async def answer(_call):
            return Response(server.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")
        return await guarded(server, request, Call("/metrics", "metrics"), answer, logged=False)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(try_it_page(server.deployment_id, server.engine.names, server.engine.modality),
                            headers={"Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                     "style-src 'unsafe-inline'; img-src data:; media-src data: blob:",
                                     "X-Frame-Options": "DENY"})

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        async def answer(call):
            asked = parse(FeedbackRequest, json.loads(await server.body(request) or b"null"))
            found = await run_in_threadpool(rate, server, asked)
            return JSONResponse({"id": call.response_id, "object": "feedback", "response_id": asked.id,
                                 "rating": found["rating"], "comment": found["comment"]})
        return await guarded(server, request, Call("/v1/feedback", "fb"), answer, logged=False)

    for route, (model, prefix, answer) in ANSWERS.items():
        app.add_api_route(route, _endpoint(server, route, model, prefix, answer), methods=["POST"])
    return app


def _endpoint(server: Server, route: str, model, prefix: str, answer):
    async def endpoint(request: Request):
        call = Call(route, prefix)

        async def answered(call):
            asked = await server.admit(request, call, model)
            return await answer(server, call, asked)
        return await guarded(server, request, call, answered, admitted=True)
    return endpoint


async def guarded(server: Server, request: Request, call: Call, answer, admitted: bool = False,
                  logged: bool = True) -> Response:
    """``answer(call)``, let in as ``server.admit`` does (unless ``admitted``: the route admits itself), every
    refusal as OpenAI's error shape, each failure written down (``logged``: in the request log too)."""
    try:
        if not admitted:
            await server.let_in(request, call)
        response = await answer(call)
    except ApiError as error:
        return await _refused(server, call, error, logged)
    except json.JSONDecodeError as error:
        return await _refused(server, call, ApiError(400, f"the request body is not valid JSON ({error})"), logged)
    except Exception as error:  # noqa: BLE001 - the client hears that it failed and why; the log keeps it
        failure = ApiError(500, f"the deployment failed to answer ({type(error).__name__}: {error})",
                           type="server_error")
        return await _refused(server, call, failure, logged)
    response.headers.setdefault("X-Request-Id", call.response_id)
    if not logged:  # the logged routes count as they write their row
        server.metrics.answered(call.model or "-", call.route, response.status_code, call.seconds())
    return response


async def _refused(server: Server, call: Call, error: ApiError, logged: bool) -> JSONResponse:
    if logged:
        await server.record(call, error.status, error=error)
    else:
        server.metrics.answered(call.model or "-", call.route, error.status, call.seconds(), error.type)
    return JSONResponse({**error.body(), "id": call.response_id}, status_code=error.status,
                        headers={**error.headers, "X-Request-Id": call.response_id})


def rate(server: Server, asked: FeedbackRequest) -> dict:
    """Records a rating (and comment) on the response ``asked.id`` of this deployment; 404 when there is none."""
    with server.store.session() as session:
        row = session.scalar(select(ServedRequest).where(ServedRequest.response_id == asked.id,
                                                         ServedRequest.deployment_id == server.deployment_id,
                                                         ServedRequest.status_code == 200))
        if row is None:
            raise ApiError(404, f"no response '{asked.id}' was served by this deployment", param="id",
                           code="response_not_found")
        row.rating, row.comment, row.rated_at = asked.rating, asked.comment, datetime.now(timezone.utc)
        return {"rating": row.rating, "comment": row.comment}


__all__ = ["ServingError", "create_app"]
