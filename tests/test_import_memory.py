"""An import's memory stays bounded whatever its files hold.

Each import runs in a child process whose address space is capped (RLIMIT_AS) at what it used after a warm-up
import of the same modality (so every lazily imported library is in already) plus CAP_MB. The bad files are the
ones that used to take the web process to gigabytes: a 200 MB text file with no line break, a CSV with a million
columns, an hour of (very compressible) FLAC silence with and without a length in its header, a zip of 1 MiB
members that each expand 1000x, an image whose header claims 2.5 gigapixels. Each must end as a clear problem
naming the file and the reason, inside the cap, while the good files beside it still import.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from media_factory import flac_without_length, make_zip, photo, save, tone, write, write_audio

pytestmark = pytest.mark.slow  # capped child processes, each after a warm-up import

REPO = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
CAP_MB = 250  # over the warmed-up child: well above what a bounded import needs, well below one of these files
FILL_CAPTIONS = {"missing_captions": {"action": "fill"}}

CHILD = r"""
import json, resource, sys

from studio.data.items import ImportRefused
from studio.data.service import import_dataset
from studio.settings import load_settings
from studio.store import open_store


def vm_kb(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


args = json.loads(sys.argv[1])
store = open_store(load_settings(home=args["home"]))
options = {"split": "1,0,0", "steps": args["steps"]}
import_dataset(store, args["warmup"], name="warmup", **options)  # every library the import needs gets loaded
cap = vm_kb("VmSize") * 1024 + args["cap_mb"] * 2**20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
try:
    outcome = {"result": import_dataset(store, args["paths"], name="upload", **options)}
except ImportRefused as refused:
    outcome = {"refused": str(refused)}
outcome["grew_mb"] = (vm_kb("VmPeak") * 1024 + args["cap_mb"] * 2**20 - cap) / 2**20
print(json.dumps(outcome))
"""


def import_capped(tmp_path: Path, warmup: list[Path], paths: list[Path], steps: dict | None = None) -> dict:
    """import_dataset of ``paths`` in a child process held to CAP_MB more than its warmed-up address space."""
    args = {"home": str(tmp_path / "home"), "warmup": [str(p) for p in warmup], "paths": [str(p) for p in paths],
            "steps": steps, "cap_mb": CAP_MB}
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["grew_mb"] < CAP_MB
    return outcome


def errors_of(outcome: dict) -> dict[str, str]:
    assert "result" in outcome, outcome
    return {e["file"]: e["reason"] for e in outcome["result"]["errors"]}


# ------------------------------------------------------------------------------------------------ files


def one_line_text(path: Path, megabytes: int) -> Path:
    """A text file of ``megabytes`` MB with no line break in it, written a chunk at a time."""
    chunk = ("all work and no play " * 50_000)[:MB]
    with open(path, "w", encoding="utf-8") as out:
        for _ in range(megabytes):
            out.write(chunk)
    return path


def wide_csv(path: Path, columns: int, rows: int) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        out.write(",".join(f"c{n}" for n in range(columns)) + "\n")
        row = ",".join("x" * columns) + "\n"
        for _ in range(rows):
            out.write(row)
    return path


def hour_of_silence(path: Path, rate: int = 16_000) -> Path:
    import soundfile as sf

    minute = np.zeros(rate * 60, dtype=np.float32)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, format="FLAC") as out:
        for _ in range(60):
            out.write(minute)
    return path


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header says ``width`` x ``height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1024)))
                     + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------------------------------ tests


def test_text_import_stays_bounded_on_a_huge_line_a_million_columns_and_a_zip_of_expanding_members(tmp_path):
    src = tmp_path / "src"
    warmup = write(src / "warmup.jsonl", json.dumps({"text": "a first warm-up document of some length"}) + "\n")
    good = write(src / "good.jsonl", "".join(json.dumps({"text": f"Good document number {n}, kept whole."}) + "\n"
                                             for n in range(5)))
    huge = one_line_text(src / "one_line.txt", 200)
    wide = wide_csv(src / "wide.csv", 1_000_000, 10)
    expanding = make_zip(src / "expanding.zip", {f"part{n}.txt": "0" * MB for n in range(20)})
    outcome = import_capped(tmp_path, [warmup], [huge, wide, good, expanding])
    assert outcome["result"]["items_kept"] == 5
    errors = errors_of(outcome)
    assert set(errors) == {"one_line.txt", "wide.csv", "expanding.zip"}
    assert errors["one_line.txt"] == ("nothing usable: line 1 is longer than 1,000,000 characters "
                                      "(STUDIO_MAX_LINE_CHARS); skipped")
    assert errors["wide.csv"].startswith("the header (line 1) is longer than 1,000,000 characters")
    assert "at most 1,000 columns (STUDIO_MAX_TABLE_COLUMNS)" in errors["wide.csv"]
    assert errors["expanding.zip"].startswith("archive refused: member 'part0.txt' expands ")
    assert errors["expanding.zip"].endswith("this looks like a zip bomb")


def test_audio_import_stays_bounded_on_an_hour_of_silence_with_or_without_a_length(tmp_path):
    src = tmp_path / "src"
    warmup = write_audio(src / "warmup.wav", tone(220, 1.0), 16_000)
    write_audio(src / "clips/good.wav", tone(330, 1.0), 16_000)
    write(src / "clips/good.txt", "a clear tone")
    hour = hour_of_silence(src / "clips/hour.flac")
    assert hour.stat().st_size < MB  # an hour of silence compresses to almost nothing...
    flac_without_length(hour, src / "clips/endless.flac")  # ...and may not even say how long it is
    outcome = import_capped(tmp_path, [warmup], [src / "clips"], FILL_CAPTIONS)
    assert outcome["result"]["items_kept"] == 1
    errors = errors_of(outcome)
    assert errors == {"clips/hour.flac": "too long: 3,600 s (limit 600 s, STUDIO_MAX_AUDIO_SECONDS)",
                      "clips/endless.flac": "the header gives no length (a FLAC written as a stream?): re-encode "
                                            "the file with its length, for example with ffmpeg -i in.flac out.flac"}


def test_image_import_refuses_a_decompression_bomb_from_its_header(tmp_path):
    src = tmp_path / "src"
    warmup = save(photo(96, seed=1), src / "warmup.png")
    save(photo(96, seed=2), src / "pics/good.png")
    png_claiming(src / "pics/bomb.png", 50_000, 50_000)
    outcome = import_capped(tmp_path, [warmup], [src / "pics"], FILL_CAPTIONS)
    assert outcome["result"]["items_kept"] == 1
    errors = errors_of(outcome)
    assert list(errors) == ["pics/bomb.png"] and "decompression bomb" in errors["pics/bomb.png"]


@pytest.mark.parametrize("name", ["one_line.txt", "notes.md"])
def test_a_file_with_one_overlong_line_keeps_its_other_lines_and_names_the_skipped_one(tmp_path, name):
    from studio.data.archive import StagedFile
    from studio.data.read_text import read_text_files
    from studio.settings import load_settings

    path = write(tmp_path / name, "first paragraph\n\n" + "x" * 5_000 + "\n\nlast paragraph\n")
    result = read_text_files([StagedFile(name, path)], settings=load_settings(max_line_chars=1_000))
    assert [item.text for item in result.items] == ["first paragraph", "last paragraph\n"]
    assert result.problems == []
    assert [(w.file, w.reason) for w in result.warnings] == [
        (name, "line 3 is longer than 1,000 characters (STUDIO_MAX_LINE_CHARS); skipped")]
