"""A deployment's OpenAI-compatible API, served in this process (uvicorn in a thread) with a tiny real Llama: its
base, a LoRA run's checkpoint (an adapter on it) and a full fine-tune (a model of its own), called with the official
``openai`` client and plain HTTP. Keys, limits, errors, the response cache, batching, metrics, the request log and
feedback."""

from __future__ import annotations

import concurrent.futures
import json
import re

import httpx
import openai
import pytest
from sqlalchemy import select

from conftest import ServedHere
from studio.data.service import import_dataset
from studio.examples.text import make_corpus
from studio.generation.blocklist import Blocklist
from studio.serving.app import create_app
from studio.serving.engine import stable_length
from studio.serving.keys import USE_NOTED_EVERY, ApiKeyError, add_key, list_keys, revoke_key, verify_key
from studio.serving.limits import RateLimiter, is_local
from studio.serving.api import ApiError
from studio.serving.page import try_it_page
from studio.settings import load_settings
from studio.store import open_store
from studio.store.tables import ApiKey, Deployment, ServedRequest
from studio.training.config import TrainConfig
from test_generation import run_in_process
from test_text_backend import rows, tiny_folder  # noqa: F401 - module-scoped fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_folder):  # noqa: F811
    root = tmp_path_factory.mktemp("serving")
    corpus = root / "stories.txt"
    corpus.write_text(make_corpus(size_kb=12, seed=3))
    store = open_store(load_settings(home=root / "home"))
    dataset = str(import_dataset(store, [corpus], name="stories")["dataset_id"])
    config = TrainConfig(max_steps=4, save_steps=2, eval_steps=100, learning_rate=5e-2, warmup_steps=0,
                         per_device_train_batch_size=4, seed=0, use_cpu=True, text={"max_length": 64})
    lora = run_in_process(store, dataset, str(tiny_folder), "lora", config)
    full = run_in_process(store, dataset, str(tiny_folder), "full", config)
    with store.session() as session:
        row = Deployment(name="stories", models=[{"name": "base", "ref": "base"}, {"name": "lora", "ref": str(lora)},
                                                 {"name": "full", "ref": f"{full}:4"}],
                         settings={"serve_batch_window_ms": 20, "serve_max_request_bytes": 4096})
        session.add(row)
        session.flush()
        deployment_id = row.id
    app = create_app(store, deployment_id)
    here = ServedHere(app)
    yield {"store": store, "url": here.url, "server": app.state.server, "id": deployment_id}
    here.stop()
    store.close()


@pytest.fixture
def client(served):
    return openai.OpenAI(base_url=served["url"] + "/v1", api_key="local", max_retries=0)  # no studio key


@pytest.fixture
def no_cache(served):
    """Every request runs the model (the cache would answer a seeded one asked again)."""
    cache = served["server"].cache
    before = cache.entries
    cache.entries = 0
    cache._items.clear()
    yield
    cache.entries = before


def post(served, path: str, body=None, **kwargs) -> httpx.Response:
    return httpx.post(served["url"] + path, json=body, timeout=60, **kwargs)


def rows_of(served, response_id: str) -> ServedRequest:
    with served["store"].session() as session:
        return session.scalar(select(ServedRequest).where(ServedRequest.response_id == response_id))


# ----------------------------------------------------------------------------- the OpenAI routes

def test_models_and_completions_with_the_openai_client(served, client):
    assert [m.id for m in client.models.list()] == ["base", "lora", "full"]
    first = client.completions.create(model="lora", prompt=PROMPT, max_tokens=8, n=2, seed=3, temperature=1.0)
    assert first.id.startswith("cmpl-") and first.object == "text_completion" and len(first.choices) == 2
    assert [c.index for c in first.choices] == [0, 1] and all(c.finish_reason in ("stop", "length")
                                                              for c in first.choices)
    assert first.choices[0].text != first.choices[1].text  # choice k uses seed + k
    assert 0 < first.usage.completion_tokens <= 16 and first.usage.prompt_tokens > 0
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    # each served model is its own: greedy, since a tiny model's near-even logits let one seed's noise pick the same
    # tokens whatever the weights
    texts = {name: client.completions.create(model=name, prompt=PROMPT, max_tokens=8, temperature=0).choices[0].text
             for name in ("lora", "base", "full")}
    assert texts["base"] != texts["lora"] and texts["base"] != texts["full"], texts
    alone = client.completions.create(model="lora", prompt=PROMPT, max_tokens=8, seed=4, temperature=1.0)
    assert alone.choices[0].text == first.choices[1].text  # choice 1 of seed 3 is seed 4's


