"""Hub datasets and `datasets` folders as imports: ``hub:OWNER/NAME[@REVISION]`` through ``datasets.load_dataset``
(a stand-in here: there is no network, so it loads a local folder and records what it was asked), and the local
equivalents for real — a ``save_to_disk`` folder, an imagefolder/audiofolder with metadata, a folder of Parquet
shards with image columns — each with text, image and audio columns written into the version as the uploads are."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import pytest
import soundfile as sf
from sqlalchemy import select

from media_factory import manifest, photo, save, tone, write_audio
from studio.cli import main as cli_main
from studio.data import service as data_service
from studio.data.items import ImportRefused
from studio.data.read_datasets import folder_kind, parse_hub_ref, preview
from studio.data.service import describe_source, get_version, import_dataset, reclean
from studio.store.tables import Dataset, Upload

TALES = [f"Tale {i}: the {['red', 'blue', 'green'][i % 3]} fox met hen number {i} and they spoke of {i * 13} "
         f"different things until the {i % 5} moons rose." for i in range(40)]


def png_bytes(seed: int) -> bytes:
    out = io.BytesIO()
    photo(96, seed=seed).save(out, format="PNG")
    return out.getvalue()


def wav_bytes(freq: float) -> bytes:
    out = io.BytesIO()
    sf.write(out, tone(freq, seconds=1.0), 16_000, format="WAV")
    return out.getvalue()


def text_set(count: int = 40) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"question": [f"What did fox {i} say?" for i in range(count)],
                                       "answer": TALES[:count], "id": list(range(count))})


def image_set(count: int = 12) -> datasets.Dataset:
    rows = datasets.Dataset.from_dict({"image": [{"bytes": png_bytes(i), "path": f"img{i}.png"} for i in range(count)],
                                       "label": [i % 2 for i in range(count)]})
    return rows.cast_column("image", datasets.Image()).cast_column("label", datasets.ClassLabel(names=["cat", "dog"]))


def audio_set(count: int = 6) -> datasets.Dataset:
    # built from stored bytes and cast: encoding an audio value in `datasets` needs torchcodec, reading it does not
    rows = datasets.Dataset.from_dict({"audio": [{"bytes": wav_bytes(220 + 110 * i), "path": None}
                                                 for i in range(count)],
                                       "sentence": [f"a tone of {220 + 110 * i} hertz" for i in range(count)]})
    return rows.cast_column("audio", datasets.Audio())


class HubStandIn:
    """``datasets.load_dataset`` as the Hub would answer it, from local ``save_to_disk`` folders by repo id;
    records every call's arguments (the token included)."""

    def __init__(self, monkeypatch, sets: dict[str, Path]):
        self.sets, self.calls = sets, []
        monkeypatch.setattr(datasets, "load_dataset", self.load_dataset)
        monkeypatch.setattr(datasets, "load_dataset_builder", self.refuse)  # size unknown → streamed
        monkeypatch.setattr(data_service, "hub_commit", lambda source, token: "c0ffee" * 6 + "abcd")

    def load_dataset(self, path, name=None, *, split=None, revision=None, token=None, streaming=False, **other):
        self.calls.append({"path": path, "name": name, "split": split, "revision": revision, "token": token,
                           "streaming": streaming})
        if path not in self.sets:
            from datasets.exceptions import DatasetNotFoundError

            raise DatasetNotFoundError(f"Dataset '{path}' doesn't exist on the Hub or cannot be accessed.")
        splits = datasets.load_from_disk(str(self.sets[path]))
        if split not in splits:  # as datasets says it
            raise ValueError(f"Bad split: {split}. Available splits: {list(splits)}")
        found = splits[split]
        return found.to_iterable_dataset() if streaming else found

    @staticmethod
    def refuse(*args, **kwargs):
        raise ConnectionError("no network in tests")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    sets = {}
    for repo, build in (("ana/tales", text_set), ("ana/pets", image_set), ("ana/tones", audio_set)):
        folder = tmp_path / "hub" / repo
        datasets.DatasetDict({"train": build(), "test": build(4)}).save_to_disk(str(folder))
        sets[repo] = folder
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_123")
    return HubStandIn(monkeypatch, sets)


def versions_and_uploads(store) -> tuple[int, int]:
    with store.session() as session:
        return len(session.scalars(select(Dataset)).all()), len(session.scalars(select(Upload)).all())


# --------------------------------------------------------------------------------------------------- the Hub


