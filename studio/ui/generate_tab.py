"""Generate tab: the base model and up to four trained variants side by side, same prompts, seeds and
settings, so differences come from training alone. Every sample is stored as part of a sample set.

The page only calls ``studio.generation.service``; generation runs in a thread of the web process (the one
model work the web process does) while the handler streams the grid into the page: text as it is written,
images and clips as each is stored.
"""

from __future__ import annotations

import gradio as gr  # at module level: a handler's "request: gr.Request" hint must resolve, or Gradio passes no request
import html
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from studio.generation.options import SETTINGS, settings_model
from studio.generation.service import GenerationError, GenerationHooks, delete_set, export_set_zip, generate_set, \
    get_prompt_set, get_set, list_prompt_sets, list_sets, prompts_from_test_split, save_prompt_set
from studio.generation.variants import variant_choices
from studio.models.registry import is_starter as names_a_starter
from studio.status import SetStatus
from studio.store import Store
from studio.store.projects import DEFAULT_PROJECT
from studio.ui.confirm import NOT_CONFIRMED, confirmed, two_step_delete
from studio.ui.forms import form_values, params_form
from studio.ui.state import (PICK_VERSION_FIRST, clear_when_picked, current_user, error_message, on_lists_change,
                             on_project_or_load)

MAX_VARIANTS = 4
REFRESH = 0.3  # seconds between grid updates while generating

INTRO = """### Generate
Pick a **base model** and up to four **variants** (a run's last checkpoint or any earlier one). The same
prompts go through each with the same seeds and settings, so what differs comes from training. Every
sample is kept in a **sample set**: reopen it below, download it, or rate it in the Evaluate tab."""

CSS = """
#gen-grid table { border-collapse: collapse; width: 100%; table-layout: fixed; }
#gen-grid th, #gen-grid td { border: 1px solid #ddd; padding: 6px; vertical-align: top; text-align: left; }
#gen-grid td.prompt { width: 18%; font-weight: 600; }
#gen-grid .text { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 0.9em; }
#gen-grid .meta { color: #888; font-size: 0.8em; }
#gen-grid img.out { width: 100%; max-width: 256px; image-rendering: pixelated; transition: transform .15s; }
#gen-grid img.out:hover { transform: scale(2); position: relative; z-index: 5; box-shadow: 0 2px 12px #0005; }
#gen-grid img.spec { width: 100%; max-width: 256px; height: 64px; }
#gen-grid .flag { color: #b45309; }
"""


# ----------------------------------------------------------------------------- choices

def base_choices(store: Store, project: str | None = None) -> list[tuple[str, str]]:
    """The base models the runs (of ``project``) came from (label, model ref), newest first."""
    seen: dict[str, str] = {}
    for choice in variant_choices(store, project=project):
        seen.setdefault(choice["model"], f"{choice['model']} · {choice['modality']}")
    return [(label, model) for model, label in seen.items()]


def variants_of(store: Store, base: str | None, project: str | None = None) -> list[dict]:
    return [c for c in variant_choices(store, project=project) if c["model"] == base] if base else []


def is_starter(base: str | None) -> bool:
    return names_a_starter(base)


# ----------------------------------------------------------------------------- rendering

def file_url(path: str) -> str:
    return "/gradio_api/file=" + html.escape(path, quote=True)


def spectrogram_png(wav: str) -> str | None:
    """A small log-magnitude spectrogram picture of a clip, written once beside it."""
    import numpy as np
    import soundfile as sf
    from PIL import Image
    from scipy.signal import stft

    out = Path(wav).with_suffix(".spectrogram.png")
    if out.exists():
        return str(out)
    try:
        wave, rate = sf.read(wav, dtype="float32", always_2d=True)
    except (OSError, RuntimeError):
        return None
    _, _, z = stft(wave.mean(axis=1), fs=rate, nperseg=512, noverlap=384)
    db = 20 * np.log10(np.abs(z) + 1e-9)
    db = np.clip(db - db.max(), -80, 0)
    pixels = ((db + 80) / 80 * 255).astype(np.uint8)[::-1]
    Image.fromarray(pixels).resize((256, 64)).save(out)
    return str(out)


