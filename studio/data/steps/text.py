"""Cleaning steps for text: encoding repair, normalisation, whitespace, PII, length, duplicates."""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import Counter
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from studio.data.items import Item
from studio.data.steps.base import Step, StepContext, StepOutcome, digest, drop_repeats, filter_items, transform_text
from studio.data.steps.common import greedy_near_duplicates
from studio.data.steps.minhash import MinHashIndex, band_keys

TOKEN = re.compile(r"\w+|[^\w\s]")
NOT_A_WORD = re.compile(r"[\W_]+")  # punctuation, symbols and whitespace (\w is letters and digits of any script)


def count_tokens(text: str) -> int:
    """Words and punctuation marks: a tokenizer-free count close to what a model's tokenizer sees."""
    return len(TOKEN.findall(text))


NON_ASCII = re.compile(r"[^\x00-\x7f]+")
# ftfy's mojibake pattern (ftfy.badness.BADNESS_RE) is an alternation of short sequences, each with at least one
# character outside ASCII and none longer than 7 characters ("ГўВЂВ.x"): a match lies within REACH of a non-ASCII
# run.
REACH = 6


def may_be_mojibake(text: str) -> bool:
    """``ftfy.badness.is_bad(text)``, with the pattern searched only around the non-ASCII characters: the same answer
    (tests/test_text_cleaning.py compares them), about 6× sooner on prose whose only non-ASCII characters are a few
    quotes and dashes. ftfy searches the whole text, at each position trying every alternative: 40 % of a
    million-row import's time went there (bench/clean_text.py)."""
    from ftfy.badness import BADNESS_RE

    # Searching text[start:end] through search(text, start, end) keeps '^' at the real start of the text only.
    start = end = None
    for run in NON_ASCII.finditer(text):
        low, high = max(run.start() - REACH, 0), min(run.end() + REACH, len(text))
        if start is not None and low <= end:  # overlaps the window so far: one window
            end = high
            continue
        if start is not None and BADNESS_RE.search(text, start, end):
            return True
        start, end = low, high
    return start is not None and BADNESS_RE.search(text, start, end) is not None


def repair_encoding(text: str) -> str:
    import ftfy  # repairs mojibake such as "cafÃ©" → "café"

    # ftfy returns text it does not find bad unchanged: asking first, quicker, changes nothing it would do.
    return ftfy.fix_encoding(text) if may_be_mojibake(text) else text


def fix_encoding(items, _params, _ctx) -> StepOutcome:
    # Only the encoding repair: ftfy.fix_text would also uncurl quotes, unescape HTML entities, fold
    # ligatures and full-width characters and rewrite line breaks, changing correct text (and doing
    # normalize_unicode's job even when that step is off or set to NFC).
    return transform_text(items, repair_encoding)


class NormaliseParams(BaseModel):
    form: Literal["NFKC", "NFC"] = Field("NFKC", description="NFKC also folds compatibility characters (ﬁ → fi)")


def normalise_unicode(items, params: NormaliseParams, _ctx) -> StepOutcome:
    return transform_text(items, lambda s: unicodedata.normalize(params.form, s))


class WhitespaceParams(BaseModel):
    keep_newlines: bool = Field(True, description="keep line breaks (at most one blank line in a row)")


def tidy_whitespace(items, params: WhitespaceParams, _ctx) -> StepOutcome:
    def tidy(text: str) -> str:
        if not params.keep_newlines:
            return " ".join(text.split())
        lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.splitlines()]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return transform_text(items, tidy)


EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-zA-Z]{2,}")
# Spaces but no line breaks inside a number (else a number on the next line is swallowed), and a
# sentence's full stop may follow it ("call (555) 123-4567.") though a further ".digit" may not.
PHONE = re.compile(r"(?<![\w+.])\+?\(?\d[\d \t\u00a0().-]{7,}\d(?!\w|\.\d)")
IP_ADDRESS = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
ISO_DATE = re.compile(r"(?<!\d)\d{4}-\d{2}-\d{2}(?!\d)")


class PiiParams(BaseModel):
    emails: bool = True
    phones: bool = True
    email_mask: str = "[EMAIL]"
    phone_mask: str = "[PHONE]"


