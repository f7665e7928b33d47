"""Preference data (issue 14): a rated sample set becomes a dataset version of pairs; preference files (text
tables, TRL's conversational forms, media folders) and thumbs up/down import as the rows of
studio.data.preferences; cleaning keeps a pair whole. Tiny real sample sets, real votes, real files."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from studio.data.items import ImportRefused
from studio.data.preferences import EXAMPLE, PAIR, THUMBS, thumb
from studio.data.service import describe_source, get_version, import_dataset, list_datasets, read_manifest
from studio.evaluation.service import (EvaluationError, cast_vote, next_pair, preference_dataset,
                                       preference_summary)
from studio.store.audit import list_actions

from media_factory import circle, digest, make_zip, manifest, save, tone, truncate, write, write_audio
from test_evaluation import long_ago, make_set, variant_of

NO_STEPS = {"length": {"enabled": False}}


def vote_by_prompt(store, set_id: int, rater: str, choices: dict[int, str], fast: bool = False) -> None:
    """``rater`` decides each pair shown by its prompt number: ``choices[i]`` is the variant preferred, or tie /
    both_bad / skip (prompts not in ``choices`` are skipped). ``fast``: decided at once (flagged)."""
    while (shown := next_pair(store, set_id, rater)) is not None:
        wanted = choices.get(int(shown["prompt"].split()[-1]), "skip")
        sides = {variant_of(shown["a"]): "a", variant_of(shown["b"]): "b"}
        cast_vote(store, shown["pair_id"], rater, sides.get(wanted, wanted),
                  shown_at=None if fast else long_ago())


def vote_left(store, set_id: int) -> dict[str, tuple[str, str]]:
    """One rater prefers the left sample of every pair; returns, per prompt, the digests of the files shown
    (left, right): the chosen and the rejected one."""
    shown_files = {}
    while (shown := next_pair(store, set_id, "ann")) is not None:
        cast_vote(store, shown["pair_id"], "ann", "a", shown_at=long_ago())
        shown_files[shown["prompt"]] = digest(shown["a"]["path"]), digest(shown["b"]["path"])
    return shown_files


@pytest.fixture
def rated(stores):
    """A text set (base against 7:2, one pair per prompt) whose votes give each reason: prompts 0-2 prefer 7:2
    (prompt 0 by two raters), 3 a tie, 4 both bad, 5 split one against one, 6 only a flagged (fast) vote."""
    store = stores(eval_min_decision_seconds=1.5, eval_repeat_share=0)
    set_id = make_set(store, variants=("base", "7:2"), prompts=7)
    vote_by_prompt(store, set_id, "ann", {0: "7:2", 1: "7:2", 2: "7:2", 3: "tie", 4: "both_bad", 5: "7:2"})
    vote_by_prompt(store, set_id, "bob", {0: "7:2", 5: "base"})
    vote_by_prompt(store, set_id, "carl", {6: "7:2"}, fast=True)
    return store, set_id


def test_a_rated_set_becomes_a_version_of_pairs_naming_its_votes(rated):
    store, set_id = rated
    summary = preference_summary(store, set_id)
    assert summary["pairs"] == 3 and summary["votes"] == 4 and summary["message"] is None
    assert summary["removed"] == {"tie": 1, "both_bad": 1, "no_majority": 1, "flagged": 1}
    assert summary["winner"]["variant"] == "7:2" and summary["winner"]["start"] == "7:2"
    assert list_datasets(store) == []  # the summary writes nothing

    result = preference_dataset(store, set_id, actor="ann")
    assert result["name"] == f"votes-set-{set_id}" and result["version"] == 1 and result["items_kept"] == 3
    assert result["removed"] == {"tie": 1, "both_bad": 1, "no_majority": 1, "flagged": 1}
    assert result["items_in"] == 7 and result["splits"] == {"train": 3, "validation": 0, "test": 0}
    rows = manifest(store, result)
    assert {(r["prompt"], r["response"], r["rejected"]) for r in rows} == \
        {(f"prompt number {i}", f"7:2|{i}|0", f"base|{i}|0") for i in range(3)}

    version = get_version(store, f"{result['dataset_id']}:1")
    assert version.source == {"sample_set": set_id, "set_name": None, "votes": 4, "raters": 2, "pairs": 3,
                              "include_flagged": False}
    assert version.report["stats"]["kinds"] == {EXAMPLE: 0, PAIR: 3, THUMBS: 0}
    assert "the votes of sample set" in describe_source(version.source)
    action = list_actions(store)[0]
    assert action["action"] == "dataset.from_votes" and action["actor"] == "ann"
    assert action["details"]["source"]["votes"] == 4

    with_flagged = preference_dataset(store, set_id, include_flagged=True)
    assert with_flagged["version"] == 2 and with_flagged["items_kept"] == 4 and "flagged" not in with_flagged["removed"]
    listed = list_datasets(store)[0]["versions"]
    assert [v["kinds"][PAIR] for v in listed] == [3, 4]


def test_a_set_with_no_usable_pair_is_refused_saying_why(stores):
    store = stores(eval_min_decision_seconds=1.5, eval_repeat_share=0)
    set_id = make_set(store, variants=("base", "7:2"), prompts=4)
    with pytest.raises(EvaluationError, match="no rated pair yet"):
        preference_dataset(store, set_id)
    assert preference_summary(store, set_id)["winner"] is None
    vote_by_prompt(store, set_id, "ann", {0: "tie", 1: "tie", 2: "tie"})
    vote_by_prompt(store, set_id, "bob", {3: "base"}, fast=True)
    with pytest.raises(EvaluationError, match=r"no usable preference pair \(3 ties, 1 flagged\)"):
        preference_dataset(store, set_id)
    assert preference_summary(store, set_id)["message"].endswith("(3 ties, 1 flagged)")
    assert list_datasets(store) == [] and not any(a["action"] == "dataset.from_votes" for a in list_actions(store))
    with pytest.raises(EvaluationError, match="no sample set 99"):
        preference_dataset(store, 99)


def test_an_image_set_gives_pairs_of_copied_files_that_outlive_the_set(stores):
    from studio.generation.service import delete_set

    store = stores(eval_min_decision_seconds=0, eval_repeat_share=0)
    set_id = make_set(store, variants=("base", "7:2"), prompts=3, media=True)
    colours = {"base": "red", "7:2": "blue"}
    for sample in (store.home / "samples" / str(set_id)).rglob("*.png"):
        variant = "base" if sample.parent.name == "base" else "7:2"
        marker = sample.read_bytes().decode()  # make_set's stand-in bytes name the variant: keep a real image
        save(circle(64 + int(marker.split()[1]), colours[variant]), sample)
    shown_paths = vote_left(store, set_id)
    # one sample's file is gone before the conversion: its pair is left out and counted
    gone = next((store.home / "samples" / str(set_id) / "base").glob("p002*"))
    gone.unlink()
    result = preference_dataset(store, set_id)
    assert result["modality"] == "image" and result["items_kept"] == 2 and result["removed"] == {"missing_sample": 1}
    rows = manifest(store, result)
    folder = store.path(f"datasets/{result['dataset_id']}/v1")
    for row in rows:
        assert set(row) >= {"caption", "file", "rejected_file"} and row["caption"].startswith("prompt number")
        assert (digest(folder / row["file"]), digest(folder / row["rejected_file"])) == shown_paths[row["caption"]]
    delete_set(store, set_id)
    assert all((folder / row["file"]).is_file() and (folder / row["rejected_file"]).is_file() for row in rows)
    assert get_version(store, str(result["dataset_id"])).report["stats"]["kinds"][PAIR] == 2


def test_an_audio_set_gives_pairs_of_clips(stores):
    from studio.store.projects import ensure_project
    from studio.store.tables import SampleSet

    store = stores(eval_min_decision_seconds=0, eval_repeat_share=0)
    set_id = make_set(store, variants=("base", "7:2"), prompts=2, audio_seconds=0.5)
    with store.session() as session:  # the set belongs to a project: the dataset lands there
        session.get(SampleSet, set_id).project_id = ensure_project(session, "sounds", None).id
    vote_left(store, set_id)
    result = preference_dataset(store, set_id, name="liked clips")
    rows = manifest(store, result)
    assert result["name"] == "liked clips" and len(rows) == 2
    assert list_datasets(store)[0]["project"] == "sounds"
    assert all(row["file"].endswith(".wav") and row["rejected_file"].endswith(".wav") for row in rows)


# ------------------------------------------------------------------------------------------- preference files


def test_text_preference_tables_import_as_pairs_and_a_row_without_an_answer_is_named(stores, tmp_path):
    store = stores()
    rows = [{"prompt": f"question {i}?", "chosen": f"a good answer {i}", "rejected": f"a poor answer {i}"}
            for i in range(4)]
    write(tmp_path / "p.jsonl", "".join(json.dumps(r) + "\n" for r in rows)
          + json.dumps({"prompt": "question 9?", "chosen": "an answer"}) + "\n")
    pd.DataFrame(rows + [{"prompt": "question 8?", "chosen": "", "rejected": "no"}]).to_csv(tmp_path / "p.csv",
                                                                                          index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "p.parquet")
    for name in ("p.jsonl", "p.csv", "p.parquet"):
        result = import_dataset(store, [tmp_path / name], name=name, split="1,0,0", steps=NO_STEPS)
        got = manifest(store, result)
        assert [(r["prompt"], r["response"], r["rejected"]) for r in got] == \
            [(r["prompt"], r["chosen"], r["rejected"]) for r in rows], name
    def warnings(name: str) -> dict[str, str]:
        return {w["file"]: w["reason"] for w in import_dataset(store, [tmp_path / name], split="1,0,0")["warnings"]}

    assert "rejected answer is missing or empty" in warnings("p.jsonl")["p.jsonl#5"]
    assert "chosen answer is missing or empty" in warnings("p.csv")["p.csv#5"]
    assert list_datasets(store)[0]["versions"][0]["kinds"] == {EXAMPLE: 0, PAIR: 4, THUMBS: 0}


def test_trl_conversational_preferences_become_messages_and_a_rejected_turn(stores, tmp_path):
    store = stores()
    user = {"role": "user", "content": "What colour is the sky?"}
    good, bad = {"role": "assistant", "content": "Blue."}, {"role": "assistant", "content": "Green."}
    implicit = [{"chosen": [user, good], "rejected": [user, bad]},
                {"chosen": [user, good], "rejected": [{"role": "user", "content": "Another question"}, bad]}]
    explicit = [{"prompt": [user], "chosen": [good], "rejected": [bad]}]
    write(tmp_path / "implicit.jsonl", "".join(json.dumps(r) + "\n" for r in implicit))
    write(tmp_path / "explicit.jsonl", "".join(json.dumps(r) + "\n" for r in explicit))
    pd.DataFrame(explicit).to_parquet(tmp_path / "explicit.parquet")
    for name in ("implicit.jsonl", "explicit.jsonl", "explicit.parquet"):
        result = import_dataset(store, [tmp_path / name], name=name, split="1,0,0")
        assert [(r["messages"], r["rejected"]) for r in manifest(store, result)] == [([user, good], "Green.")], name
    warnings = import_dataset(store, [tmp_path / "implicit.jsonl"], split="1,0,0")["warnings"]
    assert warnings[0]["file"] == "implicit.jsonl#2" and "do not share the prompt" in warnings[0]["reason"]


def _pair_folder(tmp_path):
    folder = tmp_path / "pairs"
    for i, colour in enumerate(("red", "green", "blue")):
        save(circle(96, colour), folder / f"good{i}.png")
        save(circle(96, colour, background="black"), folder / f"bad{i}.png")
    truncate(folder / "bad2.png")
    lines = [{"caption": f"a circle {i}", "chosen": f"good{i}.png", "rejected": f"bad{i}.png"} for i in range(3)]
    lines.append({"prompt": "a missing one", "chosen": "good0.png", "rejected": "nowhere.png"})
    write(folder / "metadata.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    return folder


def test_a_media_folder_of_pairs_imports_both_files_checked(stores, tmp_path):
    store = stores()
    folder = _pair_folder(tmp_path)
    result = import_dataset(store, [folder], name="pairs", split="1,0,0")
    rows = manifest(store, result)
    assert [r["caption"] for r in rows] == ["a circle 0", "a circle 1"] and result["items_kept"] == 2
    stored = store.path(f"datasets/{result['dataset_id']}/v1")
    assert all((stored / r["file"]).is_file() and (stored / r["rejected_file"]).is_file() for r in rows)
    errors = {e["file"]: e["reason"] for e in result["errors"]}
    assert errors["pairs/metadata.jsonl#4"] == "rejected file 'pairs/nowhere.png' not found"
    assert errors["pairs/metadata.jsonl#3"] == "rejected file 'pairs/bad2.png' is unusable"
    assert "truncated" in errors["pairs/bad2.png"] or "unreadable" in errors["pairs/bad2.png"]

    zipped = make_zip(tmp_path / "pairs.zip", {p.name: p for p in folder.iterdir()})
    assert import_dataset(store, [zipped], split="1,0,0")["items_kept"] == 2


def test_audio_pairs_and_thumbs_from_metadata(stores, tmp_path):
    store = stores()
    folder = tmp_path / "clips"
    for name in ("a", "b", "c"):
        write_audio(folder / f"{name}.wav", tone(freq=220 * (ord(name) - 96), seconds=1.0))
    write(folder / "metadata.csv",
          "file_name,caption,label\na.wav,a low hum,👍\nb.wav,a hum,down\nc.wav,a high hum,maybe\n")
    result = import_dataset(store, [folder], split="1,0,0")
    rows = manifest(store, result)
    assert [(r["caption"], r["label"]) for r in rows] == [("a low hum", True), ("a hum", False)]
    assert {w["file"]: w["reason"] for w in result["warnings"]}["clips/metadata.csv#3"].startswith(
        "row skipped: label 'maybe' is not a thumbs up or down")


def test_thumbs_are_read_generously_for_text(stores, tmp_path):
    assert [thumb(v) for v in (True, "true", "1", 1, "Up", "👍", "yes")] == [True] * 7
    assert [thumb(v) for v in (False, "False", "0", 0, "down", "👎", "no")] == [False] * 7
    with pytest.raises(ValueError, match="not a thumbs up or down"):
        thumb("perhaps")
    store = stores()
    lines = [{"prompt": "2+2?", "completion": "4", "label": "👍"}, {"prompt": "2+2?", "completion": "5", "label": 0},
             {"prompt": "3+3?", "completion": "6", "label": "sure"}]
    write(tmp_path / "kto.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    result = import_dataset(store, [tmp_path / "kto.jsonl"], split="1,0,0", steps=NO_STEPS)
    assert [(r["response"], r["label"]) for r in manifest(store, result)] == [("4", True), ("5", False)]
    assert result["warnings"][0]["file"] == "kto.jsonl#3"
    assert list_datasets(store)[0]["versions"][0]["kinds"] == {EXAMPLE: 0, PAIR: 0, THUMBS: 2}


# ------------------------------------------------------------------------------------- cleaning keeps pairs whole


def test_text_cleaning_acts_on_a_pair_as_one_item(stores, tmp_path):
    store = stores()
    rows = [{"prompt": "q", "chosen": "the same answer", "rejected": "a wrong  answer "},
            {"prompt": "q", "chosen": "the same answer", "rejected": "another wrong answer"},  # only rejected differs
            {"prompt": "q", "chosen": "the same answer", "rejected": "a wrong answer"}]  # a repeat once tidied
    write(tmp_path / "p.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    result = import_dataset(store, [tmp_path / "p.jsonl"], split="1,0,0", steps=NO_STEPS)
    kept = manifest(store, result)
    assert [(r["response"], r["rejected"]) for r in kept] == [("the same answer", "a wrong answer"),
                                                              ("the same answer", "another wrong answer")]
    report = {e["step"]: e for e in get_version(store, str(result["dataset_id"])).report["steps"]}
    assert report["exact_duplicates"]["removed"] == report["exact_duplicates"]["pairs_removed"] == 1


def test_media_cleaning_checks_the_rejected_file_and_keeps_pairs_whole(stores, tmp_path):
    store = stores()
    folder = tmp_path / "pairs"
    save(circle(96, "red"), folder / "red.png")
    save(circle(96, "blue"), folder / "blue.png")
    save(circle(96, "green"), folder / "green.png")
    save(circle(16, "blue"), folder / "tiny.png")
    lines = [{"caption": "red over blue", "chosen": "red.png", "rejected": "blue.png"},
             {"caption": "red over green", "chosen": "red.png", "rejected": "green.png"},  # same chosen: kept
             {"caption": "red over blue again", "chosen": "red.png", "rejected": "blue.png"},  # both repeat: removed
             {"caption": "green over a tiny one", "chosen": "green.png", "rejected": "tiny.png"}]  # rejected too small
    write(folder / "metadata.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    result = import_dataset(store, [folder], split="1,0,0", steps={"resize_crop": {"enabled": True, "resolution": 32}})
    rows = manifest(store, result)
    assert [r["caption"] for r in rows] == ["red over blue", "red over green"]
    assert result["removed"]["min_size"] == 1 and result["removed"]["exact_duplicates"] == 1
    report = {e["step"]: e for e in get_version(store, str(result["dataset_id"])).report["steps"]}
    assert report["min_size"]["pairs_removed"] == 1
    assert report["min_size"]["detail"] == "1 preference pair removed whole"
    assert report["min_size"]["examples"][0]["reason"].startswith("rejected file too small")
    stored = store.path(f"datasets/{result['dataset_id']}/v1")
    from PIL import Image

    for row in rows:  # resize_crop changed both files of each pair
        for side in ("file", "rejected_file"):
            with Image.open(stored / row[side]) as image:
                assert image.size == (32, 32)


def test_a_preference_file_with_nothing_usable_is_refused(stores, tmp_path):
    store = stores()
    write(tmp_path / "empty.jsonl", json.dumps({"prompt": "q", "chosen": "", "rejected": ""}) + "\n")
    with pytest.raises(ImportRefused):
        import_dataset(store, [tmp_path / "empty.jsonl"])
    assert list_datasets(store) == []


def test_read_manifest_of_a_votes_version(rated):
    store, set_id = rated
    result = preference_dataset(store, set_id)
    rows = read_manifest(store, get_version(store, str(result["dataset_id"])))
    assert all(r["split"] == "train" and r["source"].startswith(f"set {set_id} pair ") for r in rows)


def test_preference_versions_export_and_import_back_whole(stores, tmp_path):
    from studio.data.export import export_zip

    store = stores()
    folder = _pair_folder(tmp_path)
    media = import_dataset(store, [folder], name="pairs", split="1,0,0")
    chat = [{"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
             "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}]}]
    thumbs = [{"prompt": "2+2?", "completion": "4", "label": True},
              {"prompt": "2+2?", "completion": "5", "label": False}]
    write(tmp_path / "chat.jsonl", json.dumps(chat[0]) + "\n")
    write(tmp_path / "kto.jsonl", "".join(json.dumps(line) + "\n" for line in thumbs))
    for result in (media, import_dataset(store, [tmp_path / "chat.jsonl"], split="1,0,0"),
                   import_dataset(store, [tmp_path / "kto.jsonl"], split="1,0,0", steps=NO_STEPS)):
        before = manifest(store, result)
        steps = NO_STEPS if result["modality"] == "text" else None
        again = import_dataset(store, [export_zip(store, str(result["dataset_id"]))], split="1,0,0", steps=steps)
        after = manifest(store, again)
        fields = ("caption", "messages", "prompt", "response", "rejected", "label")
        assert [{k: r.get(k) for k in fields} for r in after] == [{k: r.get(k) for k in fields} for r in before]
        if result is media:
            old, new = store.path(media["path"]), store.path(again["path"])
            assert [digest(new / r["rejected_file"]) for r in after] == \
                [digest(old / r["rejected_file"]) for r in before]


@pytest.mark.slow
def test_the_data_tab_says_a_version_holds_pairs(running_studio, browser_page, tmp_path):
    rows = [{"prompt": f"question {i}?", "chosen": f"a good answer {i}", "rejected": f"a poor answer {i}"}
            for i in range(4)]
    path = write(tmp_path / "prefs.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    page = browser_page
    page.goto(running_studio)
    page.get_by_role("tab", name="Data").click()
    page.locator("#data-upload input[type=file]").set_input_files([str(path)])
    page.locator("#data-import").click()
    page.wait_for_function("/prefs v1/.test(document.querySelector('#version-info')?.innerText || '')",
                           timeout=120_000)
    assert "4 pairs" in page.locator("#version-info").inner_text()