def test_a_hub_text_set_imports_with_the_uploads_mapping_guess_and_records_its_revision(store, hub):
    said = []
    result = import_dataset(store, ["hub:ana/tales@v1.0"], source_split="train", limit=30,
                            progress=lambda share, message: said.append((share, message)))
    assert said[0] == (0.0, "opening hub:ana/tales@v1.0")
    assert said[1][0] == 1 / 30 and said[1][1].startswith("reading hub:ana/tales@v1.0: 1 of 30 rows, about ")
    [call] = hub.calls
    assert call == {"path": "ana/tales", "name": None, "split": "train", "revision": "v1.0",
                    "token": "hf_secret_token_123", "streaming": True}  # a limit streams
    assert (result["name"], result["modality"], result["items_in"]) == ("tales", "text", 30)
    rows = manifest(store, result)
    assert rows[0]["prompt"] == "What did fox 0 say?" and rows[0]["response"] == TALES[0]  # question/answer: a pair
    source = get_version(store, f"{result['dataset_id']}").source
    assert source["datasets"] == {"kind": "hub", "location": "ana/tales", "revision": "v1.0", "split": "train",
                                  "limit": 30, "commit": "c0ffee" * 6 + "abcd"}
    assert describe_source(source) == "hub:ana/tales@v1.0 (commit c0ffeec0ffee, split train, the first 30 rows)"
    stored = json.dumps(source) + Path(result["path"], "report.json").read_text()
    assert "hf_secret_token_123" not in stored  # the token is used, never kept


def test_without_a_limit_a_set_of_unknown_size_streams_and_the_split_defaults_to_train(store, hub):
    result = import_dataset(store, ["hub:ana/tales"])
    assert hub.calls[0]["split"] == "train" and hub.calls[0]["streaming"] is True
    assert hub.calls[0]["revision"] is None and result["items_in"] == 40


def test_a_small_set_is_downloaded_rather_than_streamed(store, hub, monkeypatch):
    class Info:
        splits = {"train": datasets.SplitInfo(name="train", num_bytes=10_000, num_examples=40)}

    monkeypatch.setattr(datasets, "load_dataset_builder", lambda *a, **k: type("B", (), {"info": Info})())
    import_dataset(store, ["hub:ana/tales"])
    assert hub.calls[0]["streaming"] is False


def test_hub_image_and_audio_columns_become_files_of_the_version_with_their_captions(store, hub):
    pets = import_dataset(store, ["hub:ana/pets"])
    rows = manifest(store, pets)
    assert pets["modality"] == "image" and pets["items_kept"] == 12
    assert {r["caption"] for r in rows} == {"cat", "dog"}  # a ClassLabel captions by its name
    first = Path(pets["path"]) / rows[0]["file"]
    assert first.suffix == ".png" and first.read_bytes() in {png_bytes(i) for i in range(12)}  # stored as is
    tones = import_dataset(store, ["hub:ana/tones"])
    clips = manifest(store, tones)
    assert tones["modality"] == "audio" and tones["items_kept"] == 6
    assert {r["caption"] for r in clips} == {f"a tone of {220 + 110 * i} hertz" for i in range(6)}
    assert all(abs(r["duration"] - 1.0) < 0.01 and r["sample_rate"] == 16_000 for r in clips)


def test_a_hub_version_cleans_again_from_its_stored_rows_and_keeps_its_source(store, hub):
    first = import_dataset(store, ["hub:ana/tales@main"])
    again = reclean(store, first["version_id"], steps={"length": {"min_length": 5}})
    assert len(hub.calls) == 1  # no second download
    assert get_version(store, f"{again['dataset_id']}:2").source["datasets"]["revision"] == "main"
    assert again["items_in"] == first["items_in"]


@pytest.mark.parametrize("ref, config, split, expected", [
    ("hub:ana/missing", None, None, "could not load hub:ana/missing: not found on the Hub, or it is private or gated"),
    ("hub:ana/tales", None, "validation", "could not load hub:ana/tales: no such split: Bad split: validation. "
                                          "Available splits: ['train', 'test']. Nothing was imported."),
    ("hub:not a name", None, None, "'hub:not a name' is not a Hub dataset id"),
])
def test_bad_hub_input_names_the_set_and_the_reason_and_stores_nothing(store, hub, ref, config, split, expected):
    with pytest.raises(ImportRefused) as refused:
        import_dataset(store, [ref], config=config, source_split=split)
    assert str(refused.value).startswith(expected)
    assert "hf_secret_token_123" not in str(refused.value)
    assert versions_and_uploads(store) == (0, 0) and not any((store.home / "uploads").glob("*"))


def test_no_network_is_said_in_words(store, hub, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'ana/tales' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ImportRefused, match=r"could not load hub:ana/tales: the Hub could not be reached"):
        import_dataset(store, ["hub:ana/tales"])
    assert versions_and_uploads(store) == (0, 0)


