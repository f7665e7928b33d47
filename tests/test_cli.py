"""The `studio` command's contract, as scripts and our acceptance checks use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest
from PIL import Image


def studio(home, *args, check=True):
    env = {**os.environ, "STUDIO_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "studio.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)
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


def test_export_then_reimport_gives_the_same_items(tmp_path, image_folder):
    home = tmp_path / "home"
    first = json.loads(studio(home, "data", "import", str(image_folder), "--json").stdout)
    exported = json.loads(studio(home, "data", "export", str(first["dataset_id"]), "--json").stdout)["path"]
    again = json.loads(studio(home, "data", "import", exported, "--name", "again", "--json").stdout)
    assert again["items_kept"] == first["items_kept"] and again["errors"] == []


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
