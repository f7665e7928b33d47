"""What several tabs share: the project and dataset-version choices (the UI's small state manager)."""

from __future__ import annotations

import html

from studio.data.service import list_datasets
from studio.generation.variants import VariantError, origin, parse_ref
from studio.projects import project_names
from studio.store import Store
from studio.store.changes import listing_signature
from studio.training.runs import checkpoint_of_folder, list_runs, metric_count, metric_rows, run_summary


def project_choices(store: Store) -> list[str]:
    """The projects table's names (and the default project, which always exists for new work)."""
    return project_names(store)


def version_choices(store: Store, project: str | None) -> list[tuple[str, str]]:
    """(label, ``DATASET_ID:VERSION``) for every version in ``project``, newest first."""
    choices = []
    for dataset in reversed(list_datasets(store)):
        if project and dataset["project"] != project:
            continue
        for version in reversed(dataset["versions"]):
            label = (f"{dataset['name']} v{version['version']} · {dataset['modality']} · "
                     f"{version['items_kept']} items")
            choices.append((label, f"{dataset['dataset_id']}:{version['version']}"))
    return choices


class MetricCache:
    """Each run's metric history, extended incrementally: a page refreshing every 2 s reads only new rows."""

    def __init__(self):
        import threading

        self._lock = threading.Lock()
        self._runs: dict[int, tuple[int, list[dict]]] = {}

    def history(self, store: Store, run_id: int) -> list[dict]:
        with self._lock:
            last_id, rows = self._runs.get(run_id, (0, []))
            if rows and metric_count(store, run_id, last_id) != len(rows):
                last_id, rows = 0, []  # rows were dropped since (a resume): read the history again
            new, last_id = metric_rows(store, run_id, last_id)
            rows = rows + new
            self._runs[run_id] = (last_id, rows)
            return rows

    def forget(self, run_id: int) -> None:
        with self._lock:
            self._runs.pop(run_id, None)


def run_choices(store: Store, project: str | None = None, runs: list[dict] | None = None) -> list[tuple[str, int]]:
    """(label, run id) for every run of ``project`` (every run when None), newest first; ``runs``: list_runs's
    answer, when the caller has it already."""
    return [(f"#{r['run_id']} {r['status']} · {r['method']} {r['model']} · {r['dataset_name']}", r["run_id"])
            for r in (list_runs(store, project) if runs is None else runs)]


def run_start(store: Store, ref: str | None) -> dict | None:
    """The run's checkpoint that ``ref`` names as a new run's model (``RUN_ID:STEP``, or ``RUN_ID``: its last):
    ``{"run_id", "step" (None: the last), "method", "modality", "model" (what that run trained)}``; None when ``ref``
    names a model (a catalog id, a Hub id, a folder) or no run."""
    try:
        found = parse_ref(ref) if ref else None
    except VariantError:
        return None
    if found is None:
        return None
    try:
        run = run_summary(store, found[0])
    except ValueError:
        return None
    return {"run_id": found[0], "step": found[1], "method": run["method"], "modality": run["modality"],
            "model": run["model"]}


def root_model(store: Store, ref: str | None) -> str | None:
    """The model a line of runs came from: ``ref`` itself, or for a run's checkpoint (``RUN_ID:STEP`` or its folder)
    the model of the first run, followed back through the checkpoints the runs started from."""
    start = run_start(store, ref)
    return origin(store, start["model"] if start else ref)[0] if ref else ref


def model_in_words(store: Store, ref: str | None) -> str:
    """What a model reference is, for people: "run #12 at step 40 (lora)" for a run's checkpoint (``RUN_ID:STEP``
    or its folder), else ``ref``."""
    start = run_start(store, ref)
    if start is None and ref and (saved := checkpoint_of_folder(store, ref)):
        start = run_start(store, f"{saved[0]}:{saved[1]}")
    if start is None:
        return ref or ""
    at = f"at step {start['step']}" if start["step"] is not None else "at its last checkpoint"
    return f"run #{start['run_id']} {at} ({start['method']})"