def test_a_column_that_cannot_be_mapped_is_refused_naming_the_set(store, hub, tmp_path):
    folder = tmp_path / "hub" / "ana" / "numbers"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"a": [1, 2], "b": ["x", "y"]})}).save_to_disk(folder)
    hub.sets["ana/numbers"] = folder
    assert preview(parse_hub_ref("hub:ana/numbers"))["problem"].startswith(
        "could not tell which column holds the text. Columns found: a, b.")
    with pytest.raises(ImportRefused, match=r"hub_ana_numbers/rows.jsonl: could not tell which column holds the text"):
        import_dataset(store, ["hub:ana/numbers"])
    assert versions_and_uploads(store) == (0, 0) and not any((store.home / "uploads").glob("*"))


def test_a_cancel_while_rows_are_written_leaves_nothing(store, hub):
    class Cancelled(Exception):
        pass

    def progress(fraction, message):
        if message.startswith("reading"):
            raise Cancelled()

    with pytest.raises(Cancelled):
        import_dataset(store, ["hub:ana/pets"], progress=progress)
    assert versions_and_uploads(store) == (0, 0) and not any((store.home / "uploads").glob("*"))


def test_the_preview_shows_columns_features_and_the_guessed_mapping_without_importing(store, hub):
    shown = preview(parse_hub_ref("ana/tales", split="test"))
    assert shown["columns"] == ["question", "answer", "id"] and shown["modality"] == "text"
    assert shown["mapping"]["format"] == "pair" and shown["mapping"]["prompt"] == "question"
    assert shown["features"]["id"] == "Value(int64)" and len(shown["rows"]) == 4 and shown["problem"] is None
    pets = preview(parse_hub_ref("hub:ana/pets"))
    assert (pets["modality"], pets["caption"], pets["features"]["image"]) == ("image", "label", "Image")
    assert pets["rows"][0]["image"].startswith("(img0.png, ")
    assert hub.calls[-1]["streaming"] is True and versions_and_uploads(store) == (0, 0)


def test_the_cli_imports_a_hub_set_with_its_split_config_and_limit(store, hub, capsys):
    code = cli_main(["--home", str(store.home), "data", "import", "hub:ana/tales@v2", "--split", "test",
                     "--config", "default", "--limit", "3", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert hub.calls[-1] == {"path": "ana/tales", "name": "default", "split": "test", "revision": "v2",
                             "token": "hf_secret_token_123", "streaming": True}
    assert json.loads(out)["items_in"] == 3


# ------------------------------------------------------------------------------------------- local folders


def test_a_save_to_disk_folder_imports_by_its_path_text_image_and_audio(store, tmp_path):
    text_set().save_to_disk(str(tmp_path / "qa"))
    datasets.DatasetDict({"train": image_set(), "test": image_set(3)}).save_to_disk(str(tmp_path / "pets"))
    audio_set().save_to_disk(str(tmp_path / "tones"))
    assert folder_kind(tmp_path / "qa") == folder_kind(tmp_path / "pets") == "save_to_disk"
    qa = import_dataset(store, [tmp_path / "qa"], limit=25)
    assert (qa["name"], qa["modality"], qa["items_in"]) == ("qa", "text", 25)
    pets = import_dataset(store, [tmp_path / "pets"], source_split="test")
    assert (pets["modality"], pets["items_in"]) == ("image", 3)
    assert get_version(store, str(pets["dataset_id"])).source["datasets"] == {
        "kind": "save_to_disk", "location": "pets", "split": "test"}  # the folder by name, not the machine's path
    tones = import_dataset(store, [tmp_path / "tones"])
    assert (tones["modality"], tones["items_kept"]) == ("audio", 6)
    with pytest.raises(ImportRefused, match=r"pets has no split 'validation'; its splits: train, test"):
        import_dataset(store, [tmp_path / "pets"], source_split="validation")


def test_a_folder_of_parquet_shards_with_an_image_column_imports_its_images(store, tmp_path):
    shards = tmp_path / "shards"
    image_set(12).shard(2, 0).to_parquet(str(shards / "train-00000-of-00002.parquet"))
    image_set(12).shard(2, 1).to_parquet(str(shards / "train-00001-of-00002.parquet"))
    assert folder_kind(shards) == "parquet"
    result = import_dataset(store, [shards])
    assert (result["modality"], result["items_kept"]) == ("image", 12)
    assert all(r["file"].endswith(".png") for r in manifest(store, result))


def test_a_folder_of_plain_parquet_shards_is_read_by_the_table_reader(store, tmp_path):
    shards = tmp_path / "plain"
    text_set().shard(2, 0).to_parquet(str(shards / "part-0.parquet"))
    text_set().shard(2, 1).to_parquet(str(shards / "part-1.parquet"))
    assert folder_kind(shards) is None  # read a batch at a time as uploaded tables are, no copy
    result = import_dataset(store, [shards])
    assert (result["modality"], result["items_in"]) == ("text", 40)
    assert "datasets" not in get_version(store, str(result["dataset_id"])).source


def test_an_imagefolder_and_an_audiofolder_with_metadata_import_with_their_captions(store, tmp_path):
    images = tmp_path / "imagefolder" / "train"
    for i in range(5):
        save(photo(96, seed=i), images / f"{i}.png")
    (images / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"{i}.png", "text": f"photo {i}"}) + "\n"
                                                   for i in range(5)))
    pictures = import_dataset(store, [tmp_path / "imagefolder"])
    assert sorted(r["caption"] for r in manifest(store, pictures)) == [f"photo {i}" for i in range(5)]
    clips = tmp_path / "audiofolder"
    for i in range(4):
        write_audio(clips / f"{i}.wav", tone(300 + 100 * i))
    (clips / "metadata.csv").write_text("file_name,transcription\n"
                                        + "".join(f"{i}.wav,tone {i}\n" for i in range(4)))
    sounds = import_dataset(store, [clips])
    assert (sounds["modality"], sorted(r["caption"] for r in manifest(store, sounds))) == \
        ("audio", [f"tone {i}" for i in range(4)])


