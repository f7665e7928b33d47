"""What a file really is, from its first bytes, so a wrong extension gets a clear message."""

from __future__ import annotations

import codecs
from pathlib import Path

_SIGNATURES = [
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"fLaC", "FLAC audio"),
    (b"OggS", "OGG audio"),
    (b"ID3", "MP3 audio"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"%PDF", "PDF document"),
    (b"PAR1", "Parquet table"),
    (b"\x1f\x8b", "gzip archive"),
]

KIND_OF_EXTENSION = {
    ".png": "PNG image", ".jpg": "JPEG image", ".jpeg": "JPEG image", ".webp": "WEBP image",
    ".wav": "WAV audio", ".flac": "FLAC audio", ".ogg": "OGG audio", ".mp3": "MP3 audio",
    ".zip": "ZIP archive", ".parquet": "Parquet table",
}


def sniff(head: bytes) -> str | None:
    """A name for the content of a file from its first bytes, or None when it looks like text."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")):
        return None  # a byte-order mark: Unicode text
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP image"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "WAV audio"
    if len(head) > 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "MP3 audio"
    if b"\x00" in head:
        return "binary data"
    return None


def sniff_file(path: Path) -> str | None:
    with open(path, "rb") as handle:
        return sniff(handle.read(64))


def _is_text(head: bytes) -> bool:
    """Whether the first bytes of a file read as text: Unicode with a byte-order mark, or UTF-8 of printable
    characters (a character cut at the end of ``head`` allowed)."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")):
        return True
    try:
        decoded = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return bool(decoded) and all(ch.isprintable() or ch in "\t\n\r\f" for ch in decoded)


def describe_content(path: Path) -> str | None:
    """What a file holds by its first bytes, as a phrase for a message ("a text file", "a PDF document", "OGG
    audio"); None for an empty file or bytes of no known kind."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    kind = sniff(head[:64])
    if kind is None:
        return "a text file" if _is_text(head) else None
    if kind == "binary data":
        return None
    return kind if kind.endswith("audio") else f"a {kind}"


def extension_mismatch(path: Path, shown_name: str) -> str | None:
    """A warning when the bytes are a different kind of file than the name says, else None."""
    expected = KIND_OF_EXTENSION.get(path.suffix.lower())
    actual = sniff_file(path)
    if expected and actual and actual != expected:
        return f"the name says {expected} but the content is {actual}"
    return None
