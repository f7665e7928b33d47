"""The web process's guards against crafted requests: a request hands the studio only files uploaded through its
page (never a path on the server); the rating page takes no files and serves none of the editors' uploads; Gradio's
old uploads are deleted; the studio answers only to its own host names, and only to its own pages."""

from __future__ import annotations

import json
import re
import time
from types import SimpleNamespace

import httpx
import pytest

from conftest import StudioProcess
from studio.auth import write_user
from studio.data.service import list_datasets
from studio.settings import Settings, load_settings
from studio.store import open_store
from test_evaluation import fake_run, make_set
from test_sign_in import PASSWORDS, signed_in

pytestmark = pytest.mark.slow  # browser walkthroughs, studio processes: -m "not slow" leaves them out

FILE_META = {"_type": "gradio.FileData"}


def file_data(path) -> dict:
    """How a request names a file: what Gradio's page sends for an upload, here with any path at all."""
    return {"path": str(path), "meta": FILE_META}


def call(client: httpx.Client, api_name: str, data: list, prefix: str = "") -> tuple[str, object]:
    """One Gradio API call: ("complete", the outputs) or ("error", {"error": message, ...})."""
    started = client.post(f"{prefix}/gradio_api/call/{api_name}", json={"data": data})
    assert started.status_code == 200, started.text
    stream = client.get(f"{prefix}/gradio_api/call/{api_name}/{started.json()['event_id']}").text
    event, payload = re.findall(r"^event: (\w+)\ndata: (.*)$", stream, re.M)[-1]
    return event, json.loads(payload)


def inputs(client: httpx.Client, api_name: str, **values) -> list:
    """The endpoint's inputs as the page starts them, with ``values`` by position (``at0=...``)."""
    config = client.get("/config").json()
    [dependency] = [d for d in config["dependencies"] if d.get("api_name") == api_name]
    props = {c["id"]: c.get("props", {}) for c in config["components"]}
    data = [props[i].get("value") for i in dependency["inputs"]]
    for key, value in values.items():
        data[int(key[2:])] = value
    return data


