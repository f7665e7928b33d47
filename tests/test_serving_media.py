"""The image and audio routes of a deployment: the tiny Stable Diffusion pipeline behind /v1/images/generations and
the tiny MusicGen behind /v1/audio/speech, each deployed as a base model (the deployment's ``base_model``
setting) and called with the official ``openai`` client."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
from PIL import Image

from conftest import ServedHere
from studio.serving.app import create_app
from studio.settings import load_settings
from studio.store import open_store
from studio.store.tables import Deployment, ServedRequest
from test_image_backend import tiny_pipeline  # noqa: F401 - a module-scoped fixture
from test_musicgen import tiny_folder as tiny_musicgen  # noqa: F401 - a module-scoped fixture ("tiny_folder")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def deploy(tmp_path, name: str, folder) -> tuple:
    store = open_store(load_settings(home=tmp_path / "home"))
    with store.session() as session:
        row = Deployment(name=name, models=[{"name": name, "ref": "base"}], settings={"base_model": str(folder)})
        session.add(row)
        session.flush()
        deployment_id = row.id
    app = create_app(store, deployment_id)
    return store, ServedHere(app)


def test_images_come_back_as_base64_pngs_of_the_size_asked(tmp_path, tiny_pipeline):  # noqa: F811
    store, here = deploy(tmp_path, "sd", tiny_pipeline)
    try:
        client = openai.OpenAI(base_url=here.url + "/v1", api_key="local", max_retries=0)
        ask = dict(model="sd", prompt="a red circle", n=2, size="16x24", response_format="b64_json",
                   extra_body={"seed": 3, "steps": 2})
        found = client.images.generate(**ask)
        pictures = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in found.data]
        assert [(p.format, p.size) for p in pictures] == [("PNG", (16, 24))] * 2
        assert not np.array_equal(np.asarray(pictures[0]), np.asarray(pictures[1]))  # seeds 3 and 4
        again = client.images.generate(**ask)  # the same seed: from the cache
        assert [d.b64_json for d in again.data] == [d.b64_json for d in found.data]
        with store.session() as session:
            row = session.query(ServedRequest).filter_by(status_code=200).first()
            assert all(store.path(o["path"]).is_file() and o["path"].startswith("deployments/")
                       for o in row.outputs)
        with pytest.raises(openai.BadRequestError, match="b64_json"):
            client.images.generate(model="sd", prompt="a", response_format="url")
        with pytest.raises(openai.BadRequestError, match="multiple of 2") as odd:
            client.images.generate(model="sd", prompt="a", size="15x16")
        assert odd.value.param == "size"
        with pytest.raises(openai.BadRequestError, match="/v1/images/generations"):
            client.completions.create(model="sd", prompt="a")
    finally:
        here.stop()
        store.close()


def test_speech_comes_back_as_wav_bytes(tmp_path, tiny_musicgen):  # noqa: F811
    store, here = deploy(tmp_path, "music", tiny_musicgen)
    try:
        client = openai.OpenAI(base_url=here.url + "/v1", api_key="local", max_retries=0)
        spoken = client.audio.speech.create(model="music", input="a calm sine", voice="alloy",
                                            response_format="wav", extra_body={"seed": 5, "seconds": 0.5})
        wave, rate = sf.read(io.BytesIO(spoken.content))
        assert rate > 0 and len(wave) > 0 and spoken.response.headers["X-Request-Id"].startswith("speech-")
        refused = httpx.post(here.url + "/v1/audio/speech", json={"model": "music", "input": "a", "response_format":
                                                                   "mp3"}, timeout=60)
        assert refused.status_code == 400 and "only 'wav'" in refused.json()["error"]["message"]
        rated = httpx.post(here.url + "/v1/feedback", json={"id": spoken.response.headers["X-Request-Id"],
                                                             "rating": "up"}, timeout=60)
        assert rated.status_code == 200
    finally:
        here.stop()
        store.close()
