"""The Train tab: settings (generated from TrainConfig), start, and watch runs live — loss and learning-rate
plots, progress with ETA, throughput, samples, log tail — with stop / save / sample / resume / delete.

Nothing here trains: runs are queued in the store and a detached worker picks them up; this page polls.
"""

from __future__ import annotations

import gradio as gr  # at module level: a handler's "request: gr.Request" hint must resolve, or Gradio passes no request
import hashlib
import html
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from studio.data.augment import TEXT_NONE
from studio.data.items import ImportRefused
from studio.data.service import get_version
from studio.fields import validated
from studio.models.registry import recommended_for
from studio.status import RunStatus
from studio.store import Store
from studio.store.projects import DEFAULT_PROJECT
from studio.training import jobs
from studio.training.augment_preview import preview_augmentation
from studio.training.config import MODALITY_SECTIONS, SECTIONS, TrainConfig, apply_overrides
from studio.training.job_file import job_yaml, read_job
from studio.training.preflight import preflight
from studio.training.runs import early_stop_note, list_runs, method_text, run_summary, samples, \
    where_text
from studio.ui.confirm import NOT_CONFIRMED, confirmed, two_step_delete
from studio.ui.forms import form_value, form_values, params_form
from studio.ui.model_tab import ModelTab, methods_for, model_picked
from studio.ui.project_bar import dataset_picker
from studio.ui.state import (PICK_VERSION_FIRST, MetricCache, clear_when_picked, current_user, error_message,
                             model_in_words, on_project_or_load, root_model, run_choices, version_choices)

REFRESH_SECONDS = 2
TOP_FIELDS = [name for name in TrainConfig.model_fields if name not in SECTIONS]
FORM_SECTIONS = [s for s in SECTIONS if s != "lora"]  # LoRA's options are in the Model tab
SECTION_TITLES = {"image_augmentation": "augmentation (pictures, while training)",
                  "audio_augmentation": "augmentation (clips, while training)"}
PREVIEW_PLAYERS = 8  # audio players of "Preview augmentation" (a gallery holds pictures)
CACHE = MetricCache()


def smoothed(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average (TensorBoard-style smoothing, bias-corrected at the start)."""
    out, average = [], 0.0
    for n, value in enumerate(values, 1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** n))
    return out


def loss_frame(history: list[dict], label: str = ""):
    import pandas as pd

    prefix = f"{label} " if label else ""
    train = [(h["step"], h["value"]) for h in history if h["name"] == "train_loss"]
    rows = [{"step": s, "loss": v, "series": f"{prefix}train"} for s, v in train]
    rows += [{"step": s, "loss": v, "series": f"{prefix}train (smoothed)"}
             for (s, _), v in zip(train, smoothed([v for _, v in train]))]
    rows += [{"step": h["step"], "loss": h["value"], "series": f"{prefix}validation"}
             for h in history if h["name"] == "val_loss"]
    return pd.DataFrame(rows, columns=["step", "loss", "series"]).astype({"step": "int64", "loss": "float64"})


# a preference objective's rewards (TRL's names); a GAN's losses and scores; a VAE's reconstruction error, KL term and
# the KL weight of its warm-up
OBJECTIVE_CURVES = ("rewards/", "gan/", "vae/")


def objective_frame(history: list[dict]):
    """The curves a run's objective reports beside its loss (validation's with ``val_``): a preference run's rewards
    (``rewards/chosen``, ...), a GAN's generator and discriminator losses, D(real), D(fake) and the diversity of its
    samples, a VAE's reconstruction error, KL term and KL weight; empty for any other run."""
    import pandas as pd

    rows = [{"step": h["step"], "value": h["value"],
             "series": ("validation " if h["name"].startswith("val_") else "") + h["name"].rsplit("/", 1)[1]}
            for h in history if h["name"].removeprefix("val_").startswith(OBJECTIVE_CURVES)]
    return pd.DataFrame(rows, columns=["step", "value", "series"]).astype({"step": "int64", "value": "float64"})


