"""Image and audio files → media items, with captions from sidecar .txt files or metadata tables.

Captions follow the Hugging Face imagefolder/audiofolder convention: ``metadata.jsonl`` or
``metadata.csv`` with a ``file_name`` column (relative to the metadata file), or ``cat.txt`` next
to ``cat.png``. A sidecar wins over metadata when both exist. A folder named as kohya_ss names them,
``10_sks dog/``, repeats its files 10 times an epoch and captions those without a caption "sks dog".
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from studio.data.archive import StagedFile
from studio.data.items import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, Item, Problem
from studio.data.preferences import thumb
from studio.data.read_text import BadFile, Progress, ReadResult, each_file
from studio.data.sniff import describe_content, extension_mismatch
from studio.data.tables import TableFile
from studio.data.text_lines import read_whole
from studio.settings import Settings

CAPTION_COLUMNS = ("text", "caption", "prompt", "description", "label", "transcription", "sentence")
METADATA_NAMES = {"metadata.jsonl", "metadata.csv"}


def _folder(name: str) -> PurePosixPath:
    return PurePosixPath(name).parent


KOHYA_FOLDER = re.compile(r"^(\d{1,4})_(.*\S.*)$")


def kohya_folder(name: PurePosixPath) -> tuple[int, str] | None:
    """(repeats, caption) of a file in a kohya_ss dataset folder (``10_sks dog/``), else None."""
    found = KOHYA_FOLDER.match(name.parent.name)
    return (int(found[1]), found[2].strip()) if found and int(found[1]) > 0 else None


@dataclass
class Metadata:
    """What metadata tables say: captions and thumbs by file key (folder/name), and preference pairs."""
    captions: dict[str, str] = field(default_factory=dict)
    labels: dict[str, bool] = field(default_factory=dict)
    pairs: list[dict] = field(default_factory=list)  # {"where", "caption", "chosen", "rejected"} (file keys)


def _caption_column(columns: list[str], thumbs: bool) -> str | None:
    # 'label' is a caption (a class name) unless it holds the thumbs and another column holds the caption
    return next((c for c in CAPTION_COLUMNS if c in columns and not (thumbs and c == "label")), None)


def _read_metadata_table(staged: StagedFile, settings: Settings) -> tuple[Metadata, str, list[Problem]]:
    """One metadata table's rows, a note saying what they hold, and the rows skipped; BadFile when the table is
    unusable."""
    found = Metadata()
    table = TableFile(staged.path, staged.name, settings)
    pairs = "chosen" in table.columns and "rejected" in table.columns
    thumbs = "label" in table.columns and _caption_column(table.columns, True) is not None
    column = _caption_column(table.columns, thumbs)
    if column is None or not (pairs or "file_name" in table.columns):
        raise BadFile("metadata needs a 'file_name' column (or 'chosen' and 'rejected' for preference pairs) and "
                      f"a caption column ({', '.join(CAPTION_COLUMNS)}). "
                      f"Columns found: {', '.join(table.columns) or '(none)'}")
    folder, count = _folder(staged.name), 0
    wanted = ["chosen", "rejected", column] if pairs else ["file_name", column] + (["label"] if thumbs else [])
    for number, row in table.rows(wanted):
        caption = "" if row.get(column) is None else str(row[column])
        where = f"{staged.name}#{number}"
        if pairs:
            if not row.get("chosen") or not row.get("rejected"):
                table.skipped.add(where, "row skipped: the chosen or the rejected file is missing or empty")
                continue
            found.pairs.append({"where": where, "caption": caption, "chosen": str(folder / str(row["chosen"])),
                                "rejected": str(folder / str(row["rejected"]))})
        elif row.get("file_name"):
            key = str(folder / str(row["file_name"]))
            if thumbs:
                try:
                    found.labels[key] = thumb(row.get("label"))
                except ValueError as error:
                    table.skipped.add(where, f"row skipped: {error}")
                    continue
            found.captions[key] = caption
        count += 1
    found_what = "preference pairs" if pairs else "thumbs up/down and captions" if thumbs else "captions"
    return found, f"{staged.name}: {found_what} for {count} rows from column '{column}'", table.skipped.warnings()


def _metadata(files: list[StagedFile], settings: Settings, result: ReadResult) -> Metadata:
    found = Metadata()
    for staged in files:
        if PurePosixPath(staged.name).name.lower() not in METADATA_NAMES:
            continue
        try:
            table, note, skipped = _read_metadata_table(staged, settings)
        except BadFile as bad:
            result.problems.append(Problem(staged.name, str(bad)))
            continue
        found.captions.update(table.captions)
        found.labels.update(table.labels)
        found.pairs.extend(table.pairs)
        result.notes.append(note)
        result.warnings.extend(skipped)
    return found


def _sidecar_captions(files: list[StagedFile], settings: Settings, result: ReadResult) -> dict[str, str]:
    captions = {}
    for staged in files:
        name = PurePosixPath(staged.name)
        if name.suffix.lower() == ".txt":
            try:
                captions[str(name.with_suffix(""))] = read_whole(staged.path, settings.max_line_chars,
                                                                 "the caption").strip()
            except BadFile as bad:
                result.problems.append(Problem(staged.name, f"caption file unusable: {bad}"))
    return captions


def _without_path(error: Exception, path: Path) -> str:
    # Library messages quote our internal staging path; the person only knows the file's name.
    return str(error).replace(str(path), path.name)


def inspect_image(path: Path, max_pixels: int) -> dict:
    """Width, height, mode and format of a readable image; BadFile otherwise."""
    from PIL import Image

    if path.stat().st_size == 0:
        raise BadFile("empty file (0 bytes)")
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise BadFile(f"refused as a decompression bomb: {width}x{height} = "
                                  f"{width * height / 1e6:,.0f} megapixels (limit {max_pixels / 1e6:,.0f})")
                image.load()  # decodes every pixel: truncated files fail here, not later
                return {"width": width, "height": height, "mode": image.mode, "format": image.format}
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadFile(f"refused as a decompression bomb ({error})") from None
    except BadFile:
        raise
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        raise BadFile(f"unreadable or truncated image ({_without_path(error, path)})") from None


def _wav_shortfall(path: Path) -> tuple[int, int] | None:
    """(declared, present) bytes of a WAV's samples when the file ends before its header says.

    libsndfile quietly reads what is there, so a cut-off WAV would otherwise pass as a shorter clip.
    A data size of 0 or 0xFFFFFFFF is what streaming recorders write: not counted as truncation."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        position = 12
        while position + 8 <= size:
            handle.seek(position)
            chunk = handle.read(8)
            length = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                present = size - position - 8
                return (length, present) if 0 < length < 0xFFFFFFFF and present < length else None
            position += 8 + length + (length & 1)  # chunks are padded to an even length
    return None


