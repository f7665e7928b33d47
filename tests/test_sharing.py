"""Model and dataset cards, and pushes to a local stand-in for the Hugging Face Hub (tests/hub_standin.py on
127.0.0.1; no network). The run is real: test_generation's tiny Llama fine-tuned with LoRA by the worker code."""

from __future__ import annotations

import getpass
import json
import math
import socket
from pathlib import Path

import pytest
from PIL import Image

from studio import cli
from studio.settings import load_settings
from studio.store import open_store
from studio.sharing.export import export_run
from hub_standin import HubStandIn, keep_the_client_local
from test_generation import lab  # noqa: F401 - the store with a tiny LoRA run (checkpoints at steps 2 and 4)
from test_text_backend import rows, tiny_folder  # noqa: F401 - module-scoped fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def hub(monkeypatch):
    keep_the_client_local(monkeypatch)
    with HubStandIn() as standin:
        yield standin


@pytest.fixture
def quick_votes(lab):  # noqa: F811
    """The lab's store, opened so that quick test votes count (no minimum decision time)."""
    store = open_store(load_settings(home=lab["home"], eval_min_decision_seconds=0))
    yield store
    store.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def rated_set(store, run: int) -> int:
    """A sample set of the base and the run's step 2, every pair voted by two raters."""
    from studio.evaluation.service import assigned_pairs, cast_vote
    from studio.generation.cache import ModelCache
    from studio.generation.service import generate_set

    set_id = generate_set(store, ["base", f"{run}:2"], ["Once upon a time", "Mia", "The dog"], seed=1,
                          settings={"max_new_tokens": 6}, cache=ModelCache(2**34))
    for rater in ("ana", "ben"):
        for pair in assigned_pairs(store, set_id, rater, limit=10):
            cast_vote(store, pair["pair_id"], rater, "a", set_id=set_id)
    return set_id


# ----------------------------------------------------------------------------- model cards

def test_model_card_metadata_names_a_hub_base_but_not_a_local_folder(tmp_path):
    from studio.sharing.card import model_card_data

    hub_base = model_card_data(modality="image", fmt="diffusers-lora", library="diffusers", method="lora",
                               base_model="stabilityai/sd-turbo", dataset="shapes", license="mit")
    assert hub_base.base_model == "stabilityai/sd-turbo" and hub_base.license == "mit"
    assert hub_base.tags == ["gen-studio", "text-to-image", "lora"] and hub_base.pipeline_tag == "text-to-image"
    assert model_card_data(modality="text", fmt="merged", library="transformers", method="lora",
                           base_model=str(tmp_path), dataset=None, license=None).base_model is None
    assert model_card_data(modality="text", fmt="merged", library="transformers", method="scratch",
                           base_model="HuggingFaceTB/SmolLM2-135M", dataset=None, license=None).base_model is None


