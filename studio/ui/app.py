"""The Gradio app: a header with the shared project/dataset selectors, then one tab per stage."""

from __future__ import annotations

from studio.settings import Settings
from studio.store import Store, open_store
from studio.ui import data_tab, evaluate_tab, generate_tab, model_tab, train_tab
from studio.ui.state import project_choices, version_choices

GUIDE = """
**Getting started.** 1. **Data**: drop files or a zip, check the guessed modality and columns, press
*Import and clean*, and read what each cleaning step removed and why. Every import is a new, immutable
dataset version with its own train/validation/test split. 2. **Model** → 3. **Train** → 4. **Generate** →
5. **Evaluate** follow the same dataset version. Everything is stored under `STUDIO_HOME`; the same actions
are scriptable with the `studio` command (`studio data import --help`).
"""


def build_app(store: Store):
    import gradio as gr

    with gr.Blocks(title="Gen Studio") as app:
        gr.Markdown("# Gen Studio")
        if store.settings.on_spaces and not str(store.home).startswith("/data"):
            gr.Markdown("⚠️ This Space has no persistent storage: datasets and runs are lost when it restarts.")
        with gr.Accordion("Getting started", open=False):
            gr.Markdown(GUIDE)
        with gr.Row():
            project = gr.Dropdown(project_choices(store), value="default", label="Project", allow_custom_value=True,
                                  scale=1, elem_id="project")
            version = gr.Dropdown(version_choices(store, "default"), value=None, label="Dataset version", scale=3,
                                  elem_id="dataset-version")
        project.change(lambda p: gr.Dropdown(choices=version_choices(store, p), value=None), project, version)
        with gr.Tabs():
            with gr.Tab("Data", id="data"):
                data_tab.build(store, project, version)
            with gr.Tab("Model", id="model"):
                model_ref, method, lora = model_tab.build(store, version)
            with gr.Tab("Train", id="train"):
                train_tab.build(store, version, model_ref, method, lora)
            with gr.Tab("Generate", id="generate"):
                generate_tab.build(store, version)
            with gr.Tab("Evaluate", id="evaluate"):
                evaluate_tab.build(store)
    with app.route("Rate", "/rate", show_in_navbar=False):  # the rater-only page: rating and nothing else
        gr.Markdown("# Gen Studio · rating")
        evaluate_tab.build_rating(store, rater_only=True)
    return app


def start_dispatcher(store: Store, every: float = 2.0) -> None:
    """Queued runs start by themselves: a daemon thread dispatches every few seconds while the studio runs."""
    import logging
    import threading
    import time

    from studio.training.jobs import dispatch

    def loop() -> None:
        while True:
            try:
                dispatch(store)
            except Exception:  # noqa: BLE001 - a failed round is logged and retried, never fatal to the UI
                logging.getLogger("studio").exception("dispatch failed")
            time.sleep(every)

    threading.Thread(target=loop, name="dispatcher", daemon=True).start()


def serve(settings: Settings, block: bool = True):
    """Open the store and serve the studio; returns the Gradio app (``block=False`` for tests)."""
    import gradio as gr

    store = open_store(settings)
    start_dispatcher(store)
    app = build_app(store)
    app.queue(default_concurrency_limit=4)
    app.launch(server_name=settings.host, server_port=settings.port, max_file_size=f"{settings.max_upload_mb}mb",
               allowed_paths=[str(store.home)], theme=gr.themes.Soft(), ssr_mode=False, show_error=True,
               prevent_thread_lock=not block, quiet=not block)
    return app
