"""The training loop on the toy backend under ``accelerate launch`` (several gloo ranks on the CPU):
``loop_in_ranks.py CONFIG_JSON OUT_DIR``. The main process writes its metric history to OUT_DIR/history.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from studio.training.config import TrainConfig
from studio.training.loop import Hooks, train
from test_loop import rows
from toy_backend import ToyBackend


def main(config_json: str, out_dir: str) -> None:
    import torch

    torch.manual_seed(0)  # the start test_loop's one-process run builds too (rank 0's weights go to every rank)
    backend = ToyBackend()
    handle = backend.load("toy", "scratch", None)
    result = train(backend, handle, rows(), Path(out_dir), TrainConfig.model_validate_json(config_json),
                   Path(out_dir) / "out", Hooks(log=lambda message: None))
    if result.history:  # only the main process records
        (Path(out_dir) / "history.json").write_text(json.dumps({"steps": result.steps, "history": result.history}))


if __name__ == "__main__":
    main(*sys.argv[1:])
