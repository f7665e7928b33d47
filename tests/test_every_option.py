"""Every option the Train and Generate forms offer, from training to generation (the issue's sweep).

Each value of each choice and switch of ``TrainConfig`` (listed from the model, so a new option is swept too) gets
a one-step run on a starter, or on the tiny Llama for the LoRA options, trained by the worker's own code with
in-training samples on, then a sample set through the generation service from its checkpoint. Where this machine,
the model or the data make a value impossible (fp16 or QLoRA without a GPU), the run must be refused before it
exists, with the reason. Each value of each choice of the generation settings is generated with a default run of
its modality."""

from __future__ import annotations

import json
import typing

import pytest

from studio.data.service import import_dataset
from studio.generation.cache import ModelCache
from studio.generation.options import SETTINGS
from studio.generation.service import generate_set, get_set
from studio.models.options import PreferenceOptions
from studio.models.text import flash_attention_missing
from studio.settings import load_settings
from studio.store import open_store
from studio.store.tables import Run
from studio.training import jobs, worker
from studio.training.config import MODALITY_SECTIONS, SECTIONS, TrainConfig, apply_overrides, flat_keys
from studio.training.runs import run_summary, samples
from test_text_backend import rows, tiny_folder  # noqa: F401 - module-scoped fixtures

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # the sweep: minutes

BIG = 2**34
PROMPTS = {"text": "Once upon a time", "image": "a red circle", "audio": "low hum"}
# One short step with validation, a checkpoint and in-training samples, at sizes that take seconds.
SHORT = ["max_steps=1", "warmup_steps=0", "eval_steps=1", "save_steps=1", "per_device_train_batch_size=2",
         "sample_steps=1", "max_length=32", "resolution=16", "clip_seconds=0.25"]
GENERATE = {"text": {"max_new_tokens": 4}, "image": {"steps": 2}, "audio": {"steps": 2, "seconds": 0.25}}
CONVERSATION_OPTIONS = ("text_format", "response_only_loss")  # what they change shows on conversations only
# A preference objective's options: swept with DPO on preference pairs (text; the importer takes media pairs from
# the votes of a rated set, so the media datasets here have none, and the run is refused for want of them).
PREFERENCE_OPTIONS = ("objective", *PreferenceOptions.model_fields)


def values_of(field) -> list:
    annotation = field.annotation
    if annotation is bool:
        return [True, False]
    return list(typing.get_args(annotation)) if typing.get_origin(annotation) is typing.Literal else []


def training_options() -> list[tuple[str, str, object]]:
    """(modality, key, value) for each non-default value of each choice and switch of the Train form; the
    defaults are what the default runs use. Each section's options on each modality that trains with them (the
    diffusion options on image and audio); the top-level and LoRA options on text."""
    cases = []
    for key, section in flat_keys().items():
        field = (SECTIONS[section] if section else TrainConfig).model_fields[key]
        modalities = [modality for modality, used in MODALITY_SECTIONS.items() if section in used] or ["text"]
        cases += [(modality, key, value) for value in values_of(field) if value != field.default
                  for modality in modalities]
    return cases


def generation_options() -> list[tuple[str, str, object]]:
    return [(modality, key, value) for modality, model in SETTINGS.items()
            for key, field in model.model_fields.items() for value in values_of(field) if value != field.default]


def impossible_here(key: str, value, config: TrainConfig, modality: str = "text") -> str | None:
    """What a refusal must say for a value this machine cannot run, or None."""
    import importlib.util

    if key == "mixed_precision" and value == "fp16" and jobs.on_cpu(config):
        return "fp16 needs a GPU"
    if key == "load_in_4bit" and value and (jobs.on_cpu(config) or importlib.util.find_spec("bitsandbytes") is None):
        return "QLoRA"
    if key == "optim" and value == "adamw_8bit" and (jobs.on_cpu(config)
                                                     or importlib.util.find_spec("bitsandbytes") is None):
        return "8-bit AdamW"
    if key == "liger_kernels" and value and modality != "text":
        return "Llama-family text models"
    if key == "liger_kernels" and value and (jobs.on_cpu(config) or importlib.util.find_spec("liger_kernel") is None):
        return "Liger kernels \\(liger_kernels\\) need a CUDA GPU"
    if key in PREFERENCE_OPTIONS and modality != "text":
        return "learns from preference pairs"
    if key == "attn_implementation" and flash_attention_missing(config):
        return "flash_attention_2' needs a CUDA GPU and the flash-attn package"
    return None


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_folder):  # noqa: F811
    """A store with a plain-text, a conversation, an image and an audio dataset."""
    from studio.examples.shapes import make_shapes
    from studio.examples.text import make_corpus
    from studio.examples.tones import make_tones

    root = tmp_path_factory.mktemp("options")
    store = open_store(load_settings(home=root / "home"))
    (root / "stories.txt").write_text(make_corpus(size_kb=3, seed=1))
    pairs = [{"prompt": f"What colour is fox number {n}?", "response": f"Fox {n} is {c}."}
             for n, c in enumerate(["red", "brown", "grey", "white"] * 5)]
    (root / "pairs.jsonl").write_text("\n".join(json.dumps(p) for p in pairs))
    (root / "prefs.jsonl").write_text("\n".join(json.dumps({"prompt": p["prompt"], "chosen": p["response"],
                                                            "rejected": "I do not know."}) for p in pairs))
    make_shapes(root / "shapes", 1, 0)
    make_tones(root / "tones", 2, 0)
    datasets = {name: str(import_dataset(store, [root / path], name=name)["dataset_id"])
                for name, path in (("text", "stories.txt"), ("chat", "pairs.jsonl"), ("prefs", "prefs.jsonl"),
                                   ("image", "shapes"), ("audio", "tones"))}
    yield {"store": store, "datasets": datasets, "tiny": str(tiny_folder)}
    store.close()


