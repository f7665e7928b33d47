"""The representation report: exact counts on small sets, the matching rules (whole words, multi-word terms,
plurals), edited lexicons, a sample set beside its dataset with intervals, the CLI's JSON, and clear refusals."""

from __future__ import annotations

import json

import pytest

from media_factory import circle, save
from studio.cli import main
from studio.data.items import ImportRefused
from studio.data.lexicons import (LexiconError, Matcher, load_lexicons, parse_lexicon, project_texts, reset_lexicon,
                                  save_lexicon, shipped_texts)
from studio.data.representation import ReportOptions, Unit, count_units, version_report, wilson
from studio.data.service import import_dataset
from studio.evaluation.representation import RepresentationError, set_report
from studio.store.tables import GeneratedSample, SampleSet

SHIPPED = [parse_lexicon(name, text) for name, text in shipped_texts().items()]


def report_of(texts: list[str], lexicons=SHIPPED, **options) -> dict:
    return count_units([Unit(i, t) for i, t in enumerate(texts)], lexicons, ReportOptions(**options))


def groups(report: dict, category: str) -> dict[str, dict]:
    [found] = [c for c in report["categories"] if c["name"] == category]
    return {g["group"]: g for g in found["groups"]}


def category(report: dict, name: str) -> dict:
    return next(c for c in report["categories"] if c["name"] == name)


def found_terms(text: str, lexicons=SHIPPED) -> list[tuple[str, str, str]]:
    return [entry for _start, entries in Matcher(lexicons).find(text) for entry in entries]


# ----------------------------------------------------------------------------- matching

def test_whole_words_any_case_multi_word_terms_and_plurals():
    assert found_terms("Manhattan human sheet shed hershey") == []  # man, he, she, her: whole words only
    assert found_terms("The WOMAN's spokesmen") == [("gender", "female", "woman"), ("gender", "male", "spokesman")]
    plurals = [parse_lexicon("x", "lady, boss, policeman, German, person, key, police officer")]
    assert [e[2] for e in found_terms("ladies bosses policemen Germans people keys police officers", plurals)] == [
        "lady", "boss", "policeman", "german", "person", "key", "police officer"]
    # a space and a hyphen alike, across a line break too
    assert [e[2] for e in found_terms("middle aged, Middle-Aged, middle\naged")] == ["middle aged"] * 3
    # the longest term within a list: "African American" is not also "American"; across lists both count
    assert found_terms("an African-American engineer") == [("ethnicity", "african", "african american"),
                                                           ("occupations", "science, medicine and technology",
                                                            "engineer")]
    assert found_terms("an old woman") == [("age", "old", "old woman"), ("gender", "female", "woman")]
    # "women" is listed and is also the plural of "woman": one mention
    assert found_terms("two women") == [("gender", "female", "women")]


def test_a_list_that_cannot_be_used_is_refused_naming_the_line():
    with pytest.raises(LexiconError, match="lexicon 'gender' line 2: a group heading is \\[name\\]"):
        parse_lexicon("gender", "# fine\n[female\nwoman")
    with pytest.raises(LexiconError, match="has no terms"):
        parse_lexicon("caste", "# only a comment\n[group]\n")
    with pytest.raises(LexiconError, match="lexicon name 'Bad Name!'"):
        parse_lexicon("Bad Name!", "x")
    lexicon = parse_lexicon("caste", "brahmin, dalit\n[other]\nshudra")
    assert lexicon.groups == {"caste": ["brahmin", "dalit"], "other": ["shudra"]}


# ----------------------------------------------------------------------------- counting

STORIES = [
    "The nurse said she was tired. The doctor said he was fine.",   # 0: female + male; nurse beside she only
    "He is a strong engineer.",                                       # 1: male, engineer, strong
    "His brother is an engineer too. She laughed.",                   # 2: male + female; engineer beside his only
    "Two women walked to the mosque.",                                # 3: female; religion: muslim
    "Nothing to see here.",                                           # 4: nothing
    "",                                                               # 5: no text
]


