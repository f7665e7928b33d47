"""Experiment trackers (``report_to``: tensorboard, wandb, trackio, mlflow) through Accelerate's trackers, with the
run's whole config. Each writes on this machine unless told otherwise, so a run needs no network and no account:

- tensorboard: event files in the run's folder (``tensorboard/``);
- wandb: offline (``wandb/`` in the run's folder; ``wandb sync`` uploads it later) unless ``WANDB_MODE`` says
  otherwise or ``WANDB_API_KEY`` is set (then online, as wandb itself decides);
- trackio: its local database (``TRACKIO_DIR``, by default in the Hugging Face cache: ``trackio show`` opens it);
  a Space only when ``TRACKIO_SPACE_ID`` is set;
- mlflow: a file store in the run's folder (``mlruns/``) unless ``MLFLOW_TRACKING_URI`` is set.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

PROJECT = "gen-studio"  # the wandb / trackio project and the mlflow experiment
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}


def missing_packages(report_to: list[str]) -> list[str]:
    """The trackers in ``report_to`` whose package is not installed, with what to install."""
    return [f"report_to {name} needs the {PACKAGES[name]} package (pip install {PACKAGES[name]})"
            for name in report_to if importlib.util.find_spec(PACKAGES[name]) is None]


def flat_config(data: dict, prefix: str = "") -> dict:
    """The config as one level of scalars (``lora.r``, lists joined): what every tracker stores as hyperparameters
    (TensorBoard's hparams take nothing else)."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = " | ".join(map(str, value)) if isinstance(value, list) else value
    return flat


def init_kwargs(report_to: list[str], output_dir: Path, run_name: str) -> tuple[dict, list[str]]:
    """(Accelerate's ``init_kwargs`` for ``report_to``, a line per tracker saying where it writes)."""
    kwargs, notes = {}, []
    if "tensorboard" in report_to:
        notes.append(f"tensorboard: event files in {output_dir / 'tensorboard'}")
    if "wandb" in report_to:
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        kwargs["wandb"] = {"name": run_name, "dir": str(output_dir), "mode": mode}
        notes.append(f"wandb: {mode}" + (f", files in {output_dir / 'wandb'} (upload later: wandb sync)"
                                         if mode == "offline" else ""))
    if "trackio" in report_to:
        kwargs["trackio"] = {"name": run_name}
        where = os.environ.get("TRACKIO_SPACE_ID") or os.environ.get("TRACKIO_DIR") or "its local database"
        notes.append(f"trackio: {where} (trackio show)")
    if "mlflow" in report_to:
        kwargs["mlflow"] = {"run_name": run_name}
        notes.append(f"mlflow: {os.environ.get('MLFLOW_TRACKING_URI') or output_dir / 'mlruns'}")
    return kwargs, notes


def start(accelerator, report_to: list[str], config: dict, output_dir: Path, say) -> None:
    """Starts ``report_to``'s trackers on ``accelerator`` (made with ``log_with=report_to``) with the whole config."""
    if not report_to:
        return
    if "mlflow" in report_to and not os.environ.get("MLFLOW_TRACKING_URI"):
        import mlflow

        mlflow.set_tracking_uri((output_dir / "mlruns").resolve().as_uri())
    kwargs, notes = init_kwargs(report_to, output_dir, output_dir.name)
    accelerator.init_trackers(PROJECT, config=flat_config(config), init_kwargs=kwargs)
    for note in notes:
        say(f"tracking to {note}")