def fresh_accelerate() -> None:
    # The worker is a process of its own; here runs share one, and accelerate keeps its precision and device
    # choice process-wide.
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def train_and_generate(lab, modality: str, overrides: list[str], dataset: str | None = None) -> tuple[int, dict]:
    """A short run with ``overrides`` (as `studio train --set` takes them), then one sample from its checkpoint."""
    store = lab["store"]
    lora = any(o.startswith("load_in_4bit") for o in overrides)
    model, method = (lab["tiny"], "lora") if lora else (f"starter-{modality}", "scratch")
    config = apply_overrides(TrainConfig(), SHORT + [f"sample_prompts={PROMPTS[modality]}"] + overrides)
    fresh_accelerate()
    run = jobs.create_run(store, lab["datasets"][dataset or modality], model, method, config)
    jobs.finish_run(store, run, worker.run_worker(store, run))
    summary = run_summary(store, run)
    assert summary["status"] == "completed", summary.get("error")
    assert [s["step"] for s in samples(store, run)] == [1]  # the in-training sample at step 1
    return run, summary


def generated(lab, run: int, modality: str, settings: dict) -> dict:
    found = get_set(lab["store"], generate_set(lab["store"], [str(run)], [PROMPTS[modality]], seed=3,
                                               settings={**GENERATE[modality], **settings}, cache=ModelCache(BIG)))
    assert found["status"] == "completed" and found["report"]["errors"] == []
    [sample] = found["samples"]
    assert sample["text"] or sample["path"]
    return sample


@pytest.fixture(scope="module")
def default_runs(lab):
    """A run with the default options per modality, and that it generates with the default settings."""
    runs = {}
    for modality in ("text", "image", "audio"):
        runs[modality], _ = train_and_generate(lab, modality, [])
        generated(lab, runs[modality], modality, {})
    return runs


@pytest.mark.parametrize("modality, key, value", training_options(),
                         ids=lambda v: json.dumps(v) if isinstance(v, bool) else str(v))
def test_each_training_option_trains_and_generates_or_is_refused_first(lab, default_runs, modality, key, value):
    store = lab["store"]
    settings = [f"{key}={json.dumps(value) if isinstance(value, bool) else value}"]
    dataset = "chat" if key in CONVERSATION_OPTIONS else None
    if key in PREFERENCE_OPTIONS:
        settings, dataset = ([] if key == "objective" else ["objective=dpo"]) + settings, \
            "prefs" if modality == "text" else None
    refusal = impossible_here(key, value, apply_overrides(TrainConfig(), SHORT + settings), modality)
    if refusal:
        with store.session() as session:
            before = session.query(Run).count()
        with pytest.raises(jobs.RunError, match=refusal):
            train_and_generate(lab, modality, settings, dataset)
        with store.session() as session:
            assert session.query(Run).count() == before  # refused before the run existed
        return
    run, _ = train_and_generate(lab, modality, settings, dataset)
    generated(lab, run, modality, {})


@pytest.mark.parametrize("modality, key, value", generation_options(), ids=str)
def test_each_generation_option_generates(lab, default_runs, modality, key, value):
    generated(lab, default_runs[modality], modality, {key: value})


def test_conversation_format_on_plain_text_is_refused_before_the_run_exists(lab):
    store = lab["store"]
    config = apply_overrides(TrainConfig(), SHORT + ["text_format=chat"])
    with pytest.raises(jobs.RunError, match="text_format 'chat' needs prompt/response or messages rows"):
        jobs.create_run(store, lab["datasets"]["text"], "starter-text", "scratch", config)
    with pytest.raises(jobs.RunError, match="starter models are trained from scratch"):
        jobs.create_run(store, lab["datasets"]["text"], "starter-text", "full", TrainConfig())
