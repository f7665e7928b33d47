"""The Data tab: upload, map columns, choose cleaning steps, import, and browse dataset versions."""

from __future__ import annotations

import gradio as gr  # at module level: a handler's "request: gr.Request" hint must resolve, or Gradio passes no request
import html
import json
from dataclasses import dataclass
from pathlib import Path

from studio.data.clean import describe_clusters
from studio.data.export import export_zip
from studio.data.items import MODALITIES, ImportRefused
from studio.data.mapping import ColumnMapping
from studio.data.preferences import describe_kinds
from studio.data.read_datasets import hub_token, parse_hub_ref, preview as preview_source
from studio.data.service import (delete_dataset, delete_version, describe_source, get_version, inspect_upload,
                                 read_manifest)
from studio.data.steps import STEPS
from studio.store import Store
from studio.store.projects import DeleteRefused
from studio.tasks.service import stage_files
from studio.ui.background import BackgroundTask
from studio.ui.confirm import NOT_CONFIRMED, confirmed, two_step_delete
from studio.ui.forms import form_values, params_form
from studio.ui.plots import dataset_figures
from studio.ui.representation_panel import build_data_panel
from studio.ui.state import PICK_VERSION_FIRST, clear_when_picked, current_user, error_message, version_choices

PREVIEW_ROWS = 200
GALLERY_ITEMS = 48
AUDIO_PLAYERS = 6
MAPPING_FIELDS = ("text", "prompt", "context", "response", "messages")
REPORT_HEADERS = ["step", "on/off", "removed", "changed", "detail", "examples"]
# Left to the browser, the long examples take the width and short headers break into a letter per line.
REPORT_WIDTHS = ["17%", "8%", "10%", "10%", "22%", "33%"]


class StepsPanel:
    """Every modality's cleaning steps as switches and fields; only the chosen modality's is shown."""

    def __init__(self):
        self.groups = {}
        self.fields: list[tuple[str, str, str]] = []  # (modality, step, param or "enabled")
        self.components = []
        for modality in MODALITIES:
            with gr.Group(visible=modality == "text") as group:
                for step in STEPS[modality]:
                    with gr.Row():
                        switch = gr.Checkbox(value=step.on_by_default, label=step.label, info=step.help, scale=2)
                        self._add(modality, step.name, "enabled", switch)
                        for name, component in params_form(step.params).items():
                            self._add(modality, step.name, name, component)
            self.groups[modality] = group

    def _add(self, modality: str, step: str, param: str, component) -> None:
        self.fields.append((modality, step, param))
        self.components.append(component)

    def config(self, modality: str, values) -> dict:
        """The chosen modality's steps as ``{step: {"enabled": bool, **params}}``; an emptied field is its default."""
        config: dict[str, dict] = {}
        for (field_modality, step, param), value in zip(self.fields, values):
            if field_modality == modality:
                config.setdefault(step, {})[param] = value
        params = {step.name: step.params for step in STEPS[modality]}
        return {name: {"enabled": bool(given.pop("enabled")), **form_values(params[name], given)}
                for name, given in config.items()}

    def visibility(self, modality: str) -> list:
        return [gr.Group(visible=m == modality) for m in MODALITIES]


def _file_warnings(result: dict) -> list[dict]:
    return [w for w in result.get("warnings", []) if "file" in w]


def _problems_markdown(result: dict) -> str:
    lines = []
    if result["errors"]:
        lines.append(f"**{len(result['errors'])} file(s) could not be used** (the rest was imported):")
        lines += [f"- `{html.escape(e['file'])}`: {html.escape(e['reason'])}" for e in result["errors"]]
    if warnings := _file_warnings(result):
        lines.append(f"**{len(warnings)} warning(s):**")
        lines += [f"- `{html.escape(w['file'])}`: {html.escape(w['reason'])}" for w in warnings[:20]]
    return "\n".join(lines)


def removal_warning_markdown(result: dict) -> str:
    """A heading, not a line among the counts: the steps that removed most of the data, and what keeps it."""
    steps = [w for w in result.get("warnings", []) if "step" in w]
    if not steps:
        return ""
    return ("#### Warning: cleaning removed most of the data\n"
            + "\n".join(f"- {html.escape(w['reason'])}." for w in steps) + "\n\n")


