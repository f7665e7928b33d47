"""Image side of the data pipeline: reading (captions, bad files) and every image cleaning step,
each checked for what it removes or changes AND for what it must leave alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance

from media_factory import (blurred, circle, digest, errors_by_file, image_item, manifest, photo,
                           run_step, save, sources, truncate, write)
from studio.data.archive import StagedFile
from studio.data.clean import default_config
from studio.data.items import ImportRefused
from studio.data.read_media import read_media_files
from studio.data.service import import_dataset
from studio.settings import load_settings








# ------------------------------------------------------------------------------------ min size


def test_min_size_removes_images_with_a_short_side_and_keeps_the_rest(tmp_path, scratch):
    items = [image_item(save(Image.new("RGB", size, "white"), tmp_path / f"{size[0]}x{size[1]}.png"))
             for size in [(32, 32), (63, 200), (64, 64), (200, 64), (300, 120)]]
    outcome = run_step("min_size", items, "image", scratch)
    assert sources(outcome.removed) == ["32x32.png", "63x200.png"]
    assert sources(outcome.kept) == ["64x64.png", "200x64.png", "300x120.png"]
    reasons = dict(zip(sources(outcome.removed), (r for _, r in outcome.removed)))
    assert "32x32" in reasons["32x32.png"] and "minimum side 64" in reasons["32x32.png"]


def test_min_size_follows_its_parameter(tmp_path, scratch):
    items = [image_item(save(Image.new("RGB", (s, s)), tmp_path / f"{s}.png")) for s in (64, 99, 100, 150)]
    outcome = run_step("min_size", items, "image", scratch, min_side=100)
    assert sources(outcome.removed) == ["64.png", "99.png"]
    assert sources(outcome.kept) == ["100.png", "150.png"]


# -------------------------------------------------------------------------------- aspect ratio


def test_aspect_ratio_removes_very_wide_and_very_tall_images_only(tmp_path, scratch):
    sizes = {"square": (100, 100), "four_to_one": (400, 100), "wide": (401, 100), "tall": (100, 500),
             "portrait": (100, 300)}
    items = [image_item(save(Image.new("RGB", size), tmp_path / f"{name}.png")) for name, size in sizes.items()]
    outcome = run_step("aspect_ratio", items, "image", scratch)
    assert sources(outcome.removed) == ["wide.png", "tall.png"]
    assert sources(outcome.kept) == ["square.png", "four_to_one.png", "portrait.png"]
    assert "5.0:1" in dict((i.source, r) for i, r in outcome.removed)["tall.png"]


def test_aspect_ratio_threshold_is_a_parameter(tmp_path, scratch):
    items = [image_item(save(Image.new("RGB", (300, 100)), tmp_path / "three.png")),
             image_item(save(Image.new("RGB", (150, 100)), tmp_path / "one_and_half.png"))]
    outcome = run_step("aspect_ratio", items, "image", scratch, max_ratio=2.0)
    assert sources(outcome.removed) == ["three.png"]
    assert sources(outcome.kept) == ["one_and_half.png"]


# ----------------------------------------------------------------------------------------- blur


def test_blur_removes_a_blurred_photo_and_keeps_sharp_images(tmp_path, scratch):
    items = [
        image_item(save(blurred(photo(256, seed=1), 4), tmp_path / "blurred_photo.png")),
        image_item(save(photo(256, seed=1), tmp_path / "sharp_photo.png")),
        image_item(save(circle(64), tmp_path / "circle_64.png")),
        image_item(save(circle(256), tmp_path / "circle_256.png")),
        image_item(save(circle(1024), tmp_path / "circle_1024.png")),  # thumbnailed to 512 before scoring
        image_item(save(blurred(photo(256, seed=2), 3), tmp_path / "blurred_jpeg.jpg", quality=90)),
    ]
    outcome = run_step("blur", items, "image", scratch)
    assert sources(outcome.removed) == ["blurred_photo.png", "blurred_jpeg.jpg"]
    assert sources(outcome.kept) == ["sharp_photo.png", "circle_64.png", "circle_256.png", "circle_1024.png"]
    assert all(reason.startswith("blurry: sharpness") for _, reason in outcome.removed)
    # the score is kept on every item, for the report and for tuning the threshold
    scores = {item.source: item.meta["sharpness"] for item in items}
    assert scores["blurred_photo.png"] < 15 < scores["circle_64.png"]
    assert scores["sharp_photo.png"] > 10 * scores["blurred_photo.png"]


def test_blur_threshold_zero_keeps_everything(tmp_path, scratch):
    items = [image_item(save(blurred(photo(128, seed=3), 6), tmp_path / "very_blurred.png"))]
    assert sources(run_step("blur", items, "image", scratch, threshold=0.0).kept) == ["very_blurred.png"]


# ------------------------------------------------------------------------------ exact duplicates


def test_exact_duplicates_are_the_same_pixels_whatever_the_file(tmp_path, scratch):
    original = photo(96, seed=4)
    first = save(original, tmp_path / "first.png")
    copy = write(tmp_path / "renamed_copy.png", first.read_bytes())
    recompressed = save(original, tmp_path / "recompressed.png", compress_level=0)  # other bytes, same pixels
    webp = save(original, tmp_path / "lossless.webp", lossless=True)
    changed = original.copy()
    changed.putpixel((10, 10), tuple((v + 1) % 256 for v in changed.getpixel((10, 10))))
    one_pixel = save(changed, tmp_path / "one_pixel_off.png")
    assert digest(recompressed) != digest(first)

    items = [image_item(p) for p in (first, copy, recompressed, webp, one_pixel)]
    outcome = run_step("exact_duplicates", items, "image", scratch)
    assert sources(outcome.kept) == ["first.png", "one_pixel_off.png"]
    assert sources(outcome.removed) == ["renamed_copy.png", "recompressed.png", "lossless.webp"]
    assert all(reason == "exact duplicate of first.png" for _, reason in outcome.removed)


def test_exact_duplicates_need_the_same_size_too(tmp_path, scratch):
    # a 64x32 and a 32x64 image with identical raw bytes are not the same picture
    pixels = np.random.default_rng(0).integers(0, 256, 64 * 32 * 3, dtype=np.uint8)
    wide = save(Image.fromarray(pixels.reshape(32, 64, 3)), tmp_path / "wide.png")
    tall = save(Image.fromarray(pixels.reshape(64, 32, 3)), tmp_path / "tall.png")
    outcome = run_step("exact_duplicates", [image_item(wide), image_item(tall)], "image", scratch)
    assert sources(outcome.kept) == ["wide.png", "tall.png"]


# ------------------------------------------------------------------------------- near duplicates


def test_near_duplicates_remove_a_brightened_jpeg_copy_and_keep_different_images(tmp_path, scratch):
    original = photo(256, seed=5)
    first = save(original, tmp_path / "original.png")
    brighter = save(ImageEnhance.Brightness(original).enhance(1.08), tmp_path / "brighter.jpg", quality=80)
    other = save(photo(256, seed=6), tmp_path / "other.png")
    shape = save(circle(256, color="blue"), tmp_path / "circle.png")
    assert digest(first) != digest(brighter)

    outcome = run_step("near_duplicates", [image_item(p) for p in (first, brighter, other, shape)], "image",
                       scratch)
    assert sources(outcome.kept) == ["original.png", "other.png", "circle.png"]
    assert sources(outcome.removed) == ["brighter.jpg"]
    reason = outcome.removed[0][1]
    assert reason.startswith("near-duplicate of original.png (similarity ")
    assert float(reason.rsplit(" ", 1)[1].rstrip(")")) >= 0.9


def test_near_duplicates_keep_the_first_of_a_group_and_name_it(tmp_path, scratch):
    base = photo(200, seed=7)
    paths = [save(base, tmp_path / "a.png"),
             save(ImageEnhance.Contrast(base).enhance(1.05), tmp_path / "b.jpg", quality=85),
             save(base.resize((150, 150)), tmp_path / "c_smaller.png")]
    outcome = run_step("near_duplicates", [image_item(p) for p in paths], "image", scratch)
    assert sources(outcome.kept) == ["a.png"]
    assert [r.split(" (")[0] for _, r in outcome.removed] == ["near-duplicate of a.png"] * 2


# ----------------------------------------------------------------------------------------- to RGB


def test_to_rgb_writes_new_rgb_files_and_leaves_the_upload_untouched(tmp_path, scratch):
    grey = save(Image.new("L", (64, 64), 100), tmp_path / "grey.png")
    palette_image = Image.new("RGB", (64, 64), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    palette = save(palette_image, tmp_path / "palette.png")
    rgba = save(Image.new("RGBA", (64, 64), (200, 20, 40, 255)), tmp_path / "rgba.png")
    grey_jpeg = save(Image.new("L", (64, 64), 50), tmp_path / "grey.jpg")
    rgb = save(Image.new("RGB", (64, 64), (1, 2, 3)), tmp_path / "rgb.png")
    originals = {p: digest(p) for p in (grey, palette, rgba, grey_jpeg, rgb)}
    items = [image_item(p) for p in originals]
    assert [i.meta["mode"] for i in items] == ["L", "P", "RGBA", "L", "RGB"]

    outcome = run_step("to_rgb", items, "image", scratch)
    assert sources(outcome.kept) == ["grey.png", "palette.png", "rgba.png", "grey.jpg", "rgb.png"]
    assert [(i.source, before, after) for i, before, after in outcome.changed] == [
        ("grey.png", "L", "RGB"), ("palette.png", "P", "RGB"), ("rgba.png", "RGBA", "RGB"), ("grey.jpg", "L", "RGB")]
    for path, before in originals.items():
        assert digest(path) == before, f"{path.name} was modified in place"

    by_name = {i.source: i for i in items}
    for name in ("grey.png", "palette.png", "rgba.png", "grey.jpg"):
        item = by_name[name]
        assert item.path.parent == scratch
        with Image.open(item.path) as written:
            assert written.mode == "RGB" and written.size == (64, 64)
        assert item.meta["mode"] == "RGB"
    assert by_name["grey.jpg"].path.suffix == ".jpg"  # JPEG stays JPEG
    assert by_name["rgb.png"].path == rgb  # already RGB: no new file
    with Image.open(by_name["grey.png"].path) as written:
        assert written.getpixel((5, 5)) == (100, 100, 100)
    with Image.open(by_name["palette.png"].path) as written:
        assert written.getpixel((5, 5)) == (10, 200, 30)
    with Image.open(by_name["rgba.png"].path) as written:
        assert written.getpixel((5, 5)) == (200, 20, 40)


# ----------------------------------------------------------------------------------- resize/crop


def test_resize_crop_is_off_by_default():
    assert default_config("image")["resize_crop"]["enabled"] is False
    assert all(cfg["enabled"] for name, cfg in default_config("image").items() if name != "resize_crop")


def test_resize_crop_makes_every_image_a_centred_square(tmp_path, scratch):
    # three vertical bands (red | green | blue): a centre crop of the wide image is all green
    bands = np.zeros((100, 300, 3), dtype=np.uint8)
    bands[:, :100, 0] = 255
    bands[:, 100:200, 1] = 255
    bands[:, 200:, 2] = 255
    wide = save(Image.fromarray(bands), tmp_path / "bands.png")
    small = save(photo(50, seed=8, height=80), tmp_path / "small.png")
    exact = save(photo(64, seed=9), tmp_path / "exact.png")
    originals = {p: digest(p) for p in (wide, small, exact)}
    items = [image_item(p) for p in originals]

    outcome = run_step("resize_crop", items, "image", scratch, resolution=64)
    assert [(i.source, before, after) for i, before, after in outcome.changed] == [
        ("bands.png", "300x100", "64x64"), ("small.png", "50x80", "64x64")]
    for item in items:
        with Image.open(item.path) as written:
            assert written.size == (64, 64)
        assert (item.meta["width"], item.meta["height"]) == (64, 64)
    assert items[2].path == exact  # already the right size: untouched, not rewritten
    with Image.open(items[0].path) as cropped:
        red, green, blue = np.asarray(cropped, dtype=np.float32).reshape(-1, 3).mean(axis=0)
    assert green > 200 and red < 30 and blue < 30
    for path, before in originals.items():
        assert digest(path) == before


def test_import_leaves_sizes_alone_unless_resize_crop_is_on(tmp_path, stores):
    store = stores()
    folder = tmp_path / "upload"
    for n, size in enumerate([(120, 90), (200, 150)]):
        save(photo(size[0], seed=20 + n, height=size[1]), folder / f"p{n}.png")
        write(folder / f"p{n}.txt", f"photo {n}")
    default = import_dataset(store, [folder], name="sizes", split="1,0,0")
    assert sorted((r["width"], r["height"]) for r in manifest(store, default)) == [(120, 90), (200, 150)]

    config = default_config("image")
    config["resize_crop"].update(enabled=True, resolution=96)
    squared = import_dataset(store, [folder], name="sizes", split="1,0,0", steps=config)
    rows = manifest(store, squared)
    assert [(r["width"], r["height"]) for r in rows] == [(96, 96), (96, 96)]
    for row in rows:
        with Image.open(f"{squared['path']}/{row['file']}") as stored:
            assert stored.size == (96, 96)


# ------------------------------------------------------------------------------ missing captions


def test_missing_captions_dropped_by_default(tmp_path, scratch):
    path = save(circle(64), tmp_path / "shape.png")
    items = [image_item(path, caption="a red circle"), image_item(path, caption=None),
             image_item(path, caption="   "), image_item(path, caption="")]
    for n, item in enumerate(items):
        item.source = f"item{n}.png"
    outcome = run_step("missing_captions", items, "image", scratch)
    assert sources(outcome.kept) == ["item0.png"]
    assert sources(outcome.removed) == ["item1.png", "item2.png", "item3.png"]
    assert all("no caption" in reason for _, reason in outcome.removed)


def test_missing_captions_filled_from_the_template(tmp_path, scratch):
    path = save(circle(64), tmp_path / "shape.png")
    captioned = image_item(path, caption="kept as it is")
    bare = image_item(path, caption=None)
    bare.source = "photos.zip/cats/red_circle-01.png"
    outcome = run_step("missing_captions", [captioned, bare], "image", scratch, action="fill",
                       template="a photo of {name}")
    assert sources(outcome.kept) == ["shape.png", "photos.zip/cats/red_circle-01.png"]
    assert outcome.removed == []
    assert captioned.caption == "kept as it is"
    assert bare.caption == "a photo of red circle"
    assert [(i.source, a) for i, _, a in outcome.changed] == [(bare.source, "a photo of red circle")]


def test_trigger_word_captions_uncaptioned_items_and_leads_the_others(tmp_path, scratch):
    path = save(circle(64), tmp_path / "shape.png")
    items = [image_item(path, caption=None), image_item(path, caption="on the beach"),
             image_item(path, caption="a photo of SKS dog asleep")]
    for n, item in enumerate(items):
        item.source = f"item{n}.png"
    outcome = run_step("missing_captions", items, "image", scratch, trigger_word=" sks dog ")
    assert outcome.removed == []
    assert [i.caption for i in outcome.kept] == ["sks dog", "sks dog, on the beach", "a photo of SKS dog asleep"]
    assert [(i.source, b, a) for i, b, a in outcome.changed] == [("item0.png", "", "sks dog"),
                                                                 ("item1.png", "on the beach", "sks dog, on the beach")]
    [filled] = run_step("missing_captions", [image_item(path, caption=None)], "image", scratch, action="fill",
                        template="a photo of {trigger}", trigger_word="sks dog").kept
    assert filled.caption == "a photo of sks dog"


def test_missing_captions_rejects_an_unknown_action(tmp_path, scratch):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"action\n  Input should be 'drop' or 'fill'"):
        run_step("missing_captions", [], "image", scratch, action="guess")


# ------------------------------------------------------------------------------------- captions


def _staged(folder, names):
    return [StagedFile(name, folder / name) for name in names]


def test_captions_from_sidecar_txt_files(tmp_path):
    save(circle(64), tmp_path / "up/a.png")
    write(tmp_path / "up/a.txt", "  a red circle \n")
    save(photo(64, seed=1), tmp_path / "up/sub/b.jpg")
    write(tmp_path / "up/sub/b.txt", "a photo")
    save(photo(64, seed=2), tmp_path / "up/c.png")  # no sidecar
    result = read_media_files(_staged(tmp_path, ["up/a.png", "up/a.txt", "up/sub/b.jpg", "up/sub/b.txt",
                                                 "up/c.png"]), "image", load_settings())
    assert {i.source: i.caption for i in result.items} == {"up/a.png": "a red circle", "up/sub/b.jpg": "a photo",
                                                          "up/c.png": None}
    assert result.problems == []


def test_a_sidecar_in_another_folder_is_not_a_caption(tmp_path):
    save(circle(64), tmp_path / "up/one/a.png")
    write(tmp_path / "up/two/a.txt", "belongs to another a.png")
    result = read_media_files(_staged(tmp_path, ["up/one/a.png", "up/two/a.txt"]), "image", load_settings())
    assert [i.caption for i in result.items] == [None]


@pytest.mark.parametrize("table", ["jsonl", "csv"])
def test_captions_from_metadata_tables_in_subfolders(tmp_path, table):
    names = ["ds/train/x.png", "ds/train/images/y.png", "ds/test/z.png"]
    for n, name in enumerate(names):
        save(photo(64, seed=n), tmp_path / name)
    rows = {"ds/train": [("x.png", "caption x"), ("images/y.png", "caption y")], "ds/test": [("z.png", "caption z")]}
    for folder, entries in rows.items():
        if table == "jsonl":
            write(tmp_path / folder / "metadata.jsonl",
                  "\n".join(json.dumps({"file_name": f, "text": t}) for f, t in entries) + "\n")
        else:
            write(tmp_path / folder / "metadata.csv",
                  "file_name,caption\n" + "".join(f"{f},{t}\n" for f, t in entries))
    staged = _staged(tmp_path, names + [f"{folder}/metadata.{table}" for folder in rows])
    result = read_media_files(staged, "image", load_settings())
    assert {i.source: i.caption for i in result.items} == {
        "ds/train/x.png": "caption x", "ds/train/images/y.png": "caption y", "ds/test/z.png": "caption z"}
    assert result.problems == []
    assert len(result.notes) == 2  # one note per metadata file, naming the caption column


def test_metadata_rows_only_caption_files_next_to_them(tmp_path):
    save(photo(64, seed=1), tmp_path / "ds/a/x.png")
    save(photo(64, seed=2), tmp_path / "ds/b/x.png")
    write(tmp_path / "ds/a/metadata.jsonl", json.dumps({"file_name": "x.png", "text": "from a"}) + "\n")
    result = read_media_files(_staged(tmp_path, ["ds/a/x.png", "ds/b/x.png", "ds/a/metadata.jsonl"]), "image",
                              load_settings())
    assert {i.source: i.caption for i in result.items} == {"ds/a/x.png": "from a", "ds/b/x.png": None}


def test_a_sidecar_wins_over_metadata(tmp_path):
    save(photo(64, seed=1), tmp_path / "ds/x.png")
    save(photo(64, seed=2), tmp_path / "ds/y.png")
    write(tmp_path / "ds/x.txt", "from the sidecar")
    write(tmp_path / "ds/metadata.jsonl", json.dumps({"file_name": "x.png", "text": "from metadata"}) + "\n"
          + json.dumps({"file_name": "y.png", "text": "metadata only"}) + "\n")
    result = read_media_files(_staged(tmp_path, ["ds/x.png", "ds/y.png", "ds/x.txt", "ds/metadata.jsonl"]),
                              "image", load_settings())
    assert {i.source: i.caption for i in result.items} == {"ds/x.png": "from the sidecar", "ds/y.png": "metadata only"}


def test_metadata_without_file_name_is_reported_and_images_still_read(tmp_path):
    save(photo(64, seed=1), tmp_path / "ds/x.png")
    write(tmp_path / "ds/metadata.csv", "image,caption\nx.png,hello\n")
    result = read_media_files(_staged(tmp_path, ["ds/x.png", "ds/metadata.csv"]), "image", load_settings())
    assert [i.source for i in result.items] == ["ds/x.png"]
    assert [p.file for p in result.problems] == ["ds/metadata.csv"]
    assert "file_name" in result.problems[0].reason and "image, caption" in result.problems[0].reason


def test_import_with_sidecars_and_metadata_end_to_end(tmp_path, stores):
    store = stores()
    folder = tmp_path / "pets"
    save(photo(96, seed=1), folder / "cats/1.png")
    write(folder / "cats/1.txt", "a cat")
    save(photo(96, seed=2), folder / "dogs/2.png")
    write(folder / "dogs/metadata.jsonl", json.dumps({"file_name": "2.png", "text": "a dog"}) + "\n")
    save(photo(96, seed=3), folder / "nocaption.png")
    result = import_dataset(store, [folder], split="1,0,0")
    assert result["modality"] == "image"
    assert (result["items_in"], result["items_kept"]) == (3, 2)
    assert result["removed"]["missing_captions"] == 1
    assert sorted((r["source"], r["caption"]) for r in manifest(store, result)) == [
        ("pets/cats/1.png", "a cat"), ("pets/dogs/2.png", "a dog")]


# ---------------------------------------------------------------------------------- bad inputs


def test_bad_images_are_reported_by_name_and_the_rest_is_imported(tmp_path, stores):
    store = stores()
    folder = tmp_path / "mixed"
    for n in range(2):
        save(photo(96, seed=n), folder / f"good{n}.png")
    truncate(save(photo(128, seed=10), folder / "truncated.png"))
    truncate(save(photo(128, seed=11), folder / "truncated.jpg", quality=90))
    write(folder / "empty.png", b"")
    write(folder / "notes_as.png", "this is just text, saved with the wrong name\n")
    write(folder / "résumé.jpg", "Curriculum vitæ — “quoted”\r\n\tindented\n")
    write(folder / "report.webp", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    write(folder / "header_only.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    save(photo(96, seed=3), folder / "anim.gif")
    result = import_dataset(store, [folder], steps={"missing_captions": {"action": "fill"}}, split="1,0,0")

    assert result["items_kept"] == 2
    assert sorted(r["source"] for r in manifest(store, result)) == ["mixed/good0.png", "mixed/good1.png"]
    errors = errors_by_file(result)
    assert set(errors) == {"mixed/truncated.png", "mixed/truncated.jpg", "mixed/empty.png", "mixed/notes_as.png",
                           "mixed/résumé.jpg", "mixed/report.webp", "mixed/header_only.png", "mixed/anim.gif"}
    assert "truncated" in errors["mixed/truncated.png"]
    assert "truncated" in errors["mixed/truncated.jpg"]
    assert errors["mixed/empty.png"] == "empty file (0 bytes)"
    # a file of another kind says what it is, not that it is a broken image
    assert errors["mixed/notes_as.png"] == "notes_as.png is a text file, not an image"
    assert errors["mixed/résumé.jpg"] == "résumé.jpg is a text file, not an image"
    assert errors["mixed/report.webp"] == "report.webp is a PDF document, not an image"
    assert errors["mixed/header_only.png"].startswith("unreadable")
    assert "not a supported image file" in errors["mixed/anim.gif"]
    report = json.loads((store.home / f"datasets/{result['dataset_id']}/v{result['version']}/report.json").read_text())
    assert {e["file"] for e in report["errors"]} == set(errors)


def test_decompression_bombs_are_refused_with_a_clear_message(tmp_path, stores):
    store = stores(max_image_pixels=10_000)
    folder = tmp_path / "bombs"
    save(photo(200, seed=1), folder / "huge.png")       # 40,000 px: over twice the limit
    save(photo(120, seed=2), folder / "large.png")      # 14,400 px: over the limit, under twice it
    save(photo(96, seed=3), folder / "fine.png")        # 9,216 px
    result = import_dataset(store, [folder], steps={"missing_captions": {"action": "fill"}}, split="1,0,0")
    assert [r["source"] for r in manifest(store, result)] == ["bombs/fine.png"]
    errors = errors_by_file(result)
    assert set(errors) == {"bombs/huge.png", "bombs/large.png"}
    assert all("decompression bomb" in reason for reason in errors.values())


def test_nothing_but_bad_images_refuses_the_import_naming_them(tmp_path, stores):
    store = stores()
    folder = tmp_path / "allbad"
    write(folder / "a.png", b"")
    write(folder / "b.jpg", "text")
    with pytest.raises(ImportRefused, match="nothing usable") as refused:
        import_dataset(store, [folder], modality="image")
    assert "allbad/a.png" in str(refused.value) and "allbad/b.jpg" in str(refused.value)
    assert list((store.home / "uploads").iterdir()) == []  # the refused upload is not kept


def test_a_jpeg_named_png_is_kept_with_a_warning(tmp_path, stores):
    store = stores()
    folder = tmp_path / "misnamed"
    save(photo(96, seed=1), folder / "really_a_jpeg.png", format="JPEG", quality=90)
    write(folder / "really_a_jpeg.txt", "misnamed")
    save(photo(96, seed=2), folder / "honest.png")
    write(folder / "honest.txt", "honest")
    result = import_dataset(store, [folder], split="1,0,0")
    assert result["items_kept"] == 2 and result["errors"] == []
    assert result["warnings"] == [{"file": "misnamed/really_a_jpeg.png",
                                   "reason": "the name says PNG image but the content is JPEG image; "
                                             "read by its content and kept"}]


def test_every_image_step_reports_its_count_in_the_version_report(tmp_path, stores):
    store = stores()
    folder = tmp_path / "all_steps"
    keep = [save(photo(128, seed=n), folder / f"keep{n}.png") for n in range(3)]
    write(folder / "keep0.txt", "zero")
    write(folder / "keep1.txt", "one")
    write(folder / "keep2.txt", "two")
    save(photo(128, seed=1), folder / "nocap.png")
    save(photo(32, seed=40), folder / "tiny.png")
    save(photo(400, seed=41, height=80), folder / "banner.png")
    save(blurred(photo(128, seed=42), 5), folder / "soft.png")
    write(folder / "zz_copy.png", keep[0].read_bytes())
    save(ImageEnhance.Brightness(Image.open(keep[1])).enhance(1.05), folder / "zz_near.jpg", quality=85)
    # A grey copy keeps its shapes but not its colours: colour is content (a red and a blue circle are
    # different examples), so near-duplicate detection keeps it.
    save(Image.open(keep[2]).convert("L"), folder / "zz_grey.png")
    for name in ("tiny", "banner", "soft", "zz_copy", "zz_near", "zz_grey"):
        write(folder / f"{name}.txt", name)
    result = import_dataset(store, [folder], split="1,0,0")
    assert result["removed"] == {"missing_captions": 1, "min_size": 1, "aspect_ratio": 1, "blur": 1,
                                 "exact_duplicates": 1, "near_duplicates": 1, "to_rgb": 0}
    assert sorted(r["caption"] for r in manifest(store, result)) == ["one", "two", "zero", "zz_grey"]


def test_same_shape_in_another_colour_is_not_a_near_duplicate(tmp_path, stores):
    store = stores()
    folder = tmp_path / "colours"
    for name, rgb in {"red": (220, 30, 30), "blue": (30, 60, 220), "red_again": (224, 28, 33)}.items():
        image = Image.new("RGB", (96, 96), "white")
        ImageDraw.Draw(image).ellipse((20, 20, 76, 76), fill=rgb)
        save(image, folder / f"{name}.png")
        write(folder / f"{name}.txt", f"a {name.split('_')[0]} circle")
    result = import_dataset(store, [folder], split="1,0,0")
    assert result["removed"]["near_duplicates"] == 1
    assert sorted(r["caption"] for r in manifest(store, result)) == ["a blue circle", "a red circle"]


def test_transparent_pixels_become_white_not_their_hidden_colour(tmp_path):
    from studio.data.steps.image import open_rgb
    from studio.data.items import Item

    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent black
    image.putpixel((0, 0), (200, 20, 40, 255))
    path = save(image, tmp_path / "logo.png")
    rgb = open_rgb(Item(source="logo.png", path=path))
    assert rgb.getpixel((5, 5)) == (255, 255, 255)
    assert rgb.getpixel((0, 0)) == (200, 20, 40)


def _small_shape_on_grey(colour, grey: int, box=(22, 20, 46, 44)) -> Image.Image:
    """A 64x64 picture like the shapes example's: one small outlined circle on a grey background."""
    image = Image.new("RGB", (64, 64), (grey, grey, grey))
    ImageDraw.Draw(image).ellipse(box, fill=colour, outline=tuple(c // 3 for c in colour), width=2)
    return image


def test_a_small_shape_in_another_colour_on_grey_is_not_a_near_duplicate(tmp_path, scratch):
    # The same circle in green and in blue on almost the same grey: pHash (grey levels) calls them one picture,
    # and most of each picture is background, so only the coloured pixels can tell them apart.
    paths = {name: save(_small_shape_on_grey(rgb, grey), tmp_path / f"{name}.png")
             for name, rgb, grey in [("blue", (47, 67, 214), 153), ("green", (29, 164, 22), 165),
                                     ("blue_again", (50, 70, 210), 158)]}
    outcome = run_step("near_duplicates", [image_item(p) for p in paths.values()], "image", scratch)
    assert sources(outcome.kept) == ["blue.png", "green.png"]
    assert [(i.source, r.split(" (")[0]) for i, r in outcome.removed] == [("blue_again.png",
                                                                          "near-duplicate of blue.png")]


def test_the_same_shape_on_a_much_lighter_background_is_not_a_near_duplicate(tmp_path, scratch):
    # Colour counts, and so do the grey tones: the shapes example varies its background to keep its images apart.
    first = save(_small_shape_on_grey((30, 180, 40), 150), tmp_path / "dark_grey.png")
    second = save(_small_shape_on_grey((30, 180, 40), 245), tmp_path / "light_grey.png")
    outcome = run_step("near_duplicates", [image_item(first), image_item(second)], "image", scratch)
    assert sources(outcome.kept) == ["dark_grey.png", "light_grey.png"]


def test_the_shapes_example_loses_no_caption_to_near_duplicates(tmp_path, scratch):
    # The shipped example's captions name a colour and a shape: an image may only be a near-duplicate of one with
    # the same caption (a green circle is not a copy of a blue circle).
    from pathlib import Path

    from studio.data.archive import stage_inputs

    shipped = Path(__file__).resolve().parents[1] / "assets/examples/shapes.zip"
    staged, problems = stage_inputs([shipped], tmp_path / "staged", load_settings())
    items = read_media_files(staged, "image", load_settings()).items
    assert problems == [] and len(items) == 320
    captions = {item.source: item.caption for item in items}
    outcome = run_step("near_duplicates", items, "image", scratch)
    crossed = [(item.source, reason) for item, reason in outcome.removed
               if captions[reason.split("near-duplicate of ")[1].split(" (")[0]] != item.caption]
    assert crossed == []
    kept = {caption: sum(i.caption == caption for i in outcome.kept) for caption in set(captions.values())}
    assert len(kept) == 8 and min(kept.values()) >= 35, kept
