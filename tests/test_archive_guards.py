"""Upload and archive guards: path traversal, zip bombs, lying headers, symlinks, size limits,
nested zips; and a good zip (or an exported dataset version) importing cleanly."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest

from media_factory import circle, errors_by_file, make_zip, manifest, photo, save, write
from studio.data.archive import extract_zip, stage_inputs
from studio.data.export import export_zip
from studio.data.items import ImportRefused
from studio.data.service import import_dataset
from studio.settings import load_settings
from studio.store.tables import Upload

MB = 1024 * 1024






@pytest.fixture
def png():
    """Bytes of a small, sharp, captionable PNG (distinct per seed), made in memory."""
    def make(seed: int = 0) -> bytes:
        buffer = io.BytesIO()
        photo(96, seed=seed).save(buffer, format="PNG")
        return buffer.getvalue()
    return make


def settings(tmp_path, **overrides):
    return load_settings(home=tmp_path / "home", **overrides)


def files_named(root: Path, name: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.name == name]


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


# -------------------------------------------------------------------------------- path traversal


ESCAPING = ["../evil.txt", "/etc/x", "cats/../../evil.txt", "..\\evil.txt", "C:/evil.txt", "C:\\evil.txt"]


@pytest.mark.parametrize("bad_name", ESCAPING)
def test_a_member_escaping_the_folder_refuses_the_whole_zip(tmp_path, png, bad_name):
    etc_x_existed = Path("/etc/x").exists()
    archive = make_zip(tmp_path / "src/upload.zip", {"ok.png": png(1), "ok.txt": "fine", bad_name: "evil"})
    dest = tmp_path / "home/uploads/u/files/upload_zip"
    staged, problems = extract_zip(archive, "upload.zip", dest, settings(tmp_path))
    assert staged == []
    assert [p.file for p in problems] == ["upload.zip"]
    assert problems[0].reason.startswith("archive refused: member ")
    assert bad_name in problems[0].reason and "outside the dataset folder" in problems[0].reason
    assert not dest.exists()  # refused before a single byte was extracted
    assert files_named(tmp_path, "evil.txt") == [] and files_named(tmp_path, "ok.png") == []
    assert all_files(tmp_path) == [archive]
    assert Path("/etc/x").exists() == etc_x_existed


@pytest.mark.parametrize("bad_name", ["../evil.txt", "/etc/x"])
def test_import_of_an_escaping_zip_is_refused_and_leaves_nothing_behind(tmp_path, stores, png, bad_name):
    store = stores()
    archive = make_zip(tmp_path / "src/upload.zip", {"ok.png": png(1), "ok.txt": "fine", bad_name: "evil"})
    with pytest.raises(ImportRefused) as refused:
        import_dataset(store, [archive])
    message = str(refused.value)
    assert "upload.zip: archive refused" in message and bad_name in message
    assert files_named(tmp_path, "evil.txt") == [] and files_named(tmp_path, "x") == []
    assert files_named(tmp_path, "ok.png") == []
    assert list((store.home / "uploads").iterdir()) == []
    assert list((store.home / "datasets").iterdir()) == []
    with store.session() as session:
        assert session.query(Upload).count() == 0


def test_an_escaping_zip_next_to_good_files_is_reported_and_the_rest_imported(tmp_path, stores, png):
    store = stores()
    folder = tmp_path / "src/good"
    write(folder / "a.png", png(1))
    write(folder / "a.txt", "first")
    write(folder / "b.png", png(2))
    write(folder / "b.txt", "second")
    evil = make_zip(tmp_path / "src/evil.zip", {"c.png": png(3), "../../evil.txt": "evil"})
    result = import_dataset(store, [folder, evil], split="1,0,0")
    assert result["items_kept"] == 2
    assert sorted(r["caption"] for r in manifest(store, result)) == ["first", "second"]
    errors = errors_by_file(result)
    assert list(errors) == ["evil.zip"] and "'../../evil.txt'" in errors["evil.zip"]
    assert files_named(tmp_path, "evil.txt") == [] and files_named(store.home, "c.png") == []


# -------------------------------------------------------------------------------------- zip bombs


def test_a_highly_compressed_member_is_refused_as_a_zip_bomb(tmp_path, png):
    archive = make_zip(tmp_path / "src/bomb.zip", {"a.png": png(1), "zeros.bin": bytes(4 * MB)})
    with zipfile.ZipFile(archive) as z:
        assert z.getinfo("zeros.bin").file_size / z.getinfo("zeros.bin").compress_size > 100
    dest = tmp_path / "home/x/bomb_zip"
    staged, problems = extract_zip(archive, "bomb.zip", dest, settings(tmp_path, max_archive_ratio=50,
                                                                       max_archive_total_mb=1))
    assert staged == [] and not dest.exists()
    assert [p.file for p in problems] == ["bomb.zip"]
    assert "zeros.bin" in problems[0].reason and "zip bomb" in problems[0].reason
    assert "limit 50x" in problems[0].reason


def test_the_total_uncompressed_size_is_limited(tmp_path, png):
    archive = make_zip(tmp_path / "src/big.zip", {"a.png": png(1), "zeros.bin": bytes(3 * MB)})
    dest = tmp_path / "home/x/big_zip"
    staged, problems = extract_zip(archive, "big.zip", dest,
                                   settings(tmp_path, max_archive_ratio=10**9, max_archive_total_mb=1))
    assert staged == [] and not dest.exists()
    assert problems[0].reason == "archive refused: it expands to 3 MB; the limit is 1 MB"


def test_small_compressible_files_and_moderate_ratios_are_not_bombs(tmp_path, png):
    # a member under 64 KiB is not ratio-checked (a caption may compress 200x and be no danger), real text
    # compresses a few times, and a big member under the ratio passes
    import numpy as np
    rng = np.random.default_rng(0)
    half_random = rng.integers(0, 256, 2 * MB, dtype=np.uint8).tobytes() + bytes(2 * MB)
    vocabulary = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), int(n))) for n in rng.integers(2, 10, 2000)]
    prose = " ".join(rng.choice(vocabulary, 100_000))
    archive = make_zip(tmp_path / "src/ok.zip", {"a.png": png(1), "a.txt": "hello " * 10_000, "notes.txt": prose,
                                                 "data.bin": half_random})
    with zipfile.ZipFile(archive) as z:
        assert z.getinfo("a.txt").file_size / z.getinfo("a.txt").compress_size > 100
    staged, problems = extract_zip(archive, "ok.zip", tmp_path / "home/x/ok_zip", settings(tmp_path, max_archive_ratio=10))
    assert problems == []
    assert sorted(s.name for s in staged) == ["ok.zip/a.png", "ok.zip/a.txt", "ok.zip/data.bin", "ok.zip/notes.txt"]
    assert (tmp_path / "home/x/ok_zip/data.bin").read_bytes() == half_random


def test_every_member_over_64_kib_is_ratio_checked(tmp_path, png):
    # members of exactly 1 MiB used to escape the check (it looked only at members over 1 MiB)
    members = {f"zeros{n}.txt": "0" * MB for n in range(8)}
    archive = make_zip(tmp_path / "src/many.zip", {"a.png": png(1), **members})
    dest = tmp_path / "home/x/many_zip"
    staged, problems = extract_zip(archive, "many.zip", dest, settings(tmp_path))
    assert staged == [] and not dest.exists()
    assert [p.file for p in problems] == ["many.zip"]
    assert problems[0].reason.startswith("archive refused: member 'zeros0.txt' expands ")
    assert "(limit 100x): this looks like a zip bomb" in problems[0].reason
    just_over = make_zip(tmp_path / "src/small.zip", {"a.png": png(1), "zeros.txt": "0" * (64 * 1024 + 1)})
    staged, problems = extract_zip(just_over, "small.zip", tmp_path / "home/x/small_zip", settings(tmp_path))
    assert staged == [] and "member 'zeros.txt' expands" in problems[0].reason


def test_many_small_compressible_members_meet_the_ratio_of_the_whole_archive(tmp_path):
    # each member is under the 64 KiB floor, but together they expand far past the ratio
    members = {f"zeros{n}.txt": "0" * 60_000 for n in range(50)}
    archive = make_zip(tmp_path / "src/small_bombs.zip", members)
    dest = tmp_path / "home/x/small_bombs_zip"
    staged, problems = extract_zip(archive, "small_bombs.zip", dest, settings(tmp_path))
    assert staged == [] and not dest.exists()
    assert problems[0].reason.startswith("archive refused: as a whole, it expands ")
    assert problems[0].reason.endswith("x (limit 100x): this looks like a zip bomb")
    fine = make_zip(tmp_path / "src/fine.zip", dict(list(members.items())[:1]))  # one such member: under the floor
    assert extract_zip(fine, "fine.zip", tmp_path / "home/x/fine_zip", settings(tmp_path))[1] == []


def test_import_of_a_zip_bomb_is_refused(tmp_path, stores, png):
    store = stores(max_archive_ratio=20, max_archive_total_mb=1)
    archive = make_zip(tmp_path / "src/bomb.zip", {"a.png": png(1), "a.txt": "a", "b.png": bytes(5 * MB)})
    with pytest.raises(ImportRefused, match="zip bomb"):
        import_dataset(store, [archive])
    assert files_named(store.home, "b.png") == [] and files_named(store.home, "a.png") == []


# ------------------------------------------------------------------------------------ member count


def test_too_many_members_refuse_the_zip_but_the_limit_itself_is_allowed(tmp_path):
    s = settings(tmp_path, max_archive_members=5)
    five = make_zip(tmp_path / "src/five.zip", {f"{n}.txt": str(n) for n in range(5)})
    staged, problems = extract_zip(five, "five.zip", tmp_path / "home/five", s)
    assert problems == [] and len(staged) == 5
    six = make_zip(tmp_path / "src/six.zip", {f"{n}.txt": str(n) for n in range(6)})
    staged, problems = extract_zip(six, "six.zip", tmp_path / "home/six", s)
    assert staged == [] and not (tmp_path / "home/six").exists()
    assert problems[0].reason == "archive refused: it holds 6 files; the limit is 5"


def test_folders_in_a_zip_do_not_count_as_members(tmp_path):
    path = tmp_path / "src/dirs.zip"
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w") as archive:
        for n in range(4):
            archive.writestr(f"d{n}/", "")
        archive.writestr("d0/a.txt", "a")
        archive.writestr("d1/b.txt", "b")
    staged, problems = extract_zip(path, "dirs.zip", tmp_path / "home/dirs", settings(tmp_path, max_archive_members=2))
    assert problems == [] and sorted(s.name for s in staged) == ["dirs.zip/d0/a.txt", "dirs.zip/d1/b.txt"]


# --------------------------------------------------------------------------------- lying headers


def _set_declared_size(path: Path, size: int) -> None:
    """Rewrite the uncompressed size of the (only) member in both its local and central headers."""
    raw = bytearray(path.read_bytes())
    local, central = raw.index(b"PK\x03\x04"), raw.index(b"PK\x01\x02")
    raw[local + 22:local + 26] = size.to_bytes(4, "little")
    raw[central + 24:central + 28] = size.to_bytes(4, "little")
    path.write_bytes(bytes(raw))


def test_a_header_that_understates_the_size_does_not_get_past_the_limits(tmp_path):
    archive = make_zip(tmp_path / "src/liar.zip", {"zeros.bin": bytes(3 * MB)})
    _set_declared_size(archive, 100)
    with zipfile.ZipFile(archive) as z:
        assert z.getinfo("zeros.bin").file_size == 100  # what the limits will see
    dest = tmp_path / "home/x/liar_zip"
    staged, problems = extract_zip(archive, "liar.zip", dest, settings(tmp_path, max_archive_total_mb=1,
                                                                       max_archive_ratio=10))
    assert staged == [] and not dest.exists()
    assert [p.file for p in problems] == ["liar.zip"]
    assert problems[0].reason.startswith(("archive refused", "not a readable zip archive"))
    assert all_files(tmp_path) == [archive]


def test_a_header_that_overstates_the_size_is_held_to_the_limits(tmp_path):
    archive = make_zip(tmp_path / "src/boast.zip", {"small.txt": "tiny"}, compression=zipfile.ZIP_STORED)
    _set_declared_size(archive, 50 * MB)
    staged, problems = extract_zip(archive, "boast.zip", tmp_path / "home/boast", settings(tmp_path, max_archive_total_mb=1))
    assert staged == []
    assert problems[0].reason.startswith("archive refused")


# ------------------------------------------------------------------------------------- symlinks


def test_a_symlink_member_refuses_the_zip(tmp_path, png):
    path = tmp_path / "src/links.zip"
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.png", png(1))
        link = zipfile.ZipInfo("cats/secret.png")
        link.create_system = 3  # unix
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    dest = tmp_path / "home/x/links_zip"
    staged, problems = extract_zip(path, "links.zip", dest, settings(tmp_path))
    assert staged == [] and not dest.exists()
    assert problems[0].reason == "archive refused: member 'cats/secret.png' is a symbolic link"
    assert not any(p.is_symlink() for p in tmp_path.rglob("*"))


def test_symlinks_inside_an_uploaded_folder_are_not_followed(tmp_path):
    secret = write(tmp_path / "outside/secret.txt", "do not import me")
    folder = tmp_path / "src/folder"
    write(folder / "caption.txt", "hello")
    os.symlink(secret, folder / "linked.txt")
    os.symlink(secret.parent, folder / "linked_dir")
    staged, problems = stage_inputs([folder], tmp_path / "home/staged", settings(tmp_path))
    assert [s.name for s in staged] == ["folder/caption.txt"]
    assert files_named(tmp_path / "home", "secret.txt") == []


def test_a_member_with_no_name_refuses_the_zip_instead_of_crashing(tmp_path, png):
    for n, empty in enumerate(["", "."]):
        archive = make_zip(tmp_path / f"src/noname{n}.zip", {"a.png": png(1), empty: "x"})
        staged, problems = extract_zip(archive, "noname.zip", tmp_path / f"home/noname{n}", settings(tmp_path))
        assert staged == [] and problems[0].reason.startswith("archive refused")


# ----------------------------------------------------------------------------------- upload size


def test_a_file_over_the_upload_limit_is_refused_naming_the_setting(tmp_path, stores, png):
    store = stores(max_upload_mb=1)
    folder = tmp_path / "src/up"
    write(folder / "a.png", png(1))
    write(folder / "a.txt", "small enough")
    write(folder / "huge.png", png(2) + bytes(2 * MB))
    write(folder / "huge.txt", "too big")
    big_zip = make_zip(tmp_path / "src/big.zip", {"b.png": os.urandom(2 * MB)}, compression=zipfile.ZIP_STORED)
    result = import_dataset(store, [folder, big_zip], split="1,0,0")
    assert [r["source"] for r in manifest(store, result)] == ["up/a.png"]
    errors = errors_by_file(result)
    assert set(errors) == {"up/huge.png", "big.zip"}
    for reason in errors.values():
        assert reason == "file is 2 MB; the upload limit is 1 MB (STUDIO_MAX_UPLOAD_MB)"
    assert files_named(store.home, "huge.png") == [] and files_named(store.home, "b.png") == []


def test_a_file_at_the_upload_limit_is_accepted(tmp_path):
    at_limit = write(tmp_path / "src/exact.bin", bytes(MB))
    staged, problems = stage_inputs([at_limit], tmp_path / "home/staged", settings(tmp_path, max_upload_mb=1))
    assert problems == [] and [s.name for s in staged] == ["exact.bin"]


def test_a_missing_input_is_reported(tmp_path):
    staged, problems = stage_inputs([tmp_path / "nope.png"], tmp_path / "home/staged", settings(tmp_path))
    assert staged == [] and problems[0].reason == "no such file or folder"


# ----------------------------------------------------------------------------- nested and broken


def test_a_zip_inside_a_zip_is_reported_and_not_opened(tmp_path, stores, png):
    store = stores()
    inner = make_zip(tmp_path / "src/inner.zip", {"hidden.png": png(9), "hidden.txt": "hidden"})
    outer = make_zip(tmp_path / "src/outer.zip", {"a.png": png(1), "a.txt": "outer image",
                                                  "more/inner.zip": inner})
    result = import_dataset(store, [outer], split="1,0,0")
    assert [(r["source"], r["caption"]) for r in manifest(store, result)] == [("outer.zip/a.png", "outer image")]
    errors = errors_by_file(result)
    assert list(errors) == ["outer.zip/more/inner.zip"]
    assert "archives inside archives are not opened" in errors["outer.zip/more/inner.zip"]
    assert files_named(store.home, "hidden.png") == [] and files_named(store.home, "inner.zip") == []


def test_a_file_named_zip_that_is_not_a_zip_is_reported(tmp_path, stores, png):
    store = stores()
    broken = write(tmp_path / "src/broken.zip", b"PK\x03\x04 but then nothing sensible" * 10)
    good = write(tmp_path / "src/good.png", png(1))
    write(tmp_path / "src/good.txt", "good")
    result = import_dataset(store, [broken, good, tmp_path / "src/good.txt"], split="1,0,0")
    assert result["items_kept"] == 1
    assert errors_by_file(result)["broken.zip"].startswith("not a readable zip archive")


# --------------------------------------------------------------------------------------- good zip


def test_a_good_zip_with_images_and_sidecars_imports(tmp_path, stores, png):
    store = stores()
    archive = make_zip(tmp_path / "src/photos.zip", {
        "cats/1.png": png(1), "cats/1.txt": "a cat",
        "cats/2.png": png(2), "cats/2.txt": "another cat",
        "dogs/3.png": png(3), "dogs/metadata.jsonl": json.dumps({"file_name": "3.png", "text": "a dog"}) + "\n",
        "__MACOSX/cats/._1.png": b"\x00\x05\x16\x07 resource fork",
        ".DS_Store": b"\x00\x00\x00\x01Bud1",
        "cats/.hidden.png": png(4),
    })
    result = import_dataset(store, [archive], split="1,0,0")
    assert result["name"] == "photos" and result["modality"] == "image"
    assert result["errors"] == [] and result["warnings"] == []
    assert sorted((r["source"], r["caption"]) for r in manifest(store, result)) == [
        ("photos.zip/cats/1.png", "a cat"), ("photos.zip/cats/2.png", "another cat"),
        ("photos.zip/dogs/3.png", "a dog")]
    assert files_named(store.home, "._1.png") == [] and files_named(store.home, ".hidden.png") == []
    upload = next((store.home / "uploads").iterdir()) / "files/photos_zip"
    assert sorted(p.relative_to(upload).as_posix() for p in all_files(store.home / "uploads")) == [
        "cats/1.png", "cats/1.txt", "cats/2.png", "cats/2.txt", "dogs/3.png", "dogs/metadata.jsonl"]


# ------------------------------------------------------------------------------ export round trip


def test_an_exported_image_version_imports_back_to_the_same_items_and_captions(tmp_path, stores):
    store = stores()
    folder = tmp_path / "src/shapes"
    captions = {}
    for n in range(8):
        image = circle(80) if n == 0 else photo(90 + 4 * n, seed=100 + n)
        if n == 3:
            image = image.convert("L")  # rewritten to RGB by cleaning: the export holds the cleaned file
        save(image, folder / (f"img_{n}.png" if n != 5 else f"img_{n}.jpg"))
        captions[n] = f"caption number {n}, with ünïcode"
        write(folder / f"img_{n}.txt", captions[n])
    first = import_dataset(store, [folder], name="shapes", split="0.5,0.25,0.25")
    assert first["items_kept"] == 8 and first["errors"] == []
    assert set(first["splits"]) == {"train", "validation", "test"} and all(first["splits"].values())

    exported = export_zip(store, f"{first['dataset_id']}:{first['version']}")
    assert exported.name == "shapes_v1.zip" and exported.parent == store.home / "exports"
    with zipfile.ZipFile(exported) as z:
        names = z.namelist()
    for split in ("train", "validation", "test"):
        assert f"{split}/metadata.jsonl" in names
    assert sum(n.endswith((".png", ".jpg")) for n in names) == 8

    again = import_dataset(store, [exported], split="1,0,0")
    assert again["name"] == "shapes_v1"
    assert again["errors"] == [] and again["items_in"] == again["items_kept"] == 8
    assert sorted(r["caption"] for r in manifest(store, again)) == sorted(captions.values())
    before = sorted((r["caption"], r["width"], r["height"]) for r in manifest(store, first))
    after = sorted((r["caption"], r["width"], r["height"]) for r in manifest(store, again))
    assert before == after
