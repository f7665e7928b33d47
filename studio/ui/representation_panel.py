"""The "Representation report" accordions: in the Data tab for the picked dataset version, in the Evaluate tab for
a sample set beside its dataset; and the lexicon editor (a project's own copy of each word list, or the shipped
one). The numbers come from ``studio.data.representation`` and ``studio.evaluation.representation``."""

from __future__ import annotations

import gradio as gr  # at module level: a handler's "request: gr.Request" hint must resolve, or Gradio passes no request
import html
from dataclasses import dataclass

from studio.data.items import ImportRefused
from studio.data.lexicons import LexiconError, project_texts, reset_lexicon, save_lexicon
from studio.data.representation import ReportOptions, version_report
from studio.evaluation.representation import RepresentationError, filtering_note, set_report
from studio.store import Store
from studio.ui.plots import share_bars
from studio.ui.state import (PICK_VERSION_FIRST, current_user, error_message, follow, on_project_or_load,
                              version_choices)

UI_LIMIT = 100_000  # items a report in the page reads; `studio data bias` reads them all
INTRO = ("How often each group of each category (gender, age, ethnicity/nationality, religion, disability) is "
         "mentioned, which occupations and adjectives stand beside each group, and where one group dominates. A "
         "share is the share of the items that mention the category which mention the group, with its 95% "
         "interval. Counting words is a first look: read the items behind a number before acting on it. The word "
         "lists are editable below.")
ITEM_HEADERS = ["id", "where", "text"]


# ----------------------------------------------------------------------------- the report as the page shows it

def share_text(share: dict) -> str:
    if share.get("share") is None:
        return "—"
    return f"{100 * share['share']:.0f}% [{100 * share['ci_low']:.0f}–{100 * share['ci_high']:.0f}%]"


def mentioned(report: dict) -> list[dict]:
    return [c for c in report["categories"] if c["items"]]


def chart_labels(report: dict) -> list[tuple[str, str]]:
    """(category, group) of every group of the categories ``report`` finds mentioned."""
    return [(c["name"], g["group"]) for c in mentioned(report) for g in c["groups"]]


def group_chart(report: dict, title: str):
    rows = [g for c in mentioned(report) for g in c["groups"]]
    if not rows:
        return None
    return share_bars([f"{c}: {g}" for c, g in chart_labels(report)], [("", rows)], title)


def summary_markdown(report: dict, heading: str) -> str:
    categories = " · ".join(f"{c['name']} {c['items']}" for c in report["categories"]) or "none"
    limited = (f" (the first {report['items']:,} of {report['items_in_version']:,} items: the whole version with "
               f"`studio data bias`)" if report.get("items_in_version", 0) > report["items"] else "")
    warnings = len(report["warnings"])
    return (f"**{html.escape(heading)}**: {report['items_with_text']:,} of {report['items']:,} items have text"
            f"{limited}. Items that mention each category: {categories}. "
            + (f"**{warnings} warning{'s' if warnings != 1 else ''}** (below)." if warnings else "No warnings."))


def warning_rows(warnings: list[dict]) -> list[list]:
    return [[w["message"], ", ".join(str(e["id"]) for e in w["examples"][:20])] for w in warnings]


def cooccurrence_rows(report: dict) -> list[list]:
    return [[c["name"], row["attribute"], row["list"], row["items"], row["top"], f"{100 * row['share']:.0f}%",
             ", ".join(f"{g} {n}" for g, n in row["counts"].items() if n)]
            for c in report["categories"] for row in c["cooccurrence"]]


def behind_choices(reports: list[tuple[str, dict]]) -> list[tuple[str, str]]:
    """What "the items behind" can show: each warning, each group found, each co-occurrence, of each named report
    (``reports``: (name, report); the name leads the label when there are several)."""
    choices = []
    for number, (name, report) in enumerate(reports):
        lead = f"{name} · " if len(reports) > 1 else ""
        choices += [(f"{lead}warning: {w['message'][:90]}", f"{number}|w|{i}")
                    for i, w in enumerate(report["warnings"])]
        choices += [(f"{lead}{c['name']} / {g['group']} ({g['items']} items)", f"{number}|g|{c['name']}|{g['group']}")
                    for c in mentioned(report) for g in c["groups"] if g["items"]]
        choices += [(f"{lead}{c['name']}: {row['attribute']} beside {g} ({n})",
                     f"{number}|c|{c['name']}|{row['attribute']}|{g}")
                    for c in report["categories"] for row in c["cooccurrence"] for g, n in row["counts"].items() if n]
    return choices


