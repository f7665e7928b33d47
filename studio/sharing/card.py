"""Model cards for exports and dataset cards for dataset versions, in the Hub's format: a YAML metadata block
(``huggingface_hub.ModelCardData`` / ``DatasetCardData``) and Markdown sections with the real numbers.

A model card holds: what was trained from what (base, method, run, checkpoint, format) and how to load it
without the studio; the dataset version with each cleaning step's removals; the training config (YAML); the
loss curve (``loss.png`` beside the card: train and validation); the automatic metrics cached for the
checkpoint (``studio.evaluation.metrics``; how to compute them when there are none); the human-evaluation
leaderboards of the sample sets that include the run (``studio.evaluation.service``).

huggingface_hub and matplotlib are imported inside functions.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from studio.data.service import describe_source, get_version
from studio.evaluation.metrics import eval_path
from studio.evaluation.service import EvaluationError, leaderboard, run_preference
from studio.generation.variants import origin
from studio.models.registry import is_starter
from studio.store import Store
from studio.training.config import TrainConfig, describe_augmentation
from studio.training.runs import checkpoints, run_summary

TASKS = {"text": "text-generation", "image": "text-to-image", "audio": "text-to-audio"}
DEFAULT_LICENSE = "other"  # a fine-tune inherits its base model's terms: the studio cannot choose them for you
CARD, LOSS_PLOT = "README.md", "loss.png"


# ----------------------------------------------------------------------------- shared pieces

def is_hub_id(ref: str | None) -> bool:
    """``owner/name`` that is not a local path (a local folder cannot be a card's base_model)."""
    if not ref or Path(ref).expanduser().exists() or ref.startswith((".", "/", "~")):
        return False
    return ref.count("/") == 1 and all(ref.split("/"))


def _table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def _number(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def cleaning_section(report: dict) -> str:
    """Each cleaning step: on or off, how many items it removed or changed, and why (the first reasons)."""
    rows = []
    for step in report.get("steps", []):
        reasons = "; ".join(dict.fromkeys(e.get("reason", "") for e in step.get("examples", []) if e.get("reason")))
        rows.append([step.get("label") or step["step"], "on" if step.get("enabled") else "off",
                     step.get("removed", 0), step.get("changed", 0), step.get("detail") or "", reasons[:200]])
    summary = (f"{report.get('items_kept', '?')} of {report.get('items_in', '?')} items kept; "
               f"{len(report.get('errors') or [])} files could not be read.")
    if not rows:
        return summary
    return summary + "\n\n" + _table(["step", "", "removed", "changed", "detail", "why (examples)"], rows)


def _splits_line(counts: dict) -> str:
    return ", ".join(f"{split} {counts.get(split, 0)}" for split in ("train", "validation", "test"))


def _card_text(data, body: str) -> str:
    return f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n"


def _provenance(actor: str | None) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"Made with Gen Studio{f' by {actor}' if actor else ''} on {when}."


# ----------------------------------------------------------------------------- model cards

def model_card_data(*, modality: str, fmt: str, library: str, method: str, base_model: str | None,
                    dataset: str | None, license: str | None):
    """The card's YAML metadata. ``base_model`` only when it is a Hub id (a local folder means nothing on the
    Hub, and a from-scratch model has none)."""
    from huggingface_hub import ModelCardData

    tags = ["gen-studio", TASKS[modality], method]
    if fmt in ("peft", "diffusers-lora") or method == "lora":
        tags += ["lora"]
    if fmt == "merged" and method == "lora":
        tags += ["merged"]
    hub_base = base_model if is_hub_id(base_model) and method != "scratch" else None
    return ModelCardData(base_model=hub_base, library_name=library, pipeline_tag=TASKS[modality],
                         tags=list(dict.fromkeys(tags)), datasets=[dataset] if dataset else None,
                         **licence_fields(license, inherited=method != "scratch"))


def licence_fields(license: str | None, inherited: bool) -> dict:
    """``license`` for the card; the Hub asks a custom ('other') licence for a ``license_name`` too."""
    chosen = (license or DEFAULT_LICENSE).strip()
    if chosen != "other":
        return {"license": chosen}
    return {"license": "other", "license_name": "same-as-base-model" if inherited else "unspecified"}


def shareable_base(base: str | None) -> str:
    """The base as a card may name it: a Hub id as it is, a local folder by its name only (a card may go public,
    and `/home/alice/models/...` tells more than it should)."""
    if not base:
        return "BASE_MODEL"
    return base if is_hub_id(base) else f"path/to/{Path(base).name}"


def _usage(fmt: str, library: str, family, base: str, studio_folder: bool, on_starter: bool) -> str:
    """How to load the export of a model of ``family`` without the studio. ``base``: the model the adapter was
    trained on."""
    if fmt == "peft" and on_starter:
        return ("A LoRA adapter for a model trained from a Gen Studio starter (no standard pipeline): its UNet loads "
                "it with `PeftModel.from_pretrained(UNet2DConditionModel.from_pretrained(BASE, subfolder=\"unet\"), "
                f"THIS_FOLDER)` where BASE is the folder `{base}`; Gen Studio samples it. Export as 'merged' for one "
                "folder the studio loads as a model.")
    if studio_folder:
        return ("This is a Gen Studio starter model (pixel-space or spectrogram diffusion with its own text encoder), "
                "not a standard pipeline: its parts load with `UNet2DConditionModel.from_pretrained(folder, "
                "subfolder=\"unet\")` and `CLIPTextModel.from_pretrained(folder, subfolder=\"text_encoder\")`, and "
                "Gen Studio samples it: give this folder as the model (Model tab, or `studio generate --model "
                "FOLDER`).")
    loader = family.model_class  # the transformers class, or none for a diffusers pipeline
    if fmt == "peft":
        if not loader:  # an image LoRA in PEFT form adapts the pipeline's UNet
            return ("```python\nfrom diffusers import StableDiffusionPipeline\nfrom peft import PeftModel\n\n"
                    f"pipeline = StableDiffusionPipeline.from_pretrained(\"{base}\")\n"
                    "pipeline.unet = PeftModel.from_pretrained(pipeline.unet, \"THIS_FOLDER\").merge_and_unload()\n```")
        return (f"```python\nfrom peft import PeftModel\nfrom transformers import {loader}\n\n"
                f"base = {loader}.from_pretrained(\"{base}\")\nmodel = PeftModel.from_pretrained(base, \"THIS_FOLDER\")\n```")
    if fmt == "diffusers-lora":
        return ("```python\nfrom diffusers import StableDiffusionPipeline\n\n"
                f"pipeline = StableDiffusionPipeline.from_pretrained(\"{base}\")\n"
                "pipeline.load_lora_weights(\"THIS_FOLDER\")\n```")
    if library == "diffusers":
        return ("```python\nimport torch\nfrom diffusers import DiffusionPipeline\n\n"
                "pipeline = DiffusionPipeline.from_pretrained(\"THIS_FOLDER\")\n"
                "image = pipeline(\"a prompt\", generator=torch.Generator().manual_seed(0)).images[0]\n```\n\n"
                "The scheduler is the DDIM sampler the studio uses, so a seed gives the studio's image.")
    return (f"```python\nfrom transformers import AutoTokenizer, {loader}\n\n"
            f"model = {loader}.from_pretrained(\"THIS_FOLDER\")\ntokenizer = AutoTokenizer.from_pretrained(\"THIS_FOLDER\")\n```")


def loss_plot(history: list[dict], path: Path) -> bool:
    """Train and validation loss against the step, as a PNG; False when the run recorded no loss."""
    curves = {name: [(h["step"], h["value"]) for h in history if h["name"] == name and h["value"] is not None]
              for name in ("train_loss", "val_loss")}
    if not any(curves.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.add_subplot()
    for name, label, style in (("train_loss", "train", "-"), ("val_loss", "validation", "o-")):
        if curves[name]:
            steps, values = zip(*curves[name])
            axes.plot(steps, values, style, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return True


def metrics_section(store: Store, run_id: int, step: int) -> str:
    """The automatic metrics already computed for this checkpoint (never computed here: that takes minutes)."""
    path = eval_path(store, run_id, step)
    saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if not saved or not saved.get("metrics"):
        return (f"Not computed for this checkpoint yet. Compute them with `studio eval metrics {run_id}:{step}` "
                "(or the Evaluate tab) and export again to include them here.")
    rows = [[name, _number(found.get("value")), found.get("unit", ""),
             "higher" if found.get("higher_is_better") else "lower"] for name, found in saved["metrics"].items()]
    contamination = (saved.get("contamination") or {}).get("found")
    return (f"On {saved.get('items')} held-out items of the {saved.get('split')} split "
            f"(computed {str(saved.get('computed_at', ''))[:19]}):\n\n"
            + _table(["metric", "value", "unit", "better"], rows)
            + ("\n\nWarning: some evaluation items also appear in the training split." if contamination else ""))


def human_section(store: Store, run_id: int) -> str:
    """The leaderboard of every rated sample set that includes a checkpoint of this run."""
    try:
        sets = run_preference(store, run_id)["sets"]
    except EvaluationError:
        sets = []
    parts = []
    for set_id in sets:
        try:
            board = leaderboard(store, set_id)
        except EvaluationError:
            continue
        if not board["votes"]:
            continue
        rows = [[v["rank"] or "-", ("**" + v["label"] + "**") if str(v["variant"]).startswith(f"{run_id}:")
                 else v["label"], _number(v["strength"], 2), f"[{_number(v['ci_low'], 2)}, {_number(v['ci_high'], 2)}]",
                 v["wins"], v["losses"], v["ties"], v["votes"]] for v in board["variants"]]
        parts.append(f"Sample set {set_id}: {board['votes']} counted votes"
                     + (" (preliminary: few votes)" if board["preliminary"] else "") + "\n\n"
                     + _table(["rank", "variant", "strength", "95 % interval", "wins", "losses", "ties", "votes"],
                              rows))
    if not parts:
        return ("No sample set with this run has been rated yet: generate with it beside the base (Generate tab or "
                "`studio generate`), rate the set blind (Evaluate tab or `studio eval pairs`), and export again.")
    return ("Bradley-Terry strengths from blind pairwise votes (log-odds; this run's checkpoints in bold).\n\n"
            + "\n\n".join(parts))


# How the card names what a run trained with (runs.RunSummary's objective); the rest by name.
OBJECTIVE_WORDS = {"sft": "supervised fine-tuning (`sft`): the model learned to imitate the examples",
                   "adversarial": "adversarial (`adversarial`): a generator and a discriminator trained against each "
                                  "other on the examples (a GAN; its validation loss is the discriminator's hinge "
                                  "loss)"}


def _run_facts(store: Store, run_id: int) -> tuple[dict, object]:
    """The run's summary with its history and config, and its dataset version."""
    summary = run_summary(store, run_id, with_history=True)
    return summary, get_version(store, summary["dataset"])


def _checkpoint_loss(store: Store, variant) -> str:
    found = next((c for c in checkpoints(store, variant.run_id) if c["step"] == variant.step), None)
    loss = found and found.get("val_loss")
    return f" (validation loss {_number(loss)} when it was saved)" if loss is not None else ""


def data_section(version) -> str:
    """A dataset version for people: its source (files, or votes), items per split, what each cleaning step removed and why."""
    return (f"Dataset **{version.dataset.name}** version {version.version} ({version.dataset.modality}); source: "
            f"{describe_source(version.source, most=1000)}.\nItems per split: {_splits_line(version.splits or {})}."
            "\n\n### Cleaning\n\n"
            + cleaning_section(version.report or {}))


def _training_section(store: Store, variant, summary: dict, out: Path) -> str:
    """Steps and losses, the loss curve (written beside the card) and the config as YAML."""
    train, val = summary["train_loss"], summary["val_loss"]
    plotted = loss_plot(summary["history"], out / LOSS_PLOT)
    trained_with = TrainConfig.model_validate(summary.get("config") or {})
    config = trained_with.to_yaml().strip()
    return (f"{summary['steps']} steps; this checkpoint is step {variant.step}{_checkpoint_loss(store, variant)}. "
            f"Over the run, train loss: last {_number(train['last'])}, best {_number(train['best'])}; validation "
            f"loss: last {_number(val['last'])}, best {_number(val['best'])}.\n\n"
            + (f"![Loss curve: train and validation]({LOSS_PLOT})" if plotted else "No loss was recorded.")
            + f"\n\nAugmentation: {describe_augmentation(trained_with, variant.modality)}. The dataset version "
              "itself is unchanged: variants were made while training, not stored."
            + f"\n\nTraining config:\n\n```yaml\n{config}\n```")


def write_model_card(store: Store, variant, fmt: str, library: str, out: Path, license: str | None = None,
                     actor: str | None = None) -> Path:
    """``out/README.md`` (and ``out/loss.png``) for an export of ``variant`` as ``fmt``; returns the card's path."""
    summary, version = _run_facts(store, variant.run_id)
    base = None if variant.method == "scratch" else origin(store, variant.base_ref)[0]
    dataset_name = version.dataset.name
    data = model_card_data(modality=variant.modality, fmt=fmt, library=library, method=variant.method,
                           base_model=base, dataset=dataset_name, license=license)
    on_starter = is_starter(base)
    base_text = ("none: trained from scratch" if base is None
                 else f"a model trained from the Gen Studio starter `{base}` (`{Path(variant.base_ref).name}`)"
                 if on_starter else f"`{base}`" if is_hub_id(base) else f"the local model folder `{Path(base).name}`")
    body = f"""
# {dataset_name} · run {variant.run_id} · step {variant.step}

A {variant.modality} model trained with **{variant.method}** on the dataset **{dataset_name}** version
{version.version}, exported from Gen Studio as **{fmt}** (loads with {library}, no studio code needed).

- Base model: {base_text}
- Run {variant.run_id}, checkpoint at step {variant.step} of {summary['total_steps']} ({summary['status']})
- Objective: {OBJECTIVE_WORDS.get(summary['objective'], f"`{summary['objective']}`")}
- Licence: `{data.license}`{' (the base model’s licence terms apply; choose one with --license)' if data.license == DEFAULT_LICENSE else ''}

## How to use

{_usage(fmt, library, variant.family, shareable_base(variant.base_ref),
        fmt == "merged" and not variant.family.standalone, on_starter)}

## Training data

{data_section(version)}

## Training

{_training_section(store, variant, summary, Path(out))}

## Evaluation

### Automatic metrics

{metrics_section(store, variant.run_id, variant.step)}

### Human evaluation

{human_section(store, variant.run_id)}

---

{_provenance(actor)}
"""
    path = Path(out) / CARD
    path.write_text(_card_text(data, body), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- dataset cards

def _size_category(count: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if count < limit:
            return label
    return "n>1M"


def dataset_card_text(version, license: str | None = None, actor: str | None = None) -> str:
    """The card of a dataset version: its metadata, source, items per split and cleaning report."""
    from huggingface_hub import DatasetCardData

    modality, name = version.dataset.modality, version.dataset.name
    data = DatasetCardData(**licence_fields(license, inherited=False), pretty_name=f"{name} v{version.version}",
                           task_categories=[TASKS[modality]], size_categories=[_size_category(version.items_kept)],
                           tags=["gen-studio", modality])
    layout = ("`<split>.jsonl` per split (the `json` loader)" if modality == "text" else
              f"a folder per split with `metadata.jsonl` captions (the `{modality}folder` loader)")
    body = f"""
# {name} · version {version.version}

A {modality} dataset cleaned, split and versioned with Gen Studio. Files: {layout}; `.studio/report.json` is
the cleaning report (counts and reasons per step; the removed items' text stays with the studio).

- Split seed: {(version.splits or {}).get('seed', 'n/a')}, fractions {(version.splits or {}).get('fractions', 'n/a')}

{data_section(version)}

## Use

```python
from datasets import load_dataset

dataset = load_dataset("THIS_REPO")
```

---

{_provenance(actor)}
"""
    return _card_text(data, body)
