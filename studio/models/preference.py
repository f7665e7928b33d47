"""What every family does alike for a preference objective: which rows it learns from, the datasets and batches
those rows become, and how a module is asked to score examples rather than give a loss.

A family's ``datasets``/``collate`` hand their own example dataset and collate function to ``datasets_for`` and
``collate_for``; the rows' shapes are ``studio.data.preferences``'s. A preference batch is an ordinary batch of
the family's examples, twice as long, with a marker beside it:

- pairs (``dpo``, ``orpo``): the chosen answers, then the rejected ones in the same order, and ``PAIRS``: true;
- thumbs (``kto``): the answers, then as many mismatched ones (each prompt with the previous row's answer, the
  KL estimate's examples, as TRL's KTO builds them), and ``LABEL``: a bool per answer.

Given ``SCORE`` (a seed for whatever randomness scoring needs: a diffusion model's noise), ``module(batch)`` returns
``(scores, counts)`` per example instead of a loss: a language model's summed log-probability of the answer and
its token count; a diffusion model's minus half its denoising error (count 1), the two pictures of a pair drawn
with the same noise and timestep.
"""

from __future__ import annotations

import json
from typing import Callable

from studio.data.augment import start_epoch
from studio.data.preferences import PAIR, THUMBS, row_kind

SCORE, PAIRS, LABEL = "score_seed", "pairs", "label"
PAIRED_OBJECTIVES, THUMBS_OBJECTIVES = ("dpo", "orpo"), ("kto",)
REFERENCE_OBJECTIVES = ("dpo", "kto")  # those that compare the model with a reference (ORPO does not)


def rejected_of(row: dict) -> dict:
    """A pair row with its rejected answer in the chosen one's place (text: the response or the last assistant
    turn; images and audio: the file)."""
    if row.get("rejected_file") is not None:
        return {**row, "file": row["rejected_file"]}
    if row.get("messages") is not None:
        messages = [dict(m) for m in row["messages"]]
        messages[-1]["content"] = row["rejected"]
        return {**row, "messages": messages}
    return {**row, "response": row["rejected"]}


def _answer_key(row: dict) -> str:
    """What makes an answer the same answer: its prompt and what was answered (text or file)."""
    return json.dumps([row.get(name) for name in ("prompt", "messages", "response", "file")], sort_keys=True,
                      default=str)


def thumbs_of(rows: list[dict]) -> tuple[list[dict], list[bool]]:
    """KTO's examples: each thumbs row with its label, and each pair as two (chosen: good, rejected: bad), as TRL's
    ``unpair_preference_dataset`` does. An answer given both ways (a rated answer that is also one side of a pair,
    as a deployment's feedback makes them) counts once: KTO weighs each answer, not each row that names it."""
    examples, labels, seen = [], [], set()
    for row in rows:
        kind = row_kind(row)
        answers = [(row, row["label"])] if kind == THUMBS else [(row, True), (rejected_of(row), False)] \
            if kind == PAIR else []
        for answer, label in answers:
            key = (_answer_key(answer), label)
            if key not in seen:
                seen.add(key)
                examples.append(answer)
                labels.append(label)
    return examples, labels


def imitable(row: dict) -> bool:
    """Whether supervised fine-tuning may learn to say ``row``'s answer: not an answer people marked bad."""
    return not (row_kind(row) == THUMBS and row["label"] is False)


def needs(objective: str) -> str | None:
    """What rows ``objective`` learns from, in people's words (None: any)."""
    if objective in PAIRED_OBJECTIVES:
        return "preference pairs (prompt, chosen, rejected)"
    if objective in THUMBS_OBJECTIVES:
        return "answers marked good or bad (a thumbs label) or preference pairs"
    return None


def usable(objective: str, counts: dict[str, int]) -> int:
    """How many of a dataset's rows (``count_kinds``) ``objective`` can learn from."""
    if objective in PAIRED_OBJECTIVES:
        return counts.get(PAIR, 0)
    if objective in THUMBS_OBJECTIVES:
        return counts.get(THUMBS, 0) + counts.get(PAIR, 0)
    return sum(counts.values())  # a thumbs-down row is left out of SFT (``imitable``): counted here all the same


class Paired:
    """Items ``{"chosen": item, "rejected": item}`` from two datasets of the family's examples."""

    def __init__(self, chosen, rejected):
        self.chosen, self.rejected = chosen, rejected

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, index: int) -> dict:
        return {"chosen": self.chosen[index], "rejected": self.rejected[index]}

    def start_epoch(self, epoch: int) -> None:
        """Both answers of pair ``i`` draw item ``i``'s augmentation: they are changed alike, so what the objective
        compares is still the answers, not their augmentations."""
        start_epoch(self.chosen, epoch)
        start_epoch(self.rejected, epoch)


class Labelled:
    """Items ``{"example": item, "label": bool}``."""

    def __init__(self, examples, labels: list[bool]):
        self.examples, self.labels = examples, labels

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        return {"example": self.examples[index], "label": self.labels[index]}

    def start_epoch(self, epoch: int) -> None:
        start_epoch(self.examples, epoch)


def datasets_for(objective: str, rows: dict[str, list[dict]], make: Callable[[list[dict], str], object]) -> dict:
    """The train and validation datasets ``objective`` learns from; ``make(rows, split)`` is the family's dataset of
    examples (one item per row, in order)."""
    found = {}
    for split in ("train", "validation"):
        given = rows.get(split) or []
        if objective in PAIRED_OBJECTIVES:
            pairs = [row for row in given if row_kind(row) == PAIR]
            found[split] = Paired(make(pairs, split), make([rejected_of(row) for row in pairs], split))
        elif objective in THUMBS_OBJECTIVES:
            examples, labels = thumbs_of(given)
            found[split] = Labelled(make(examples, split), labels)
        else:  # a pair's chosen answer is its response; a thumbs-down answer is what not to say
            found[split] = make([row for row in given if imitable(row)], split)
    return found


def collate_for(collate: Callable[[list], dict], mismatch: Callable[[dict, dict], dict] | None = None):
    """The family's ``collate`` taught the preference items: pairs become chosen-then-rejected batches, thumbs
    their answers then the mismatched ones (``mismatch(prompt_item, answer_item)``: the first one's prompt with
    the second one's answer)."""

    def collate_preferences(items: list) -> dict:
        import torch

        first = items[0] if items else {}
        if "chosen" in first:
            batch = collate([i["chosen"] for i in items] + [i["rejected"] for i in items])
            return {**batch, PAIRS: True}
        if "example" in first:
            if mismatch is None:
                raise ValueError("this model family cannot learn from thumbs up/down (kto)")
            examples = [i["example"] for i in items]
            shifted = [mismatch(examples[n], examples[n - 1]) for n in range(len(examples))]
            batch = collate(examples + shifted)
            return {**batch, LABEL: torch.tensor([bool(i["label"]) for i in items])}
        return collate(items)

    return collate_preferences