def behind_rows(reports: list[tuple[str, dict]], key: str | None) -> list[list]:
    """The items behind the number ``key`` names (see ``behind_choices``): id, where it is, the text around it."""
    if not key:
        return []
    number, kind, *parts = key.split("|")
    report = reports[int(number)][1]
    if kind == "w":
        examples = report["warnings"][int(parts[0])]["examples"]
    elif kind == "g":
        category = next(c for c in report["categories"] if c["name"] == parts[0])
        examples = next(g for g in category["groups"] if g["group"] == parts[1])["examples"]
    else:
        category = next(c for c in report["categories"] if c["name"] == parts[0])
        examples = next(r for r in category["cooccurrence"] if r["attribute"] == parts[1])["examples"].get(parts[2], [])
    return [[e["id"], _where(e), e["snippet"]] for e in examples]


def _where(example: dict) -> str:
    if "variant" in example:
        return f"{example['variant']} · prompt {example['prompt_index'] + 1}, sample {example['sample_index'] + 1}"
    return example.get("split") or ""


def filtering_markdown(note: dict) -> str:
    """Post-generation filtering, linked from the report: the blocklist's state and where it is set."""
    state = (f"on ({note['words']} words or phrases)" if note["active"] else "off")
    extra = (f" In this set it refused {note['refused_prompts']} prompt(s) and masked {note['flagged_samples']} "
             "output(s)." if "flagged_samples" in note else "")
    problem = f" {html.escape(note['problem'])}" if note.get("problem") else ""
    return (f"**Post-generation filtering**: the blocklist is {state}.{extra}{problem} Set it with "
            f"`{note['setting']}` or `--blocklist` when starting the studio (comma-separated words or phrases, or a "
            "file with one per line): a prompt with one is refused and an output with one is masked and flagged, in "
            "the Generate tab and in deployments.")


def options_of(window, threshold, min_items) -> ReportOptions:
    """The form's options; an emptied field is its default."""
    defaults = ReportOptions()
    return ReportOptions(window=window or defaults.window,
                         threshold=float(threshold) if threshold not in (None, "") else defaults.threshold,
                         min_items=int(min_items) if min_items not in (None, "") else defaults.min_items)


# ----------------------------------------------------------------------------- the form

@dataclass
class ReportForm:
    """The options, the button, and what a report shows."""
    window: object
    threshold: object
    min_items: object
    build: object
    summary: object
    chart: object
    warnings: object
    behind: object
    items: object
    table: object
    filtering: object
    shown: object  # State: [(name, report)] on show


def report_form(prefix: str, button: str, table_label: str, table_headers: list[str], extra=None) -> ReportForm:
    with gr.Row():
        if extra is not None:
            extra()
        window = gr.Radio([("in one sentence", "sentence"), ("in one item", "item")], value="sentence",
                          label="Together means", elem_id=f"{prefix}-window")
        threshold = gr.Slider(0.5, 1.0, value=0.7, step=0.05, label="Warn when one group's share reaches")
        min_items = gr.Number(value=10, precision=0, minimum=1, label="Items a warning needs")
        build = gr.Button(button, variant="primary", elem_id=f"{prefix}-build")
    summary = gr.Markdown(elem_id=f"{prefix}-summary")
    chart = gr.Plot(label="Share of each group", elem_id=f"{prefix}-chart")
    # widths given: left to the browser, the long messages take the width and the ids' header breaks letter by letter
    warnings = gr.Dataframe(headers=["warning", "items behind it (ids)"], column_widths=["75%", "25%"],
                            interactive=False, wrap=True, label="Warnings", elem_id=f"{prefix}-warnings")
    behind = gr.Dropdown([], value=None, label="Show the items behind a number", elem_id=f"{prefix}-behind")
    items = gr.Dataframe(headers=ITEM_HEADERS, column_widths=["8%", "22%", "70%"], interactive=False, wrap=True,
                         label="Items behind it", elem_id=f"{prefix}-items")
    table = gr.Dataframe(headers=table_headers, interactive=False, wrap=True, label=table_label,
                         elem_id=f"{prefix}-table")
    filtering = gr.Markdown(elem_id=f"{prefix}-filtering")
    return ReportForm(window=window, threshold=threshold, min_items=min_items, build=build, summary=summary,
                      chart=chart, warnings=warnings, behind=behind, items=items, table=table, filtering=filtering,
                      shown=gr.State([]))