UNKNOWN_LENGTH = 2**63 - 1  # libsndfile's frame count when the header gives none (a FLAC written as a stream)
AUDIO_BLOCK_FRAMES = 1 << 16


def audio_blocks(path: Path):
    """The samples a block at a time (float32, frames × channels)."""
    import soundfile as sf

    with sf.SoundFile(str(path)) as audio:
        while len(block := audio.read(AUDIO_BLOCK_FRAMES, dtype="float32", always_2d=True)):
            yield block


def _decoded_frames(path: Path, limit: float) -> int:
    """How many frames decode (a block at a time: truncation shows), stopping as soon as it is over ``limit``
    (soundfile stops at the header's length in a file it can seek in; this holds for the others)."""
    frames = 0
    for block in audio_blocks(path):
        frames += len(block)
        if frames > limit:
            break
    return frames


def inspect_audio(path: Path, max_seconds: float) -> dict:
    """Duration, sample rate and channels of a readable audio file of at most ``max_seconds``; BadFile otherwise.

    The length in the header is checked before anything is decoded, then the file is decoded a block at a time
    to catch truncation, never past the limit."""
    import soundfile as sf

    if path.stat().st_size == 0:
        raise BadFile("empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as error:  # soundfile raises LibsndfileError / RuntimeError
        raise BadFile(f"unreadable audio ({_without_path(error, path)})") from None
    if info.frames == UNKNOWN_LENGTH:  # (and soundfile cannot read such a file to its end)
        raise BadFile("the header gives no length (a FLAC written as a stream?): re-encode the file with its "
                      "length, for example with ffmpeg -i in.flac out.flac")
    limit = max_seconds * info.samplerate
    if info.frames > limit:
        raise BadFile(f"too long: {info.frames / info.samplerate:,.0f} s (limit {max_seconds:,g} s, "
                      "STUDIO_MAX_AUDIO_SECONDS)")
    try:
        frames = _decoded_frames(path, limit)
    except Exception as error:
        raise BadFile(f"unreadable audio ({_without_path(error, path)})") from None
    if frames > limit:
        raise BadFile(f"too long: over {max_seconds:,g} s once decoded (STUDIO_MAX_AUDIO_SECONDS)")
    if frames == 0:
        raise BadFile("audio has no samples")
    if shortfall := _wav_shortfall(path):
        declared, present = shortfall
        raise BadFile(f"truncated audio: the header promises {declared:,} bytes of samples but the file "
                      f"holds {present:,}")
    return {"duration": frames / info.samplerate, "sample_rate": info.samplerate, "channels": info.channels,
            "format": info.format}


def _another_kind(staged: StagedFile, modality: str) -> str | None:
    """For a file that did not read as ``modality``: "notes.png is a text file, not an image" when its content is
    some other known kind (a damaged image stays "unreadable or truncated"); else None."""
    kind = describe_content(staged.path)
    if kind is None or kind.endswith(modality):  # "a PNG image" in an image import: damaged, not misnamed
        return None
    return f"{PurePosixPath(staged.name).name} is {kind}, not {'an image' if modality == 'image' else 'audio'}"


def media_meta(path: Path, modality: str, settings: Settings) -> dict:
    """``inspect_image`` or ``inspect_audio`` of ``path`` by ``modality``, within the settings' limits; BadFile when
    it is not a readable file of that kind."""
    if modality == "image":
        return inspect_image(path, settings.max_image_pixels)
    return inspect_audio(path, settings.max_audio_seconds)


def _inspect(staged: StagedFile, modality: str, settings: Settings, result: ReadResult) -> dict | None:
    """The file's meta when it reads as ``modality`` (a problem naming it otherwise, and None)."""
    try:
        meta = media_meta(staged.path, modality, settings)
    except BadFile as bad:
        result.problems.append(Problem(staged.name, _another_kind(staged, modality) or str(bad)))
        return None
    if mismatch := extension_mismatch(staged.path, staged.name):
        result.warnings.append(Problem(staged.name, f"{mismatch}; read by its content and kept"))
    return meta


def _pair_items(pairs: list[dict], by_name: dict[str, StagedFile], modality: str, settings: Settings,
                result: ReadResult) -> None:
    """Media preference pairs: both files go through the checks every media file does; a pair with a missing
    or unusable file is left out, named with its metadata row."""
    for pair in pairs:
        halves = []
        for side in ("chosen", "rejected"):
            staged = by_name.get(pair[side])
            if staged is None:
                result.problems.append(Problem(pair["where"], f"{side} file '{pair[side]}' not found"))
                break
            meta = _inspect(staged, modality, settings, result)
            if meta is None:
                result.problems.append(Problem(pair["where"], f"{side} file '{pair[side]}' is unusable"))
                break
            halves.append((staged, meta))
        if len(halves) == 2:
            (chosen, meta), (rejected, rejected_meta) = halves
            result.items.append(Item(source=pair["where"], path=chosen.path, caption=pair["caption"], meta=meta,
                                     rejected_path=rejected.path, rejected_meta=rejected_meta))


def read_media_files(files: list[StagedFile], modality: str, settings: Settings,
                     progress: Progress | None = None) -> ReadResult:
    result = ReadResult()
    extensions = IMAGE_EXTENSIONS if modality == "image" else AUDIO_EXTENSIONS
    metadata = _metadata(files, settings, result)
    captions = {**metadata.captions, **_sidecar_captions(files, settings, result)}
    _pair_items(metadata.pairs, {f.name: f for f in files}, modality, settings, result)
    in_pairs = {pair[side] for pair in metadata.pairs for side in ("chosen", "rejected")}
    for staged in each_file(files, result, progress):
        name = PurePosixPath(staged.name)
        suffix = name.suffix.lower()
        if suffix == ".txt" or name.name.lower() in METADATA_NAMES or staged.name in in_pairs:
            continue
        if suffix not in extensions:
            result.problems.append(Problem(staged.name, f"'{suffix or 'no extension'}' is not a supported "
                                           f"{modality} file ({' '.join(sorted(extensions))})"))
            continue
        meta = _inspect(staged, modality, settings, result)
        if meta is None:
            continue
        caption = captions.get(str(name.with_suffix("")), captions.get(str(name)))
        if modality == "image" and (kohya := kohya_folder(name)):
            meta["repeats"], words = kohya
            caption = caption if caption and caption.strip() else words
        result.items.append(Item(source=staged.name, path=staged.path, caption=caption, meta=meta,
                                 label=metadata.labels.get(str(name))))
    return result