def cell_html(sample: dict | None, partial: str | None, modality: str) -> str:
    if sample is None:
        if partial is not None:
            return f'<div class="text">{html.escape(partial)}▌</div>'
        return '<span class="meta">…</span>'
    meta = f'<div class="meta">seed {sample["seed"]} · {sample["seconds"]:.2f} s</div>'
    flags = sample.get("flags") or {}
    flag = (f'<div class="flag">blocked words masked: {html.escape(", ".join(flags["blocked"]))}</div>'
            if flags.get("blocked") else "")
    if sample.get("text") is not None:
        return f'<div class="text">{html.escape(sample["text"])}</div>{flag}{meta}'
    path = sample.get("path") or ""
    if modality == "image":
        return (f'<a href="{file_url(path)}" target="_blank"><img class="out" src="{file_url(path)}" '
                f'alt="{html.escape(sample["prompt"])}"></a>{meta}')
    spectrogram = spectrogram_png(path)
    picture = f'<img class="spec" src="{file_url(spectrogram)}" alt="spectrogram">' if spectrogram else ""
    return f'<audio controls preload="none" src="{file_url(path)}"></audio>{picture}{meta}'


def reference_html(reference: dict | None) -> str:
    if not reference:
        return ""
    if reference.get("text") is not None:
        return f'<div class="meta">reference</div><div class="text">{html.escape(str(reference["text"]))}</div>'
    path = reference.get("path") or ""
    if path.endswith((".png", ".jpg", ".jpeg", ".webp")):
        return f'<div class="meta">reference</div><img class="out" src="{file_url(path)}">'
    return f'<div class="meta">reference</div><audio controls preload="none" src="{file_url(path)}"></audio>'


def grid_html(sample_set: dict, partials: dict | None = None) -> str:
    """One row per prompt (and sample), one column per variant; the reference beside the prompt."""
    partials = partials or {}
    variants = sample_set["variants"]
    head = "".join(f"<th>{html.escape(v['label'])}</th>" for v in variants)
    rows = []
    for row in sample_set["grid"]:
        prompt = html.escape(row["prompt"]) + reference_html(row.get("reference"))
        if row.get("refused"):
            rows.append(f'<tr><td class="prompt">{prompt}</td><td colspan="{len(variants)}" class="flag">'
                        f'not generated: the prompt contains blocked words ({html.escape(", ".join(row["refused"]))})'
                        "</td></tr>")
            continue
        for index, seed in enumerate(row["seeds"]):
            label = prompt if index == 0 else f'<span class="meta">sample {index + 1}</span>'
            cells = []
            for variant in variants:
                made = row["cells"].get(variant["ref"], [])
                sample = next((s for s in made if s["sample_index"] == index), None)
                partial = partials.get((variant["ref"], row["prompt_index"], index))
                cells.append(f"<td>{cell_html(sample, partial, sample_set['modality'])}</td>")
            rows.append(f'<tr><td class="prompt">{label}</td>{"".join(cells)}</tr>')
    report = report_html(sample_set)
    return f"{report}<table><tr><th>prompt</th>{head}</tr>{''.join(rows)}</table>"


def report_html(sample_set: dict) -> str:
    report = sample_set.get("report") or {}
    lines = [f"Note: {html.escape(n)}" for n in report.get("notes", [])]
    lines += [f"<b>Failed:</b> {html.escape(e['message'])}" for e in report.get("errors", [])]
    if report.get("flagged"):
        lines.append(f"<b>Warning:</b> {len(report['flagged'])} output(s) contained blocked words: masked and "
                     "marked below.")
    status = sample_set.get("status")
    head = (f"<p><b>Sample set #{sample_set['set_id']}</b> · {html.escape(sample_set['modality'])} · "
            f"{html.escape(str(status))}</p>")
    return head + "".join(f"<p>{line}</p>" for line in lines)


def sets_table(store: Store, project: str | None = None) -> list[list]:
    return [[s["set_id"], s["status"], s["modality"], s["base_model"], ", ".join(s["variants"]), s["prompts"],
             s["samples"], s["created_at"][:19].replace("T", " ")] for s in list_sets(store, project)]


def sample_set_choices(store: Store, project: str | None = None) -> list[tuple[str, int]]:
    """Every sample set of ``project`` with its status (the Evaluate tab offers only ``rateable_set_choices``)."""
    return [(f"#{s['set_id']} {s['modality']} · {s['prompts']} prompts · {s['status']}", s["set_id"])
            for s in list_sets(store, project)]


# ----------------------------------------------------------------------------- running a set