def form_outputs(form: ReportForm) -> list:
    return [form.summary, form.chart, form.warnings, form.behind, form.items, form.table, form.filtering, form.shown]


def refused(why, lead: str) -> tuple:
    return (error_message(why, lead), None, None, gr.Dropdown(choices=[], value=None), None, None, "", [])


def wire_behind(form: ReportForm) -> None:
    form.behind.change(behind_rows, [form.shown, form.behind], form.items)


# ----------------------------------------------------------------------------- the Data tab

COOCCURRENCE_HEADERS = ["category", "term", "list", "together", "mostly beside", "share", "counts"]


def data_outputs(store: Store, ref: str | None, window, threshold, min_items) -> tuple:
    if not ref:
        return refused(f"{PICK_VERSION_FIRST}.", "No report:")
    try:
        report = version_report(store, ref, options=options_of(window, threshold, min_items), limit=UI_LIMIT)
    except (ImportRefused, LexiconError, ValueError) as error:
        return refused(error, "No report:")
    shown = [(report["label"], report)]
    return (summary_markdown(report, report["label"]), group_chart(report, "Share of each group"),
            warning_rows(report["warnings"]), gr.Dropdown(choices=behind_choices(shown), value=None), None,
            cooccurrence_rows(report), filtering_markdown(filtering_note(store)), shown)


def build_data_panel(store: Store, project, version) -> ReportForm:
    """The Data tab's accordion: the picked version's report and the lexicon editor."""
    with gr.Accordion("Representation report", open=False, elem_id="bias-panel"):
        gr.Markdown(INTRO)
        form = report_form("bias", "Build the report", "Occupations and adjectives beside each category's groups",
                           COOCCURRENCE_HEADERS)
        lexicon_editor(store, project)
    form.build.click(lambda ref, w, t, m: data_outputs(store, ref, w, t, m),
                     [version, form.window, form.threshold, form.min_items], form_outputs(form))
    wire_behind(form)
    return form


# ----------------------------------------------------------------------------- the Evaluate tab

def comparison_headers(variants: list[dict]) -> list[str]:
    return ["category", "group", "dataset"] + [v["label"] for v in variants]


def comparison_rows(found: dict) -> list[list]:
    return [[row["category"], row["group"], share_text(row["dataset"])]
            + [f"{share_text(v)} · {v['verdict']}" for v in row["variants"]]
            for row in found["comparison"] if row["dataset"]["items"] or any(v["items"] for v in row["variants"])]


def comparison_chart(found: dict):
    rows = [r for r in found["comparison"] if r["dataset"]["items"] or any(v["items"] for v in r["variants"])]
    if not rows:
        return None
    series = [("dataset", [r["dataset"] for r in rows])]
    series += [(v["label"], [r["variants"][i] for r in rows]) for i, v in enumerate(found["variants"])]
    return share_bars([f"{r['category']}: {r['group']}" for r in rows], series, "Dataset share against generated")


def set_outputs(store: Store, set_id, dataset_ref, window, threshold, min_items) -> tuple:
    if not set_id:
        return refused("Choose a sample set.", "No report:")
    try:
        found = set_report(store, int(set_id), dataset_ref or None, options=options_of(window, threshold, min_items),
                           limit=UI_LIMIT)
    except (RepresentationError, LexiconError, ValueError) as error:
        return refused(error, "No report:")
    shown = [("dataset", found["dataset"])] + [(v["label"], v["report"]) for v in found["variants"]]
    amplified = "".join(f"\n- {html.escape(a['message'])}" for a in found["amplified"])
    what = "outputs" if found["counted"] == "outputs" else "prompts (the images or sounds themselves are not read)"
    summary = (f"**Sample set {found['set_id']}** ({found['modality']}: its {what}) beside "
               f"**{html.escape(found['dataset']['label'])}**. A verdict compares intervals: *amplified* when a "
               "variant's share lies wholly beyond the dataset's, away from an even share; *reduced* towards it."
               + (f"\n\n**Skews amplified:**{amplified}" if amplified else "\n\nNo skew amplified."))
    warnings = [{**w, "message": f"{name}: {w['message']}"} for name, report in shown for w in report["warnings"]]
    return (summary, comparison_chart(found), warning_rows(warnings),
            gr.Dropdown(choices=behind_choices(shown), value=None), None,
            gr.Dataframe(value=comparison_rows(found), headers=comparison_headers(found["variants"])),
            filtering_markdown(found["filtering"]), shown)