def current_user(request) -> str | None:
    """Who is acting, for the ``created_by`` / audit records: the signed-in name (password or Hugging Face
    sign-in), or None when sign-in is off. Handlers get ``request`` by declaring a ``gr.Request`` parameter."""
    return getattr(request, "username", None) or None


PICK_VERSION_FIRST = "Pick a dataset version first"
LISTS_POLL_SECONDS = 3


def error_message(why, lead: str = "Could not do it:") -> str:
    """A refusal or failure (an exception or its words) as every page shows it: ``lead`` in bold, then the reason
    in words (an emoji renders as an empty box where no emoji font is installed), escaped, since the reason may
    quote a file name, a typed value or a server's answer holding HTML or Markdown."""
    return f"**{lead}** {html.escape(str(why))}"


def clear_when_picked(version, message) -> None:
    """Once a dataset version is picked, ``message`` stops asking for one (any other message stays)."""
    import gradio as gr

    def clear(ref, shown):
        return "" if ref and PICK_VERSION_FIRST in (shown or "") else gr.skip()

    version.change(clear, [version, message], message, show_progress="hidden", api_visibility="private")


def on_lists_change(store: Store, fn, inputs, outputs):
    """``fn`` whenever a run, checkpoint, sample set, dataset version or project was added or deleted, or a run or
    set changed status — by this page, another one or the CLI. A timer on each page compares one small query's
    answer (``listing_signature``) with the last one it saw; only a difference calls the handlers.

    ``fn`` gets the inputs as they were when the signal changed: a person may pick something else while it runs,
    so it should update choices and leave a picked value alone; a step that must read the page's values afresh
    goes in a ``.then`` of the returned event."""
    return _lists_signal(store).change(fn, inputs, outputs, show_progress="hidden", api_visibility="private")


def follow(store: Store, project, dropdown, choices) -> None:
    """``dropdown`` offers ``choices(store, project)``: afresh with nothing selected when another project is picked
    and when a page loads, and with its selection kept when what it lists changes. ``project`` None: every
    project's (the rater-only page)."""
    import gradio as gr

    def fresh(name=None):
        return gr.Dropdown(choices=choices(store, name), value=None)

    def refreshed(name=None):
        return gr.Dropdown(choices=choices(store, name))

    if project is None:
        on_page_load(fresh, None, dropdown)
        on_lists_change(store, refreshed, None, dropdown)
    else:
        on_project_or_load(project, fresh, project, dropdown)
        on_lists_change(store, refreshed, project, dropdown)


def _lists_signal(store: Store):
    """The page's "lists changed" signal (one per app, made on first use): a State holding the store's listing
    signature, updated by a timer; Gradio calls its change listeners only when the value differs."""
    import gradio as gr
    from gradio.context import Context

    root = Context.root_block
    signal = getattr(root, "_studio_lists_signal", None)
    if signal is None:
        signal = gr.State(None)
        timer = gr.Timer(LISTS_POLL_SECONDS)
        # The page's plumbing, not an API (and a digest: the rater-only page polls it too)
        timer.tick(lambda: listing_signature(store), None, signal, show_progress="hidden", api_visibility="private")
        root._studio_lists_signal = signal
    return signal


def on_project_or_load(project, fn, inputs, outputs) -> None:
    """``fn`` when another project is picked and when a page loads: the app is built once, at start-up, so lists
    filled then would miss what anyone made since (a run, a sample set) until someone pressed Refresh."""
    import gradio as gr

    gr.on([project.change, _page_load()], fn, inputs, outputs)


def on_page_load(fn, inputs, outputs) -> None:
    """``fn`` whenever a page of the app being built loads (for lists that follow no project)."""
    import gradio as gr

    gr.on([_page_load()], fn, inputs, outputs)


def _page_load():
    from gradio.context import Context

    return Context.root_block.load
