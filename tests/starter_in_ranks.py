"""A starter trained by the loop under ``accelerate launch`` (several gloo ranks on the CPU): ``starter_in_ranks.py
CONFIG_JSON OUT_DIR``, on the pictures and rows the test wrote to OUT_DIR (``rows.json``: ``model``, the starter, and
the ``train`` and ``validation`` rows). The main process writes its metric history to OUT_DIR/history.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from studio.models.registry import backend_for
from studio.training.config import TrainConfig
from studio.training.loop import Hooks, train


def main(config_json: str, out_dir: str) -> None:
    import torch

    torch.set_num_threads(1)
    folder = Path(out_dir)
    rows = json.loads((folder / "rows.json").read_text())
    config = TrainConfig.model_validate_json(config_json)
    backend = backend_for("image")
    handle = backend.load(rows["model"], "scratch", config, rows["train"])  # seeded: every rank the same start
    result = train(backend, handle, rows, folder, config, folder / "out", Hooks(log=lambda message: None))
    if result.history:  # only the main process records
        (folder / "history.json").write_text(json.dumps({"steps": result.steps, "history": result.history}))


if __name__ == "__main__":
    main(*sys.argv[1:])