def upload_text(info: dict) -> str:
    """What an upload holds, as people count it: "320 images with captions", not "640 file(s)" (the captions are
    files too)."""
    modality = info["modality"]
    if modality == "text":
        return f"{info['files']} file(s); looks like **text**."
    count = info["items"]
    things = f"{count} {'image' if modality == 'image' else 'audio clip'}{'' if count == 1 else 's'}"
    if info["metadata"]:
        captions = " with a metadata file for their captions"
    elif info["captioned"] == count:
        captions = " with captions"
    else:
        captions = f", {info['captioned']} with captions" if info["captioned"] else " without captions"
    others = f"; {info['other']} other file(s)" if info["other"] else ""
    return f"**{things}{captions}**{others}; looks like **{modality}**."


def summary_markdown(result: dict) -> str:
    removed = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result["removed"].items() if v) or "nothing"
    splits = " · ".join(f"{k} {v}" for k, v in result["splits"].items())
    head = (f"### Done: {html.escape(result['name'])} v{result['version']} ({result['modality']})\n"
            + removal_warning_markdown(result) +
            f"**{result['items_kept']} of {result['items_in']} items kept.** Removed: {removed}. Splits: {splits}.")
    return head + ("\n\n" + _problems_markdown(result) if result["errors"] or _file_warnings(result) else "")


def report_rows(report: dict) -> list[list]:
    """A row per step; a near-duplicate step's detail names its largest clusters: the item kept and those removed
    as near-duplicates of it."""
    def detail(entry: dict) -> str:
        clusters = describe_clusters(entry["clusters"]) if entry.get("clusters") else ""
        return "; ".join(d for d in (entry["detail"], clusters) if d)

    return [[e["label"], "on" if e["enabled"] else "off", e["removed"], e["changed"], detail(e),
             "; ".join(f"{x['source']}: {x['reason']}" for x in e["examples"][:3])]
            for e in report["steps"]]


def removed_gallery(folder, report: dict) -> list[tuple[str, str]]:
    return [(str(folder / x["file"]), f"{e['label']}: {x['reason']}")
            for e in report["steps"] for x in e["examples"] if x.get("file", "").lower().endswith(
                (".png", ".jpg", ".jpeg", ".webp"))]


def preview_rows(rows: list[dict]) -> list[list]:
    def content(row: dict) -> str:
        if "messages" in row:
            return "\n".join(f"{m['role']}: {m['content']}" for m in row["messages"])
        if "prompt" in row:
            return f"PROMPT: {row['prompt']}\nRESPONSE: {row['response']}"
        return row.get("text", row.get("caption", ""))
    return [[r["split"], r["source"], content(r)[:500]] for r in rows[:PREVIEW_ROWS]]


EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"


def example_choices() -> list[tuple[str, str]]:
    """The example datasets shipped in assets/examples (made by studio/examples, see its README)."""
    return [(path.name, str(path)) for path in sorted(EXAMPLES.glob("*")) if path.suffix in (".txt", ".zip")]


@dataclass
class HubBox:
    """The "From the Hub" box: a Hub dataset id, its config, split and row limit, Preview and Import."""
    dataset: object
    config: object
    split: object
    limit: object
    preview_button: object
    import_button: object
    importing: BackgroundTask
    info: object


def hub_box(store: Store) -> HubBox:
    with gr.Accordion("From the Hub", open=False):
        with gr.Row():
            dataset = gr.Textbox(label="Hub dataset", placeholder="OWNER/NAME, optionally @REVISION", scale=3,
                                 elem_id="hub-dataset")
            config = gr.Textbox(label="Config", placeholder="the set's default", elem_id="hub-config")
            split = gr.Textbox(label="Split", placeholder="train", elem_id="hub-split")
            limit = gr.Number(value=None, precision=0, minimum=1, label="First N rows", elem_id="hub-limit",
                              info="empty: all rows (streamed past 1 GB)")
        with gr.Row():
            preview_button = gr.Button("Preview", elem_id="hub-preview")
            import_button = gr.Button("Import and clean from the Hub", variant="primary", elem_id="hub-import")
            importing = BackgroundTask(store, "hub-import-cancel")
        info = gr.Markdown(elem_id="hub-info")
    return HubBox(dataset=dataset, config=config, split=split, limit=limit, preview_button=preview_button,
                  import_button=import_button, importing=importing, info=info)