def _is_phone(candidate: str) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    # 9-15 digits (ITU E.164), and not a date, an IP address or a bare number like a year or an id
    has_separator = any(ch in candidate for ch in " ().-") or candidate.startswith("+")
    # "(192.168.1.20" is an IP address in brackets; "2024-01-15 14" a date and time, "2024-01-15 3" a
    # date and a count: a candidate holding a date is not a phone number.
    return 9 <= digits <= 15 and has_separator and not IP_ADDRESS.match(candidate.strip("() ")) \
        and not ISO_DATE.search(candidate)


def scrub_pii(items, params: PiiParams, ctx: StepContext) -> StepOutcome:
    counts = ctx.memory("pii", lambda: {"emails": 0, "phones": 0})  # of the whole import, chunk after chunk

    def scrub(text: str) -> str:
        if params.emails:
            text, n = EMAIL.subn(params.email_mask, text)
            counts["emails"] += n
        if params.phones:
            def mask(match: re.Match) -> str:
                if not _is_phone(match.group(0)):
                    return match.group(0)
                counts["phones"] += 1
                return params.phone_mask
            text = PHONE.sub(mask, text)
        return text

    outcome = transform_text(items, scrub)
    outcome.detail = f"replaced {counts['emails']} email address(es) and {counts['phones']} phone number(s)"
    return outcome


class LengthParams(BaseModel):
    unit: Literal["tokens", "characters"] = "tokens"
    min_length: int = Field(2, ge=0)
    max_length: int = Field(100_000, ge=1)


def length_bounds(items, params: LengthParams, _ctx) -> StepOutcome:
    measure = count_tokens if params.unit == "tokens" else len

    def why(item: Item) -> str | None:
        n = measure(item.content() if item.text_format == "text" else (item.response or item.content()))
        if n < params.min_length:
            return f"too short: {n} {params.unit} (minimum {params.min_length})"
        if n > params.max_length:
            return f"too long: {n} {params.unit} (maximum {params.max_length})"
        return None
    return filter_items(items, why)


def exact_text_duplicates(items, _params, ctx: StepContext) -> StepOutcome:
    return drop_repeats(items, lambda item: digest(f"{item.text_format}\x00{item.content()}"),
                        ctx.memory("exact_duplicates", dict))


class NearDuplicateTextParams(BaseModel):
    threshold: float = Field(0.8, ge=0.3, le=1.0, description="Jaccard similarity of the word 3-grams of the texts "
                             "with case, punctuation and spacing ignored (under 3 words: the whole text)")
    num_perm: int = Field(64, ge=16, le=256, description="MinHash permutations (more: fewer near-duplicates missed, "
                                                         "slower)")


def normalised(text: str) -> str:
    """The form near-duplicates are compared in: compatibility characters folded (NFKC), case folded, and every run
    of punctuation, symbols and whitespace made one space, so "Hello, World!" and "hello world" are the same text
    (as datatrove and text-dedup normalise before MinHash)."""
    return NOT_A_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _shingles(text: str) -> set[str]:
    """Word 3-grams of the normalised text (one shingle, the whole of it, under 3 words). A repeated 3-gram counts
    again ("ha ha ha ha" is not "ha ha ha"): its second occurrence is a shingle of its own.

    Not character n-grams, for short texts either: a short text one word or number away from another is another
    text ("Invoice 16 paid", "Invoice 17 paid"), and their character 4-grams made 27 of 516 such rows of the bench
    near-duplicates at 0.8 (bench/clean_text.py, docs/PERFORMANCE.md); copies that differ in case, punctuation or
    spacing are caught by the normalising alone."""
    words = normalised(text).split()
    if not words:  # only punctuation or symbols ("!!!", "🙂"): compared as they are
        return {text.strip()}
    grams = [f"{a} {b} {c}" for a, b, c in zip(words, words[1:], words[2:])] or [" ".join(words)]
    shingles = set(grams)
    if len(shingles) == len(grams):  # no repeats: most texts
        return shingles
    shingles, counts = set(), Counter()
    for gram in grams:
        counts[gram] += 1
        shingles.add(gram if counts[gram] == 1 else f"{gram}\x00{counts[gram]}")
    return shingles


