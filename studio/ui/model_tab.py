"""The Model tab: pick a model (catalog, Hub id or local folder, or an offline starter) and a method,
and see parameter counts and a memory estimate before training."""

from __future__ import annotations

import gradio as gr  # at module level: a handler's "request: gr.Request" hint must resolve, or Gradio passes no request
import html
import os
import shutil
import subprocess
from dataclasses import dataclass

from studio.data.items import ImportRefused
from studio.data.service import get_version
from studio.models.catalog import REFERENCE_CPU, Architecture, architectures, availability, entries, find, \
    fit_verdict, memory_estimate
from studio.models.options import LoraOptions
from studio.models.registry import modality_of
from studio.store import Store
from studio.training.config import PRECISION_CHOICES, TrainConfig, apply_overrides
from studio.training.runs import training_speed
from studio.ui import bakeoff_panel
from studio.ui.forms import params_form
from studio.ui.project_bar import dataset_picker
from studio.ui.state import error_message, model_in_words, run_start

OTHER = "other: a Hub id, a local folder or a run's checkpoint"


def device_memory() -> tuple[str, float]:
    """The training device and its memory in bytes, asked without importing torch in the web process."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
            if out:
                name, mib = out[0].rsplit(",", 1)
                return f"GPU {name.strip()} ({len(out)} device(s))", float(mib) * 2**20
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
    return "CPU (no GPU found)", float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def lora_trainable(entry, rank: int, targets_per_layer: int = 4) -> float:
    # Each adapted d×d projection adds A (d×r) and B (r×d).
    return targets_per_layer * 2 * entry.hidden * rank * entry.layers


def estimate_markdown(model_ref: str, method: str, rank: int, precision: str, batch: int, sequence: int) -> str:
    entry = find(model_ref)
    if entry is None:
        return ("Parameter counts and memory are estimated for catalog models; for other models they are "
                "measured when the run starts (see the run's log).")
    total = entry.params_m * 1e6
    trainable = lora_trainable(entry, rank) if method == "lora" else total
    memory = memory_estimate(total, trainable, precision=precision, batch_size=batch, sequence=sequence,
                             layers=entry.layers, hidden=entry.hidden)
    device, available = device_memory()
    verdict = fit_verdict(memory["total"], available)
    parts = " + ".join(f"{k} {v / 2**30:.2f}" for k, v in memory.items() if k != "total")
    warning = "" if verdict == "fits" else (f"\n\n**Warning: {verdict}** on {device}: lower the batch size, use "
                                            "LoRA, bf16, or gradient checkpointing.")
    trade_offs = f"Good at: {entry.good_at}. Bad at: {entry.bad_at}.\n\n" if entry.good_at else ""
    return (f"**{entry.id}** · {entry.family} · {entry.note}\n\n{trade_offs}"
            f"Trainable parameters: **{trainable / 1e6:,.2f} M** of {total / 1e6:,.1f} M "
            f"({100 * trainable / total:.2f} %)\n\n"
            f"Estimated peak memory: **{memory['total'] / 2**30:.2f} GiB** ({parts} GiB) → **{verdict}** on "
            f"{device} ({available / 2**30:.0f} GiB).{warning}\n\n"
            f"Availability: {availability(entry.id)}.")


# ----------------------------------------------------------------------------- "Which architecture?"

MODALITY_WORDS = {"text": "Text", "image": "Images", "audio": "Audio"}
SIZE_SETTINGS = ("resolution", "clip_seconds", "max_length")  # what a step's time grows with, beside the batch


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def seconds_per_step(store: Store, architecture: Architecture, batch: int, on_gpu: bool) -> tuple[float, str] | None:
    """(seconds per training step at the recommended batch, how that was found) on this machine: measured by its
    newest completed run here, else the reference CPU's figure scaled by cores (on a CPU only); None: unknown."""
    others = tuple(o.overrides for o in architecture.entry.options if o is not architecture.option)
    # a run at another size (a bake-off's test at 16 pixels) says little about the recommended one's speed
    size = tuple(p for p in architecture.entry.recommended if p.split("=")[0] in SIZE_SETTINGS)
    found = training_speed(store, architecture.entry.id, (*architecture.overrides, *size), others)
    if found:
        return (batch / found["items_per_second"],
                f"measured: run #{found['run_id']} trained {found['items_per_second']:.1f} items/s here")
    if on_gpu or not architecture.reference_seconds_per_step:
        return None
    cores = os.cpu_count() or 1
    return (architecture.reference_seconds_per_step * REFERENCE_CPU["cores"] / cores,
            f"estimated: {architecture.reference_seconds_per_step:g} s on {REFERENCE_CPU['name']} x "
            f"{REFERENCE_CPU['cores']}/{cores} cores")