def test_known_counts_shares_and_the_items_behind_them():
    report = report_of(STORIES, min_items=1)
    assert (report["items"], report["items_with_text"]) == (6, 5)
    gender = groups(report, "gender")
    assert category(report, "gender")["items"] == 4
    assert {g: (v["items"], v["mentions"]) for g, v in gender.items()} == {
        "female": (3, 3), "male": (3, 4), "non-binary": (0, 0), "transgender": (0, 0)}
    assert gender["female"]["share"] == 0.75
    assert (gender["female"]["ci_low"], gender["female"]["ci_high"]) == pytest.approx(wilson(3, 4))
    assert [e["id"] for e in gender["male"]["examples"]] == [0, 1, 2]
    assert gender["male"]["examples"][1]["snippet"] == "He is a strong engineer."
    assert dict(gender["male"]["terms"]) == {"he": 2, "his": 1, "brother": 1}
    assert category(report, "gender")["absent"] == ["non-binary", "transgender"]
    assert groups(report, "religion")["muslim"]["items"] == 1
    # within a sentence: the nurse stands beside "she" only, though "he" is in the same item
    rows = {r["attribute"]: r for r in category(report, "gender")["cooccurrence"]}
    assert rows["nurse"]["counts"] == {"female": 1, "male": 0, "non-binary": 0, "transgender": 0}
    assert rows["engineer"]["counts"]["male"] == 2 and rows["engineer"]["counts"]["female"] == 0
    assert {g: [e["id"] for e in found] for g, found in rows["engineer"]["examples"].items()} == {"male": [1, 2]}
    assert rows["engineer"]["examples"]["male"][0]["snippet"] == "He is a strong engineer."
    assert rows["strong"]["list"] == "adjectives"
    # within an item: "she" in item 0 and item 2 now meets the doctor and the engineer
    by_item = category(report_of(STORIES, min_items=1, window="item"), "gender")
    whole = {r["attribute"]: r for r in by_item["cooccurrence"]}
    assert whole["engineer"]["counts"]["female"] == 1 and whole["doctor"]["counts"]["female"] == 1


def test_imbalance_and_cooccurrence_warnings_name_their_items():
    texts = [f"He was a nurse number {i}." if i < 1 else f"He fixed engine {i}." for i in range(8)] + \
        ["She was a nurse.", "She was a nurse as well.", "She was a nurse again."]
    report = report_of(texts, min_items=3, threshold=0.7)
    imbalance = [w for w in report["warnings"] if w["kind"] == "imbalance"]
    assert [(w["category"], w["group"], w["count"], w["of"]) for w in imbalance] == [("gender", "male", 8, 11)]
    assert [e["id"] for e in imbalance[0]["examples"]] == list(range(8))
    [nurse] = [w for w in report["warnings"] if w["kind"] == "cooccurrence"]
    # 3 of the 4 nurse sentences are female, against 3 of 11 gendered items overall
    assert (nurse["attribute"], nurse["group"], nurse["count"], nurse["of"]) == ("nurse", "female", 3, 4)
    assert [e["id"] for e in nurse["examples"]] == [8, 9, 10]
    assert report_of(texts, min_items=12)["warnings"] == []  # too few items behind it to say


# ----------------------------------------------------------------------------- a dataset version in the store

def import_texts(store, tmp_path, texts: list[str], name: str = "stories") -> str:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    result = import_dataset(store, [path], name=name, split="1,0,0")
    assert result["items_kept"] == len(texts)
    return f"{result['dataset_id']}:{result['version']}"


GENDERED = [f"Story {i}: he went to work as a nurse." for i in range(6)] + \
    [f"Story {i}: she went home early." for i in range(6, 10)]


