"""The Model tab's Bake-off panel: start one on the tab's dataset version (2 to 4 architectures, minutes each) and
follow it — queued, training, sampling, scoring, done — to its table, who won on what, and the sample set to rate.

The page only writes the request (``evaluation.bakeoff.start`` queues runs) and reads rows; the dispatcher trains,
samples and scores (``tasks.bakeoff.advance``)."""

from __future__ import annotations

import gradio as gr  # at module level: a handler's "request: gr.Request" hint must resolve, or Gradio passes no request
import html
from dataclasses import dataclass

from studio.evaluation.bakeoff import MAX_MODELS, MIN_MODELS, BakeoffError, column_about, list_bakeoffs, start, view, \
    winners_in_words
from studio.models.catalog import architectures
from studio.status import BakeoffStatus
from studio.store import Store
from studio.ui.state import PICK_VERSION_FIRST, current_user, error_message, follow

DEFAULT_MINUTES = 10
POLL_SECONDS = 2
STAGES = {BakeoffStatus.QUEUED: "queued: its runs wait for the training device",
          BakeoffStatus.TRAINING: "training", BakeoffStatus.SAMPLING: "sampling every architecture on the test prompts",
          BakeoffStatus.SCORING: "scoring: automatic metrics of each run",
          BakeoffStatus.DONE: "done", BakeoffStatus.FAILED: "failed"}
COLUMN_WORDS = {"fd": "FID / FAD", "prompt_score": "CLIP / CLAP score", "diversity": "diversity",
                "heldout_loss": "held-out loss", "sample_seconds": "seconds per sample",
                "human_preference": "people's blind votes"}


@dataclass
class BakeoffPanel:
    models: object
    minutes: object
    start_button: object
    pick: object
    status: object
    result: object
    timer: object


def architecture_choices(modality: str) -> list[tuple[str, str]]:
    return [(a.key, a.key) for a in architectures(modality)]


def bakeoff_choices(store: Store, project: str | None) -> list[tuple[str, int]]:
    # no status in the label: the list is not redrawn as a bake-off moves on (the status line below follows it)
    return [(f"#{b['bakeoff_id']} · {', '.join(b['models'])} on {b['dataset_name']}", b["bakeoff_id"])
            for b in list_bakeoffs(store, project)]


def layout(store: Store, modality: str = "text") -> BakeoffPanel:
    gr.Markdown(f"Train {MIN_MODELS} to {MAX_MODELS} architectures on the dataset version picked above, each with its "
                "recommended settings and at most the minutes given; then every one is sampled on the same test "
                "prompts into one sample set (rate it blind in the Evaluate tab) and scored in one table.")
    with gr.Row():
        models = gr.CheckboxGroup(architecture_choices(modality), label=f"Architectures ({MIN_MODELS} to "
                                                                        f"{MAX_MODELS})", elem_id="bakeoff-models")
        # a text box: a number box shows (and sends) 0 when empty, and empty must mean the default
        minutes = gr.Textbox(label=f"Minutes of training each (empty: {DEFAULT_MINUTES})",
                             placeholder=str(DEFAULT_MINUTES), elem_id="bakeoff-minutes")
    start_button = gr.Button("Start the bake-off", elem_id="bakeoff-start")
    pick = gr.Dropdown(bakeoff_choices(store, None), value=None, label="Bake-off", elem_id="bakeoff-pick")
    status = gr.Markdown(elem_id="bakeoff-status")
    result = gr.Markdown(elem_id="bakeoff-result")
    timer = gr.Timer(POLL_SECONDS)
    return BakeoffPanel(models, minutes, start_button, pick, status, result, timer)