def training_time(store: Store, architecture: Architecture, on_gpu: bool) -> tuple[str, str]:
    """(the recommended training in words, how long it takes on this machine in words)."""
    config = apply_overrides(TrainConfig(), list(architecture.recommended))
    batch = config.per_device_train_batch_size * config.gradient_accumulation_steps
    length = f"{config.max_steps} steps" if config.max_steps > 0 else f"{config.num_train_epochs:g} epochs"
    recommended = f"{length} of {batch} at learning rate {config.learning_rate:g}"
    speed = seconds_per_step(store, architecture, batch, on_gpu)
    if speed is None:
        return recommended, "not measured yet: its first run here measures it"
    seconds, how = speed
    if config.max_steps > 0:
        return recommended, f"about {_duration(seconds * config.max_steps)} ({seconds:.2g} s per step; {how})"
    return recommended, f"{seconds:.2g} s per step, steps depending on the dataset's size ({how})"


def _cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "&#124;") or "—"


def architecture_guide(store: Store) -> str:
    """The Model tab's "Which architecture?": per modality, each architecture of the catalog (its starters and their
    options, ``catalog.architectures``) with what it is good and bad at, its sampling cost and what its recommended
    training takes here. Read from the catalog and the store only: no model runs for it."""
    device, _memory = device_memory()
    on_gpu = device.startswith("GPU")
    lines = ["Each architecture trades cost, quality and control. Its sampling cost is the network passes one "
             "sample takes (the time a picture or clip takes to make); its training time is for the settings the "
             "catalog recommends (those a bake-off and the Train tab start from), on this machine: " + _cell(device)
             + ". **Measured** times come from this studio's own completed runs of that architecture; **estimated** "
             "ones scale the speed measured on " + REFERENCE_CPU["name"] + " (bench/architecture_speed.py) by the "
             "number of cores, roughly, and only on a CPU. A bake-off (below) settles the choice on your own data."]
    for modality in ("text", "image", "audio"):
        found = architectures(modality)
        if not found:
            continue
        lines += ["", f"**{MODALITY_WORDS[modality]}**", "",
                  "| architecture | good at | bad at | sampling cost | recommended training | on this machine |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for architecture in found:
            passes = architecture.sampling_passes
            cost = (f"{passes} network pass{'es' if passes != 1 else ''} {architecture.entry.sampling_unit}"
                    if passes else "not stated")
            recommended, time_here = training_time(store, architecture, on_gpu)
            option = f" ({architecture.option.name}: {', '.join(architecture.overrides)})" if architecture.option \
                else ""
            lines.append(f"| `{_cell(architecture.key)}`{_cell(option) if option else ''} | "
                         f"{_cell(architecture.good_at)} | {_cell(architecture.bad_at)} | {_cell(cost)} | "
                         f"{_cell(recommended)} | {_cell(time_here)} |")
    return "\n".join(lines)


def model_choices(modality: str) -> list[tuple[str, str]]:
    return [(f"{e.id} · {e.params_m:g}M · {e.note}", e.id) for e in entries(modality)] + [(OTHER, OTHER)]


def working_on(store: Store, ref: str | None) -> tuple[str, str]:
    """The dataset version's modality ("text" when none is picked) and the line saying what the tab works on."""
    if not ref:
        return "text", ("No dataset version picked: text models are offered. Pick a version to see the models "
                        "for its data.")
    try:
        found = get_version(store, ref)
    except ImportRefused as error:
        return "text", error_message(error)
    modality = found.dataset.modality
    return modality, (f"Working on **{html.escape(found.dataset.name)} v{found.version}** ({modality}, "
                      f"{found.items_kept} items): the models below are for **{modality}** data.")


@dataclass
class ModelTab:
    """The Model tab's components; the Train tab reads the chosen model, method and LoRA settings from it."""
    dataset_line: object
    choice: object
    other: object
    method: object
    model_ref: object
    lora_box: object
    lora: dict  # LoraOptions field name -> component
    precision: object
    batch: object
    sequence: object
    estimate: object
    guide: object
    bakeoff: bakeoff_panel.BakeoffPanel


def build(store: Store, project, version) -> ModelTab:
    """The Model tab, laid out and wired to the shared ``project`` and ``version`` selectors."""
    tab = layout(store, project, version)
    wire(store, tab, version, project)
    return tab


def layout(store: Store, project, version) -> ModelTab:
    gr.Markdown("Pick the model to adapt and how. **Starters** work offline and learn from your data from "
                "scratch; Hub models need their weights in the local Hugging Face cache (or a network).")
    with gr.Row():
        dataset_picker(store, project, version, "model-dataset")
        dataset_line = gr.Markdown(working_on(store, None)[1], elem_id="model-working-on")
    with gr.Row():
        choice = gr.Radio(model_choices("text"), value="starter-text", label="Model", elem_id="model-choice", scale=3)
        with gr.Column(scale=2):
            other = gr.Textbox(label="Hub id, local folder or a run's checkpoint (RUN_ID:STEP)", visible=False,
                               placeholder="HuggingFaceTB/SmolLM2-135M-Instruct, /path/to/model or 12:40",
                               elem_id="model-other")
            method = gr.Radio(["scratch"], value="scratch", label="Method", elem_id="model-method",
                              info="LoRA: small adapters on a frozen model · full: every weight · scratch: a new model")
            model_ref = gr.Textbox(value="starter-text", label="Chosen model", interactive=False, elem_id="model-ref")
    with gr.Accordion("Which architecture?", open=False, elem_id="architecture-guide-box"):
        guide = gr.Markdown(architecture_guide(store), elem_id="architecture-guide")
    with gr.Accordion("LoRA settings", open=True, visible=False) as lora_box:
        with gr.Row():
            lora = params_form(LoraOptions)
    with gr.Row():
        precision = gr.Dropdown([(words, value) for value, words in PRECISION_CHOICES.items()], value="no",
                                label="Number precision (for the estimate)")
        batch = gr.Number(value=8, precision=0, label="Batch size (for the estimate)")
        sequence = gr.Number(value=256, precision=0, label="Tokens per sequence / latent pixels")
    estimate = gr.Markdown(estimate_markdown("starter-text", "scratch", 8, "no", 8, 256), elem_id="model-estimate")
    with gr.Accordion("Bake-off: settle the choice on your data", open=False, elem_id="bakeoff-box"):
        bakeoff = bakeoff_panel.layout(store)
    return ModelTab(dataset_line, choice, other, method, model_ref, lora_box, lora, precision, batch, sequence,
                    estimate, guide, bakeoff)


def model_modality(store: Store, ref: str | None) -> str | None:
    """The modality of a model reference: a run's checkpoint's, a catalog model's or a folder's; None: unknown."""
    start = run_start(store, ref)
    return start["modality"] if start else modality_of(ref) if ref else None


def start_methods(method: str) -> list[str]:
    """The methods offered for a checkpoint of a run trained with ``method``, the one that continues it first: a LoRA
    run's adapter trained further, a full or from-scratch run's weights all trained further ("scratch", last, starts
    a new model of its shape, leaving the checkpoint's training behind)."""
    first = "lora" if method == "lora" else "full"
    return [first, "full" if first == "lora" else "lora", "scratch"]


def methods_for(store: Store, ref: str | None) -> list[str]:
    """The methods offered for the model ``ref``, the one proposed first: a starter is trained from scratch, a run's
    checkpoint goes on as its run did (``start_methods``)."""
    entry = find(ref) if ref else None
    start = run_start(store, ref)
    if start is not None:
        return start_methods(start["method"])
    return ["scratch"] if entry is not None and entry.starter else ["lora", "full", "scratch"]


def model_picked(store: Store, ref: str, modality: str) -> tuple:
    """The Model tab's (choice, other) showing ``ref`` as the chosen model: a catalog entry of ``modality`` picked
    in the list, anything else typed under "other"."""
    listed = ref in {value for _, value in model_choices(modality)}
    return (gr.Radio(choices=model_choices(modality), value=ref if listed else OTHER),
            gr.Textbox(value="" if listed else ref, visible=not listed))


def wire(store: Store, tab: ModelTab, version, project) -> None:
    def on_dataset(ref, picked, typed):
        """The models for the version's data; the one chosen stays when it suits that data (another version of the
        same kind, or a start the Evaluate tab proposed with the version it made)."""
        modality, line = working_on(store, ref)
        chosen = typed if picked == OTHER else picked
        kept = {} if model_modality(store, chosen) == modality else {"value": f"starter-{modality}"}
        return gr.Radio(choices=model_choices(modality), **kept), line

    version.change(on_dataset, [version, tab.choice, tab.other], [tab.choice, tab.dataset_line])
    # the guide's times: measured ones come from runs, which may have ended since the page was built
    version.change(lambda: architecture_guide(store), None, tab.guide, show_progress="hidden")
    bakeoff_panel.wire(store, tab.bakeoff, project, version, lambda ref: working_on(store, ref)[0])

    def on_choice(picked, typed, chosen_ref, chosen_method):
        """The methods for the picked model, the first chosen; unless the model is the one chosen already (a job
        file loaded in the Train tab set the model and its method together), whose method stays."""
        ref = typed if picked == OTHER else picked
        methods = methods_for(store, ref)
        kept = chosen_method if ref == chosen_ref and chosen_method in methods else methods[0]
        return gr.Textbox(visible=picked == OTHER), gr.Radio(choices=methods, value=kept), ref or ""

    for source in (tab.choice, tab.other):
        source.change(on_choice, [tab.choice, tab.other, tab.model_ref, tab.method],
                      [tab.other, tab.method, tab.model_ref])
    tab.method.change(lambda m: gr.Accordion(visible=m == "lora"), tab.method, tab.lora_box)

    inputs = [tab.model_ref, tab.method, tab.lora["r"], tab.precision, tab.batch, tab.sequence]
    for component in inputs:
        component.change(lambda ref, m, r, p, b, s: start_markdown(store, ref)
                         or estimate_markdown(ref, m, int(r or 8), p, int(b or 1), int(s or 1)), inputs, tab.estimate)


def start_markdown(store: Store, ref: str | None) -> str | None:
    """What a run's checkpoint as the model means (None when ``ref`` is not one): the new run starts from it."""
    start = run_start(store, ref)
    if start is None:
        return None
    return (f"Starting from **{html.escape(model_in_words(store, ref))}**, trained from "
            f"{html.escape(model_in_words(store, start['model']))}: the new run continues from that checkpoint's "
            "weights. Its memory is measured when the run starts (see the run's log).")