class Generation:
    """One sample set being made in a thread; the page polls it (the UI's small manager for this tab)."""

    def __init__(self):
        self.set_id: int | None = None
        self.partials: dict[tuple, str] = {}
        self.progress = (0, 1, "starting")
        self.error: Exception | None = None
        self.cancel = threading.Event()
        self.done = threading.Event()

    def run(self, store: Store, **request) -> None:
        def on_text(event: dict) -> None:
            self.partials[(event["variant"], event["prompt_index"], event["sample_index"])] = event["text"]

        def on_start(set_id: int) -> None:
            self.set_id = set_id

        def on_progress(done: int, total: int, message: str) -> None:
            self.progress = (done, max(total, 1), message)

        try:
            hooks = GenerationHooks(progress=on_progress, should_cancel=self.cancel.is_set, on_text=on_text,
                                    on_start=on_start)
            generate_set(store, **request, hooks=hooks, source="ui")
        except Exception as error:  # noqa: BLE001 - shown in the page; the set keeps what was made
            self.error = error
        finally:
            self.done.set()


# ----------------------------------------------------------------------------- the tab

@dataclass
class GenerateTab:
    """The Generate tab's components."""
    base: object
    variants: object
    include_base: object
    prompts: object
    references: object
    test_count: object
    from_test: object
    prompt_set: object
    load_prompts: object
    save_prompts: object
    seed: object
    samples: object
    forms: dict  # modality -> {setting name: component}
    groups: dict  # modality -> its settings group
    start: object
    stop: object
    status: object
    grid: object
    table: object
    chosen_set: object
    reopen: object
    download: object
    delete: object
    confirm_delete: object
    armed_delete: object
    zip_file: object


def build(store: Store, project, version) -> GenerateTab:
    """The Generate tab; its run and sample-set lists follow the shared ``project`` selector."""
    tab = layout(store)
    wire(store, tab, project, version)
    return tab


def layout(store: Store) -> GenerateTab:
    gr.Markdown(INTRO)
    gr.HTML(f"<style>{CSS}</style>")
    with gr.Row():
        base = gr.Dropdown(base_choices(store, DEFAULT_PROJECT), value=None, label="Base model (from your runs)",
                           scale=2, elem_id="gen-base")
        variants = gr.Dropdown([], value=[], multiselect=True, max_choices=MAX_VARIANTS, scale=3,
                               label=f"Variants (up to {MAX_VARIANTS} runs or checkpoints)", elem_id="gen-variants")
        include_base = gr.Checkbox(True, label="include the base model", elem_id="gen-include-base", scale=1,
                                   min_width=160)
    prompts = gr.Textbox(lines=4, label="Prompts (one per line)", elem_id="gen-prompts",
                         placeholder="Once upon a time\nThe little fox")
    references = gr.State(None)
    with gr.Row():
        with gr.Column():
            test_count = gr.Number(8, precision=0, label="prompts from the test split", minimum=1, maximum=200)
            from_test = gr.Button("Take prompts from the dataset version's test split", elem_id="gen-from-test")
        with gr.Column():
            prompt_set = gr.Dropdown(_prompt_set_names(store), value=None, label="Saved prompt set",
                                     allow_custom_value=True)
            with gr.Row():
                load_prompts = gr.Button("Load", size="sm")
                save_prompts = gr.Button("Save these prompts under this name", size="sm")
    with gr.Row():
        # A Textbox: Gradio's Number shows and sends 0 for "no value", which would make every seed 0.
        seed = gr.Textbox("", label="Seed", placeholder="empty: a random seed, shown after", max_lines=1,
                          elem_id="gen-seed")
        samples = gr.Slider(1, 8, value=1, step=1, label="Samples per prompt")
    forms: dict[str, dict] = {}
    groups = {}
    with gr.Accordion("Settings", open=False, elem_id="gen-settings"):
        for modality in SETTINGS:
            with gr.Group(visible=modality == "text", elem_id=f"gen-settings-{modality}") as group:
                gr.Markdown(f"**{modality} settings**")
                forms[modality] = params_form(settings_model(modality))
            groups[modality] = group
    with gr.Row():
        start = gr.Button("Generate side by side", variant="primary", elem_id="gen-start")
        stop = gr.Button("Cancel", elem_id="gen-cancel")
    status = gr.Markdown(elem_id="gen-status")
    grid = gr.HTML(elem_id="gen-grid")
    with gr.Accordion("Sample sets", open=False):
        table = gr.Dataframe(sets_table(store, DEFAULT_PROJECT), interactive=False,
                             headers=["set", "status", "modality", "base", "variants", "prompts", "samples", "created"])
        with gr.Row():
            chosen_set = gr.Dropdown(sample_set_choices(store, DEFAULT_PROJECT), value=None, label="Sample set",
                                     elem_id="gen-set")
            reopen = gr.Button("Reopen")
            download = gr.Button("Download as zip")
            delete = gr.Button("Delete set", variant="stop", elem_id="gen-set-delete")
        confirm_delete, armed_delete = two_step_delete(
            delete, chosen_set, lambda set_id: f"sample set #{set_id}, its samples, files and ratings",
            "gen-set-delete-yes")
        zip_file = gr.File(label="zip", visible=False)
        gr.Markdown("A stored set is what the Evaluate tab asks raters to judge: pick it there by its number.")
    return GenerateTab(base=base, variants=variants, include_base=include_base, prompts=prompts,
                       references=references, test_count=test_count, from_test=from_test, prompt_set=prompt_set,
                       load_prompts=load_prompts, save_prompts=save_prompts, seed=seed, samples=samples, forms=forms,
                       groups=groups, start=start, stop=stop, status=status, grid=grid, table=table,
                       chosen_set=chosen_set, reopen=reopen, download=download, delete=delete,
                       confirm_delete=confirm_delete, armed_delete=armed_delete, zip_file=zip_file)