def files_in(value) -> list[dict]:
    """Every file object in an API answer."""
    if isinstance(value, dict):
        return [value] if isinstance(value.get("path"), str) and "meta" in value else \
            [found for item in value.values() for found in files_in(item)]
    if isinstance(value, list):
        return [found for item in value for found in files_in(item)]
    return []


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A studio with sign-in on, its users file beside STUDIO_HOME, a private file beside it too, an image sample
    set to rate, its own Gradio upload folder, and one extra host name (studio.example)."""
    root = tmp_path_factory.mktemp("guarded")
    home, uploads, users = root / "home", root / "gradio", root / "users.txt"
    for name, role in (("eda", "editor"), ("rita", "rater")):
        write_user(users, name, role, PASSWORDS[name])
    notes = root / "notes.csv"
    notes.write_text("text\nthe neighbour's private notes\n")
    store = open_store(load_settings(home=home))
    fake_run(store)
    set_id = make_set(store, variants=("base", "7:2"), prompts=2, media=True)
    store.close()
    studio = StudioProcess(root / "studio.log", home, STUDIO_USERS=str(users), GRADIO_TEMP_DIR=str(uploads),
                           STUDIO_ALLOWED_HOSTS="studio.example")
    url = studio.wait_until_up()
    yield SimpleNamespace(url=url, root=root, home=home, uploads=uploads, users=users, notes=notes, set_id=set_id)
    studio.stop()


def test_a_crafted_call_naming_a_server_file_is_refused_and_nothing_is_read(guarded):
    editor = signed_in(guarded.url, "eda")
    guarded.uploads.mkdir(exist_ok=True)
    planted = guarded.uploads / "planted"
    planted.mkdir()
    (planted / "link.csv").symlink_to(guarded.notes)  # inside the upload folder, pointing out of it
    targets = ["/etc/passwd", guarded.users, guarded.notes, f"{guarded.uploads}/../notes.csv", planted / "link.csv"]
    for target in targets:
        for api_name, data in (("on_files", [[file_data(target)]]),
                               ("on_import", inputs(editor, "on_import", at0=[file_data(target)], at2="leak"))):
            event, answer = call(editor, api_name, data)
            assert event == "error", (api_name, target, answer)
            assert f"Refused {target}" in answer["error"] and "only takes files uploaded" in answer["error"]
    event, answer = call(editor, "on_example", ["/etc/passwd"])  # the example picker offers its examples only
    assert event == "error" and "not in the list of choices" in answer["error"]
    # nothing was imported, and Gradio copied none of them into its upload folder (the copy is what a handler reads)
    store = open_store(load_settings(home=guarded.home))
    try:
        assert "leak" not in [dataset["name"] for dataset in list_datasets(store)]
    finally:
        store.close()
    copied = [p for p in guarded.uploads.rglob("*") if p.name in ("passwd", "users.txt", "notes.csv", "link.csv")
              and not p.is_symlink()]
    assert copied == []


def test_raters_upload_nothing_and_never_reach_an_editors_upload(guarded):
    rater, editor = signed_in(guarded.url, "rita"), signed_in(guarded.url, "eda")
    refused = rater.post("/rate/gradio_api/upload", files={"files": ("rater-note.txt", b"a rater's file")})
    assert refused.status_code == 403 and "takes no files" in refused.json()["error"]
    assert not [p for root in (guarded.uploads, guarded.home) for p in root.rglob("rater-note.txt")]
    [uploaded] = editor.post("/gradio_api/upload", files={"files": ("draft.txt", b"an editor's draft")}).json()
    assert editor.get(f"/gradio_api/file={uploaded}").status_code == 200
    assert rater.get(f"/rate/gradio_api/file={uploaded}").status_code == 403
    # and the rating page's handlers take no file, not even an upload
    for name in (uploaded, "/etc/passwd"):
        event, answer = call(rater, "on_start", [file_data(name), guarded.set_id, "pairwise"], prefix="/rate")
        assert event == "error" and "this page takes no files" in answer["error"]


def test_raters_see_the_blind_copies_as_they_are(guarded):
    rater = signed_in(guarded.url, "rita")
    event, answer = call(rater, "on_start", ["rita", guarded.set_id, "pairwise"], prefix="/rate")
    assert event == "complete", answer
    shown = files_in(answer)
    assert len(shown) == 2  # A and B
    blind = (guarded.home / "blind").resolve()
    for found in shown:
        assert found["path"].startswith(str(blind) + "/")  # served from the blind folder, not copied elsewhere
        assert rater.get(f"/rate/gradio_api/file={found['path']}").status_code == 200


def test_the_studio_answers_only_its_own_host_names_and_pages(guarded):
    anybody = httpx.Client(base_url=guarded.url, timeout=30)
    rebound = anybody.get("/", headers={"host": "evil.example:7860", "accept": "text/html"})
    assert rebound.status_code == 400 and "STUDIO_ALLOWED_HOSTS" in rebound.json()["error"]
    assert "evil.example" in rebound.json()["error"]
    assert anybody.get("/health", headers={"host": "10.0.0.7:7860"}).status_code == 200  # probes use addresses
    editor = signed_in(guarded.url, "eda")
    named = {"host": "studio.example"}
    assert editor.get("/config", headers=named).status_code == 200
    assert editor.get("/config", headers={**named, "origin": "http://studio.example"}).status_code == 200
    own = guarded.url  # the page's own origin, as a browser sends it
    assert editor.post("/gradio_api/upload", headers={"origin": own}, files={"files": ("a.txt", b"x")}).status_code \
        == 200
    foreign = {**named, "origin": "http://evil.example"}
    for answer in (editor.get("/config", headers=foreign),
                   editor.post("/gradio_api/queue/join", headers=foreign, json={"fn_index": 0, "data": []}),
                   editor.options("/gradio_api/queue/join",
                                  headers={**foreign, "access-control-request-method": "POST"}),
                   editor.post("/gradio_api/upload", headers={"origin": "null"}, files={"files": ("b.txt", b"x")})):
        assert answer.status_code == 403, answer.text
        assert "access-control-allow-origin" not in answer.headers
        assert "another site's page" in answer.json()["error"]


def test_host_names_are_loopback_the_bind_address_the_setting_and_the_space(monkeypatch):
    from studio.ui.server import _listed

    monkeypatch.setenv("SPACE_HOST", "owner-studio.hf.space,studio.owner.org")
    names = Settings(host="0.0.0.0", allowed_hosts="Lab.example, *.team.example").host_names
    assert names == ["localhost", "127.0.0.1", "::1", "0.0.0.0", "lab.example", "*.team.example",
                     "owner-studio.hf.space", "studio.owner.org"]
    assert _listed("gpu.team.example", names) and not _listed("team.example.evil.org", names)
    assert not _listed("evil.example", names) and _listed("anything", ["*"])


def test_old_uploads_are_deleted(tmp_path, web_home):
    uploads = tmp_path / "gradio"
    studio = StudioProcess(tmp_path / "studio.log", web_home, GRADIO_TEMP_DIR=str(uploads),
                           STUDIO_UPLOAD_KEEP_HOURS="0.0005")  # 1.8 s
    try:
        client = httpx.Client(base_url=studio.wait_until_up(), timeout=30)
        [uploaded] = client.post("/gradio_api/upload", files={"files": ("old.txt", b"yesterday's file")}).json()
        deadline = time.time() + 60
        while time.time() < deadline and (uploads / uploaded).exists():
            time.sleep(0.2)
        assert not (uploads / uploaded).exists()
    finally:
        studio.stop()


def test_an_upload_and_the_example_dataset_still_import(running_studio):
    client = httpx.Client(base_url=running_studio, timeout=120)
    corpus = "\n\n".join(f"The {a} fox met the {b} hen by the river." for a in ("red", "old", "quick", "lazy")
                         for b in ("white", "brown", "tiny"))
    [uploaded] = client.post("/gradio_api/upload", files={"files": ("tales.txt", corpus.encode())}).json()
    event, answer = call(client, "on_import", inputs(client, "on_import", at0=[file_data(uploaded)], at2="tales"))
    assert event == "complete" and "items kept" in answer[0], answer
    # the example picker puts a file of assets/examples into the upload field; importing it works
    [picker] = [c for c in client.get("/config").json()["components"]
                if c.get("props", {}).get("elem_id") == "data-example"]
    event, answer = call(client, "on_example", [picker["props"]["choices"][0][1]])
    assert event == "complete", answer
    [picked] = files_in(answer)
    event, answer = call(client, "on_import", inputs(client, "on_import", at0=[picked], at2="example"))
    assert event == "complete" and "items kept" in answer[0], answer