def test_an_edited_lexicon_changes_the_counts_and_reset_brings_back_the_shipped_one(store, tmp_path):
    ref = import_texts(store, tmp_path, GENDERED)
    shipped = version_report(store, ref, options=ReportOptions(min_items=1))
    assert {g: v["items"] for g, v in groups(shipped, "gender").items()}["male"] == 6
    save_lexicon(store, "default", "gender", "[female]\nshe\n[male]\nhe\n[nurses]\nnurse", actor="ann")
    assert project_texts(store, "default")["gender"]["edited"] is True
    edited = version_report(store, ref, options=ReportOptions(min_items=1))
    assert {g: v["items"] for g, v in groups(edited, "gender").items()} == {"female": 4, "male": 6, "nurses": 6}
    assert {g: v["items"] for g, v in groups(version_report(store, ref), "gender").items()}["nurses"] == 6
    other = tmp_path / "gender.txt"  # --lexicon FILE: for this report only, over the project's copy
    other.write_text("[story]\nstory")
    assert groups(version_report(store, ref, [other]), "gender")["story"]["items"] == 10
    assert reset_lexicon(store, "default", "gender", actor="ann") is True
    assert groups(version_report(store, ref), "gender")["male"]["items"] == 6
    assert project_texts(store, "default")["gender"]["edited"] is False
    with pytest.raises(LexiconError, match="line 1"):
        save_lexicon(store, "default", "gender", "[broken")