def lr_frame(history: list[dict]):
    import pandas as pd

    return pd.DataFrame([{"step": h["step"], "learning rate": h["value"]} for h in history
                         if h["name"] == "learning_rate"],
                        columns=["step", "learning rate"]).astype({"step": "int64", "learning rate": "float64"})


def live_plot(frame, drawn: tuple = (), total_steps: int = 0, **props) -> tuple:
    """(a LinePlot update, the lines it draws) for ``frame``, which grows while a run trains. Gradio's plot builds
    its Vega spec (the axes' types, which lines have a colour) when it first gets a value and afterwards only swaps
    the data in, and props sent along reach it before the value does. So: no value while there are no points (an
    empty frame's columns are untyped: the axes became categories, one label per step, for the whole run); and
    when the set of lines differs from ``drawn`` (what the page shows), one refresh without a value, so that the
    next draws the plot afresh (the training loss a step after the first validation, another run compared)."""
    lines = tuple(sorted(set(frame["series"]))) if "series" in frame else ()
    if frame.empty or (drawn and lines != drawn):
        return gr.LinePlot(value=None, **props), ()
    return gr.LinePlot(value=frame, x_lim=[0, total_steps] if total_steps else None, **props), lines or ("",)


def last_value(history: list[dict], name: str) -> float | None:
    return next((h["value"] for h in reversed(history) if h["name"] == name), None)


def progress_html(summary: dict, history: list[dict]) -> str:
    done, total = summary["steps"], max(summary["total_steps"], 1)
    share = min(done / total, 1.0) if summary["total_steps"] else 0.0
    eta = last_value(history, "eta_seconds")
    speed = last_value(history, "items_per_second")
    tokens = last_value(history, "tokens_per_second")
    bits = [f"<b>{html.escape(summary['status'])}</b>", f"step {done} / {summary['total_steps'] or '?'}"]
    if eta is not None and summary["status"] == RunStatus.RUNNING:
        bits.append(f"ETA {int(eta // 60)}m {int(eta % 60)}s")
    # not an average over stops and resumes
    at_end = "" if summary["status"] == RunStatus.RUNNING else " at the last step"
    if speed:
        bits.append(f"{speed:,.1f} items/s{at_end}")
    if tokens:
        bits.append(f"{tokens:,.0f} tokens/s{at_end}")
    if summary["val_loss"]["best"] is not None:
        bits.append(f"best validation loss {summary['val_loss']['best']:.4f}")
    if note := early_stop_note(summary):
        bits.append(html.escape(note))
    return (f"<div id='train-progress'><div style='background:#e5e7eb;border-radius:6px;height:14px'>"
            f"<div style='background:#6366f1;height:14px;border-radius:6px;width:{share * 100:.1f}%'></div></div>"
            f"<div style='margin-top:4px'>{' · '.join(bits)}</div></div>")


def runs_table(store: Store, project: str | None = None, runs: list[dict] | None = None) -> list[list]:
    return [[r["run_id"], r["status"], where_text(r), r["dataset_name"], r["model"], method_text(r),
             f"{r['steps']}/{r['total_steps']}",
             "" if r["val_loss"]["best"] is None else round(r["val_loss"]["best"], 4), r["created_by"] or ""]
            for r in (list_runs(store, project) if runs is None else runs)]


def starting_config(model_ref: str, objective: str = "sft") -> TrainConfig:
    """The defaults, with what suits ``model_ref`` and ``objective`` on top (settings measured to learn)."""
    return apply_overrides(TrainConfig(), recommended_for(model_ref, objective) + [f"objective={objective}"])


def proposed_config(store: Store, model_ref: str | None, objective: str | None) -> TrainConfig:
    """``starting_config`` for ``model_ref``; for a run's checkpoint (``RUN_ID:STEP``), for the model its line of runs
    came from (its family's measured settings)."""
    return starting_config(root_model(store, model_ref) or "", objective or "sft")


def recommended_note(store: Store, model_ref: str | None, objective: str | None) -> str:
    """Which values ``proposed_config`` laid over the defaults, in words ("" when none)."""
    pairs = recommended_for(root_model(store, model_ref) or "", objective or "sft")
    if not pairs:
        return ""
    return (f"Settings filled with the values recommended for **{html.escape(model_ref or '')}** ({objective or 'sft'}) "
            f"over the defaults: `{html.escape(' '.join(pairs))}`.")


