"""Share tab: a run's checkpoint exported in a format other tools load (with its model card, shown here, and a zip
to download), pushed to the Hugging Face Hub; and a dataset version pushed as a dataset repository.

The page calls ``studio.sharing.export`` (in a background task: ``studio.tasks``) and ``studio.sharing.hub``
only; exports are written under ``STUDIO_HOME/exports``. A token typed here is used for that push and never
stored; the page does not fall back to the server's own HF_TOKEN (on a shared studio that would let anyone push
as the server's owner).
"""

from __future__ import annotations

import gradio as gr  # at module level: a handler's "request: gr.Request" hint must resolve, or Gradio passes no request
import re
from dataclasses import dataclass
from pathlib import Path

from studio.data.items import ImportRefused
from studio.data.service import DEFAULT_PROJECT
from studio.generation.variants import variant_choices
from studio.sharing.card import DEFAULT_LICENSE
from studio.sharing.export import NO_CHECKPOINT
from studio.sharing.hub import PushError, push_dataset, push_export
from studio.store import Store
from studio.ui.background import BackgroundTask
from studio.ui.state import PICK_VERSION_FIRST, clear_when_picked, current_user, follow, error_message

FORMATS = [("merged: a full model (transformers / diffusers)", "merged"), ("PEFT adapter (LoRA runs)", "peft"),
           ("diffusers LoRA file (image LoRA runs)", "diffusers-lora")]
LICENSES = ["other", "apache-2.0", "mit", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "openrail", "openrail++",
            "llama3.2", "gemma", "cc0-1.0"]

INTRO = """### Share
Export a run's checkpoint so it loads **without the studio** (transformers, diffusers or PEFT), with a model card
holding its data, cleaning, config, loss curve and evaluations; download it as a zip or push it to the Hugging
Face Hub (a private repository unless you untick it). Dataset versions can be pushed as dataset repositories."""


# ----------------------------------------------------------------------------- what the handlers do

def checkpoint_choices(store: Store, project: str | None = None) -> list[tuple[str, str]]:
    """(label, ``RUN_ID:STEP``) of every saved checkpoint (of ``project``'s runs), newest run first."""
    return [(f"{c['label']} · {c['modality']} · {Path(c['model']).name}", c["ref"])
            for c in variant_choices(store, project=project)]


def card_preview(export: dict) -> str:
    """The card as the page shows it: the metadata as a YAML block, the loss plot served from its file."""
    text = Path(export["card"]).read_text(encoding="utf-8")
    found = re.match(r"---\n(.*?)\n---\n", text, re.S)
    if found:
        text = f"**Card metadata**\n\n```yaml\n{found.group(1).strip()}\n```\n" + text[found.end():]
    plot = Path(export["path"]) / "loss.png"
    return text.replace("](loss.png)", f"](/gradio_api/file={plot})") if plot.is_file() else text


def push_export_status(store: Store, export: dict | None, repo_id: str, token: str, private: bool,
                       actor: str | None = None, progress=None) -> str:
    if not export:
        return "**Export first**, then push: the push sends the export shown above."
    if not (token or "").strip():
        return ("**A token is needed**: paste a Hugging Face access token with write access "
                "(https://huggingface.co/settings/tokens). It is used for this push only and not stored.")
    pushed = push_export(store, export, repo_id, private=private, token=token, progress=progress, actor=actor)
    return _pushed_text(pushed)


def push_version_status(store: Store, version_ref: str | None, repo_id: str, token: str, private: bool,
                        license: str | None, actor: str | None = None, progress=None) -> str:
    if not version_ref:
        return f"**{PICK_VERSION_FIRST}** (the selector at the top of the page)."
    if not (token or "").strip():
        return "**A token is needed**: paste a Hugging Face access token with write access."
    pushed = push_dataset(store, version_ref, repo_id, private=private, token=token,
                          license=(license or "").strip() or None, actor=actor, progress=progress)
    return _pushed_text(pushed)


def exported_text(export: dict) -> str:
    return f"Exported {len(export['files'])} files to `{export['path']}` ({export['format']}, {export['library']})."


def refused_text(why: str, previous: dict | None) -> str:
    """Why an export was refused, and that the last good one (if any) is still the one shown below."""
    kept = f" The last export is kept below: {exported_text(previous)}" if previous else ""
    return error_message(why) + kept


def _pushed_text(pushed: dict) -> str:
    return (f"Pushed {len(pushed['files'])} files to [{pushed['repo_id']}]({pushed['url']}) "
            f"({'private' if pushed['private'] else 'public'} {pushed['repo_type']} repository).")


def _progress_callback(progress):
    return (lambda fraction, message: progress(fraction, desc=message)) if progress is not None else None


# ----------------------------------------------------------------------------- the page

@dataclass
class ShareTab:
    """The Share tab's components."""
    export_state: object  # the last good export (a dict), what a push sends
    checkpoint: object
    fmt: object
    license: object
    export_button: object
    exporting: BackgroundTask
    export_status: object
    download: object
    card: object
    repo: object
    token: object
    private: object
    push_button: object
    push_status: object
    data_repo: object
    data_token: object
    data_private: object
    data_push: object
    data_status: object