def test_the_card_parses_and_holds_the_runs_real_numbers(lab, quick_votes, tmp_path):  # noqa: F811
    from huggingface_hub import ModelCard, metadata_load

    from studio.evaluation.metrics import MetricsParams, run_metrics
    from studio.evaluation.service import leaderboard
    from studio.training.runs import run_summary

    store, run = quick_votes, lab["run"]
    found = export_run(store, f"{run}:2", "peft", tmp_path / "before")
    card = (tmp_path / "before" / "README.md").read_text()
    assert f"studio eval metrics {run}:2" in card  # no metrics yet: how to compute them
    from studio.generation.variants import resolve_variants

    [variant] = resolve_variants(store, [f"{run}:2"])
    assert variant.base_ref not in card and f"path/to/{Path(variant.base_ref).name}" in card  # no local path leaks
    assert "No sample set with this run has been rated yet" in card
    assert "Augmentation: none (text is not augmented: swapping" in card  # what the training items went through
    assert "- Objective: supervised fine-tuning (`sft`)" in card
    assert found["card"] == str(tmp_path / "before" / "README.md")

    metrics = run_metrics(store, f"{run}:2", MetricsParams(max_items=8, prompts=2, samples=1, max_new_tokens=6))
    set_id = rated_set(store, run)
    export_run(store, f"{run}:2", "merged", tmp_path / "after", license="apache-2.0", actor="ana")
    path = tmp_path / "after" / "README.md"
    meta = metadata_load(path)
    assert meta["library_name"] == "transformers" and meta["license"] == "apache-2.0"
    assert {"gen-studio", "text-generation", "lora", "merged"} <= set(meta["tags"])
    assert meta["datasets"] == ["stories"] and "base_model" not in meta  # the base is a local folder
    assert ModelCard.load(path).data.license == "apache-2.0"
    default = metadata_load(tmp_path / "before" / "README.md")
    assert (default["license"], default["license_name"]) == ("other", "same-as-base-model")  # the default

    text = path.read_text()
    summary = run_summary(store, run, with_history=True)
    with Image.open(tmp_path / "after" / "loss.png") as image:
        assert image.format == "PNG" and image.size[0] > 100
        image.verify()
    assert "![Loss curve: train and validation](loss.png)" in text
    from studio.training.runs import checkpoints

    saved = next(c for c in checkpoints(store, run) if c["step"] == 2)
    assert f"this checkpoint is step 2 (validation loss {saved['val_loss']:.4f} when it was saved)" in text
    assert f"best {summary['val_loss']['best']:.4f}" in text and f"last {summary['train_loss']['last']:.4f}" in text
    version = lab["dataset"]
    listed = cli_json(lab, ["data", "list"])["datasets"]
    splits = next(d for d in listed if str(d["dataset_id"]) == version)["versions"][-1]["splits"]
    assert f"train {splits['train']}, validation {splits['validation']}, test {splits['test']}" in text
    from studio.data.service import get_version

    for step in get_version(store, version).report["steps"]:  # each cleaning step with what it removed / changed
        on = "on" if step["enabled"] else "off"
        assert f"| {step['label']} | {on} | {step['removed']} | {step['changed']} |" in text, step["label"]
    assert "learning_rate: 0.05" in text and "max_steps: 4" in text  # the training config as YAML
    perplexity = metrics["metrics"]["perplexity"]["value"]
    assert math.isfinite(perplexity) and f"| perplexity | {perplexity:.4f} |" in text
    board = leaderboard(store, set_id)
    assert f"Sample set {set_id}: {board['votes']} counted votes" in text and board["votes"] == 6
    mine = next(v for v in board["variants"] if v["variant"] == f"{run}:2")
    assert f"**{mine['label']}** | {mine['strength']:.2f} |" in text
    assert "by ana" in text
    from studio.store.audit import list_actions

    [last] = list_actions(store, limit=1)
    assert (last["actor"], last["action"], last["details"]["step"]) == ("ana", "run.export", 2)


def cli_json(lab, argv: list[str], capsys=None) -> dict:  # noqa: F811
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main([*argv, "--json", "--home", str(lab["home"])])
    found = json.loads(out.getvalue())
    found["_code"] = code
    return found


# ----------------------------------------------------------------------------- pushes

def test_export_push_uploads_the_folder_privately_with_the_token(lab, hub, tmp_path):  # noqa: F811
    out = tmp_path / "push"
    found = cli_json(lab, ["export", f"{lab['run']}:4", "--format", "peft", "--out", str(out), "--push", "ana/tiny",
                           "--token", "hf_secret", "--hub-endpoint", hub.url])
    assert found["_code"] == 0, found
    assert found["pushed"]["url"] == f"{hub.url}/ana/tiny" and found["pushed"]["private"] is True
    [created] = hub.received.repos
    assert (created["organization"], created["name"], created["visibility"]) == ("ana", "tiny", "private")
    assert set(hub.received.tokens) == {"hf_secret"}
    arrived = hub.received.files["models/ana/tiny"]
    assert set(arrived) == set(found["files"]) and {"README.md", "adapter_model.safetensors"} <= set(arrived)
    for name, content in arrived.items():
        assert content == (out / name).read_bytes(), name
    assert "models/ana/tiny/adapter_model.safetensors" in hub.received.lfs_paths  # weights through the LFS API
    assert "Run" in hub.received.commits[0]["summary"]
    from studio.store.audit import list_actions

    pushed, exported = list_actions(lab["store"], limit=2)
    assert (pushed["action"], pushed["target"], pushed["details"]["private"]) == ("hub.push", "hub:model/ana/tiny", True)
    assert pushed["actor"] == exported["actor"] == getpass.getuser()  # the CLI acts as the OS user
    assert (exported["action"], exported["target"], exported["details"]["format"]) == \
        ("run.export", f"run:{lab['run']}", "peft")


