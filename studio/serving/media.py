"""``POST /v1/images/generations`` and ``POST /v1/audio/speech``: the image and audio backends' ``generate`` behind
OpenAI's shapes. Images come back as base64 PNGs (``b64_json``, the only format served: no file server for urls),
speech as the WAV file's bytes. Each output is kept under STUDIO_HOME/deployments/<id>/outputs/<response id>/ (the
request log names it relative to STUDIO_HOME); a cached answer points at the first answer's files."""

from __future__ import annotations

import base64
import time

from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from studio.fields import InvalidSettings
from studio.generation.options import parse_settings
from studio.generation.service import GenerationError, check_image_size
from studio.serving.api import ApiError, ImageRequest, SpeechRequest
from studio.serving.cache import cache_header, cache_key
from studio.serving.engine import random_seed
from studio.serving.server import Call, Server

MAX_SIDE = 2048  # as the Generate tab's width and height


def _settings(modality: str, values: dict):
    try:
        return parse_settings(modality, values={k: v for k, v in values.items() if v is not None})
    except (InvalidSettings, ValueError) as error:
        raise ApiError(400, str(error)) from None


async def _generate(server: Server, call: Call, model: str, prompt: str, count: int, seed: int | None,
                    settings: dict) -> tuple[list[bytes], bool]:
    """The outputs' bytes (from the cache when it holds them) and whether they came from it; writes the log row."""
    call.prompt = prompt
    key = cache_key(model, call.route, call.request)
    paths = server.cache.get(key)
    found = await run_in_threadpool(_read, server, paths) if paths else None
    hit = found is not None
    if key is not None:
        server.metrics.cache(model, call.route, hit)
    if not hit:
        seeds = [seed + k if seed is not None else random_seed() for k in range(count)]
        folder = server.outputs / call.response_id
        samples = await run_in_threadpool(server.engine.generate_media, model, prompt, seeds, settings, folder)
        paths = [str(s.path.relative_to(server.store.home)) for s in samples]
        found = await run_in_threadpool(_read, server, paths)
        server.cache.put(key, paths)
    await server.record(call, 200, outputs=[{"path": p} for p in paths], cache_hit=hit)
    return found, hit


def _read(server: Server, paths: list[str]) -> list[bytes] | None:
    try:
        return [server.store.path(p).read_bytes() for p in paths]
    except OSError:  # removed since (retention): generate again
        return None


async def images(server: Server, call: Call, asked: ImageRequest):
    if asked.response_format != "b64_json":
        raise ApiError(400, "only response_format 'b64_json' is served (the images come back in the response, "
                            "this deployment keeps no public file server for urls)", param="response_format")
    width, height = asked.width_height()
    if max(width, height) > MAX_SIDE:
        raise ApiError(400, f"size {asked.size}: each side is at most {MAX_SIDE} pixels", param="size")
    options = _settings("image", {"steps": asked.steps, "guidance_scale": asked.guidance_scale, "width": width,
                                  "height": height, "negative_prompt": asked.negative_prompt})
    try:
        check_image_size([server.engine.variant(asked.model)], options)
    except GenerationError as error:
        raise ApiError(400, f"size {asked.size}: {error}", param="size") from None
    images, hit = await _generate(server, call, asked.model, asked.prompt, asked.n, asked.seed,
                                  options.backend_settings())
    return JSONResponse({"id": call.response_id, "created": int(time.time()), "cached": hit,
                         "data": [{"b64_json": base64.b64encode(png).decode("ascii"), "revised_prompt": None}
                                  for png in images]}, headers=cache_header(asked.seed, hit))


async def speech(server: Server, call: Call, asked: SpeechRequest):
    if asked.response_format != "wav":
        raise ApiError(400, f"response_format '{asked.response_format}' is not served: only 'wav' is",
                       param="response_format")
    options = _settings("audio", {"seconds": asked.seconds, "steps": asked.steps})
    [wav], hit = await _generate(server, call, asked.model, asked.input, 1, asked.seed, options.backend_settings())
    return Response(wav, media_type="audio/wav", headers={"X-Request-Id": call.response_id,
                                                          **cache_header(asked.seed, hit)})