def hub_preview_text(shown: dict) -> str:
    """A Hub set's preview as the box shows it: columns with their features, the modality, and the mapping guessed
    (text) or the caption column (media), or why it cannot be mapped."""
    columns = ", ".join(f"`{html.escape(c)}` ({html.escape(shown['features'].get(c, '?'))})" for c in shown["columns"])
    text = f"**{html.escape(shown['source'])}**: columns {columns}; looks like **{shown['modality']}**."
    if shown["modality"] == "text":
        guess = shown["mapping"]
        text += f" Column mapping guessed: {html.escape(ColumnMapping(**guess).describe(), quote=False) if guess else 'none'}."
    else:
        caption = shown["caption"]
        text += f" Captions from `{html.escape(caption)}`." if caption else " No caption column found."
    return text + (f"\n\n{html.escape(shown['problem'])}" if shown["problem"] else "")


@dataclass
class DataTab:
    """The Data tab's components."""
    files: object
    modality: object
    name: object
    split: object
    seed: object
    inspection: object
    mapping_box: object
    mapping_table: object
    mapping_format: object
    mapping_columns: dict
    steps: StepsPanel
    import_button: object
    importing: BackgroundTask
    hub: HubBox
    example: object
    summary: object
    report: object
    removed: object
    version_info: object
    size_plot: object
    words_plot: object
    table: object
    gallery: object
    players: list
    audio_row: object
    version_report: object
    export_button: object
    reclean_button: object
    recleaning: BackgroundTask
    delete_version_button: object
    delete_dataset_button: object
    confirm_version: object
    armed_version: object
    confirm_dataset: object
    armed_dataset: object
    export_file: object
    reclean_status: object


def build(store: Store, project, version) -> DataTab:
    """The Data tab. ``project`` and ``version`` are the shared selectors above the tabs."""
    tab = layout(store, version)
    wire(store, tab, project, version)
    build_data_panel(store, project, version)  # below the version's own sections
    return tab


