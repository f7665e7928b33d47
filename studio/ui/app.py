"""The Gradio apps: the studio (a header with the shared project/dataset selectors, then one tab per stage) and
the rater-only page. ``studio.ui.server`` mounts both, with sign-in, in the web process."""

from __future__ import annotations

import gradio as gr  # at module level: a handler's "request: gr.Request" hint must resolve, or Gradio passes no request
from studio.store import Store
from studio.ui import data_tab, deploy_tab, evaluate_tab, export_tab, generate_tab, model_tab, project_bar, train_tab
from studio.ui.failures import readable_failures
from studio.ui.state import current_user
from studio.ui.uploads import StudioBlocks

GUIDE = """
**Getting started.** 1. **Data**: drop files or a zip, check the guessed modality and columns, press
*Import and clean*, and read what each cleaning step removed and why. Every import is a new, immutable
dataset version with its own train/validation/test split. 2. **Model** → 3. **Train** → 4. **Generate** →
5. **Evaluate** follow the same dataset version (picked above, or in the Model and Train tabs), and 6. **Share**
exports a checkpoint (PEFT, diffusers LoRA or a merged model, with a model card) as a zip or to the Hugging Face
Hub; 7. **Deploy** serves it behind an OpenAI-compatible API, watched, with feedback that becomes the next dataset
version. Everything belongs to the project chosen above and is stored under `STUDIO_HOME`; the same actions are
scriptable with the `studio` command (`studio --help`).
Raters who should see nothing else use the rating page [/rate](/rate); how the studio is doing: [/status](/status).
"""


def build_app(store: Store):
    with StudioBlocks(title="Gen Studio", takes_files=True) as app:
        gr.Markdown("# Gen Studio")
        account_line(app)
        if store.settings.on_spaces and not str(store.home).startswith("/data"):
            gr.Markdown("**Warning:** this Space has no persistent storage: datasets and runs are lost when it "
                        "restarts.")
        with gr.Accordion("Getting started", open=False):
            gr.Markdown(GUIDE)
        project, version = project_bar.build(store, app)  # the project row: selector, activity, deletion
        with gr.Tabs() as tabs:
            with gr.Tab("Data", id="data"):
                data_tab.build(store, project, version)
            with gr.Tab("Model", id="model"):
                model = model_tab.build(store, project, version)
            with gr.Tab("Train", id="train"):
                train = train_tab.build(store, project, version, model)
            with gr.Tab("Generate", id="generate"):
                generate_tab.build(store, project, version)
            with gr.Tab("Evaluate", id="evaluate"):  # "Train on these votes" opens the Train tab, filled in
                evaluate_tab.build(store, project, evaluate_tab.TrainingPages(tabs, version, model, train))
            with gr.Tab("Share", id="share"):
                export_tab.build(store, project, version)
            with gr.Tab("Deploy", id="deploy"):
                deploy_tab.build(store, project)
    readable_failures(app)
    return app


def build_rater_app(store: Store):
    """The rater-only page (mounted at ``/rate``): rating and nothing else, and only the rating API. It is a
    Blocks of its own so that no training, deletion or export function exists in it to be called; it takes no files."""
    with StudioBlocks(title="Gen Studio · rating", takes_files=False) as app:
        gr.Markdown("# Gen Studio · rating")
        account_line(app)
        rating = evaluate_tab.build_rating(store)
        app.load(_signed_in_rater, None, rating.rater, queue=False)
        evaluate_tab.register_api(store, include_leaderboard=False)  # the board names the variants: not for raters
    readable_failures(app)
    return app


def _signed_in_rater(request: gr.Request):
    name = current_user(request)
    return gr.Textbox(value=name, interactive=False) if name else gr.Textbox()


def account_line(app) -> None:
    """"Signed in as NAME · Sign out" when sign-in is on (filled when the page loads; empty otherwise)."""
    line = gr.Markdown(elem_id="account")

    def who(request: gr.Request):
        name = current_user(request)
        return f"Signed in as **{name}** · [Sign out](/logout)" if name else ""

    app.load(who, None, line, queue=False)
