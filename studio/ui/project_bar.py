"""The header's project row: pick a project (typing a new name creates it), the dataset version, the project's
recent activity (who did what, when) and deleting the project, which asks for its name to be typed first."""

from __future__ import annotations

import gradio as gr  # at module level: a handler's "request: gr.Request" hint must resolve, or Gradio passes no request
import html

from studio.projects import (DEFAULT_PROJECT, DeleteRefused, ProjectError, create_project, delete_project,
                             project_activity, project_names)
from studio.store import Store
from studio.ui.state import current_user, error_message, on_lists_change, project_choices, version_choices

ACTIVITY_ROWS = 50
ACTIVITY_HEADERS = ["when (UTC)", "who", "what", "on", "project", "details"]


def _details_text(details: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in (details or {}).items() if v not in (None, "", [], {}))[:200]


def activity_rows(store: Store, project: str | None, every_project: bool = False) -> list[list]:
    """The newest actions as table rows; ``who`` says when sign-in was off (no name to record)."""
    actions = project_activity(store, None if every_project else project, limit=ACTIVITY_ROWS)
    return [[a["at"][:19].replace("T", " "), a["actor"] or "(sign-in off)", a["action"], a["target"],
             a["project"] or "", _details_text(a["details"])] for a in actions]


def on_project_handler(store: Store):
    def on_project(name, every_project, request: gr.Request = None):
        """Selecting a project; a name that is not one yet creates it (who created it is recorded)."""
        message = ""
        name = " ".join(str(name or "").split()) or DEFAULT_PROJECT
        if name not in project_names(store):
            try:
                name = create_project(store, name, actor=current_user(request))["name"]
                message = f"Project **{html.escape(name)}** created."
            except ProjectError as error:
                message, name = error_message(error), DEFAULT_PROJECT
        return (gr.Dropdown(choices=project_choices(store), value=name),
                gr.Dropdown(choices=version_choices(store, name), value=None),
                activity_rows(store, name, every_project), message)
    return on_project


def on_delete_handler(store: Store):
    def on_delete_project(name, typed, every_project, request: gr.Request = None):
        """Deletes the project only when its name was typed exactly: everything in it goes, files included."""
        if not name or (typed or "").strip() != name:
            return (f"Nothing was deleted: type the project's name (**{html.escape(name or '')}**) in the box to "
                    "confirm.", gr.Dropdown(), gr.Textbox(), gr.Dataframe())
        try:
            gone = delete_project(store, name, actor=current_user(request))
        except (ProjectError, DeleteRefused) as error:
            return error_message(error, "Nothing was deleted:"), gr.Dropdown(), gr.Textbox(), gr.Dataframe()
        return (f"Project **{html.escape(name)}** deleted with its {gone['datasets']} dataset(s), {gone['versions']} "
                f"version(s), {gone['runs']} run(s) and {gone['sample_sets']} sample set(s), files included.",
                gr.Dropdown(choices=project_choices(store), value=DEFAULT_PROJECT), gr.Textbox(value=""),
                activity_rows(store, DEFAULT_PROJECT, every_project))
    return on_delete_project


def build(store: Store, app):
    """The project row above the tabs; returns the shared ``(project, version)`` selectors the tabs follow.
    ``app`` (the Blocks being built) refreshes the row when a page loads: the app is built once at start-up,
    and projects made or deleted since (by anyone) must show."""
    with gr.Row():
        project = gr.Dropdown(project_choices(store), value=DEFAULT_PROJECT, label="Project", allow_custom_value=True,
                              scale=1, elem_id="project", info="type a new name and press Enter to create a project")
        version = gr.Dropdown(version_choices(store, DEFAULT_PROJECT), value=None, label="Dataset version", scale=3,
                              elem_id="dataset-version")
    message = gr.Markdown(elem_id="project-message")
    with gr.Row():
        with gr.Accordion("Recent activity (who did what, when)", open=False) as activity_box:
            every_project = gr.Checkbox(False, label="every project")
            activity = gr.Dataframe(activity_rows(store, DEFAULT_PROJECT), headers=ACTIVITY_HEADERS,
                                    interactive=False, wrap=True, max_height=300, elem_id="project-activity")
            refresh = gr.Button("Refresh", size="sm")
        with gr.Accordion("Delete this project", open=False):
            gr.Markdown("Deletes the selected project with **everything in it**: datasets and their versions and "
                        "uploads, runs and their checkpoints, sample sets, samples and ratings — and their files. "
                        "Refused while one of its runs is queued or running.")
            typed = gr.Textbox(label="Type the project's name to confirm", elem_id="project-delete-name")
            delete = gr.Button("Delete the project and everything in it", variant="stop", elem_id="project-delete")

    project.change(on_project_handler(store), [project, every_project], [project, version, activity, message])

    def show_activity(name, every):
        return activity_rows(store, name, every)

    for trigger in (refresh.click, every_project.change, activity_box.expand):
        trigger(show_activity, [project, every_project], activity, show_progress="hidden")
    delete.click(on_delete_handler(store), [project, typed, every_project], [message, project, typed, activity])
    def on_load():
        return (gr.Dropdown(choices=project_choices(store)),
                gr.Dropdown(choices=version_choices(store, DEFAULT_PROJECT)), activity_rows(store, DEFAULT_PROJECT))

    app.load(on_load, None, [project, version, activity], queue=False)

    def on_lists(name):  # a version imported by anyone (the CLI too): offered at once, the selection kept
        return gr.Dropdown(choices=project_choices(store)), gr.Dropdown(choices=version_choices(store, name))

    on_lists_change(store, on_lists, project, [project, version])
    return project, version


def dataset_picker(store: Store, project, version, elem_id: str):
    """A tab's own view of the shared ``version`` selector, beside the tab's controls: it shows the version the tab
    works on, and picking another here picks it at the top too (so every tab follows)."""
    mirror = gr.Dropdown(version_choices(store, DEFAULT_PROJECT), value=None, elem_id=elem_id, scale=3,
                         label="Dataset version (the same as at the top of the page: change it here or there)")

    def shown(name, ref):
        return gr.Dropdown(choices=version_choices(store, name), value=ref)

    gr.on([version.change, project.change], shown, [project, version], mirror, show_progress="hidden")
    on_lists_change(store, lambda name: gr.Dropdown(choices=version_choices(store, name)), project, mirror)
    mirror.input(lambda ref: ref, mirror, version, show_progress="hidden")  # .input: people only, so no echo loop
    return mirror
