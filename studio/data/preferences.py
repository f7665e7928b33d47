"""What a manifest row teaches: an example to imitate, a preference between two answers, or a thumbs up/down.

The one place the shapes of preference rows are written down, for the importers and the vote conversion that
write them and the training objectives that read them (a row of each shape, beside ``id``, ``split``, ``source``):

- an example (``sft``): ``text`` | ``prompt`` + ``response`` | ``messages``, or ``file`` + ``caption``;
- a preference pair (``dpo``, ``orpo``, Diffusion-DPO): the example's fields hold the *chosen* answer, and the
  rejected one stands beside it — ``rejected`` (text: ``prompt`` + ``response`` + ``rejected``, or ``messages``
  ending with the chosen assistant turn + ``rejected``, that turn's rejected content) or ``rejected_file`` (images
  and audio: ``caption`` + ``file`` + ``rejected_file``). A pair is still an example of its chosen answer, so SFT
  trains on a preference dataset as it is;
- a thumbs up/down (``kto``): an example plus ``label`` (true: a good answer, false: a bad one).

Importers read a thumb generously (``thumb``): true/false, 1/0, yes/no, up/down, good/bad, +1/-1, and the
thumbs-up and thumbs-down emoji (any case).
"""

from __future__ import annotations

EXAMPLE, PAIR, THUMBS = "example", "pair", "thumbs"
REJECTED_FIELDS = ("rejected", "rejected_file")
# written as escapes: no string of the studio's holds an emoji (tests/test_web_lists.py)
THUMBS_UP_EMOJI, THUMBS_DOWN_EMOJI = "\U0001F44D", "\U0001F44E"
THUMBS_UP = {"true", "1", "1.0", "yes", "y", "up", "thumbs up", "thumbs_up", "thumbsup", "good", "+1",
             THUMBS_UP_EMOJI}
THUMBS_DOWN = {"false", "0", "0.0", "no", "n", "down", "thumbs down", "thumbs_down", "thumbsdown", "bad", "-1",
               THUMBS_DOWN_EMOJI}


def row_kind(row: dict) -> str:
    """``pair``, ``thumbs`` or ``example`` (see the module's docstring)."""
    if any(row.get(field) is not None for field in REJECTED_FIELDS):
        return PAIR
    if isinstance(row.get("label"), bool):
        return THUMBS
    return EXAMPLE


def count_kinds(rows) -> dict[str, int]:
    """How many rows of each kind ``rows`` holds (every kind named, zeros included)."""
    counts = {EXAMPLE: 0, PAIR: 0, THUMBS: 0}
    for row in rows:
        counts[row_kind(row)] += 1
    return counts


def thumb(value) -> bool:
    """A thumbs up (True) or down (False) from the ways people write one; ValueError for anything else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower().replace("\ufe0f", "")  # an emoji's variation selector
    if text in THUMBS_UP:
        return True
    if text in THUMBS_DOWN:
        return False
    raise ValueError(f"label {str(value)[:40]!r} is not a thumbs up or down (use true/false, 1/0, yes/no, "
                     "up/down, good/bad, or the thumbs-up and thumbs-down emoji)")


def describe_kinds(kinds: dict | None) -> str:
    """``count_kinds``' counts in words ("12 pairs, 3 examples"); the kinds a version has none of are left out."""
    nouns = {PAIR: ("pair", "pairs"), THUMBS: ("thumb up/down", "thumbs up/down"), EXAMPLE: ("example", "examples")}
    return ", ".join(f"{count} {nouns[kind][count != 1]}" for kind, count in (kinds or {}).items() if count)