def status_markdown(found: dict) -> str:
    """Its state, its runs and, once made, where its sample set is."""
    lines = [f"**Bake-off #{found['bakeoff_id']}** · {STAGES.get(found['status'], found['status'])} · "
             f"{html.escape(found['dataset_name'])} · {found['minutes']:g} min each"]
    for run in found["runs"]:
        steps = f"{run['steps']}/{run['total_steps']} steps" if run["total_steps"] else f"{run['steps']} steps"
        lines.append(f"- {html.escape(run['model'])}: run #{run['run_id']} {html.escape(run['status'])}, {steps}"
                     + (f" ({html.escape(run['error'])})" if run["error"] else ""))
    if found["sample_set_id"] is not None:
        lines.append(f"\nSample set **#{found['sample_set_id']}** (bake-off {found['bakeoff_id']}): rate it blind in "
                     "the **Evaluate** tab (pick that set under rating).")
    if found["error"]:
        lines.append("\n" + error_message(found["error"], "It failed:"))
    return "\n".join(lines)


def _number(value) -> str:
    return "—" if value is None else f"{value:.4g}"


def result_markdown(found: dict) -> str:
    """The table (a column per metric that any run has), who won on what, and the notes."""
    if not found["table"]:
        return ""
    columns = [key for key in COLUMN_WORDS if key != "human_preference"
               and any(row.get(key) is not None for row in found["table"])]
    header = [f"{COLUMN_WORDS[key]} ({'higher' if column_about(key)[1] else 'lower'} is better)" for key in columns]
    lines = ["| architecture | run | steps | " + " | ".join(header) + " |", "| --- " * (3 + len(columns)) + "|"]
    lines += [f"| {html.escape(row['model'])} | #{row['run_id']} | {row['steps']} | "
              + " | ".join(_number(row.get(key)) for key in columns) + " |" for row in found["table"]]
    won = winners_in_words(found["winners"], COLUMN_WORDS)
    lines += ["", "**Which won on what**"] + [f"- {html.escape(line)}" for line in won or
                                              ["no metric has a value for two architectures"]]
    lines += [f"- {html.escape(note)}" for note in found["notes"]]
    if not found.get("people"):
        lines.append("- no blind votes yet: rate the sample set in the Evaluate tab, and people's preference joins "
                     "this list")
    return "\n".join(lines)


def shown(store: Store, bakeoff_id) -> tuple[str, str]:
    if bakeoff_id in (None, ""):
        return "", ""
    try:
        found = view(store, int(bakeoff_id))
    except (BakeoffError, ValueError) as error:
        return error_message(error), ""
    return status_markdown(found), result_markdown(found)


def wire(store: Store, panel: BakeoffPanel, project, version, modality_of) -> None:
    """``modality_of(ref)``: the modality of a dataset version reference (the architectures offered follow it)."""

    def on_version(ref, picked):
        choices = architecture_choices(modality_of(ref))
        keys = {key for _, key in choices}
        return gr.CheckboxGroup(choices=choices, value=[p for p in picked or [] if p in keys])

    version.change(on_version, [version, panel.models], panel.models)
    follow(store, project, panel.pick, bakeoff_choices)

    def on_start(ref, models, minutes, project_name, request: gr.Request):
        if not ref:
            return gr.Dropdown(), f"{PICK_VERSION_FIRST} (at the top of the tab).", ""
        try:
            bakeoff_id = start(store, ref, models or [], (minutes or "").strip() or DEFAULT_MINUTES,
                               project=project_name or None, created_by=current_user(request))
        except BakeoffError as error:
            return gr.Dropdown(), error_message(error, "Could not start it:"), ""
        return (gr.Dropdown(choices=bakeoff_choices(store, project_name or None), value=bakeoff_id),
                *shown(store, bakeoff_id))

    panel.start_button.click(on_start, [version, panel.models, panel.minutes, project],
                             [panel.pick, panel.status, panel.result])
    panel.pick.change(lambda picked: shown(store, picked), panel.pick, [panel.status, panel.result],
                      show_progress="hidden")

    def followed(picked):
        """The picked bake-off's live state; nothing picked: what the panel says stays (a refusal)."""
        return shown(store, picked) if picked not in (None, "") else (gr.skip(), gr.skip())

    panel.timer.tick(followed, panel.pick, [panel.status, panel.result], show_progress="hidden",
                     api_visibility="private")
