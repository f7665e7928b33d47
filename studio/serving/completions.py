"""``POST /v1/completions`` and ``POST /v1/chat/completions``: text through the batcher, in OpenAI's shapes, whole
or streamed as server-sent events (``data: {chunk}`` lines ending with ``data: [DONE]``).

Choice k of a seeded request uses seed + k (as Generate's samples do), so a request asked again, batched with
others or alone, gives the same text; the response cache answers it without the model. Outputs pass through the
blocklist; while streaming, a word is held back until it is complete so a blocked one never leaves half-shown."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from fastapi.responses import JSONResponse, StreamingResponse

from studio.serving.api import ApiError, ChatRequest, TextRequest
from studio.serving.cache import cache_header, cache_key
from studio.serving.engine import Row, RowResult, random_seed
from studio.serving.server import Call, Server

DEFAULT_MAX_TOKENS = 64  # as the Generate tab's max_new_tokens


@dataclass
class Outcome:
    """What a text request produced (and what the cache keeps): per choice its text (masked) and finish reason."""
    texts: list[str]
    finish: list[str]
    prompt_tokens: int
    tokens: int
    blocklist_hits: int

    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.tokens,
                "total_tokens": self.prompt_tokens + self.tokens}


def _inputs(call: Call, asked: TextRequest, chat: bool) -> list[dict]:
    if chat:
        call.prompt = asked.last_user_turn()
        return [{"messages": asked.turns()}]
    prompts = asked.prompts()
    call.prompt = prompts[0] if len(prompts) == 1 else "\n".join(prompts)
    return [{"prompt": p} for p in prompts]


def _rows(server: Server, asked: TextRequest, inputs: list[dict], max_tokens: int) -> list[Row]:
    rows = []
    for given in inputs:
        ids = server.engine.prompt_ids(asked.model, **given)
        context = server.engine.context_length(asked.model)
        if context and len(ids) + max_tokens > context:
            raise ApiError(400, f"the prompt has {len(ids)} tokens: with max_tokens {max_tokens} that passes the "
                                f"model's context of {context} tokens; shorten it or ask for fewer tokens",
                           param="max_tokens", code="context_length_exceeded")
        for k in range(asked.n):
            rows.append(Row(ids=ids, seed=asked.seed + k if asked.seed is not None else random_seed(),
                            max_tokens=max_tokens, temperature=asked.temperature, top_p=asked.top_p,
                            top_k=asked.top_k, repetition_penalty=asked.repetition_penalty, stops=asked.stops()))
    return rows


def _outcome(server: Server, rows: list[Row], results: list[RowResult]) -> Outcome:
    texts, hits = server.masked([r.text for r in results])
    prompt_tokens = sum(len(ids) for ids in {id(r.ids): r.ids for r in rows}.values())  # each prompt once
    return Outcome(texts=texts, finish=[r.finish_reason for r in results], prompt_tokens=prompt_tokens,
                   tokens=sum(r.tokens for r in results), blocklist_hits=hits)


# ----------------------------------------------------------------------------- OpenAI's shapes

def _whole(call: Call, asked: TextRequest, outcome: Outcome, chat: bool, cached: bool) -> dict:
    if chat:
        choices = [{"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                    "finish_reason": reason} for i, (text, reason) in enumerate(zip(outcome.texts, outcome.finish))]
    else:
        choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}
                   for i, (text, reason) in enumerate(zip(outcome.texts, outcome.finish))]
    return {"id": call.response_id, "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": asked.model, "choices": choices, "usage": outcome.usage(),
            "system_fingerprint": None, "cached": cached}


def _chunk(call: Call, asked: TextRequest, chat: bool, index: int | None, text: str | None = None,
           finish: str | None = None, role: bool = False, usage: dict | None = None) -> str:
    if index is None:
        choices = []
    elif chat:
        delta = {"role": "assistant", "content": ""} if role else ({} if text is None else {"content": text})
        choices = [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]
    else:
        choices = [{"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}]
    chunk = {"id": call.response_id, "object": "chat.completion.chunk" if chat else "text_completion",
             "created": int(time.time()), "model": asked.model, "choices": choices}
    if usage is not None:
        chunk["usage"] = usage
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"


# ----------------------------------------------------------------------------- answering

async def answer(server: Server, call: Call, asked: TextRequest):
    chat = isinstance(asked, ChatRequest)
    max_tokens = (getattr(asked, "max_completion_tokens", None) or asked.max_tokens) or DEFAULT_MAX_TOKENS
    inputs = _inputs(call, asked, chat)
    key = cache_key(asked.model, call.route, call.request)
    cached = server.cache.get(key)
    if key is not None:
        server.metrics.cache(asked.model, call.route, cached is not None)
    headers = cache_header(asked.seed, cached is not None)
    if asked.stream:
        events = _replay(server, call, asked, cached, chat) if cached else \
            _stream(server, call, asked, _rows(server, asked, inputs, max_tokens), key, chat)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    outcome = cached
    if outcome is None:
        rows = _rows(server, asked, inputs, max_tokens)
        outcome = _outcome(server, rows, await asyncio.wrap_future(server.batcher.submit(asked.model, rows)))
        server.cache.put(key, outcome)
    await _record(server, call, outcome, cached is not None)
    return JSONResponse(_whole(call, asked, outcome, chat, cached is not None), headers=headers)


async def _record(server: Server, call: Call, outcome: Outcome, hit: bool) -> None:
    await server.record(call, 200, outputs=[{"text": t} for t in outcome.texts], tokens=outcome.tokens,
                        cache_hit=hit, blocklist_hits=outcome.blocklist_hits)


async def _replay(server: Server, call: Call, asked: TextRequest, outcome: Outcome, chat: bool):
    """A cached answer as a stream: each choice in one piece."""
    for index, (text, reason) in enumerate(zip(outcome.texts, outcome.finish)):
        if chat:
            yield _chunk(call, asked, chat, index, role=True)
        yield _chunk(call, asked, chat, index, text)
        yield _chunk(call, asked, chat, index, None if chat else "", finish=reason)
    if asked.include_usage():
        yield _chunk(call, asked, chat, None, usage=outcome.usage())
    yield "data: [DONE]\n\n"
    await _record(server, call, outcome, True)


async def _stream(server: Server, call: Call, asked: TextRequest, rows: list[Row], key: str | None, chat: bool):
    """The batch's text as it comes: each row's ``on_text`` and the batch's end arrive on one queue."""
    loop = asyncio.get_running_loop()
    heard: asyncio.Queue = asyncio.Queue()
    for index, row in enumerate(rows):
        row.on_text = lambda text, i=index: loop.call_soon_threadsafe(heard.put_nowait, (i, text))
    future = server.batcher.submit(asked.model, rows)
    future.add_done_callback(lambda done: loop.call_soon_threadsafe(heard.put_nowait, (None, done)))
    sent = [""] * len(rows)
    if chat:
        for index in range(len(rows)):
            yield _chunk(call, asked, chat, index, role=True)
    while True:
        index, item = await heard.get()
        if index is None:
            break
        delta = _delta(sent, index, server.visible(item))
        if delta:
            yield _chunk(call, asked, chat, index, delta)
    try:
        outcome = _outcome(server, rows, item.result())
    except Exception as error:  # noqa: BLE001 - the stream has begun: the failure goes in it, as OpenAI's does
        failure = ApiError(500, f"generation failed ({type(error).__name__}: {error})", type="server_error")
        yield f"data: {json.dumps(failure.body())}\n\n"
        await server.record(call, 500, error=failure)
        return
    for index, (text, reason) in enumerate(zip(outcome.texts, outcome.finish)):
        delta = _delta(sent, index, text)
        if delta:
            yield _chunk(call, asked, chat, index, delta)
        yield _chunk(call, asked, chat, index, None if chat else "", finish=reason)
    if asked.include_usage():
        yield _chunk(call, asked, chat, None, usage=outcome.usage())
    yield "data: [DONE]\n\n"
    server.cache.put(key, outcome)
    await _record(server, call, outcome, False)


def _delta(sent: list[str], index: int, visible: str) -> str:
    """What ``visible`` adds to what choice ``index`` has shown (nothing when it no longer extends it)."""
    if not visible.startswith(sent[index]):
        return ""
    delta, sent[index] = visible[len(sent[index]):], visible
    return delta