def shingle_hashes(text: str) -> np.ndarray:
    """The text's shingles as sorted unique 32-bit CRCs: deterministic across processes (unlike hash()), so a re-run
    keeps the same items; the MinHash signatures are made from them, and the exact similarity of candidates."""
    shingles = _shingles(text)
    return np.unique(np.fromiter(map(zlib.crc32, map(str.encode, shingles)), dtype=np.uint32, count=len(shingles)))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    common = len(np.intersect1d(a, b, assume_unique=True))
    return common / (len(a) + len(b) - common)


def near_text_duplicates(items, params: NearDuplicateTextParams, ctx: StepContext) -> StepOutcome:
    """Greedy, in order: a text whose exact shingle Jaccard with a kept text is at or above the threshold is removed,
    naming the most similar one; the index (``minhash.MinHashIndex``) proposes the candidates and carries over from
    chunk to chunk, so a chunk is compared with every text kept before it."""
    index = ctx.memory("near_duplicates", lambda: MinHashIndex(
        params.threshold, params.num_perm, ctx.scratch.with_name(f"{ctx.scratch.name}-near-duplicates.bin")))
    hashes = [shingle_hashes(item.content()) for item in items]
    keys = band_keys(index.signer.sign(hashes), index.bands, index.rows) if items else np.zeros((0, index.bands), np.uint64)
    earlier = index.candidates(keys)
    in_chunk: list[dict[int, list[int]]] = [{} for _ in range(index.bands)]  # band key -> kept numbers, this chunk
    kept_numbers: list[int] = []

    def match(i: int):
        # The exact Jaccard of the two shingle sets, not MinHash's estimate: with 64 permutations that is off by
        # ±0.05 typically, enough to merge texts at 0.77 or keep ones at 0.83.
        candidates = set(earlier[i])
        for band, key in enumerate(keys[i].tolist()):
            candidates.update(in_chunk[band].get(key, ()))
        best = None
        for number in sorted(candidates):  # ties: the first kept
            other, source = index.records.get(number)
            similarity = jaccard(hashes[i], other)
            if similarity >= params.threshold and (best is None or similarity > best[1]):
                best = (source, similarity)
        return best

    def keep(i: int) -> None:
        number = index.records.add(hashes[i], items[i].source)
        kept_numbers.append(number)
        for band, key in enumerate(keys[i].tolist()):
            in_chunk[band].setdefault(key, []).append(number)

    kept_rows: list[int] = []
    outcome = greedy_near_duplicates(items, match, lambda i: (keep(i), kept_rows.append(i)))
    index.add(keys[kept_rows] if kept_rows else np.zeros((0, index.bands), np.uint64),
              np.array(kept_numbers, dtype=np.uint32))
    return outcome


TEXT_STEPS = [
    Step("fix_encoding", "Repair encoding", "Repairs mojibake such as 'cafÃ©' → 'café' (ftfy).", fix_encoding),
    Step("normalize_unicode", "Normalise Unicode", "NFKC/NFC normalisation.", normalise_unicode, NormaliseParams),
    Step("whitespace", "Tidy whitespace", "Collapses runs of spaces and blank lines.", tidy_whitespace,
         WhitespaceParams),
    Step("pii", "Scrub emails and phone numbers", "Replaces them with a mask and counts them.", scrub_pii,
         PiiParams, on_by_default=False),
    Step("length", "Length bounds", "Removes texts (or responses) outside the bounds.", length_bounds, LengthParams,
         keep_more="lower its min_length (now {min_length} {unit}) or raise its max_length (now {max_length})"),
    Step("exact_duplicates", "Exact duplicates", "Keeps the first of identical texts.", exact_text_duplicates),
    Step("near_duplicates", "Near-duplicates", "MinHash/LSH over word 3-grams of the text with case, punctuation "
         "and spacing ignored; keeps the first.", near_text_duplicates,
         NearDuplicateTextParams, keep_more="raise its threshold (now {threshold})"),
]