def test_chat_streams_the_same_text_as_the_whole_answer(served, client, no_cache):
    ask = dict(model="full", messages=[{"role": "system", "content": "Tell a story."},
                                       {"role": "user", "content": "Mia"}], max_tokens=12, seed=11)
    whole = client.chat.completions.create(**ask)
    assert whole.id.startswith("chatcmpl-") and whole.choices[0].message.role == "assistant"
    chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1  # it really streamed, a token or so at a time
    assert "".join(pieces) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
        [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens and not chunks[-1].choices
    assert len({c.id for c in chunks}) == 1
    row = rows_of(served, whole.id)
    assert row.prompt == "Mia" and row.request["messages"][0]["content"] == "Tell a story."


def test_stop_strings_cut_the_text_and_say_stop(served, client, no_cache):
    ask = dict(model="base", prompt=PROMPT, max_tokens=16, seed=21, temperature=1.0)
    text = client.completions.create(**ask).choices[0].text
    at = next(i for i in range(2, len(text) - 2) if text.find(text[i:i + 2]) == i and text[i:i + 2].strip())
    cut = client.completions.create(**ask, stop=[text[at:at + 2], "never there"])
    assert (cut.choices[0].text, cut.choices[0].finish_reason) == (text[:at], "stop")
    streamed = "".join(c.choices[0].text for c in client.completions.create(**ask, stop=text[at:at + 2],
                                                                             stream=True))
    assert streamed == text[:at]


def test_a_burst_runs_in_few_batches_and_a_seed_gives_the_same_text_batched_or_alone(served, client, no_cache):
    server = served["server"]
    alone = client.completions.create(model="lora", prompt="Mia", max_tokens=10, seed=5, temperature=1.0)
    base_alone = client.completions.create(model="base", prompt="Mia", max_tokens=10, seed=5, temperature=1.0)
    window = server.batcher.window_s
    server.batcher.window_s = 1.0  # every request of the burst arrives within the window
    before = server.batcher.batches
    try:
        asks = [dict(model=model, prompt=prompt, max_tokens=10, seed=seed, temperature=1.0)
                for model in ("lora", "base") for prompt, seed in (("Mia", 5), (PROMPT, 6), ("Tom", 7), ("A", 8))]
        with concurrent.futures.ThreadPoolExecutor(len(asks)) as pool:
            found = list(pool.map(lambda ask: client.completions.create(**ask), asks))
    finally:
        server.batcher.window_s = window
    assert server.batcher.batches - before == 2  # one batch per served model, not one per request
    assert found[0].choices[0].text == alone.choices[0].text  # padded among others, the same text
    assert found[4].choices[0].text == base_alone.choices[0].text  # the base's own batch, its own text
    assert 'studio_serving_batches_total{model="lora"}' in httpx.get(served["url"] + "/metrics").text


def test_seeded_requests_are_answered_from_the_cache_and_unseeded_never(served):
    server = served["server"]
    ask = {"model": "lora", "prompt": "Tom", "max_tokens": 6, "seed": 42}
    first = post(served, "/v1/completions", ask)
    batches = server.batcher.batches
    again = post(served, "/v1/completions", ask)
    assert (first.headers["X-Cache"], again.headers["X-Cache"]) == ("miss", "hit")
    assert again.json()["cached"] is True and first.json()["cached"] is False
    assert again.json()["id"] != first.json()["id"]
    assert again.json()["choices"] == first.json()["choices"]
    assert server.batcher.batches == batches  # the model did not run
    assert rows_of(served, again.json()["id"]).cache_hit and not rows_of(served, first.json()["id"]).cache_hit
    unseeded = [post(served, "/v1/completions", {**ask, "seed": None}) for _ in range(2)]
    assert all("X-Cache" not in r.headers and r.json()["cached"] is False for r in unseeded)
    metrics = httpx.get(served["url"] + "/metrics").text
    assert 'studio_serving_cache_hits_total{model="lora",route="/v1/completions"} 1.0' in metrics


# ----------------------------------------------------------------------------- refusals

def test_errors_come_in_openais_shape_with_the_right_status(served, client):
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="nope", prompt="a")
    assert missing.value.code == "model_not_found" and "serves base, lora, full" in missing.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="base", prompt="a", temperature=9)
    assert bad.value.param == "temperature" and "between 0 and 2" in bad.value.message
    assert "input_value" not in bad.value.message and "pydantic" not in bad.value.message
    with pytest.raises(openai.BadRequestError) as role:
        client.chat.completions.create(model="base", messages=[{"role": "robot", "content": "hi"}])
    assert role.value.param == "messages.0.role"
    wrong_route = post(served, "/v1/images/generations", {"model": "base", "prompt": "a cat"})
    assert wrong_route.status_code == 400 and "/v1/completions" in wrong_route.json()["error"]["message"]
    not_json = httpx.post(served["url"] + "/v1/completions", content=b"{oops", timeout=30)
    assert not_json.status_code == 400 and set(not_json.json()["error"]) == {"message", "type", "param", "code"}
    big = post(served, "/v1/completions", {"model": "base", "prompt": "word " * 2000})
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: the limit holds on the bytes as they come
        yield b'{"model": "base", "prompt": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'
    streamed = httpx.post(served["url"] + "/v1/completions", content=chunks(), timeout=30)
    assert streamed.status_code == 413
    too_long = post(served, "/v1/completions", {"model": "base", "prompt": "a", "max_tokens": 4000})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "max_tokens"
    for response in (wrong_route, not_json, big, streamed):
        assert response.json()["id"] == response.headers["X-Request-Id"]
        assert rows_of(served, response.json()["id"]).status_code == response.status_code  # refusals are logged


