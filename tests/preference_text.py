"""A text preference with a known direction, for the preference objectives' tests: answers of three words then
'yes' or 'no'. A starter trained (SFT) on both ends each answer with 'yes' about half the time; the pairs prefer
'yes'. ``python tests/preference_text.py CONFIG_JSON BASE_FOLDER OUT_DIR`` trains one preference run on them (under
``accelerate launch``: the several-process test) and writes the main process's history to OUT_DIR/history.json."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

WORDS = "red blue green small big old new warm cold soft".split()
PROMPTS = [f"tell me about {word}" for word in WORDS]


def answers(count: int, seed: int, kind: str) -> list[dict]:
    """``kind`` 'sft': examples ending in 'yes' or 'no' at random; 'pair': the same answer ending in 'yes'
    (chosen) and in 'no' (rejected); 'thumbs': one of the two with its label."""
    pick = random.Random(seed)
    rows = []
    for number in range(count):
        prompt, body = pick.choice(PROMPTS), " ".join(pick.choice(WORDS) for _ in range(3))
        row = {"id": number, "prompt": prompt}
        if kind == "sft":
            row["response"] = f"{body} {pick.choice(['yes', 'no'])}"
        elif kind == "pair":
            row.update(response=f"{body} yes", rejected=f"{body} no")
        else:
            good = pick.random() < 0.5
            row.update(response=f"{body} {'yes' if good else 'no'}", label=good)
        rows.append(row)
    return rows


def split_rows(kind: str, train: int = 128, validation: int = 32) -> dict[str, list[dict]]:
    return {"train": answers(train, 2, kind), "validation": answers(validation, 3, kind)}


def base_config(**changes):
    from studio.training.config import TrainConfig

    settings = dict(use_cpu=True, learning_rate=3e-3, per_device_train_batch_size=16, max_steps=400, warmup_steps=5,
                    eval_steps=1000, save_steps=1000, sample_steps=0, text={"max_length": 32})
    return TrainConfig.model_validate({**settings, **changes})


def build_base(folder: Path) -> None:
    """The starter, trained to end its answers with 'yes' or 'no' alike, saved in ``folder``."""
    from studio.models.text import TextBackend
    from studio.training.loop import train_in_process

    backend, rows = TextBackend(), {"train": answers(256, 0, "sft"), "validation": answers(32, 1, "sft")}
    config = base_config()
    handle = backend.load("starter-text", "scratch", config, rows["train"])
    train_in_process(backend, handle, rows, Path("."), config)
    backend.save(handle, folder)


def share_saying_yes(backend, handle, samples_per_prompt: int = 4) -> float:
    """The share of sampled answers (temperature 1) whose first line ends with 'yes'."""
    prompts = PROMPTS * samples_per_prompt
    made = backend.generate(handle, prompts, list(range(len(prompts))),
                            {"chat_template": True, "max_new_tokens": 8, "temperature": 1.0}, Path("."))
    last_words = [(sample.text.split("\n")[0].split() or [""])[-1] for sample in made]
    return sum(word == "yes" for word in last_words) / len(made)


def main(config_json: str, base: str, out_dir: str) -> None:
    from studio.models.text import TextBackend
    from studio.training.config import TrainConfig
    from studio.training.loop import Hooks, train

    config = TrainConfig.model_validate_json(config_json)
    backend = TextBackend()
    handle = backend.load(base, "full", config)
    result = train(backend, handle, split_rows("pair"), Path(out_dir), config, Path(out_dir) / "out",
                   Hooks(log=lambda message: None))
    if result.history:  # only the main process records
        (Path(out_dir) / "history.json").write_text(json.dumps({"steps": result.steps, "history": result.history}))


if __name__ == "__main__":
    main(*sys.argv[1:])