def test_public_dataset_push_sends_the_loader_files_and_a_dataset_card(lab, hub):  # noqa: F811
    from huggingface_hub import metadata_load

    found = cli_json(lab, ["data", "push", lab["dataset"], "--repo", "ana/stories", "--public", "--token", "hf_x",
                           "--license", "cc-by-4.0", "--hub-endpoint", hub.url])
    assert found["_code"] == 0, found
    assert found["url"] == f"{hub.url}/datasets/ana/stories" and found["private"] is False
    [created] = hub.received.repos
    assert (created["name"], created["visibility"], created["type"]) == ("stories", "public", "dataset")
    arrived = hub.received.files["datasets/ana/stories"]
    assert {"train.jsonl", "validation.jsonl", "test.jsonl", "README.md", ".studio/report.json"} <= set(arrived)
    card = arrived["README.md"].decode()
    report = json.loads(arrived[".studio/report.json"])
    assert all("changed_examples" not in step and all(set(e) == {"reason"} for e in step["examples"])
               for step in report["steps"])  # no item text leaves the machine through the report
    whitespace = next(step for step in report["steps"] if step["step"] == "whitespace")
    assert whitespace["changed"] >= 1  # the counts stay
    train_rows = arrived["train.jsonl"].decode().splitlines()
    assert len(train_rows) == report["splits"]["train"] and json.loads(train_rows[0])["text"]
    assert f"train {report['splits']['train']}, validation {report['splits']['validation']}" in card
    assert f"{report['items_kept']} of {report['items_in']} items kept" in card and "stories.txt" in card
    card_path = lab["root"] / "dataset_card.md"
    card_path.write_text(card)
    meta = metadata_load(card_path)
    assert meta["license"] == "cc-by-4.0" and "gen-studio" in meta["tags"]
    assert meta["task_categories"] == ["text-generation"]


@pytest.mark.parametrize("failure", ["401", "403", "closed port"])
def test_a_refused_or_unreachable_hub_says_why_and_keeps_the_export(lab, hub, tmp_path, failure, capsys):  # noqa: F811
    hub.mode = failure
    endpoint = hub.url if failure != "closed port" else f"http://127.0.0.1:{closed_port()}"
    out = tmp_path / "kept"
    code = cli.main(["export", f"{lab['run']}:4", "--format", "peft", "--out", str(out), "--push", "ana/tiny",
                     "--token", "hf_bad", "--hub-endpoint", endpoint, "--home", str(lab["home"])])
    error = capsys.readouterr().err
    assert code != 0 and f"the export is kept in {out}" in error
    if failure == "401":
        assert "did not accept the token (HTTP 401" in error and "settings/tokens" in error
    elif failure == "403":
        assert "may not write to 'ana/tiny' (HTTP 403: You don't have the rights" in error and "write access" in error
    else:
        assert "could not be reached" in error and "Check the network connection" in error
    assert (out / "adapter_model.safetensors").is_file() and (out / "README.md").is_file()


def test_push_refuses_a_bad_repo_id_or_no_token_before_any_request(lab, hub, tmp_path, monkeypatch):  # noqa: F811
    from huggingface_hub import constants

    from studio.sharing.hub import PushError, push_folder

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    store = open_store(load_settings(home=lab["home"], hub_endpoint=hub.url))
    try:
        with pytest.raises(PushError, match="not a Hub repository id: use OWNER/NAME"):
            push_folder(store, tmp_path, "no slash", token="hf_x")
        with pytest.raises(PushError, match=f"no Hugging Face token.*kept in {tmp_path}"):
            push_folder(store, tmp_path, "ana/tiny")
    finally:
        store.close()
    assert hub.received.paths == []


def test_the_token_and_address_fall_back_to_hf_token_and_hf_endpoint(lab, hub, tmp_path, monkeypatch):  # noqa: F811
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)  # what HF_ENDPOINT sets when huggingface_hub is imported
    found = cli_json(lab, ["export", f"{lab['run']}:2", "--format", "peft", "--out", str(tmp_path / "env"),
                           "--push", "ana/from-env"])
    assert found["_code"] == 0 and found["pushed"]["url"] == f"{hub.url}/ana/from-env"
    assert set(hub.received.tokens) == {"hf_from_env"}, list(zip(hub.received.paths, hub.received.tokens))
