"""A training job in one file (``studio train job.yaml``, as ``llamafactory-cli train cfg.yaml`` or an ai-toolkit
config): the dataset version, the model and the method, then every ``TrainConfig`` setting under its own name (the
sections nested, as in a run's saved YAML). The Train tab's "Show config as YAML" writes exactly this file and its
"Load a job file" reads it back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from studio.fields import InvalidSettings, validated
from studio.training.config import METHODS, TrainConfig

JOB_KEYS = ("dataset", "model", "method")


class JobLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``3:1`` (DATASET_ID:VERSION) and ``12:40`` (RUN_ID:STEP) as base-60 numbers (181, 760); a job
    file's references stay text."""


JobLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
JobLoader.add_implicit_resolver(  # YAML 1.2's integers: no base 60
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*|0x[0-9a-fA-F_]+|0o?[0-7_]+)$"),
    list("-+0123456789"))


@dataclass(frozen=True)
class Job:
    dataset: str
    model: str
    method: str
    config: TrainConfig


def job_yaml(dataset: str, model: str, method: str, config: TrainConfig) -> str:
    """The job file for training ``model`` with ``method`` on ``dataset`` (``DATASET_ID:VERSION``) under ``config``."""
    return yaml.safe_dump({"dataset": str(dataset), "model": str(model), "method": method, **config.model_dump()},
                          sort_keys=False)


def read_job(text: str, name: str) -> Job:
    """The job in ``text`` (the file ``name``, for messages); a file that is not one says why, naming the file."""
    try:
        data = yaml.load(text, Loader=JobLoader)
    except yaml.YAMLError as error:
        raise InvalidSettings(f"{name}: not YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InvalidSettings(f"{name}: a job file is a YAML mapping: {', '.join(JOB_KEYS)} and the settings")
    missing = [key for key in JOB_KEYS if data.get(key) in (None, "")]
    if missing:
        raise InvalidSettings(f"{name}: {', '.join(missing)} missing (a job file names the dataset version, the "
                              f"model and the method)")
    if data["method"] not in METHODS:
        raise InvalidSettings(f"{name}: method must be one of {', '.join(METHODS)} (got {data['method']!r})")
    try:
        config = validated(TrainConfig, {k: v for k, v in data.items() if k not in JOB_KEYS})
    except InvalidSettings as error:
        raise InvalidSettings(f"{name}: {error}") from None
    return Job(str(data["dataset"]), str(data["model"]), str(data["method"]), config)