def test_keys_open_it_from_anywhere_and_without_one_only_local_callers(served):
    store = served["store"]
    key = add_key(store, "editor-tools", actor="ana")
    assert key.startswith("gs-") and len(key) > 40
    listed = {k["name"]: k for k in list_keys(store)}["editor-tools"]
    assert listed["prefix"] == key[:8] and "key_hash" not in listed and key not in json.dumps(listed)
    with store.session() as session:
        assert session.scalar(select(ApiKey.key_hash).where(ApiKey.name == "editor-tools")) != key
    with pytest.raises(ApiKeyError, match="already a key named"):
        add_key(store, "editor-tools")
    ask = {"model": "base", "prompt": "a", "max_tokens": 2}
    remote = {"Host": "studio.example.com"}  # a DNS-rebound name pointing at this machine
    assert post(served, "/v1/completions", ask).status_code == 200  # local, no key
    refused = post(served, "/v1/completions", ask, headers=remote)
    assert refused.status_code == 401 and "Bearer" in refused.json()["error"]["message"]
    assert post(served, "/v1/completions", ask, headers={"Origin": "https://evil.example"}).status_code == 401
    assert post(served, "/v1/completions", ask, headers={"Origin": f"{served['url']}"}).status_code == 200
    assert httpx.get(served["url"] + "/metrics", headers=remote).status_code == 401
    opened = post(served, "/v1/completions", ask, headers={**remote, "Authorization": f"Bearer {key}"})
    assert opened.status_code == 200 and rows_of(served, opened.json()["id"]).key_name == "editor-tools"
    wrong = openai.OpenAI(base_url=served["url"] + "/v1", api_key="gs-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="wrong or has been revoked"):
        wrong.completions.create(**ask)
    revoke_key(store, "editor-tools", actor="ana")
    assert post(served, "/v1/completions", ask, headers={"Authorization": f"Bearer {key}"}).status_code == 401
    with pytest.raises(ApiKeyError, match="no key named"):
        revoke_key(store, "nobody")


def test_a_key_notes_its_last_use_to_the_minute_not_on_every_request(tmp_path):
    store = open_store(load_settings(home=tmp_path / "home"))
    key = add_key(store, "busy-client")

    def last_used():
        with store.session() as session:
            return session.scalar(select(ApiKey.last_used_at).where(ApiKey.name == "busy-client"))

    assert last_used() is None
    first = verify_key(store, key)["last_used_at"]
    noted = last_used()
    assert first is not None and noted is not None
    assert verify_key(store, key) is not None and last_used() == noted  # a second later: no write
    with store.session() as session:
        session.scalar(select(ApiKey).where(ApiKey.name == "busy-client")).last_used_at = noted - USE_NOTED_EVERY
    verify_key(store, key)
    assert last_used() > noted - USE_NOTED_EVERY  # a minute on: noted again
    assert verify_key(store, "gs-wrong") is None
    store.close()


def test_a_key_over_its_rate_gets_429_with_retry_after(served):
    key = add_key(served["store"], "tight", rate_per_minute=2)
    client = openai.OpenAI(base_url=served["url"] + "/v1", api_key=key, max_retries=0)
    for _ in range(2):
        client.completions.create(model="base", prompt="a", max_tokens=2)
    with pytest.raises(openai.RateLimitError) as limited:
        client.completions.create(model="base", prompt="a", max_tokens=2)
    assert int(limited.value.response.headers["Retry-After"]) >= 1
    assert limited.value.code == "rate_limit_exceeded"


def test_the_rate_window_slides_and_local_checks_need_loopback_host_and_origin():
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    key = {"name": "k", "rate_per_minute": None}
    limiter.check(key)
    now[0] = 30
    limiter.check(key)
    with pytest.raises(ApiError) as full:
        limiter.check(key)
    assert full.value.headers["Retry-After"] == "30"
    now[0] = 60.5  # the first request left the window
    limiter.check(key)
    assert is_local("127.0.0.1", "localhost:8000", None) and is_local("::1", "[::1]:8000", "http://127.0.0.1:8000")
    assert not is_local("10.0.0.5", "localhost:8000", None)
    assert not is_local("127.0.0.1", "attacker.example:8000", None)
    assert not is_local("127.0.0.1", "127.0.0.1:8000", "https://attacker.example")
    assert not is_local("127.0.0.1", "127.0.0.1:8000", "null")


def test_stable_length_holds_back_what_may_become_a_stop_string():
    assert stable_length("Once upon", ["pony"]) == len("Once u")  # "pon" may grow into "pony"
    assert stable_length("Once upon", []) == len("Once upon")
    assert stable_length("abc\ufffd", []) == 3  # half a character


# ----------------------------------------------------------------------------- the log, feedback, metrics, page

def test_requests_are_logged_masked_and_rated(served, client, no_cache):
    server = served["server"]
    first = client.completions.create(model="lora", prompt="Tom", max_tokens=12, seed=9, temperature=1.0)
    word = next(w for w in first.choices[0].text.split() if w.isalpha())
    blocklist = server.blocklist
    server.blocklist = Blocklist([word])
    try:
        masked = client.completions.create(model="lora", prompt="Tom", max_tokens=12, seed=9, temperature=1.0)
    finally:
        server.blocklist = blocklist
    assert "[blocked]" in masked.choices[0].text and word not in masked.choices[0].text.split()
    row = rows_of(served, masked.id)
    assert row.blocklist_hits >= 1 and row.outputs == [{"text": masked.choices[0].text}]
    assert (row.model, row.route, row.prompt, row.status_code, row.key_name) == \
        ("lora", "/v1/completions", "Tom", 200, None)
    assert row.tokens == masked.usage.completion_tokens and row.latency_ms > 0 and row.request["seed"] == 9
    rated = post(served, "/v1/feedback", {"id": first.id, "rating": "down", "comment": "flat <b>story</b>"})
    assert rated.status_code == 200 and rated.json()["rating"] == "down"
    row = rows_of(served, first.id)
    assert (row.rating, row.comment) == ("down", "flat <b>story</b>") and row.rated_at is not None
    assert post(served, "/v1/feedback", {"id": "cmpl-unknown", "rating": "up"}).status_code == 404
    bad = post(served, "/v1/feedback", {"id": first.id, "rating": "meh"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rating"


def test_metrics_count_requests_latency_tokens_and_the_queue(served, client):
    client.completions.create(model="full", prompt="a", max_tokens=3)
    post(served, "/v1/completions", {"model": "nope", "prompt": "a"})
    text = httpx.get(served["url"] + "/metrics").text
    assert 'studio_serving_requests_total{model="full",route="/v1/completions",status="200"}' in text
    assert 'studio_serving_requests_total{model="nope",route="/v1/completions",status="404"}' in text
    assert 'studio_serving_errors_total{model="nope",route="/v1/completions",type="invalid_request_error"}' in text
    assert 'studio_serving_request_seconds_bucket{le="0.5",model="full",route="/v1/completions"}' in text
    assert 'studio_serving_generated_tokens_total{model="full"}' in text
    assert "studio_serving_tokens_per_second" in text and "studio_serving_queue_length 0.0" in text


def test_the_try_it_page_escapes_what_it_shows(served):
    page = httpx.get(served["url"] + "/")
    assert page.status_code == 200 and '<option value="lora">lora</option>' in page.text
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    hostile = try_it_page(1, ['"><script>alert(1)</script>'], "</script><script>alert(2)")
    assert "<script>alert(1)" not in hostile and "</script><script>alert(2)" not in hostile


def test_an_int8_deployment_reports_weights_and_quality_before_and_after_and_still_answers(served):
    """The real quantisation (torchao int8) of every loaded model (the base with its adapters, the full checkpoint),
    the quality check before and after on the run's dataset, all of it in the deployment's report; and the
    quantised models still answer, the adapter still switched per request."""
    from fastapi.testclient import TestClient

    store = served["store"]
    with store.session() as session:
        models = session.get(Deployment, served["id"]).models
        row = Deployment(name="stories-int8", models=models, quantize="int8")
        session.add(row)
        session.flush()
        deployment_id = row.id
    app = create_app(store, deployment_id)
    try:
        with store.session() as session:
            report = session.get(Deployment, deployment_id).report
        weights, quality = report["quantize"], report["quality"]
        assert weights["mode"] == "int8" and weights["weight_bytes_after"] <= 0.7 * weights["weight_bytes_before"]
        assert quality["metric"] == "perplexity" and quality["rows"] > 0 and quality["dataset"]
        assert abs(quality["after"] - quality["before"]) <= 0.05 * quality["before"]  # int8 costs little
        with TestClient(app, client=("127.0.0.1", 5000), base_url="http://127.0.0.1") as http:
            texts = {name: http.post("/v1/completions", json={"model": name, "prompt": "Once", "max_tokens": 8,
                                                              "temperature": 0}).json()["choices"][0]["text"]
                     for name in ("lora", "full")}
        assert all(texts.values()), texts
    finally:
        app.state.server.close()


@pytest.mark.slow
def test_the_try_it_page_generates_and_records_a_thumb(served, browser_page):
    from playwright.sync_api import expect

    page = browser_page
    page.goto(served["url"] + "/")
    page.select_option("#model", "lora")
    page.fill("#prompt", "Tom <b>and</b> Mia")
    page.fill("#seed", "7")
    page.click("#go")
    page.wait_for_selector("#rate:not([hidden])", timeout=120_000)
    assert page.locator("#status").text_content() == ""
    page.fill("#comment", "nice")
    page.click("#up")
    expect(page.locator("#status")).to_have_text(re.compile("^thanks"), timeout=60_000)  # the page's CSP: no eval
    with served["store"].session() as session:
        row = session.scalar(select(ServedRequest).where(ServedRequest.rating.is_not(None),
                                                         ServedRequest.comment == "nice"))
    assert (row.model, row.route, row.prompt, row.rating) == ("lora", "/v1/chat/completions", "Tom <b>and</b> Mia",
                                                              "up")
    assert page.locator("#output").text_content() == row.outputs[0]["text"]  # shown as text, not HTML


def test_streamed_text_never_shows_part_of_a_blocked_phrase_and_never_takes_anything_back():
    from studio.generation.blocklist import Blocklist

    blocklist = Blocklist(["bad thing", "bad"])
    finished = "so very bad things, a badge and a bad thing."
    masked = blocklist.mask(finished)
    shown = [blocklist.settled(finished[:n]) for n in range(len(finished) + 1)]
    for before, now in zip(shown, shown[1:]):
        assert now.startswith(before) and masked.startswith(now)  # only ever grows, towards the masked text
    import re
    assert not any(re.search(r"\bbad\b", step) for step in shown)  # no step shows the word alone, nor half the phrase
    assert shown[-1] == masked  # the finished text ("." last) shows whole
    multi = Blocklist(["very bad thing"])
    assert multi.settled("it was very bad") == "it was "  # "very bad" may yet become the phrase
    assert multi.settled("it was very bad luck") == "it was very bad luck"