def wire(store: Store, tab: GenerateTab, project, version) -> None:
    running: dict[str, Generation] = {}  # one per browser session (gr.Request.session_hash)

    form_inputs = [c for modality in SETTINGS for c in tab.forms[modality].values()]

    def modality_of_base(model: str | None) -> str:
        found = variants_of(store, model)
        return found[0]["modality"] if found else "text"

    # The variants this page picked by itself. They follow the runs (a run picked while training had only its
    # untrained start) until the person picks others, which stay.
    auto_picked = gr.State(None)

    def variant_list(found: list[dict], picked: list | None = None, auto: list | None = None) -> tuple:
        """(the ``found`` variants offered, what the page picked): the person's ``picked`` kept, or (None, or what the
        page had picked) the newest runs' last trained checkpoints (a step 0 is the base, not a variant) — the newest
        beside the checkpoint it started from, when it started from one."""
        offered = [(c["label"], c["ref"]) for c in found]
        if picked is not None and sorted(picked) != sorted(auto or []):
            return gr.Dropdown(choices=offered), auto
        latest = [c for c in found if c["last"] and c["step"]]
        start = latest[0]["start"] if latest else None
        latest = [latest[0]["ref"], start] if start in {ref for _, ref in offered} else [c["ref"] for c in latest[:2]]
        if auto is not None and sorted(latest) == sorted(auto):  # nothing newer: leave the page's value alone, so a
            return gr.Dropdown(choices=offered), auto  # pick made while this refresh ran is not undone
        return gr.Dropdown(choices=offered, value=latest), latest

    def on_base(model, project_value):
        found = variants_of(store, model, project_value)
        modality = modality_of_base(model)
        # A starter has no pretrained weights: its runs' base is their untrained start, the step-0 checkpoint.
        has_base = not is_starter(model) or any(c["step"] == 0 and c["method"] == "scratch" for c in found)
        label = "include the base model"
        if is_starter(model):
            label += (" (the first run's untrained start, step 0)" if has_base
                      else " (these runs from scratch kept no untrained start)")
        note = gr.Checkbox(value=has_base, interactive=has_base, label=label)
        return [*variant_list(found), note] + [gr.Group(visible=m == modality) for m in SETTINGS]

    tab.base.change(on_base, [tab.base, project],
                    [tab.variants, auto_picked, tab.include_base] + list(tab.groups.values()))

    def bases_update(project_value, model):
        """(the project's base models offered, the one to show): ``model`` while still offered, else the newest
        run's."""
        bases = base_choices(store, project_value)
        offered = [ref for _, ref in bases]
        return bases, model if model in offered else (offered[0] if offered else None)

    def on_fresh_page(project_value, model=None):
        """A page load or another project: the bases (picking one fills the variants), the sets, nothing picked."""
        bases, chosen = bases_update(project_value, model)
        # Another base's change event fills the variants; the same base has none, so they are filled here.
        variants_update = variant_list(variants_of(store, chosen, project_value)) if chosen == model \
            else (gr.Dropdown(), None)
        return (gr.Dropdown(choices=bases, value=chosen), *variants_update,
                gr.Dropdown(choices=sample_set_choices(store, project_value), value=None),
                sets_table(store, project_value))

    def on_lists(project_value, model):
        """A run, checkpoint or set came or went: the lists follow, and what the person picked stays (the base only
        moves when its last run was deleted). The inputs are as they were when the lists changed, so the variants
        are refreshed in a step of their own that reads the page's base afresh."""
        bases, chosen = bases_update(project_value, model)
        return (gr.Dropdown(choices=bases, **({} if chosen == model else {"value": chosen})),
                gr.Dropdown(choices=sample_set_choices(store, project_value)), sets_table(store, project_value))

    def refreshed_variants(project_value, model, picked, auto):
        return variant_list(variants_of(store, model, project_value), picked, auto)

    on_project_or_load(project, on_fresh_page, [project, tab.base],
                       [tab.base, tab.variants, auto_picked, tab.chosen_set, tab.table])
    # a new run, checkpoint or set: listed at once
    on_lists_change(store, on_lists, [project, tab.base], [tab.base, tab.chosen_set, tab.table]).then(
        refreshed_variants, [project, tab.base, tab.variants, auto_picked], [tab.variants, auto_picked],
        show_progress="hidden", api_visibility="private")

    def on_from_test(dataset_ref, count):
        if not dataset_ref:
            return gr.Textbox(), None, f"{PICK_VERSION_FIRST} (at the top of the page)."
        try:
            found = prompts_from_test_split(store, dataset_ref, int(count or 8))
        except ValueError as error:
            return gr.Textbox(), None, error_message(error)
        text = "\n".join(item["prompt"].replace("\n", " ") for item in found)
        refs = [item.get("reference") for item in found]
        with_refs = sum(1 for r in refs if r)
        return text, refs, f"{len(found)} prompts from the test split ({with_refs} with a reference shown beside them)."

    tab.from_test.click(on_from_test, [version, tab.test_count], [tab.prompts, tab.references, tab.status])
    clear_when_picked(version, tab.status)
    tab.prompts.input(lambda: None, None, tab.references)  # typed prompts no longer line up with the references

    def on_load(name):
        try:
            return "\n".join(get_prompt_set(store, name)), None, f"Loaded prompt set '{html.escape(name)}'."
        except ValueError as error:
            return gr.Textbox(), None, error_message(error)

    def on_save(name, text, request: gr.Request = None):
        lines = [line for line in (text or "").splitlines() if line.strip()]
        try:
            save_prompt_set(store, (name or "").strip(), lines, actor=current_user(request))
        except ValueError as error:
            return gr.Dropdown(), error_message(error)
        return gr.Dropdown(choices=_prompt_set_names(store), value=name), f"Saved {len(lines)} prompts as '{html.escape(name)}'."

    tab.load_prompts.click(on_load, tab.prompt_set, [tab.prompts, tab.references, tab.status])
    tab.save_prompts.click(on_save, [tab.prompt_set, tab.prompts], [tab.prompt_set, tab.status])

    # request stands before *values: Gradio passes it only to a positional parameter
    def on_generate(model, chosen, with_base, text, refs, seed_value, per_prompt, project_value,
                    request: gr.Request, *values):
        modality = modality_of_base(model)
        names = list(tab.forms[modality])
        offset = sum(len(tab.forms[m]) for m in list(SETTINGS)[:list(SETTINGS).index(modality)])
        settings = form_values(settings_model(modality), dict(zip(names, values[offset:offset + len(names)])))
        refs_list = [line for line in (text or "").splitlines() if line.strip()]
        seed_text = str(seed_value or "").strip()
        if seed_text and not seed_text.isdigit():
            yield error_message("seed: must be a whole number from 0 to 4294967295, or empty for a random one (got "
                                f"'{seed_text[:40]}')"), gr.HTML()
            return
        request_args = dict(variants=(["base"] if with_base else []) + list(chosen or []), prompts=refs_list,
                            seed=int(seed_text) if seed_text else None,
                            samples_per_prompt=int(per_prompt or 1), settings=settings, base_model=model,
                            references=refs if refs and len(refs) == len(refs_list) else None,
                            project=project_value or None, created_by=current_user(request))
        if not request_args["variants"]:
            yield "Pick at least one variant (or include the base model).", gr.HTML()
            return
        job = Generation()
        key = getattr(request, "session_hash", None) or "default"
        running[key] = job
        thread = threading.Thread(target=job.run, args=(store,), kwargs=request_args, daemon=True)
        thread.start()
        while not job.done.is_set():
            time.sleep(REFRESH)
            done, total, message = job.progress
            if job.set_id is not None:
                yield (f"Generating: {done} of {total} samples · {html.escape(message)}",
                       grid_html(get_set(store, job.set_id), dict(job.partials)))
        running.pop(key, None)
        if job.error is not None and job.set_id is None:
            yield error_message(job.error), gr.HTML()
            return
        final = get_set(store, job.set_id)
        seeds = sorted({s for row in final["seeds"] for s in row})
        ending = {SetStatus.COMPLETED: "Done", SetStatus.CANCELLED: "Cancelled (the samples made so far are kept)",
                  SetStatus.FAILED: "Failed"}.get(final["status"], final["status"])
        error = f" — {html.escape(str(job.error))}" if job.error else ""
        yield (f"{ending}: sample set #{final['set_id']}, {len(final['samples'])} samples, seeds "
               f"{', '.join(map(str, seeds[:8]))}{'…' if len(seeds) > 8 else ''}{error}", grid_html(final))

    generate_inputs = [tab.base, tab.variants, tab.include_base, tab.prompts, tab.references, tab.seed, tab.samples,
                       project]
    tab.start.click(on_generate, generate_inputs + form_inputs, [tab.status, tab.grid], api_visibility="private").then(
        lambda p: (gr.Dropdown(choices=sample_set_choices(store, p)), sets_table(store, p)), project,
        [tab.chosen_set, tab.table])

    def on_cancel(request: gr.Request = None):
        job = running.get(getattr(request, "session_hash", None) or "default")
        if job is None:
            return "Nothing is being generated."
        job.cancel.set()
        return "Cancelling after the current sample…"

    tab.stop.click(on_cancel, None, tab.status, api_visibility="private")

    def on_reopen(set_id):
        if not set_id:
            return "Choose a sample set.", gr.HTML()
        try:
            return f"Sample set #{set_id}", grid_html(get_set(store, int(set_id)))
        except GenerationError as error:
            return error_message(error), gr.HTML()

    def on_download(set_id):
        if not set_id:
            return gr.File(visible=False)
        return gr.File(value=str(export_set_zip(store, int(set_id))), visible=True)

    def on_delete(armed, set_id, project_value, request: gr.Request = None):
        hidden = gr.Button(visible=False)
        if not confirmed(armed, set_id):
            return NOT_CONFIRMED, gr.Dropdown(), gr.Dataframe(), gr.HTML(), hidden, None
        try:
            delete_set(store, int(set_id), actor=current_user(request))
        except GenerationError as error:
            return f"**Nothing was deleted:** {html.escape(str(error))}", gr.Dropdown(), gr.Dataframe(), gr.HTML(), \
                hidden, None
        return (f"Sample set #{set_id} deleted with its samples, files and ratings.",
                gr.Dropdown(choices=sample_set_choices(store, project_value), value=None),
                sets_table(store, project_value), gr.HTML(value=""), hidden, None)

    tab.reopen.click(on_reopen, tab.chosen_set, [tab.status, tab.grid])
    tab.download.click(on_download, tab.chosen_set, tab.zip_file)
    tab.confirm_delete.click(on_delete, [tab.armed_delete, tab.chosen_set, project],
                             [tab.status, tab.chosen_set, tab.table, tab.grid, tab.confirm_delete, tab.armed_delete])

    gr.api(api_generate(store), api_name="generate")


def _prompt_set_names(store: Store) -> list[str]:
    return [p["name"] for p in list_prompt_sets(store)]


def api_generate(store: Store):
    """The Gradio API endpoint ``/generate`` (documented in the README): the CLI's contract over HTTP."""

    def generate(variants: list[str], prompts: list[str], seed: int | None = None, samples_per_prompt: int = 1,
                 settings: dict | None = None, base_model: str | None = None, request: gr.Request = None) -> dict:
        """Generate every prompt with every variant ("base", "RUN_ID" or "RUN_ID:STEP") using the same seeds;
        returns {"sample_set_id", "samples": [{variant, prompt, seed, text | path}]}."""
        set_id = generate_set(store, variants, prompts, seed, samples_per_prompt, settings or {},
                              base_model=base_model, source="api", created_by=current_user(request))
        made = get_set(store, set_id)
        return {"sample_set_id": set_id, "status": made["status"],
                "samples": [{"variant": s["variant"], "prompt": s["prompt"], "seed": s["seed"],
                             **({"text": s["text"]} if s["text"] is not None else {"path": s["path"]})}
                            for s in made["samples"]]}

    return generate