def saved_job(store: Store, text: str) -> Path:
    """``text`` as a ``job.yaml`` to download, in a folder named by its content (two pages never share a file)."""
    folder = store.home / "exports" / "jobs" / hashlib.sha256(text.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.yaml").write_text(text, encoding="utf-8")
    return folder / "job.yaml"


def form_inputs(tab: "TrainTab", lora: dict) -> list:
    """The settings form's components in the order ``config_values`` fills them: the top fields, the sections',
    then the Model tab's LoRA settings (``lora``)."""
    return list(tab.top_components.values()) \
        + [c for s in FORM_SECTIONS for c in tab.section_components[s].values()] + list(lora.values())


def config_values(tab: "TrainTab", lora: dict, config: TrainConfig) -> list:
    """``config`` as the values of ``form_inputs(tab, lora)``."""
    values = [form_value(TrainConfig.model_fields[name], getattr(config, name)) for name in tab.top_components]
    values += [form_value(SECTIONS[section].model_fields[name], getattr(getattr(config, section), name))
               for section in FORM_SECTIONS for name in tab.section_components[section]]
    return values + [form_value(SECTIONS["lora"].model_fields[name], getattr(config.lora, name)) for name in lora]


@dataclass
class TrainTab:
    """The Train tab's components (the settings form as TrainConfig's fields, by section)."""
    intro: object
    top_components: dict
    section_groups: dict
    section_components: dict
    train_button: object
    preflight_button: object
    yaml_button: object
    load_button: object
    command_button: object
    message: object
    yaml_view: object
    yaml_download: object
    command_view: object
    table: object
    selected: object
    overlay: object
    progress: object
    loss_plot: object
    lr_plot: object
    rewards_plot: object
    overlay_plot: object
    stop_button: object
    save_button: object
    sample_button: object
    resume_button: object
    delete_button: object
    confirm_delete: object
    armed_delete: object
    control_message: object
    samples_view: object
    sample_gallery: object
    sample_audio: object
    log_view: object
    timer: object
    shown_state: object
    pending_request: object
    filled_for: object
    preview: "AugmentPreview"


@dataclass
class AugmentPreview:
    """"Preview augmentation": what the settings' augmentation makes of a few training items."""
    button: object
    message: object
    gallery: object
    players: list


def build(store: Store, project, version, model: ModelTab) -> TrainTab:
    """The Train tab; its run lists follow the shared ``project`` selector, and it trains the model, method and
    LoRA settings chosen in the Model tab (``model``)."""
    tab = layout(store, project, version)
    wire(store, tab, project, version, model)
    return tab


def layout(store: Store, project, version) -> TrainTab:
    with gr.Row():
        dataset_picker(store, project, version, "train-dataset")
        intro = gr.Markdown(elem_id="train-intro")
    # Built from TrainConfig, so the form, the CLI --set keys and the YAML never disagree.
    initial = starting_config("starter-text")
    top_components = _top_form(initial)
    section_groups, section_components = {}, {}
    for section in FORM_SECTIONS:  # shown for the modalities that train with them (MODALITY_SECTIONS)
        with gr.Accordion(SECTION_TITLES.get(section, f"{section} options"), open=False,
                          visible=section in MODALITY_SECTIONS["text"]) as group:
            with gr.Row():
                section_components[section] = params_form(SECTIONS[section], getattr(initial, section))
        section_groups[section] = group
    with gr.Accordion("Preview augmentation", open=False):
        preview = AugmentPreview(
            button=gr.Button("Preview augmentation", elem_id="train-augment-preview"),
            message=gr.Markdown(elem_id="train-augment-message"),
            gallery=gr.Gallery(label="Augmented pictures", columns=8, height=260, visible=False),
            players=[gr.Audio(visible=False, interactive=False) for _ in range(PREVIEW_PLAYERS)])
    with gr.Row():
        train_button = gr.Button("Train", variant="primary", elem_id="train-start")
        preflight_button = gr.Button("Pre-flight check (a few real steps)", elem_id="train-preflight")
        yaml_button = gr.Button("Show config as YAML", elem_id="train-show-yaml")
        load_button = gr.UploadButton("Load a job file (YAML)", file_types=[".yaml", ".yml"], type="filepath",
                                      elem_id="train-load-job")
        command_button = gr.Button("Copy the launch command")
    message = gr.Markdown(elem_id="train-message")
    yaml_view = gr.Code(language="yaml", label="Job file (studio train job.yaml)", visible=False)
    yaml_download = gr.DownloadButton("Download job.yaml", visible=False, elem_id="train-download-job")
    command_view = gr.Textbox(label="Run the same config outside the studio", visible=False, lines=3,
                              buttons=["copy"])

    gr.Markdown("## Runs")
    table = gr.Dataframe(headers=["run", "status", "where / waits for", "dataset", "model", "method · objective",
                                  "steps", "best val loss", "by"],
                         value=runs_table(store, DEFAULT_PROJECT), interactive=False, elem_id="runs-table")
    with gr.Row():
        selected = gr.Dropdown(run_choices(store, DEFAULT_PROJECT), label="Run", elem_id="run-select", scale=3)
        overlay = gr.Dropdown(run_choices(store, DEFAULT_PROJECT), multiselect=True, label="Compare runs (overlay)",
                              scale=3)
    progress = gr.HTML()
    with gr.Row():
        loss_plot = gr.LinePlot(x="step", y="loss", color="series", title="Loss", height=300, elem_id="loss-plot")
        lr_plot = gr.LinePlot(x="step", y="learning rate", title="Learning rate", height=300, elem_id="lr-plot")
    rewards_plot = gr.LinePlot(x="step", y="value", color="series", title="Rewards / GAN / VAE curves", height=300,
                               visible=False, elem_id="rewards-plot")
    overlay_plot = gr.LinePlot(x="step", y="loss", color="series", title="Runs compared", height=300, visible=False)
    with gr.Row():
        stop_button = gr.Button("Stop (saves a checkpoint)", elem_id="run-stop")
        save_button = gr.Button("Save now")
        sample_button = gr.Button("Sample now", elem_id="run-sample")
        resume_button = gr.Button("Resume from last checkpoint")
        delete_button = gr.Button("Delete run", variant="stop")
    confirm_delete, armed_delete = two_step_delete(delete_button, selected,
                                                   lambda run_id: f"run #{run_id} and its files", "run-delete-yes")
    control_message = gr.Markdown(elem_id="run-control-message")
    samples_view = gr.Markdown(label="Samples")
    sample_gallery = gr.Gallery(label="Samples", columns=6, height=200, visible=False)
    sample_audio = gr.Audio(label="Latest sample", visible=False, interactive=False)
    log_view = gr.Textbox(label="Log (last lines)", lines=10, max_lines=10, autoscroll=True, elem_id="run-log")
    timer = gr.Timer(REFRESH_SECONDS)
    shown_state = gr.State({})  # what this page shows of the plots (see live_plot) and of the run pickers
    pending_request = gr.State(None)  # the stop / save / sample asked from this page, until it is done
    filled_for = gr.State(None)  # [model, objective] the settings form was filled for
    return TrainTab(intro=intro, top_components=top_components, section_groups=section_groups,
                    section_components=section_components, train_button=train_button,
                    preflight_button=preflight_button, yaml_button=yaml_button, load_button=load_button,
                    command_button=command_button, message=message, yaml_view=yaml_view, yaml_download=yaml_download,
                    command_view=command_view, table=table, selected=selected,
                    overlay=overlay, progress=progress, loss_plot=loss_plot, lr_plot=lr_plot,
                    rewards_plot=rewards_plot, overlay_plot=overlay_plot, stop_button=stop_button, save_button=save_button,
                    sample_button=sample_button, resume_button=resume_button, delete_button=delete_button,
                    confirm_delete=confirm_delete, armed_delete=armed_delete, control_message=control_message,
                    samples_view=samples_view, sample_gallery=sample_gallery, sample_audio=sample_audio,
                    log_view=log_view, timer=timer, shown_state=shown_state, pending_request=pending_request,
                    filled_for=filled_for, preview=preview)


def wire(store: Store, tab: TrainTab, project, version, model_tab: ModelTab) -> None:
    model_ref, method, lora = model_tab.model_ref, model_tab.method, model_tab.lora  # what the Model tab chose

    def config_from(values) -> TrainConfig:
        top_values = dict(zip(tab.top_components, values[:len(tab.top_components)]))
        rest = list(values[len(tab.top_components):])
        data = form_values(TrainConfig, top_values)
        for section in FORM_SECTIONS:
            names = list(tab.section_components[section])
            data[section] = form_values(SECTIONS[section], dict(zip(names, rest[:len(names)])))
            rest = rest[len(names):]
        data["lora"] = form_values(SECTIONS["lora"], dict(zip(lora, rest[:len(lora)])))
        return validated(TrainConfig, data)  # a bad value: one line naming the field and what it takes

    inputs = form_inputs(tab, lora)

    def describe(ref, model, chosen_method):
        if not ref:
            return "Pick a dataset version (here or at the top) and a model in the Model tab.", \
                *[gr.Accordion()] * len(FORM_SECTIONS)
        try:
            found = get_version(store, ref)
        except ImportRefused as error:
            return error_message(error), *[gr.Accordion()] * len(FORM_SECTIONS)
        modality = found.dataset.modality
        text = (f"Dataset **{html.escape(found.dataset.name)} v{found.version}** ({modality}, "
                f"{found.splits.get('train', 0)} train / {found.splits.get('validation', 0)} validation) · "
                f"model **{html.escape(model_in_words(store, model) or '?')}** · method **{chosen_method}**")
        if modality == "text":
            text += f"  \nAugmentation: none. {TEXT_NONE[0].upper()}{TEXT_NONE[1:]}."
        return text, *[gr.Accordion(visible=s in MODALITY_SECTIONS[modality]) for s in FORM_SECTIONS]

    for source in (version, model_ref, method):
        source.change(describe, [version, model_ref, method], [tab.intro, *tab.section_groups.values()])

    def on_preview(ref, *values):
        hidden = [gr.Audio(visible=False)] * PREVIEW_PLAYERS
        if not ref:
            return f"{PICK_VERSION_FIRST} (here or at the top of the page).", gr.Gallery(visible=False), *hidden
        try:
            config = config_from(values)
            folder = store.home / "exports" / "augment-preview" / hashlib.sha256(
                f"{ref}\n{config.to_yaml()}".encode()).hexdigest()[:16]
            found = preview_augmentation(store, ref, config, folder, items=3, variants=8)
        except (ImportRefused, ValidationError, ValueError, OSError) as error:
            return error_message(error), gr.Gallery(visible=False), *hidden
        note = f"Augmentation: {found.described}. Each row is one training item as epochs 1 to 8 see it."
        if found.modality == "image":
            pictures = [(str(path), caption) for path, caption in found.files]
            return note, gr.Gallery(value=pictures, visible=True), *hidden
        players = [gr.Audio(value=str(path), label=caption, visible=True)
                   for path, caption in found.files[:PREVIEW_PLAYERS]]
        return (f"{note} The first {len(players)} clips are played here (the first item's epochs).",
                gr.Gallery(visible=False), *players, *hidden[len(players):])

    tab.preview.button.click(on_preview, [version, *inputs],
                             [tab.preview.message, tab.preview.gallery, *tab.preview.players])

    def recommended_values(model, objective, filled):
        """The form filled with what suits the chosen model and objective (settings measured to learn), unless it
        holds them already: "Train on these votes" fills it with the model, and the model's change event, answered
        later, would fill it again over what was typed since."""
        if filled == [model, objective]:
            return [gr.skip()] * (len(inputs) + 2)
        return (*config_values(tab, lora, proposed_config(store, model, objective)), [model, objective],
                recommended_note(store, model, objective) or gr.skip())

    objective = tab.top_components["objective"]
    filled = [*inputs, tab.filled_for, tab.message]
    model_ref.change(recommended_values, [model_ref, objective, tab.filled_for], filled)
    objective.input(recommended_values, [model_ref, objective, tab.filled_for], filled)

    # request stands before *values: Gradio passes it only to a positional parameter
    def on_train(ref, model, chosen_method, project_value, request: gr.Request, *values):
        if not ref:
            return (f"{PICK_VERSION_FIRST} (here or at the top of the page).", gr.Dropdown(),
                    runs_table(store, project_value), gr.Dropdown())
        try:
            config = config_from(values)
            run_id = jobs.create_run(store, ref, model, chosen_method, config, project=project_value or None,
                                     created_by=current_user(request))  # the dispatcher thread starts it
        except (jobs.RunError, ImportRefused, ValidationError, ValueError) as error:
            return error_message(error), gr.Dropdown(), runs_table(store, project_value), gr.Dropdown()
        choices = run_choices(store, project_value)
        return (f"Run **#{run_id}** queued; it starts when the device is free and keeps going if you close the page.",
                gr.Dropdown(choices=choices, value=run_id), runs_table(store, project_value),
                gr.Dropdown(choices=choices))

    tab.train_button.click(on_train, [version, model_ref, method, project, *inputs],
                           [tab.message, tab.selected, tab.table, tab.overlay])

    def on_project(project_value):
        choices = run_choices(store, project_value)
        return (gr.Dropdown(choices=choices, value=None), gr.Dropdown(choices=choices, value=[]),
                runs_table(store, project_value))

    on_project_or_load(project, on_project, project, [tab.selected, tab.overlay, tab.table])
    clear_when_picked(version, tab.message)

    def on_yaml(ref, model, chosen_method, *values):
        """The job file of what the page would train: exactly what ``studio train job.yaml`` and "Load a job file"
        read, shown and as a download."""
        if not ref:
            return gr.Code(value=f"# {PICK_VERSION_FIRST}: a job file names it.", visible=True), gr.DownloadButton()
        try:
            text = job_yaml(ref, model, chosen_method, config_from(values))
        except (ValidationError, ValueError) as error:
            return gr.Code(value=f"# invalid settings:\n# {error}", visible=True), gr.DownloadButton(visible=False)
        return gr.Code(value=text, visible=True), gr.DownloadButton(value=str(saved_job(store, text)), visible=True)

    tab.yaml_button.click(on_yaml, [version, model_ref, method, *inputs], [tab.yaml_view, tab.yaml_download])

    def on_load_job(path, project_value):
        """A job file fills the page: the dataset version, the Model tab's model and method, and every setting."""
        unchanged = [gr.skip()] * 6
        try:
            job = read_job(Path(path).read_text(encoding="utf-8"), Path(path).name)
            found = get_version(store, job.dataset)
        except (ImportRefused, ValueError, OSError, UnicodeDecodeError) as error:
            return error_message(error), *unchanged, *[gr.skip()] * len(inputs)
        ref = f"{found.dataset.id}:{found.version}"
        choices = version_choices(store, project_value)
        if ref not in {value for _, value in choices}:
            return (f"Dataset **{html.escape(found.dataset.name)} v{found.version}** is not in this project: pick its "
                    "project at the top first.", *unchanged, *[gr.skip()] * len(inputs))
        choice, other = model_picked(store, job.model, found.dataset.modality)
        return (f"Loaded **{html.escape(Path(path).name)}**: dataset **{html.escape(found.dataset.name)} "
                f"v{found.version}**, model **{html.escape(job.model)}** ({job.method}) and its settings, as written "
                "(no recommended values laid over them).",
                gr.Dropdown(choices=choices, value=ref), choice, other,
                gr.Radio(choices=methods_for(store, job.model), value=job.method), job.model,
                [job.model, job.config.objective], *config_values(tab, lora, job.config))

    tab.load_button.upload(on_load_job, [tab.load_button, project],
                           [tab.message, version, model_tab.choice, model_tab.other, model_tab.method, model_ref,
                            tab.filled_for, *inputs])

    def on_preflight(ref, model, chosen_method, progress=gr.Progress(), *values):  # progress: positional, as above
        if not ref:
            return f"{PICK_VERSION_FIRST} (here or at the top of the page)."
        progress(0.1, desc="measuring a few real steps in a separate process")
        try:
            result = preflight(store, ref, model, chosen_method, config_from(values))
        except (RuntimeError, ValidationError, ValueError) as error:
            return error_message(error)
        minutes = result["estimated_seconds"] / 60
        return (f"**{result['verdict']}** on {result['device']}: peak {result['peak_memory_bytes'] / 2**30:.2f} GiB of "
                f"{result['device_memory_bytes'] / 2**30:.0f} GiB · {result['seconds_per_step']:.2f} s per step × "
                f"{result['total_steps']} steps ≈ **{minutes:.1f} min** · "
                f"{result['trainable_parameters']:,} trainable of {result['total_parameters']:,} parameters")

    tab.preflight_button.click(on_preflight, [version, model_ref, method, *inputs], tab.message)

    def on_command(run_id):
        if not run_id:
            return gr.Textbox(value="Start or pick a run first: the command runs that run's saved config.", visible=True)
        commands = jobs.copyable_commands(store, int(run_id))
        secrets = "".join(f"# set {name} first: the studio does not show it, it holds a secret\n"
                          for name in commands["secrets"])
        return gr.Textbox(value=f"{secrets}# this machine\n{commands['single_node']}\n\n# several machines (set the "
                                f"variables on each)\n{commands['multi_node']}", visible=True)

    tab.command_button.click(on_command, tab.selected, tab.command_view)

    def refresh(run_id, compared, project_value, shown, pending):
        """Everything about the runs that changes by itself: the table, the run pickers' labels (statuses), and the
        picked run's progress, plots, samples and log; and what came of a stop / save / sample asked from here.
        ``shown``: what this page shows of the plots and the pickers, so that only what changed is sent."""
        runs = list_runs(store, project_value)
        choices = run_choices(store, runs=runs)
        out = {tab.table: runs_table(store, runs=runs), tab.shown_state: {**shown, "runs": choices}}
        if choices != shown.get("runs"):
            out.update({tab.selected: gr.Dropdown(choices=choices), tab.overlay: gr.Dropdown(choices=choices)})
        if pending and (outcome := jobs.request_outcome(store, **pending)):
            out.update({tab.control_message: outcome, tab.pending_request: None})
        if not run_id:
            out.update({tab.progress: "", tab.loss_plot: None, tab.lr_plot: None, tab.samples_view: "",
                        tab.log_view: "", tab.overlay_plot: gr.LinePlot(value=None, visible=False),
                        tab.sample_gallery: gr.Gallery(visible=False), tab.sample_audio: gr.Audio(visible=False),
                        tab.rewards_plot: gr.LinePlot(value=None, visible=False)})
            out[tab.shown_state].update(loss=(), compare=(), rewards=())
            return out
        summary = run_summary(store, int(run_id))
        history = CACHE.history(store, int(run_id))
        total = summary["total_steps"]
        out[tab.loss_plot], out[tab.shown_state]["loss"] = live_plot(loss_frame(history), shown.get("loss", ()),
                                                                      total)
        out[tab.lr_plot] = live_plot(lr_frame(history), (), total)[0]
        rewards = objective_frame(history)  # a second plot, only for a run whose objective has curves
        out[tab.rewards_plot], out[tab.shown_state]["rewards"] = (
            live_plot(rewards, shown.get("rewards", ()), total, visible=True) if not rewards.empty
            else (gr.LinePlot(value=None, visible=False), ()))
        out[tab.overlay_plot], out[tab.shown_state]["compare"] = gr.LinePlot(value=None, visible=False), ()
        if compared:
            import pandas as pd
            frames = [loss_frame(CACHE.history(store, int(r)), f"#{r}") for r in compared]
            out[tab.overlay_plot], out[tab.shown_state]["compare"] = live_plot(pd.concat(frames),
                                                                                shown.get("compare", ()), visible=True)
        made = samples(store, int(run_id))
        images = [(s["path"], f"step {s['step']}: {s['prompt']}") for s in made if s["path"] and s["path"].endswith(".png")]
        clips = [s for s in made if s["path"] and s["path"].endswith(".wav")]
        error = f"\n\n**Failed:** {html.escape(summary['error'].splitlines()[0])}" if summary.get("error") else ""
        out.update({
            tab.progress: progress_html(summary, history) + error,
            tab.samples_view: "\n\n".join(f"**step {s['step']}** · _{html.escape(s['prompt'])}_ → "
                                           f"{html.escape(s['text'] or '')}"
                                           for s in made[-8:] if s["text"] is not None),
            tab.sample_gallery: gr.Gallery(value=images[-12:], visible=bool(images)),
            tab.sample_audio: gr.Audio(value=clips[-1]["path"] if clips else None, visible=bool(clips)),
            tab.log_view: jobs.log_tail(store, int(run_id), 40)})
        return out

    refresh_outputs = [tab.table, tab.progress, tab.loss_plot, tab.lr_plot, tab.rewards_plot, tab.overlay_plot,
                       tab.samples_view, tab.sample_gallery, tab.sample_audio, tab.log_view, tab.shown_state, tab.selected, tab.overlay,
                       tab.control_message, tab.pending_request]
    refresh_inputs = [tab.selected, tab.overlay, project, tab.shown_state, tab.pending_request]
    # One handler for the three, each page's calls one after another ("always_last": a call asked while one runs
    # waits for it, and only the newest waiting one runs). Apart, the handlers ran side by side (up to
    # HANDLERS_AT_ONCE each), and one that read the run a moment earlier could finish later: a run shown
    # "completed" went back to "running · step 6 / 8" until the next tick.
    gr.on([tab.timer.tick, tab.selected.change, tab.overlay.change], refresh, refresh_inputs, refresh_outputs,
          show_progress="hidden", trigger_mode="always_last")

    def control(kind):
        def handler(run_id, request: gr.Request = None):
            if not run_id:
                return "Pick a run first.", None
            try:
                if kind == "resume":
                    jobs.resume(store, int(run_id), actor=current_user(request))
                    return f"Run #{run_id} queued again from its last checkpoint.", None
                at_step = jobs.request(store, int(run_id), kind, actor=current_user(request))
            except jobs.RunError as error:
                return error_message(error), None
            # the page's refresh replaces this with what came of it (see jobs.request_outcome)
            return ({"stop": "Stopping after the current step (a checkpoint is saved).",
                     "save": "A checkpoint will be saved after the current step.",
                     "sample": "Samples will be made after the current step."}[kind],
                    {"run_id": int(run_id), "kind": kind, "since_step": at_step})
        return handler

    for button, kind in ((tab.stop_button, "stop"), (tab.save_button, "save"), (tab.sample_button, "sample"),
                         (tab.resume_button, "resume")):
        button.click(control(kind), tab.selected, [tab.control_message, tab.pending_request])

    def on_delete(armed, run_id, project_value, request: gr.Request = None):
        if not confirmed(armed, run_id):
            return NOT_CONFIRMED, gr.Button(visible=False), gr.Dropdown(), None
        try:
            jobs.delete_run(store, int(run_id), actor=current_user(request))
        except (jobs.RunError, TypeError, ValueError) as error:
            return error_message(error), gr.Button(visible=False), gr.Dropdown(), None
        CACHE.forget(int(run_id))
        return (f"Run #{run_id} and its files were deleted.", gr.Button(visible=False),
                gr.Dropdown(choices=run_choices(store, project_value), value=None), None)

    tab.confirm_delete.click(on_delete, [tab.armed_delete, tab.selected, project],
                             [tab.control_message, tab.confirm_delete, tab.selected, tab.armed_delete])


def _top_form(defaults: TrainConfig) -> dict:
    """The top-level TrainConfig fields as form components, four to a row."""
    with gr.Accordion("Training settings", open=False):
        gr.Markdown("Each setting's help ends with its name in Hugging Face `TrainingArguments` terms where it "
                    "differs: the key for `studio train --set` and the run's YAML.")
        return params_form(TrainConfig, defaults, only=TOP_FIELDS, per_row=4)