def test_datasets_options_are_refused_for_plain_files_and_a_source_is_imported_alone(store, tmp_path):
    (tmp_path / "notes.txt").write_text("\n\n".join(TALES))
    with pytest.raises(ImportRefused, match="apply to a Hub dataset"):
        import_dataset(store, [tmp_path / "notes.txt"], limit=5)
    with pytest.raises(ImportRefused, match="hub:ana/x is a dataset of its own"):
        import_dataset(store, ["hub:ana/x", tmp_path / "notes.txt"])


# ------------------------------------------------------------------------------------------------ the Data tab


def test_the_data_tabs_hub_box_previews_the_mapping_then_imports_as_a_task(store, hub, monkeypatch):
    from studio.store.tables import Task
    from studio.tasks.kinds import KINDS
    from studio.ui import data_tab
    from test_tasks import handlers, last

    page = handlers(store, data_tab.build)
    on_preview, _ = page["on_hub_preview"]
    modality, info, box, table, fmt, *rest = on_preview("ana/tales@v1.0", "", "test")
    assert modality.value == "text" and info.startswith("**hub:ana/tales@v1.0**: columns `question` (Value(string))")
    assert "Column mapping guessed: prompt from 'question', response from 'answer'" in info
    assert table["headers"] == ["question", "answer", "id"] and len(table["data"]) == 4 and fmt.value == "pair"
    assert [d.value for d in rest[:5]] == ["", "question", "", "answer", ""]  # text, prompt, context, response, messages
    refused = on_preview("not a name!", "", "")[1]
    assert "&#x27;not a name!&#x27; is not a Hub dataset id" in refused  # escaped, as every refusal a page shows

    # the worker is a process of its own, where no stand-in answers: offline, it fails with the set's name and why
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    on_import, defaults = page["on_hub_import"]
    summary, *_ = last(on_import("ana/tales@v1.0", "", "test", 3, "text", "", "0.8,0.1,0.1", 0, "default", "pair",
                                 None, "", "question", "", "answer", "", *defaults[15:]))
    assert "could not load hub:ana/tales@v1.0: the Hub could not be reached" in summary and "Nothing" in summary
    assert versions_and_uploads(store) == (0, 0)
    with store.session() as session:
        [task] = session.scalars(select(Task)).all()
    assert task.kind == "hub_import" and "hf_secret_token_123" not in json.dumps(task.params)
    # what the page asked for, run where the stand-in answers, is the import the CLI would make
    result = KINDS["hub_import"].run(store, task.params, lambda *a: None, "ana")
    assert hub.calls[-1]["split"] == "test" and hub.calls[-1]["revision"] == "v1.0"
    assert (result["name"], result["items_in"]) == ("tales", 3)
    assert manifest(store, result)[0]["prompt"].startswith("What did fox")


def test_a_hub_id_that_names_a_local_folder_is_refused_rather_than_read(store, hub, tmp_path, monkeypatch):
    # load_dataset reads a local folder of that name before it asks the Hub: a page could reach the server's files
    (tmp_path / "work" / "studio_home" / "uploads").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(ImportRefused, match=r"hub:studio_home/uploads also names a folder on this machine"):
        import_dataset(store, ["hub:studio_home/uploads"])
    with pytest.raises(ImportRefused, match=r"hub:imagefolder is the name of one of the `datasets` library's own"):
        import_dataset(store, ["hub:imagefolder"])  # it would read the working folder's images
    assert hub.calls == [] and versions_and_uploads(store) == (0, 0)