def layout(store: Store, version) -> DataTab:
    gr.Markdown("Upload text, images or audio (several files, folders as a zip). Captions for images and audio "
                "come from same-name `.txt` files or a `metadata.jsonl`/`metadata.csv` with `file_name`.")
    with gr.Row():
        files = gr.File(file_count="multiple", label="Files or a zip", elem_id="data-upload", scale=3)
        with gr.Column(scale=2):
            modality = gr.Radio(list(MODALITIES), value="text", label="Modality (guessed from the files)",
                                elem_id="data-modality")
            name = gr.Textbox(label="Dataset name", placeholder="from the first file's name", elem_id="data-name")
            with gr.Row():
                split = gr.Textbox(value="0.8,0.1,0.1", label="Split train,validation,test")
                seed = gr.Number(value=0, precision=0, label="Split seed")
    inspection = gr.Markdown()
    hub = hub_box(store)
    with gr.Accordion("Column mapping (tables)", open=False, visible=False) as mapping_box:
        mapping_table = gr.Dataframe(label="First rows", interactive=False, wrap=True)
        with gr.Row():
            mapping_format = gr.Radio(["text", "pair", "chat"], value="text", label="Format")
            mapping_columns = {f: gr.Dropdown([], label=f"{f} column", allow_custom_value=True)
                               for f in MAPPING_FIELDS}
    with gr.Accordion("Cleaning steps", open=False):
        steps = StepsPanel()
    with gr.Row():
        import_button = gr.Button("Import and clean", variant="primary", elem_id="data-import", scale=3)
        importing = BackgroundTask(store, "data-import-cancel")
        # value=None: a Dropdown otherwise shows its first choice as picked, with nothing loaded, and picking
        # that choice then changes nothing, so nothing loads
        example = gr.Dropdown(example_choices(), value=None, label="…or try an example dataset (works offline)",
                              scale=2, elem_id="data-example")
    summary = gr.Markdown(elem_id="data-summary")
    report = gr.Dataframe(headers=REPORT_HEADERS, column_widths=REPORT_WIDTHS, label="What each step did",
                          interactive=False, wrap=True, elem_id="data-report")
    removed = gr.Gallery(label="Examples of removed images", columns=6, height=220, visible=False)

    gr.Markdown("## Dataset version")
    version_info = gr.Markdown(elem_id="version-info")
    with gr.Row():
        size_plot = gr.Plot(label="Sizes")
        words_plot = gr.Plot(label="Words")
    table = gr.Dataframe(headers=["split", "source", "content"], label="Items", interactive=False, wrap=True,
                         max_height=400)
    gallery = gr.Gallery(label="Images", columns=8, height=320, visible=False)
    players = []
    with gr.Row(visible=False) as audio_row:
        for _ in range(AUDIO_PLAYERS):
            players.append(gr.Audio(interactive=False, waveform_options=gr.WaveformOptions(show_recording_waveform=True),
                                    min_width=200))
    version_report = gr.Dataframe(headers=REPORT_HEADERS, column_widths=REPORT_WIDTHS, interactive=False, wrap=True,
                                  label="Cleaning report of this version", elem_id="version-report")
    with gr.Row():
        export_button = gr.Button("Export as zip")
        reclean_button = gr.Button("Clean again with the steps above (new version)")
        recleaning = BackgroundTask(store, "data-reclean-cancel")
        delete_version_button = gr.Button("Delete this version", variant="stop", elem_id="version-delete")
        delete_dataset_button = gr.Button("Delete the whole dataset", variant="stop", elem_id="dataset-delete")
    confirm_version, armed_version = two_step_delete(delete_version_button, version,
                                                     lambda ref: f"version {ref} and its files", "version-delete-yes")
    confirm_dataset, armed_dataset = two_step_delete(delete_dataset_button, version,
                                                     lambda ref: f"dataset {str(ref).split(':')[0]}, every version "
                                                                 "and upload of it", "dataset-delete-yes")
    export_file = gr.File(label="Download", visible=False)
    reclean_status = gr.Markdown(elem_id="data-reclean-status")
    return DataTab(files=files, modality=modality, name=name, split=split, seed=seed, inspection=inspection,
                   mapping_box=mapping_box, mapping_table=mapping_table, mapping_format=mapping_format,
                   mapping_columns=mapping_columns, steps=steps, import_button=import_button, importing=importing,
                   hub=hub, example=example, summary=summary, report=report, removed=removed, version_info=version_info,
                   size_plot=size_plot, words_plot=words_plot, table=table, gallery=gallery, players=players,
                   audio_row=audio_row, version_report=version_report, export_button=export_button,
                   reclean_button=reclean_button, recleaning=recleaning, delete_version_button=delete_version_button,
                   delete_dataset_button=delete_dataset_button, confirm_version=confirm_version,
                   armed_version=armed_version, confirm_dataset=confirm_dataset, armed_dataset=armed_dataset,
                   export_file=export_file, reclean_status=reclean_status)


def hub_params(hub_id, config, split, limit) -> dict:
    """The box's fields as ``import_dataset``'s: an empty field is the default (the set's config, train, all rows);
    ImportRefused naming the id when it is not one."""
    if not (hub_id or "").strip():
        raise ImportRefused("Type a Hub dataset id first (OWNER/NAME, optionally @REVISION).")
    source = parse_hub_ref(hub_id, config=(config or "").strip() or None, split=(split or "").strip() or None,
                           limit=int(limit) if limit not in (None, "") else None)
    return {"ref": source.label, "config": source.config, "source_split": source.split, "limit": source.limit}