def build_evaluate_panel(store: Store, project, set_choices) -> ReportForm:
    """The Evaluate tab's accordion: a sample set's report beside its dataset (default: the one its run learned
    from). ``set_choices(store, project)`` lists the sets."""
    picked = {}

    def pickers():
        picked["set"] = gr.Dropdown(set_choices(store, None), value=None, label="Sample set", elem_id="set-bias-set")
        picked["dataset"] = gr.Dropdown(version_choices(store, None), value=None, label="Dataset version",
                                        info="empty: the one the set's run was trained on",
                                        elem_id="set-bias-dataset")

    with gr.Accordion("Representation report", open=False, elem_id="set-bias-panel"):
        gr.Markdown("The representation report of a sample set's outputs (images and audio: their prompts) beside the "
                    "dataset, group by group, with 95% intervals: where training amplified a skew.")
        form = report_form("set-bias", "Compare", "Share per group: dataset and each variant",
                           ["category", "group", "dataset"], extra=pickers)
    form.build.click(lambda s, d, w, t, m: set_outputs(store, s, d, w, t, m),
                     [picked["set"], picked["dataset"], form.window, form.threshold, form.min_items],
                     form_outputs(form))
    wire_behind(form)
    follow(store, project, picked["set"], set_choices)
    follow(store, project, picked["dataset"], version_choices)
    return form


# ----------------------------------------------------------------------------- the lexicon editor

def lexicon_names(store: Store, project: str | None) -> list[str]:
    return list(project_texts(store, project or "default"))


def lexicon_text(store: Store, project: str | None, name: str | None) -> tuple:
    texts = project_texts(store, project or "default")
    entry = texts.get((name or "").strip().lower())
    if entry is None:
        return "", "A new list: write `[group]` headings and terms under them, then save."
    return entry["text"], ("This project's own copy (edited)." if entry["edited"]
                           else "The shipped list (sources in its header).")


def lexicon_editor(store: Store, project) -> None:
    with gr.Accordion("Lexicons (word lists)", open=False, elem_id="lexicon-editor"):
        gr.Markdown("Each list is a category (`[group]` headings, then terms, one a line or comma-separated; `#` "
                    "starts a comment); `occupations` and `adjectives` are counted beside the groups. Matching ignores "
                    "case, needs whole words, treats a space and a hyphen alike and finds regular plurals. Saved "
                    "lists are this project's; type a new name to add a category.")
        with gr.Row():
            name = gr.Dropdown(lexicon_names(store, None), value="gender", allow_custom_value=True, label="List",
                               elem_id="lexicon-name", scale=1)
            state = gr.Markdown(elem_id="lexicon-state")
        text = gr.Textbox(lines=14, max_lines=40, label="Terms", elem_id="lexicon-text")
        with gr.Row():
            save = gr.Button("Save for this project", variant="primary", elem_id="lexicon-save")
            reset = gr.Button("Reset to shipped", elem_id="lexicon-reset")

    def show(project_value, name_value):
        words, note = lexicon_text(store, project_value, name_value)
        return gr.Dropdown(choices=lexicon_names(store, project_value)), words, note

    def on_save(project_value, name_value, words, request: gr.Request = None):
        try:
            lexicon = save_lexicon(store, project_value or "default", name_value, words or "", current_user(request))
        except (LexiconError, ValueError) as error:
            return gr.Dropdown(), error_message(error, "Not saved:")
        terms = sum(map(len, lexicon.groups.values()))
        return (gr.Dropdown(choices=lexicon_names(store, project_value), value=lexicon.name),
                f"Saved for this project: {len(lexicon.groups)} group(s), {terms} term(s). Build the report again to "
                "see the new counts.")

    def on_reset(project_value, name_value, request: gr.Request = None):
        try:
            had = reset_lexicon(store, project_value or "default", name_value, current_user(request))
        except LexiconError as error:
            return gr.Dropdown(), gr.Textbox(), error_message(error, "Not reset:")
        words, note = lexicon_text(store, project_value, name_value)
        return (gr.Dropdown(choices=lexicon_names(store, project_value)), words,
                ("Back to the shipped list. " if had else "This project had no copy of it. ") + note)

    on_project_or_load(project, show, [project, name], [name, text, state])
    name.change(show, [project, name], [name, text, state])
    save.click(on_save, [project, name, text], [name, state])
    reset.click(on_reset, [project, name], [name, text, state])