def test_a_version_without_text_says_so(store, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i, colour in enumerate(("red", "green", "blue")):
        save(circle(64, colour), folder / f"shape{i}.png")
    result = import_dataset(store, [folder], name="shapes", split="1,0,0",
                            steps={"missing_captions": {"enabled": False}})
    with pytest.raises(ImportRefused, match=r"dataset \d+ 'shapes' v1 has no captions to count \(3 items"):
        version_report(store, f"{result['dataset_id']}:1")


def test_cli_json_shape_and_clear_errors(store, tmp_path, capsys):
    ref = import_texts(store, tmp_path, GENDERED)
    home = ["--home", str(store.home)]
    assert main(["data", "bias", ref, "--json", "--min-items", "3", "--threshold", "0.6", *home]) == 0
    found = json.loads(capsys.readouterr().out)
    assert {"dataset", "label", "project", "items", "items_with_text", "window", "categories", "attributes",
            "warnings", "lexicons", "filtering"} <= set(found)
    assert [c["name"] for c in found["categories"]] == ["gender", "age", "ethnicity", "religion", "disability"]
    assert set(found["categories"][0]["groups"][0]) >= {"group", "items", "mentions", "share", "ci_low", "ci_high",
                                                        "terms", "examples"}
    assert found["filtering"]["setting"] == "STUDIO_BLOCKLIST" and found["filtering"]["active"] is False
    assert any(w["kind"] == "imbalance" and w["group"] == "male" for w in found["warnings"])
    assert main(["data", "bias", ref, *home]) == 0
    assert "gender: 10 items mention it" in capsys.readouterr().out
    assert main(["data", "bias", "99", "--json", *home]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == "no dataset version '99' (see `studio data list`)"
    assert main(["data", "bias", ref, "--lexicon", str(tmp_path / "missing.txt"), *home]) == 2
    assert "lexicon file" in capsys.readouterr().err


def test_the_cli_lists_shows_saves_and_resets_a_projects_word_lists(store, tmp_path, capsys):
    ref = import_texts(store, tmp_path, GENDERED)
    home = ["--home", str(store.home)]

    def run(*words) -> dict:
        assert main([*words, "--json", *home]) == 0
        return json.loads(capsys.readouterr().out)

    shipped = {f["name"]: f for f in run("data", "lexicons", "list")["lexicons"]}
    assert shipped["gender"]["edited"] is False and shipped["occupations"]["attributes"] is True
    shown = run("data", "lexicons", "show", "gender")
    assert "[male]" in shown["text"] and shown["edited"] is False
    edited = tmp_path / "gender.txt"
    edited.write_text("[female]\nshe\n[male]\nhe\n[nurses]\nnurse\n")
    assert run("data", "lexicons", "save", str(edited)) == {"name": "gender", "project": "default",
                                                           "groups": ["female", "male", "nurses"], "terms": 3}
    assert run("data", "lexicons", "show", "gender")["edited"] is True
    report = run("data", "bias", ref, "--min-items", "1")  # the project's copy is what reports read now
    assert {g["group"]: g["items"] for g in report["categories"][0]["groups"]}["nurses"] == 6
    caste = tmp_path / "mine.txt"  # --name: a new category from any file
    caste.write_text("[story tellers]\nstory\n")
    assert run("data", "lexicons", "save", str(caste), "--name", "tellers")["name"] == "tellers"
    assert {f["name"]: f["edited"] for f in run("data", "lexicons", "list")["lexicons"]}["tellers"] is True
    assert run("data", "lexicons", "reset", "gender")["reset"] is True
    assert run("data", "lexicons", "show", "gender")["edited"] is False
    assert run("data", "lexicons", "reset", "gender")["reset"] is False  # nothing of its own left: said, not an error
    broken = tmp_path / "age.txt"
    broken.write_text("[broken\n")
    assert main(["data", "lexicons", "save", str(broken), *home]) == 2
    assert "line 1" in capsys.readouterr().err
    assert main(["data", "lexicons", "show", "Bad Name!", *home]) == 2
    assert "lexicon name 'Bad Name!'" in capsys.readouterr().err
    assert main(["data", "lexicons", "show", "nosuch", *home]) == 2
    assert "no list named 'nosuch'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- a sample set beside its dataset

def make_set(store, outputs: dict[str, list[str]], modality: str = "text", prompt: str = "Tell a story") -> int:
    """A completed sample set whose variants (``base``, ``3:10`` ...) made ``outputs``, one sample each."""
    with store.session() as db:
        row = SampleSet(modality=modality, base_model="tiny", status="completed",
                        report={"flagged": [{}], "refused": []},
                        variants=[{"ref": v, "label": "base" if v == "base" else f"run {v}",
                                   "run_id": None if v == "base" else int(v.split(":")[0])} for v in outputs],
                        prompts=[prompt], references=[None], settings={}, seeds=[[0]], samples_per_prompt=1)
        db.add(row)
        db.flush()
        for variant, texts in outputs.items():
            for k, text in enumerate(texts):
                db.add(GeneratedSample(set_id=row.id, variant=variant, prompt_index=0, prompt=text if modality != "text"
                                       else prompt, sample_index=k, seed=k, text=text if modality == "text" else None,
                                       path=None if modality == "text" else f"samples/x/{k}.png"))
        return row.id


def test_a_sample_set_beside_its_dataset_flags_an_amplified_skew_with_intervals(store, tmp_path, capsys):
    dataset = import_texts(store, tmp_path, [f"Line {i}: he spoke." for i in range(12)]
                           + [f"Line {i}: she spoke." for i in range(12, 20)])
    set_id = make_set(store, {"base": ["he spoke"] * 20 + ["she spoke"] * 20,
                              "3:10": ["he spoke"] * 38 + ["she spoke"] * 2})
    found = set_report(store, set_id, dataset)
    rows = {(r["category"], r["group"]): r for r in found["comparison"]}
    male, female = rows[("gender", "male")], rows[("gender", "female")]
    assert male["dataset"]["items"] == 12 and male["dataset"]["of"] == 20
    assert (male["dataset"]["ci_low"], male["dataset"]["ci_high"]) == pytest.approx((0.3866, 0.7812), abs=1e-4)
    base, trained = male["variants"]
    assert (base["items"], base["of"], base["verdict"]) == (20, 40, "similar")
    assert (trained["items"], trained["of"], trained["verdict"]) == (38, 40, "amplified")
    assert (trained["ci_low"], trained["ci_high"]) == pytest.approx((0.8350, 0.9862), abs=1e-4)
    assert female["variants"][1]["verdict"] == "amplified"  # the smaller group made smaller still
    assert [(a["group"], a["variant"]) for a in found["amplified"]] == [("female", "3:10"), ("male", "3:10")]
    assert "training amplified this skew" in found["amplified"][1]["message"]
    assert found["filtering"]["flagged_samples"] == 1
    # the samples behind the numbers are the set's own
    sample_ids = [e["id"] for e in groups(found["variants"][1]["report"], "gender")["female"]["examples"]]
    with store.session() as db:
        assert {db.get(GeneratedSample, i).variant for i in sample_ids} == {"3:10"}
    assert main(["eval", "bias", str(set_id), "--dataset", dataset, "--json", "--home", str(store.home)]) == 0
    assert set(json.loads(capsys.readouterr().out)) >= {"set_id", "dataset", "variants", "comparison", "amplified",
                                                        "filtering", "counted"}
    assert main(["eval", "bias", str(set_id), "--home", str(store.home)]) == 2  # no run: which dataset?
    assert "--dataset" in capsys.readouterr().err


def test_image_sets_count_their_prompts_and_a_set_without_text_says_so(store, tmp_path):
    dataset = import_texts(store, tmp_path, ["a photo of a woman", "a photo of a man"])
    set_id = make_set(store, {"base": ["a woman reading", "a man reading", "a man running"]}, modality="image")
    found = set_report(store, set_id, dataset)
    assert found["counted"] == "prompts"
    assert groups(found["variants"][0]["report"], "gender")["male"]["items"] == 2
    empty = make_set(store, {"base": ["", ""]})
    with pytest.raises(RepresentationError, match=f"sample set {empty} has no outputs with text to count"):
        set_report(store, empty, dataset)
    with pytest.raises(RepresentationError, match="no dataset version '42'"):
        set_report(store, set_id, "42")


def test_a_deleted_project_takes_its_lexicons_with_it(store):
    from studio.projects import create_project, delete_project

    create_project(store, "lab")
    save_lexicon(store, "lab", "caste", "[a]\nbrahmin")
    assert "caste" in {lexicon.name for lexicon in load_lexicons(store, "lab")}
    delete_project(store, "lab")
    create_project(store, "lab")
    assert "caste" not in {lexicon.name for lexicon in load_lexicons(store, "lab")}


def test_the_evaluate_panel_shows_the_comparison_and_the_samples_behind_a_warning(store, tmp_path):
    from studio.ui.representation_panel import behind_rows, set_outputs

    dataset = import_texts(store, tmp_path, [f"Line {i}: he spoke." for i in range(12)]
                           + [f"Line {i}: she spoke." for i in range(12, 20)])
    set_id = make_set(store, {"base": ["he spoke"] * 20 + ["she spoke"] * 20,
                              "3:10": ["he spoke"] * 38 + ["she spoke"] * 2})
    summary, chart, warnings, behind, _items, table, filtering, shown = set_outputs(store, set_id, dataset,
                                                                                    "sentence", 0.7, "")
    assert "Skews amplified" in summary and chart is not None
    assert table.value["headers"] == ["category", "group", "dataset", "base", "run 3:10"]
    assert table.value["data"][1] == ["gender", "male", "60% [39–78%]", "50% [35–65%] · similar",
                                      "95% [83–99%] · amplified"]
    assert warnings[0][0].startswith("run 3:10: gender: 'male' is mentioned in 38 of the 40 items")
    [(label, key)] = [c for c in behind.choices if "warning" in c[0]]
    rows = behind_rows(shown, key)
    assert len(rows) == 20 and rows[0][1] == "3:10 · prompt 1, sample 1" and rows[0][2] == "he spoke"
    assert "masked 1 output(s)" in filtering
    assert set_outputs(store, None, None, "sentence", 0.7, 10)[0] == "**No report:** Choose a sample set."