def wire(store: Store, tab: DataTab, project, version) -> None:
    def mapping_outputs(columns: list[str], guess: dict, rows: list[dict], problems: bool) -> tuple:
        """The column mapping's accordion, first rows, format and column dropdowns for a table's guess."""
        frame = [[json.dumps(r.get(c), ensure_ascii=False)[:200] if not isinstance(r.get(c), str) else r.get(c)[:200]
                  for c in columns] for r in rows]
        dropdowns = [gr.Dropdown(choices=[""] + columns, value=guess.get(f) or "") for f in MAPPING_FIELDS]
        return (gr.Accordion(visible=bool(columns) or problems, open=problems),
                {"headers": columns, "data": frame} if columns else None,
                gr.Radio(value=guess.get("format", "text")), *dropdowns)

    def on_files(paths):
        if not paths:
            return gr.Radio(), "", gr.Accordion(visible=False), None, gr.Radio(), *[gr.Dropdown()] * 5, \
                *tab.steps.visibility("text")
        info = inspect_upload(paths)
        text = upload_text(info)
        tables = [t for t in info["tables"] if t["columns"] or t["problem"]]
        problems = "\n".join(f"- `{t['file']}`: {t['problem']}" for t in tables if t["problem"])
        columns = sorted({c for t in tables for c in t["columns"]})
        guess = next((t["mapping"] for t in tables if t["mapping"]), None) or {}
        rows = next((t["rows"] for t in tables if t["rows"]), [])
        if tables:
            text += f" Column mapping guessed: {ColumnMapping(**guess).describe() if guess else 'none'}."
        if problems:
            text += "\n\n" + problems
        return (gr.Radio(value=info["modality"]), text, *mapping_outputs(columns, guess, rows, bool(problems)),
                *tab.steps.visibility(info["modality"]))

    tab.files.change(on_files, tab.files, [tab.modality, tab.inspection, tab.mapping_box, tab.mapping_table,
                                           tab.mapping_format, *tab.mapping_columns.values(),
                                           *tab.steps.groups.values()])
    tab.modality.change(lambda m: tab.steps.visibility(m), tab.modality, list(tab.steps.groups.values()))

    def chosen_mapping(fmt, columns: dict) -> ColumnMapping | None:
        if not any(columns.values()):
            return None
        return ColumnMapping(format=fmt, **{k: v or None for k, v in columns.items()})

    def import_done(result: dict, project_value: str) -> tuple:
        ref = f"{result['dataset_id']}:{result['version']}"
        saved = get_version(store, ref)
        examples = removed_gallery(store.path(saved.path), saved.report)
        return (summary_markdown(result), report_rows(saved.report), gr.Gallery(value=examples, visible=bool(examples)),
                gr.Dropdown(choices=version_choices(store, project_value), value=ref))

    def import_refused(why) -> tuple:
        return error_message(why, "Nothing was imported."), None, gr.Gallery(visible=False), gr.Dropdown()

    # request stands before *rest: Gradio passes it only to a positional parameter
    def on_import(paths, modality_value, name_value, split_value, seed_value, project_value, fmt,
                  request: gr.Request, *rest):
        columns = dict(zip(MAPPING_FIELDS, rest[:len(MAPPING_FIELDS)]))
        step_values = rest[len(MAPPING_FIELDS):]
        if not paths:
            yield "Choose some files first.", None, gr.Gallery(visible=False), gr.Dropdown(), *tab.importing.idle()
            return
        try:
            mapping = chosen_mapping(fmt, columns)
            params = {"name": name_value or None, "modality": modality_value, "split": split_value,
                      "seed": int(seed_value or 0), "steps": tab.steps.config(modality_value, step_values),
                      "mapping": mapping.model_dump() if mapping else None, "project": project_value or "default"}
        except ValueError as error:
            yield *import_refused(error), *tab.importing.idle()
            return
        # the worker reads copies under STUDIO_HOME: the upload cache is the web server's, not the worker's
        params["paths"] = stage_files(store, paths)
        yield from tab.importing.run("import", params, project=params["project"], actor=current_user(request),
                                     working=lambda text: (text, gr.skip(), gr.skip(), gr.skip()),
                                     done=lambda result: import_done(result, params["project"]), failed=import_refused)

    import_inputs = [tab.files, tab.modality, tab.name, tab.split, tab.seed, project, tab.mapping_format,
                     *tab.mapping_columns.values(), *tab.steps.components]
    tab.import_button.click(on_import, import_inputs,
                            [tab.summary, tab.report, tab.removed, version, *tab.importing.outputs],
                            show_progress="minimal")

    def on_example(path):
        if not path:
            return [gr.File()] * 1 + [gr.Textbox()]
        return gr.File(value=[path]), gr.Textbox(value=Path(path).stem)

    tab.example.change(on_example, tab.example, [tab.files, tab.name])

    def on_hub_preview(hub_id, config, split):
        try:
            params = hub_params(hub_id, config, split, None)
            shown = preview_source(parse_hub_ref(params["ref"], config=params["config"], split=params["source_split"]),
                                   hub_token())
        except ImportRefused as error:
            return gr.Radio(), error_message(error), gr.Accordion(), gr.skip(), gr.Radio(), *[gr.Dropdown()] * 5, \
                *[gr.Group()] * len(MODALITIES)
        guess = shown["mapping"] or {}
        return (gr.Radio(value=shown["modality"]), hub_preview_text(shown),
                *mapping_outputs(shown["columns"] if shown["modality"] == "text" else [], guess, shown["rows"],
                                 bool(shown["problem"])),
                *tab.steps.visibility(shown["modality"]))

    tab.hub.preview_button.click(on_hub_preview, [tab.hub.dataset, tab.hub.config, tab.hub.split],
                                 [tab.modality, tab.hub.info, tab.mapping_box, tab.mapping_table, tab.mapping_format,
                                  *tab.mapping_columns.values(), *tab.steps.groups.values()])

    def on_hub_import(hub_id, config, split, limit, modality_value, name_value, fractions, seed_value, project_value,
                      fmt, request: gr.Request, *rest):
        columns = dict(zip(MAPPING_FIELDS, rest[:len(MAPPING_FIELDS)]))
        try:
            mapping = chosen_mapping(fmt, columns) if modality_value == "text" else None
            params = {**hub_params(hub_id, config, split, limit), "name": name_value or None,
                      "modality": modality_value, "split": fractions, "seed": int(seed_value or 0),
                      "steps": tab.steps.config(modality_value, rest[len(MAPPING_FIELDS):]),
                      "mapping": mapping.model_dump() if mapping else None, "project": project_value or "default"}
        except (ImportRefused, ValueError) as error:
            yield *import_refused(error), *tab.hub.importing.idle()
            return
        yield from tab.hub.importing.run("hub_import", params, project=params["project"], actor=current_user(request),
                                         working=lambda text: (text, gr.skip(), gr.skip(), gr.skip()),
                                         done=lambda result: import_done(result, params["project"]),
                                         failed=import_refused)

    tab.hub.import_button.click(on_hub_import, [tab.hub.dataset, tab.hub.config, tab.hub.split, tab.hub.limit,
                                                *import_inputs[1:]],
                                [tab.summary, tab.report, tab.removed, version, *tab.hub.importing.outputs],
                                show_progress="minimal")

    def on_version(ref):
        hidden = [gr.Gallery(visible=False), gr.Row(visible=False)] + [gr.Audio(value=None)] * AUDIO_PLAYERS
        if not ref:
            return "Import a dataset or pick one above.", None, None, None, *hidden, None
        try:
            found = get_version(store, ref)
        except ImportRefused as error:
            return error_message(error), None, None, None, *hidden, None
        folder, modality_value = store.path(found.path), found.dataset.modality
        rows = read_manifest(store, found, limit=max(PREVIEW_ROWS, GALLERY_ITEMS, AUDIO_PLAYERS))  # a preview only
        fractions = found.splits.get("fractions")
        info = (f"**{html.escape(found.dataset.name)} v{found.version}** · {modality_value} · "
                f"{found.items_kept} of {found.items_in} items kept · splits "
                + " · ".join(f"{s} {found.splits.get(s, 0)}" for s in ("train", "validation", "test"))
                + f" (fractions {fractions}, seed {found.splits.get('seed')}) · made {found.created_at:%Y-%m-%d %H:%M}"
                + ((" · " + describe_kinds(kinds)) if (kinds := found.report.get("stats", {}).get("kinds")) else "")
                + f"\n\nSource: {describe_source(found.source)}")
        first, second = dataset_figures(found.report.get("stats", {}), modality_value)
        media = hidden
        if modality_value == "image":
            media = [gr.Gallery(value=[(str(folder / r["file"]), r.get("caption") or "") for r in rows[:GALLERY_ITEMS]],
                                visible=True), gr.Row(visible=False)] + [gr.Audio(value=None)] * AUDIO_PLAYERS
        elif modality_value == "audio":
            clips = [gr.Audio(value=str(folder / r["file"]), label=(r.get("caption") or "")[:60])
                     for r in rows[:AUDIO_PLAYERS]]
            media = [gr.Gallery(visible=False), gr.Row(visible=True)] + clips + \
                [gr.Audio(value=None)] * (AUDIO_PLAYERS - len(clips))
        return info, first, second, preview_rows(rows), *media, report_rows(found.report)

    version.change(on_version, version, [tab.version_info, tab.size_plot, tab.words_plot, tab.table, tab.gallery,
                                         tab.audio_row, *tab.players, tab.version_report])

    def on_export(ref):
        if not ref:
            return gr.File(visible=False)
        return gr.File(value=str(export_zip(store, ref)), visible=True)

    tab.export_button.click(on_export, version, tab.export_file)

    def on_reclean(ref, project_value, request: gr.Request, *step_values):
        if not ref:
            yield f"{PICK_VERSION_FIRST}.", gr.Dropdown(), *tab.recleaning.idle()
            return
        try:
            found = get_version(store, ref)
        except ImportRefused as error:
            yield error_message(error), gr.Dropdown(), *tab.recleaning.idle()
            return

        def done(result: dict) -> tuple:
            new_ref = f"{result['dataset_id']}:{result['version']}"
            return summary_markdown(result), gr.Dropdown(choices=version_choices(store, project_value), value=new_ref)

        params = {"version_id": found.id, "steps": tab.steps.config(found.dataset.modality, step_values)}
        yield from tab.recleaning.run("reclean", params, project=project_value, actor=current_user(request),
                                      working=lambda text: (text, gr.skip()), done=done,
                                      failed=lambda why: (error_message(why), gr.Dropdown()))

    tab.reclean_button.click(on_reclean, [version, project, *tab.steps.components],
                             [tab.reclean_status, version, *tab.recleaning.outputs], show_progress="minimal")
    clear_when_picked(version, tab.reclean_status)

    def delete_handler(delete, done_message):
        """The confirmed deletion of the selected version's ``delete(ref, actor)``; then the project's fresh list."""
        def handler(armed, ref, project_value, request: gr.Request = None):
            hidden = gr.Button(visible=False)
            if not confirmed(armed, ref):
                return NOT_CONFIRMED, gr.Dropdown(), hidden, None
            try:
                message = done_message(delete(ref, current_user(request)), ref)
            except (DeleteRefused, ImportRefused) as error:
                return error_message(error, "Nothing was deleted:"), gr.Dropdown(), hidden, None
            return message, gr.Dropdown(choices=version_choices(store, project_value), value=None), hidden, None
        return handler

    def version_gone(gone: dict, ref: str) -> str:
        last = " It was the last version, so the dataset is gone too." if gone["dataset_deleted"] else ""
        return f"Version {html.escape(ref)} and its files were deleted.{last}"

    def dataset_gone(gone: dict, _ref: str) -> str:
        return f"Dataset '{html.escape(gone['name'])}' ({gone['versions']} version(s)) and its files were deleted."

    tab.confirm_version.click(delete_handler(lambda ref, actor: delete_version(store, ref, actor=actor), version_gone),
                              [tab.armed_version, version, project],
                              [tab.reclean_status, version, tab.confirm_version, tab.armed_version])
    tab.confirm_dataset.click(delete_handler(lambda ref, actor: delete_dataset(store, int(str(ref).split(":")[0]),
                                                                               actor=actor), dataset_gone),
                              [tab.armed_dataset, version, project],
                              [tab.reclean_status, version, tab.confirm_dataset, tab.armed_dataset])
