"""The `studio` command's contract, as scripts and our acceptance checks use it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from test_image_backend import tiny_pipeline  # noqa: F401 - a module-scoped fixture


def studio(home, *args, check=True, extra_env: dict | None = None, timeout: float = 300):
    env = {**os.environ, "STUDIO_HOME": str(home), **(extra_env or {})}
    done = subprocess.run([sys.executable, "-m", "studio.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "shapes"
    folder.mkdir()
    colours = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (240, 220, 40)}
    for index, (name, rgb) in enumerate(colours.items()):
        image = Image.new("RGB", (96, 96), "white")
        for x in range(10 + index * 5, 60 + index * 5):
            for y in range(20, 70 - index * 6):
                image.putpixel((x, y), rgb)
        image.save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(f"a {name} square")
    (folder / "copy_of_red.png").write_bytes((folder / "red.png").read_bytes())
    (folder / "copy_of_red.txt").write_text("a red square")
    (folder / "broken.png").write_bytes((folder / "red.png").read_bytes()[:200])
    return folder


@pytest.mark.slow
def test_import_json_contract(tmp_path, image_folder):
    home = tmp_path / "home"
    done = studio(home, "data", "import", str(image_folder), "--name", "shapes", "--split", "0.5,0.25,0.25",
                  "--seed", "3", "--json")
    result = json.loads(done.stdout)  # exactly one JSON object on stdout
    assert {"dataset_id", "version", "modality", "items_in", "items_kept", "removed", "errors", "splits"} <= set(result)
    assert result["modality"] == "image"
    assert result["items_in"] == 5 and result["items_kept"] == 4
    assert result["removed"]["exact_duplicates"] == 1
    assert result["errors"] == [{"file": "shapes/broken.png", "reason": result["errors"][0]["reason"]}]
    assert "truncated" in result["errors"][0]["reason"] or "unreadable" in result["errors"][0]["reason"]
    assert sum(result["splits"].values()) == 4 and set(result["splits"]) == {"train", "validation", "test"}
    assert (home / "datasets" / str(result["dataset_id"]) / "v1" / "manifest.jsonl").exists()

    listed = json.loads(studio(home, "data", "list", "--json").stdout)
    assert listed["datasets"][0]["name"] == "shapes"
    assert listed["datasets"][0]["versions"][0]["items_kept"] == 4


def test_import_of_nothing_usable_fails_with_a_clear_message(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("this is not an image")
    done = studio(tmp_path / "home", "data", "import", str(bad), "--json", check=False)
    assert done.returncode != 0
    assert "nothing usable" in json.loads(done.stdout)["error"]
    assert "bad.png is a text file, not an image" in done.stderr  # what it is, not "unreadable image"


def _noise_images(folder, sides):
    """Captioned squares of random pixels (sharp, and unlike each other) of the given sides."""
    import numpy as np

    folder.mkdir()
    rng = np.random.default_rng(0)
    for n, side in enumerate(sides):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"img{n}.png")
        (folder / f"img{n}.txt").write_text(f"picture {n}")
    return folder


@pytest.mark.slow
def test_a_step_that_removes_most_items_is_a_warning_naming_it_and_its_setting(tmp_path):
    folder = _noise_images(tmp_path / "mostly_small", [32, 40, 48, 56, 96, 128])
    done = studio(tmp_path / "home", "data", "import", str(folder), "--json")
    result = json.loads(done.stdout)
    assert result["items_kept"] == 2 and result["removed"]["min_size"] == 4
    step_warnings = [w for w in result["warnings"] if "step" in w]
    assert [(w["step"], w["removed"], w["of"]) for w in step_warnings] == [("min_size", 4, 6)]
    reason = step_warnings[0]["reason"]
    assert reason.startswith("min_size removed 4 of 6 images (67%)")
    assert "lower its min_side (now 64 pixels)" in reason and "--step min_size.enabled=false" in reason
    # the same, in words, without --json
    text = studio(tmp_path / "home", "data", "import", str(folder)).stdout
    assert "warning: min_size removed 4 of 6 images" in text


@pytest.mark.slow
def test_a_failed_import_still_reports_its_errors_and_what_each_step_removed(tmp_path):
    folder = _noise_images(tmp_path / "all_small", [24, 32, 40])
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    done = studio(tmp_path / "home", "data", "import", str(folder), "--json", check=False)
    assert done.returncode != 0
    refused = json.loads(done.stdout)
    assert refused["error"].startswith("cleaning removed all 3 items (min_size: 3)")
    assert "lower its min_side (now 64 pixels)" in refused["error"]
    assert refused["removed"]["min_size"] == 3 and refused["items_in"] == 3
    assert [e["file"] for e in refused["errors"]] == ["all_small/broken.png"]
    assert [(w["step"], w["removed"], w["of"]) for w in refused["warnings"]] == [("min_size", 3, 3)]

    nothing = tmp_path / "nothing.png"
    nothing.write_bytes(b"")
    refused = json.loads(studio(tmp_path / "home", "data", "import", str(nothing), "--json", check=False).stdout)
    assert refused["errors"] == [{"file": "nothing.png", "reason": "empty file (0 bytes)"}]
    assert refused["removed"] == {}


def test_refused_archive_fails_and_writes_nothing_outside_home(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../escaped.txt", "gotcha")
        zf.writestr("fine.txt", "some perfectly fine text here")
    home = tmp_path / "home"
    done = studio(home, "data", "import", str(archive), "--json", check=False)
    assert done.returncode != 0
    assert "outside the dataset folder" in done.stderr
    assert not list(tmp_path.rglob("escaped.txt"))


@pytest.mark.slow
def test_step_settings_from_the_command_line(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("short one\n\nthis paragraph is a good deal longer than the first one is\n\n"
                      "mail me at someone@example.com please, it is fine")
    home = tmp_path / "home"
    result = json.loads(studio(home, "data", "import", str(corpus), "--step", "length.min_length=5",
                               "--step", "pii.enabled=true", "--json").stdout)
    assert result["removed"]["length"] == 1 and result["items_kept"] == 2
    manifest = (home / "datasets" / str(result["dataset_id"]) / "v1" / "manifest.jsonl").read_text()
    assert "someone@example.com" not in manifest and "[EMAIL]" in manifest

    done = studio(home, "data", "import", str(corpus), "--step", "nosuchstep.x=1", "--json", check=False)
    assert done.returncode != 0 and "nosuchstep" in done.stderr


@pytest.mark.slow
def test_export_then_reimport_gives_the_same_items(tmp_path, image_folder):
    home = tmp_path / "home"
    first = json.loads(studio(home, "data", "import", str(image_folder), "--json").stdout)
    exported = json.loads(studio(home, "data", "export", str(first["dataset_id"]), "--json").stdout)["path"]
    again = json.loads(studio(home, "data", "import", exported, "--name", "again", "--json").stdout)
    assert again["items_kept"] == first["items_kept"] and again["errors"] == []
    assert stored_items(home, again) == stored_items(home, first)


def stored_items(home, imported: dict) -> list[tuple[str, str]]:
    """(caption, digest of the file's bytes) of each item of an imported version, in a stable order (an import
    draws its own splits, so they are not compared)."""
    import hashlib

    version = home / "datasets" / str(imported["dataset_id"]) / f"v{imported['version']}"
    rows = [json.loads(line) for line in (version / "manifest.jsonl").read_text().splitlines()]
    return sorted((r["caption"], hashlib.sha256((version / r["file"]).read_bytes()).hexdigest())
                  for r in rows)


@pytest.mark.slow
def test_every_setting_is_also_a_flag(tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("word " * 500_000)  # about 2.4 MB
    small = tmp_path / "small.txt"
    small.write_text("a small file with a few words in it")
    home = tmp_path / "flag_home"
    done = studio(tmp_path / "env_home", "data", "import", str(big), str(small), "--max-upload-mb", "1",
                  "--home", str(home), "--json")
    result = json.loads(done.stdout)
    assert result["items_kept"] == 1
    assert result["errors"][0]["file"] == "big.txt" and "STUDIO_MAX_UPLOAD_MB" in result["errors"][0]["reason"]
    assert (home / "studio.db").exists() and not (tmp_path / "env_home").exists()


def test_help_and_listing_runs_import_no_model_library(tmp_path):
    """Every command is declared (and its choices read from the services) when the parser is built: that must
    not load the model stack, nor may a command that only reads the store."""
    from test_web import HEAVY

    code = ("import contextlib, io, sys\n"
            "from studio.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    main(['--help'])\n"
            f"assert main(['runs', 'list', '--home', {str(tmp_path)!r}]) == 0\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "", f"imported: {done.stdout.splitlines()[-1]}"


def test_help_loads_no_database_library():
    """The choices the parser is built with (export formats, roles, rating choices, statuses) live in modules that
    import nothing: ``studio --help`` does not wait for SQLAlchemy (0.6 s) to load."""
    code = ("import contextlib, io, sys\n"
            "from studio.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    main(['--help'])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy')[:3])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"imported: {done.stdout.strip()}"


# ----------------------------------------------------------------------------- errors in one line

def one_line_error(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and "pydantic" not in done.stderr and "input_value" not in done.stderr
    return lines[0]


@pytest.mark.slow
def test_a_bad_setting_is_one_line_naming_it_and_what_it_takes(tmp_path):
    home = tmp_path / "home"
    train = ["train", "--dataset", "1", "--model", "starter-text", "--method", "scratch"]
    assert one_line_error(studio(home, *train, "--set", "learning_rate=abc", check=False)) == \
        "error: learning rate (learning_rate): must be a number above 0 and at most 1 (got 'abc')"
    assert one_line_error(studio(home, *train, "--set", "mixed_precision=fp8", check=False)) == \
        "error: number precision (mixed_precision): must be one of no, fp16, bf16 (got 'fp8')"
    done = studio(home, "data", "list", check=False, extra_env={"STUDIO_PORT": "abc"})
    assert one_line_error(done) == "error: port: must be a whole number between 0 and 65535 (got 'abc')"


def test_an_unexpected_error_is_one_line_saying_where_the_details_are(tmp_path):
    home = tmp_path / "home"
    done = studio(home, "data", "list", check=False, extra_env={"STUDIO_DATABASE_URL": "nosuchdb://somewhere"})
    line = one_line_error(done)
    assert line.startswith("error: NoSuchModuleError: Can't load plugin: sqlalchemy.dialects:nosuchdb")
    log = home / "logs" / "cli.log"
    assert line.endswith(f"(unexpected: the details are in {log})")
    assert "Traceback" in log.read_text() and "cmd_data_list" in log.read_text()


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path):
    """`studio data lexicons list | head -0`: the pipe closes before the command writes; no error, no traceback."""
    env = {**os.environ, "STUDIO_HOME": str(tmp_path / "home")}
    command = subprocess.Popen([sys.executable, "-m", "studio.cli", "data", "lexicons", "list"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    command.stdout.close()  # long before the interpreter has started: its first write meets a closed pipe
    error = command.stderr.read().decode()
    assert command.wait(timeout=120) == 141 and error == "", error


@pytest.fixture
def plain_text_dataset(tmp_path):
    corpus = tmp_path / "tales.txt"
    corpus.write_text("\n\n".join(f"The {a} fox met the {b} hen." for a in ("red", "old", "quick")
                                  for b in ("white", "brown", "tiny", "grey")))
    home = tmp_path / "home"
    return home, str(json.loads(studio(home, "data", "import", str(corpus), "--json").stdout)["dataset_id"])


@pytest.mark.parametrize("setting, reason", [
    ("text_format=chat", "text_format 'chat' needs prompt/response or messages rows"),
    ("mixed_precision=fp16", "number precision fp16 needs a GPU"),
])
@pytest.mark.slow
def test_settings_the_data_or_machine_cannot_run_are_refused_before_the_run_exists(plain_text_dataset, setting,
                                                                                   reason):
    from studio.training.jobs import on_cpu
    from studio.training.config import TrainConfig

    if setting.startswith("mixed_precision") and not on_cpu(TrainConfig()):
        pytest.skip("a GPU runs fp16")
    home, dataset = plain_text_dataset
    done = studio(home, "train", "--dataset", dataset, "--model", "starter-text", "--method", "scratch",
                  "--max-steps", "1", "--set", setting, "--json", check=False)
    assert done.returncode == 2 and reason in json.loads(done.stdout)["error"]
    assert json.loads(studio(home, "runs", "list", "--json").stdout)["runs"] == []


@pytest.mark.slow
def test_a_sample_set_that_fails_midway_says_what_failed(tmp_path, tiny_pipeline):
    home = tmp_path / "home"
    generate = ["generate", "--variant", "base", "--model", str(tiny_pipeline), "--prompt", "a red square",
                "--out", str(tmp_path / "out"), "--json"]
    assert one_line_error(studio(home, *generate, "--set", "guidance_scale=lots", check=False)) == \
        "error: guidance scale (guidance_scale): must be a number between 0 and 50, or empty for the default " \
        "(got 'lots')"
    # A model that fails inside: its scheduler was saved with a timestep spacing diffusers does not know.
    broken = tmp_path / "broken-sd"
    shutil.copytree(tiny_pipeline, broken)
    scheduler = broken / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps({**json.loads(scheduler.read_text()), "timestep_spacing": "sideways"}))
    generate[generate.index(str(tiny_pipeline))] = str(broken)
    done = studio(home, *generate, "--set", "steps=1", check=False)
    result = json.loads(done.stdout)
    assert done.returncode == 1 and result["status"] == "failed" and result["samples"] == []
    [error] = result["errors"]
    assert error.startswith("base (broken-sd): ValueError: sideways is not supported"), error
    assert result["details"] == f"the details are in {home / 'logs' / 'cli.log'}"
    [listed] = json.loads(studio(home, "samples", "list", "--json").stdout)["sample_sets"]
    assert listed["status"] == "failed" and listed["errors"] == 1


@pytest.mark.slow
def test_an_image_size_the_model_cannot_draw_is_refused_before_anything_is_made(tmp_path, tiny_pipeline):
    """The tiny pipeline's VAE halves the picture once (an SD-class one divides by 8): an odd width would fail
    inside the model, halfway through the set; it is refused first, naming the field and what it takes."""
    home = tmp_path / "home"
    generate = ["generate", "--variant", "base", "--model", str(tiny_pipeline), "--prompt", "a red square",
                "--out", str(tmp_path / "out"), "--set", "steps=1"]
    assert one_line_error(studio(home, *generate, "--set", "width=13", check=False)) == \
        "error: width: must be a multiple of 2 for base (tiny-sd), whose VAE draws in blocks of 2 pixels: 12 or 14, " \
        "or 0 for the training resolution (got 13)"
    assert json.loads(studio(home, "samples", "list", "--json").stdout)["sample_sets"] == []  # nothing was made
    made = json.loads(studio(home, *generate, "--set", "width=12", "--set", "height=14", "--json").stdout)
    assert made["status"] == "completed" and Image.open(made["samples"][0]["path"]).size == (12, 14)


def test_eval_preferences_prints_the_import_object_and_refuses_a_set_without_pairs(tmp_path):
    from media_factory import StoreOpener
    from test_evaluation import make_set
    from test_preference_data import vote_by_prompt

    home = tmp_path / "home"
    opener = StoreOpener(tmp_path)
    store = opener(eval_min_decision_seconds=0, eval_repeat_share=0)
    rated, unrated = make_set(store, variants=("base", "7:2"), prompts=3), make_set(store, variants=("base", "7:2"))
    vote_by_prompt(store, rated, "ann", {0: "7:2", 1: "base", 2: "tie"})
    opener.close()

    result = json.loads(studio(home, "eval", "preferences", str(rated), "--json").stdout)
    assert {"dataset_id", "version", "items_in", "items_kept", "removed", "errors", "splits"} <= set(result)
    assert result["name"] == f"votes-set-{rated}" and result["items_kept"] == 2 and result["removed"] == {"tie": 1}
    again = json.loads(studio(home, "eval", "preferences", str(rated), "--name", "round 1", "--json").stdout)
    assert again["name"] == "round 1" and again["version"] == 1
    listed = json.loads(studio(home, "data", "list", "--json").stdout)["datasets"]
    assert listed[0]["versions"][0]["kinds"] == {"example": 0, "pair": 2, "thumbs": 0}
    assert "2 pairs" in studio(home, "data", "list").stdout

    refused = studio(home, "eval", "preferences", str(unrated), check=False)
    assert refused.returncode == 2 and f"sample set {unrated} has no rated pair yet" in refused.stderr


@pytest.mark.slow
def test_a_job_file_trains_as_written_and_set_overrides_it(plain_text_dataset, tmp_path):
    """``studio train job.yaml``: dataset, model, method and every setting from the file (the catalog's
    recommended values are not laid over it), ``--set`` on top; a file that is not a job says so in one line."""
    from studio.training.config import TrainConfig
    from studio.training.job_file import job_yaml

    home, dataset = plain_text_dataset
    written = TrainConfig(learning_rate=0.003, warmup_steps=0, eval_steps=1, sample_steps=0, text={"max_length": 32},
                          per_device_train_batch_size=2, seed=7, report_to=["tensorboard"])
    job = tmp_path / "job.yaml"
    job.write_text(job_yaml(f"{dataset}:1", "starter-text", "scratch", written))
    done = studio(home, "train", str(job), "--set", "max_steps=2", "--json")
    result = json.loads(done.stdout)
    assert result["status"] == "completed" and result["steps"] == 2, result
    assert (result["dataset"], result["model"], result["method"]) == (f"{dataset}:1", "starter-text", "scratch")
    shown = json.loads(studio(home, "runs", "show", str(result["run_id"]), "--json").stdout)
    assert shown["config"] == {**written.model_dump(), "max_steps": 2}
    assert "recommended" not in done.stderr
    assert list((Path(result["output_dir"]) / "tensorboard").rglob("events.out.tfevents.*"))  # report_to, in the worker

    job.write_text(f"dataset: '{dataset}:1'\nmodel: starter-text\nlearning_rate: 0.003\n")
    assert one_line_error(studio(home, "train", str(job), check=False)) == \
        f"error: {job}: method missing (a job file names the dataset version, the model and the method)"


@pytest.mark.slow
@pytest.mark.parametrize("model", ["starter-image-gan", "starter-image-vae"])
def test_a_one_pass_starter_trains_and_generates_through_the_cli(tmp_path, image_folder, model):
    home = tmp_path / "home"
    dataset = json.loads(studio(home, "data", "import", str(image_folder), "--json").stdout)["dataset_id"]
    done = json.loads(studio(home, "train", "--dataset", str(dataset), "--model", model, "--method",
                             "scratch", "--max-steps", "2", "--set", "resolution=16", "--set", "eval_steps=1",
                             "--json").stdout)
    assert done["status"] == "completed"
    shown = studio(home, "runs", "show", str(done["run_id"])).stdout  # what it trained with, not 'sft'
    assert f"(scratch · {'adversarial' if model.endswith('gan') else 'variational'} {model} on " in shown
    made = json.loads(studio(home, "generate", "--variant", str(done["run_id"]), "--prompt", "a red square",
                             "--samples", "3", "--seed", "5", "--out", str(tmp_path / "out"), "--json").stdout)
    assert made["status"] == "completed" and len(list((tmp_path / "out").rglob("*.png"))) == 3