def build(store: Store, project, version) -> ShareTab:
    """The Share tab; ``project`` and ``version`` are the shared selectors (the checkpoints listed are the project's;
    the version is what a dataset push sends)."""
    tab = layout(store)
    wire(store, tab, project, version)
    return tab


def layout(store: Store) -> ShareTab:
    gr.Markdown(INTRO)
    export_state = gr.State(None)
    with gr.Row():
        checkpoint = gr.Dropdown(checkpoint_choices(store, DEFAULT_PROJECT), value=None, label="Run and checkpoint", scale=3,
                                 elem_id="share-checkpoint")
        fmt = gr.Dropdown(FORMATS, value="merged", label="Format", scale=2, elem_id="share-format")
        license = gr.Dropdown(LICENSES, value=DEFAULT_LICENSE, allow_custom_value=True, scale=1,
                              label="Licence (a Hub licence id; 'other': the base model's terms)",
                              elem_id="share-license")
    with gr.Row():
        export_button = gr.Button("Export", variant="primary", elem_id="share-export", scale=4)
        exporting = BackgroundTask(store, "share-export-cancel")
    export_status = gr.Markdown(elem_id="share-export-status")
    download = gr.File(label="The export as a zip", interactive=False, elem_id="share-download")
    with gr.Accordion("Model card (README.md)", open=True):
        card = gr.Markdown(elem_id="share-card")

    gr.Markdown("#### Push the export to the Hugging Face Hub")
    with gr.Row():
        repo = gr.Textbox(label="Model repository (OWNER/NAME)", placeholder="your-name/my-model", scale=2,
                          elem_id="share-repo")
        token = gr.Textbox(label="Access token (write; used once, not stored)", type="password", scale=2,
                           elem_id="share-token")
        private = gr.Checkbox(True, label="private repository", scale=1, elem_id="share-private")
    push_button = gr.Button("Push to the Hub", elem_id="share-push")
    push_status = gr.Markdown(elem_id="share-push-status")

    gr.Markdown("#### Push the selected dataset version as a dataset repository")
    with gr.Row():
        data_repo = gr.Textbox(label="Dataset repository (OWNER/NAME)", placeholder="your-name/my-data", scale=2,
                               elem_id="share-data-repo")
        data_token = gr.Textbox(label="Access token (write; used once, not stored)", type="password", scale=2)
        data_private = gr.Checkbox(True, label="private repository", scale=1, elem_id="share-data-private")
    data_push = gr.Button("Push the dataset version", elem_id="share-data-push")
    data_status = gr.Markdown(elem_id="share-data-status")
    return ShareTab(export_state, checkpoint, fmt, license, export_button, exporting, export_status, download, card,
                    repo, token, private, push_button, push_status, data_repo, data_token, data_private, data_push,
                    data_status)


def wire(store: Store, tab: ShareTab, project, version) -> None:
    exporting = tab.exporting

    def on_export(ref, chosen_format, chosen_license, project_value, previous, request: gr.Request):
        def done(found: dict) -> tuple:
            return found, exported_text(found), found["zip"], card_preview(found)

        def failed(why: str) -> tuple:  # the last good export stays below, to download or push
            return gr.skip(), refused_text(why, previous), gr.skip(), gr.skip()

        if not ref:
            yield *failed(NO_CHECKPOINT), *exporting.idle()
            return
        params = {"ref": ref, "fmt": chosen_format, "license": chosen_license}
        yield from exporting.run("export", params, project=project_value, actor=current_user(request),
                                 working=lambda text: (gr.skip(), text, gr.skip(), gr.skip()), done=done,
                                 failed=failed)

    def on_push(found, repo_id, typed_token, is_private, request: gr.Request, progress=gr.Progress()):
        try:
            return push_export_status(store, found, repo_id, typed_token, is_private, current_user(request),
                                      _progress_callback(progress))
        except PushError as error:
            return error_message(error)

    def on_push_version(version_ref, repo_id, typed_token, is_private, chosen_license, request: gr.Request,
                        progress=gr.Progress()):
        try:
            return push_version_status(store, version_ref, repo_id, typed_token, is_private, chosen_license,
                                       current_user(request), _progress_callback(progress))
        except (PushError, ImportRefused) as error:
            return error_message(error)

    follow(store, project, tab.checkpoint, checkpoint_choices)  # a checkpoint saved since is offered at once
    tab.export_button.click(on_export, [tab.checkpoint, tab.fmt, tab.license, project, tab.export_state],
                            [tab.export_state, tab.export_status, tab.download, tab.card, *exporting.outputs],
                            show_progress="minimal")
    tab.push_button.click(on_push, [tab.export_state, tab.repo, tab.token, tab.private], tab.push_status)
    tab.data_push.click(on_push_version, [version, tab.data_repo, tab.data_token, tab.data_private, tab.license],
                        tab.data_status)
    clear_when_picked(version, tab.data_status)
