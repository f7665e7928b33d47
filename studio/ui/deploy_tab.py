"""Deploy tab: a run's checkpoint (and others of its family) served behind an OpenAI-compatible API, in a process of
its own; the deployments listed as they go from starting to running (or failed); for the one picked, live plots of
its ``/metrics`` beside the history the store kept, the quality panel of what it served, a copyable example, its
try-it page; the API keys; and its feedback made a dataset version for the next round of training.

The page calls ``studio.serving`` only: ``service`` (start without waiting, stop, restart, delete), ``keys``,
``quality``, ``feedback`` and ``watch`` (a short HTTP read of the deployment's metrics: no model work here).
"""

from __future__ import annotations

import gradio as gr  # at module level: a handler's "request: gr.Request" hint must resolve, or Gradio passes no request
import functools
import html
import importlib.util
from dataclasses import dataclass

from studio.generation.variants import variant_choices
from studio.models.registry import is_starter
from studio.ops import gpu_memory
from studio.serving.feedback import FeedbackError, feedback_to_dataset
from studio.serving.keys import ApiKeyError, add_key, list_keys, revoke_key
from studio.serving.quality import quality_panel
from studio.serving.service import (DeployError, delete_deployment, deployment_modality, get_deployment,
                                    list_deployments, restart_deployment, start_deployment, stop_deployment)
from studio.serving.watch import LiveMetrics, metrics_url
from studio.status import DeployStatus
from studio.store import Store
from studio.store.projects import DEFAULT_PROJECT
from studio.ui.confirm import NOT_CONFIRMED, confirmed, two_step_delete
from studio.ui.export_tab import checkpoint_choices
from studio.ui.forms import EMPTY_MEANS_DEFAULT, is_empty
from studio.ui.state import current_user, error_message, follow, on_lists_change, on_page_load, on_project_or_load
from studio.ui.train_tab import live_plot

LIVE_SECONDS = 3  # the picked deployment's metrics are read this often while a page shows it
DEFAULT_HOST = "127.0.0.1"
LIVE = LiveMetrics()  # the web process's samples of the deployments' /metrics, shared by its pages

INTRO = """### Deploy
Serve a run's checkpoint (and, if you like, other checkpoints of the same base model: each is a model clients pick
by name) behind an **OpenAI-compatible API**, in a process of its own: the studio stays as quick as before. Clients
use the usual libraries (`openai`, `curl`) with an **API key** made below; without one, only this machine is served.
Each answer can be rated (thumbs up or down); the ratings become a dataset version for the next round of training."""

TABLE_HEADERS = ["id", "name", "status", "url", "models", "quantisation", "weight memory", "quality check", "by"]
KEY_HEADERS = ["name", "starts with", "rate per minute", "made by", "made (UTC)", "last used (UTC)", "revoked (UTC)"]
PLOTS = (  # plot → (its y axis, the points' values it draws)
    ("requests", "requests per minute", ("requests_per_minute",)),
    ("latency", "latency (ms)", ("p50_ms", "p95_ms")),
    ("errors", "error rate", ("error_rate",)),
    ("cache", "cache hit rate", ("cache_hit_rate",)),
)
SERIES_NAMES = {"requests_per_minute": "", "p50_ms": " p50", "p95_ms": " p95", "error_rate": "", "cache_hit_rate": ""}


# ----------------------------------------------------------------------------- what the page shows

def quantize_choices(gpu: bool) -> list[tuple[str, str]]:
    """The quantisations offered: 4-bit NF4 only where there is an NVIDIA GPU and bitsandbytes."""
    choices = [("none: full precision", "none"), ("int8: weight-only, CPU and GPU (about half the memory)", "int8")]
    return choices + ([("nf4: 4-bit NormalFloat, NVIDIA GPU (about a quarter)", "nf4")] if gpu else [])


def nf4_possible() -> bool:
    """An NVIDIA GPU and bitsandbytes, asked without importing torch in the web process."""
    return bool(gpu_memory()) and importlib.util.find_spec("bitsandbytes") is not None


def extra_variant_choices(store: Store, ref: str | None, project: str | None = None) -> list[tuple[str, str]]:
    """What can be served beside checkpoint ``ref``: the other checkpoints of runs of the same base model, and the
    base model itself (a starter has no pretrained weights to serve)."""
    found = variant_choices(store, project=project)
    picked = next((c for c in found if c["ref"] == ref), None)
    if picked is None:
        return []
    others = [(c["label"], c["ref"]) for c in found if c["model"] == picked["model"] and c["ref"] != ref]
    return ([] if is_starter(picked["model"]) else [(f"the base model ({picked['model']})", "base")]) + others


def address(host: str | None, port) -> tuple[str, int | None]:
    """The typed host and port; empty fields are the defaults (this machine only; a free port). A DeployError in
    words for a port that is not one."""
    host = DEFAULT_HOST if is_empty(host) else str(host).strip()
    if is_empty(port):
        return host, None
    text = str(port).strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise DeployError(f"port: a whole number from 1 to 65535, or empty for a free one (got '{text[:40]}')")
    return host, int(text)


def _mib(count) -> str:
    return f"{count / 2**20:,.1f} MiB"


def weight_text(report: dict) -> str:
    """"24.0 MiB → 12.4 MiB (0.52×)" once the deployment has loaded its models; empty before."""
    sizes = (report or {}).get("quantize") or {}
    before, after = sizes.get("weight_bytes_before"), sizes.get("weight_bytes_after")
    if not before or after is None:
        return ""
    return _mib(before) if before == after else f"{_mib(before)} → {_mib(after)} ({after / before:.2f}×)"


def quality_text(report: dict) -> str:
    """"perplexity 31.20 → 31.45 (12 rows)" when quantisation was checked on the test split; empty otherwise."""
    quality = (report or {}).get("quality") or {}
    if quality.get("before") is None or quality.get("after") is None:
        return ""
    return f"{quality['metric']} {quality['before']:.2f} → {quality['after']:.2f} ({quality.get('rows', '?')} rows)"


def models_text(models: list[dict]) -> str:
    return ", ".join(f"{m['name']} ({m['ref']})" for m in models)


def deployments_table(deployments: list[dict]) -> list[list]:
    return [[d["deployment_id"], d["name"], d["status"], d["url"] or "", models_text(d["models"]), d["quantize"],
             weight_text(d["report"]), quality_text(d["report"]), d["created_by"] or ""] for d in deployments]


def deployment_choices(deployments: list[dict]) -> list[tuple[str, int]]:
    return [(f"#{d['deployment_id']} {d['name']} · {d['status']}", d["deployment_id"]) for d in deployments]


def details_markdown(found: dict) -> str:
    """The picked deployment in words: status, where it answers (and its try-it page), what it serves, why it
    failed."""
    lines = [f"**#{found['deployment_id']} {html.escape(found['name'])}** · **{found['status']}** · "
             f"quantisation {found['quantize']} · {html.escape(models_text(found['models']))}"]
    if found["status"] == DeployStatus.RUNNING and found["url"]:
        url = html.escape(found["url"], quote=True)
        lines.append(f"Serving at `{url}/v1` · [open its try-it page]({url}/) (a prompt box with thumbs up/down)")
    elif found["status"] == DeployStatus.STARTING:
        lines.append("Starting: loading the models (and quantising them) in its own process…")
    for label, text in (("Weight memory", weight_text(found["report"])),
                        ("Quality check on the test split", quality_text(found["report"]))):
        if text:
            lines.append(f"{label}: {html.escape(text)}")
    if found["status"] == DeployStatus.FAILED and found["error"]:
        lines.append(f"**Failed:**\n\n```\n{found['error'].replace('```', '` ` `')}\n```")
    return "\n\n".join(lines)


def example_code(found: dict, modality: str) -> tuple[str, str]:
    """(a ``curl`` command, the same with the ``openai`` Python client) that call the deployment's first model."""
    base = f"{found['url'] or 'http://127.0.0.1:PORT'}/v1"
    model = found["models"][0]["name"] if found["models"] else "base"
    route, body, call = {
        "image": ("images/generations", f'{{"model": "{model}", "prompt": "a red fox", "n": 1, '
                                        '"response_format": "b64_json"}',
                  f'image = client.images.generate(model="{model}", prompt="a red fox", response_format="b64_json")\n'
                  "open(\"fox.png\", \"wb\").write(base64.b64decode(image.data[0].b64_json))"),
        "audio": ("audio/speech", f'{{"model": "{model}", "input": "rain on a tin roof", "response_format": "wav"}}',
                  f'clip = client.audio.speech.create(model="{model}", input="rain on a tin roof", voice="alloy", '
                  'response_format="wav")\nclip.write_to_file("rain.wav")'),
    }.get(modality, ("chat/completions", f'{{"model": "{model}", "messages": [{{"role": "user", "content": '
                                         '"Once upon a time"}], "max_tokens": 48, "seed": 1}',
                     f'answer = client.chat.completions.create(model="{model}", max_tokens=48, seed=1,\n'
                     '    messages=[{"role": "user", "content": "Once upon a time"}])\n'
                     "print(answer.choices[0].message.content)"))
    curl = (f"# an API key made below, in STUDIO_API_KEY\ncurl {base}/{route} \\\n"
            f'  -H "Authorization: Bearer $STUDIO_API_KEY" -H "Content-Type: application/json" \\\n'
            f"  -d '{body}'" + (" --output rain.wav" if modality == "audio" else ""))
    python = ("import base64, os\n\nfrom openai import OpenAI\n\n"
              f'client = OpenAI(base_url="{base}", api_key=os.environ["STUDIO_API_KEY"])\n{call}\n')
    return curl, python


def _share_text(share: float | None) -> str:
    return "–" if share is None else f"{share:.0%}"


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def panel_markdown(panel: dict) -> str:
    """The quality panel over the deployment's last requests, from the store."""
    counts, diversity = panel["counts"], panel["diversity"]
    if "distinct_1" in diversity:  # the share of the answers' words (pairs of words) that are distinct
        varied = f"distinct-1 {_number(diversity['distinct_1'])}, distinct-2 {_number(diversity['distinct_2'])}"
    else:
        varied = f"mean pairwise distance {_number(diversity.get('pairwise_distance'), 3)}"
    return (f"**Quality over the last {panel['window']} requests** (from the store): {counts['requests']} requests, "
            f"{counts['answered']} answered, {counts['errors']} refused or failed, {counts['cache_hits']} from the "
            f"cache · diversity of the answers: {varied} · blocklist hits: {_share_text(panel['blocklist_share'])} "
            f"of the answers · thumbs down: {_share_text(panel['thumbs_down_share'])} of {counts['rated']} rated "
            f"({counts['up']} up, {counts['down']} down)")


def live_markdown(found: dict, latest, error: str | None) -> str:
    """The live line: what ``/metrics`` said last (the request count grows as clients call it)."""
    if found["status"] != DeployStatus.RUNNING:
        return f"Not serving ({found['status']}): the plots show what the store kept."
    if latest is None:
        return error_message(error, "Live metrics: not answering:") if error else "Live metrics: reading…"
    line = (f"**Live** (its /metrics): **{latest.requests:,.0f} requests** since it started, "
            f"{latest.errors:,.0f} refused or failed, {latest.cache_hits:,.0f} cache hits, "
            f"{latest.queue:,.0f} waiting")
    return line + (f" · {error_message(error, 'last read failed:')}" if error else "")


def plot_frames(live: list[dict], stored: list[dict]) -> dict:
    """The four plots' frames (``time``, the plot's value, ``series``): the live points (``watch``'s) and the
    stored per-minute series (``quality``'s) as lines of their own; a point without a value is left out."""
    import pandas as pd

    points = [("live", pd.to_datetime(p["time"], unit="s"), p) for p in live]
    points += [("stored", pd.to_datetime(p["minute"]).tz_convert(None),
                {**p, "requests_per_minute": p["requests"]}) for p in stored]
    frames = {}
    for name, axis, values in PLOTS:
        rows = [{"time": when, axis: float(point[value]), "series": source + SERIES_NAMES[value]}
                for source, when, point in points for value in values if point.get(value) is not None]
        frames[name] = pd.DataFrame(rows, columns=["time", axis, "series"]).astype({axis: "float64"})
    return frames


def keys_table(store: Store) -> list[list]:
    def when(moment):
        return (moment or "")[:19].replace("T", " ")

    return [[k["name"], k["prefix"] + "…", k["rate_per_minute"] or "the deployment's default", k["created_by"] or "",
             when(k["created_at"]), when(k["last_used_at"]), when(k["revoked_at"])] for k in list_keys(store)]


def active_key_names(store: Store) -> list[str]:
    return [k["name"] for k in list_keys(store) if k["active"]]


def feedback_text(made: dict) -> str:
    counts = made["counts"]
    skipped = ", ".join(f"{n} {reason}" for reason, n in made["skipped"].items())
    return (f"Dataset **{html.escape(made['dataset'])} v{made['version']}** made from the feedback: "
            f"{counts.get('example', 0)} liked answers (SFT), {counts.get('pair', 0)} liked-vs-disliked pairs "
            f"(DPO), {counts.get('thumbs', 0)} thumbs rows (KTO)" + (f"; left out: {html.escape(skipped)}" if skipped
                                                                     else "")
            + ". Pick it at the top of the page to train on it.")


# ----------------------------------------------------------------------------- the page

@dataclass
class DeployTab:
    """The Deploy tab's components."""
    checkpoint: object
    variants: object
    name: object
    quantize: object
    host: object
    port: object
    deploy: object
    message: object
    table: object
    picked: object
    stop: object
    restart: object
    delete: object
    confirm_delete: object
    armed_delete: object
    control_message: object
    details: object
    curl: object
    python: object
    live: object
    plots: dict
    panel: object
    to_dataset: object
    feedback_message: object
    key_name: object
    key_rate: object
    add_key: object
    key_shown: object
    keys: object
    key_picked: object
    revoke: object
    key_message: object
    timer: object
    shown_state: object


def build(store: Store, project) -> DeployTab:
    """The Deploy tab; its checkpoints and deployments follow the shared ``project`` selector."""
    tab = layout(store)
    wire(store, tab, project)
    return tab


def layout(store: Store) -> DeployTab:
    gr.Markdown(INTRO)
    with gr.Row():
        checkpoint = gr.Dropdown(checkpoint_choices(store, DEFAULT_PROJECT), value=None, label="Run and checkpoint",
                                 scale=3, elem_id="deploy-checkpoint")
        variants = gr.Dropdown([], value=[], multiselect=True, scale=3, elem_id="deploy-variants",
                               label="Also serve (optional): other checkpoints of the same base model")
    with gr.Row():
        name = gr.Textbox(label="Name", placeholder="empty: after the run (run-3)", max_lines=1, elem_id="deploy-name")
        quantize = gr.Dropdown(quantize_choices(nf4_possible()), value="none", label="Quantisation",
                               elem_id="deploy-quantize")
        host = gr.Textbox(label="Host", placeholder=f"{EMPTY_MEANS_DEFAULT}: {DEFAULT_HOST} (this machine only; "
                                                    "0.0.0.0: every interface)", max_lines=1, elem_id="deploy-host")
        port = gr.Textbox(label="Port", placeholder=f"{EMPTY_MEANS_DEFAULT}: a free port", max_lines=1,
                          elem_id="deploy-port")
    deploy = gr.Button("Deploy", variant="primary", elem_id="deploy-start")
    message = gr.Markdown(elem_id="deploy-message")

    gr.Markdown("#### Deployments")
    table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, elem_id="deploy-table")
    with gr.Row():
        picked = gr.Dropdown([], value=None, label="Deployment", scale=3, elem_id="deploy-pick")
        stop = gr.Button("Stop", elem_id="deploy-stop")
        restart = gr.Button("Restart", elem_id="deploy-restart")
        delete = gr.Button("Delete", variant="stop", elem_id="deploy-delete")
    confirm_delete, armed_delete = two_step_delete(
        delete, picked, lambda deployment_id: f"deployment #{deployment_id}, its request log and feedback",
        "deploy-delete-yes")
    control_message = gr.Markdown(elem_id="deploy-control-message")
    details = gr.Markdown(elem_id="deploy-details")
    live = gr.Markdown(elem_id="deploy-live")
    plots = {}
    for start in range(0, len(PLOTS), 2):
        with gr.Row():
            for plot, axis, _ in PLOTS[start:start + 2]:
                plots[plot] = gr.LinePlot(x="time", y=axis, color="series", title=axis.capitalize(), height=240,
                                          elem_id=f"deploy-plot-{plot}")
    panel = gr.Markdown(elem_id="deploy-quality")
    with gr.Row():
        to_dataset = gr.Button("Make a dataset from feedback", elem_id="deploy-feedback")
    feedback_message = gr.Markdown(elem_id="deploy-feedback-message")
    with gr.Accordion("Call it from your code", open=False):
        curl = gr.Code(language="shell", label="curl", interactive=False, elem_id="deploy-curl")
        python = gr.Code(language="python", label="Python (openai)", interactive=False, elem_id="deploy-python")

    gr.Markdown("#### API keys\nA key opens every deployment (Bearer token). It is shown once, when it is made: "
                "copy it then. A revoked key stops working at once.")
    with gr.Row():
        key_name = gr.Textbox(label="Key name", placeholder="e.g. content-team", max_lines=1, elem_id="deploy-key-name")
        key_rate = gr.Textbox(label="Requests per minute", max_lines=1, elem_id="deploy-key-rate",
                              placeholder=f"{EMPTY_MEANS_DEFAULT} of each deployment")
        add = gr.Button("Make a key", elem_id="deploy-key-add")
    key_shown = gr.Textbox(label="The new key (shown this once)", visible=False, interactive=False,
                           buttons=["copy"], elem_id="deploy-key-shown")
    keys = gr.Dataframe(headers=KEY_HEADERS, value=[], interactive=False, elem_id="deploy-keys")
    with gr.Row():
        key_picked = gr.Dropdown([], value=None, label="Key", elem_id="deploy-key-pick")
        revoke = gr.Button("Revoke", variant="stop", elem_id="deploy-key-revoke")
    key_message = gr.Markdown(elem_id="deploy-key-message")
    timer = gr.Timer(LIVE_SECONDS, active=False)
    shown_state = gr.State({})  # the lines each plot draws (see train_tab.live_plot)
    return DeployTab(checkpoint=checkpoint, variants=variants, name=name, quantize=quantize, host=host, port=port,
                     deploy=deploy, message=message, table=table, picked=picked, stop=stop, restart=restart,
                     delete=delete, confirm_delete=confirm_delete, armed_delete=armed_delete,
                     control_message=control_message, details=details, curl=curl, python=python, live=live,
                     plots=plots, panel=panel, to_dataset=to_dataset, feedback_message=feedback_message,
                     key_name=key_name, key_rate=key_rate, add_key=add, key_shown=key_shown, keys=keys,
                     key_picked=key_picked, revoke=revoke, key_message=key_message, timer=timer,
                     shown_state=shown_state)


def wire(store: Store, tab: DeployTab, project) -> None:
    follow(store, project, tab.checkpoint, checkpoint_choices)  # a checkpoint saved since is offered at once
    tab.checkpoint.change(lambda ref, p: gr.Dropdown(choices=extra_variant_choices(store, ref, p), value=[]),
                          [tab.checkpoint, project], tab.variants)

    def lists(project_value, deployment_id=None, keep: bool = True):
        """The project's deployments (table and picker; the picked one kept while it is listed)."""
        found = list_deployments(store, project_value)
        listed = {d["deployment_id"] for d in found}
        value = deployment_id if keep and deployment_id in listed else None
        return deployments_table(found), gr.Dropdown(choices=deployment_choices(found), value=value)

    def on_lists(project_value, picked):
        """A deployment started, stopped, failed or serving: the list follows by itself. ``picked`` is as it was
        when the lists changed (the person may have picked another since), so the pick is only cleared when the
        deployment is gone, never written back."""
        found = list_deployments(store, project_value)
        gone = picked is not None and picked not in {d["deployment_id"] for d in found}
        return deployments_table(found), gr.Dropdown(choices=deployment_choices(found),
                                                     **({"value": None} if gone else {}))

    on_project_or_load(project, lambda p: lists(p, keep=False), project, [tab.table, tab.picked])
    on_lists_change(store, on_lists, [project, tab.picked], [tab.table, tab.picked])

    def on_deploy(ref, extras, name, quantize, host, port, project_value, request: gr.Request):
        if not ref:
            return error_message("pick a run's checkpoint to deploy"), gr.skip(), gr.skip()
        if quantize == "nf4" and not nf4_possible():
            return error_message("nf4 needs an NVIDIA GPU and bitsandbytes: pick int8 (CPU and GPU) or none"), \
                gr.skip(), gr.skip()
        try:
            chosen_host, chosen_port = address(host, port)
            started = start_deployment(store, [ref, *(extras or [])], name=None if is_empty(name) else name.strip(),
                                       quantize=quantize or "none", host=chosen_host, port=chosen_port,
                                       project=project_value or None, actor=current_user(request), wait=False)
        except ValueError as error:  # DeployError, and the quantisation's own refusal
            return error_message(error), gr.skip(), gr.skip()
        return (f"Deployment **#{started['deployment_id']} {html.escape(started['name'])}** is starting in its own "
                "process: it is listed below and shows *running* (or why it failed) by itself.",
                *lists(project_value, started["deployment_id"]))  # picked: its details follow it

    tab.deploy.click(on_deploy, [tab.checkpoint, tab.variants, tab.name, tab.quantize, tab.host, tab.port, project],
                     [tab.message, tab.table, tab.picked])

    plot_outputs = [tab.plots[name] for name, _, _ in PLOTS]
    picked_outputs = [tab.details, tab.live, *plot_outputs, tab.panel, tab.curl, tab.python, tab.shown_state,
                      tab.timer]

    def picked_view(deployment_id, shown):
        """Everything about the picked deployment that changes by itself; the timer runs only while one is
        picked. ``shown``: the lines each plot draws, for the deployment it names (another one is drawn afresh)."""
        if (shown or {}).get("deployment") != deployment_id:
            shown = {}
        if not deployment_id:
            return ("", "", *[gr.LinePlot(value=None)] * len(PLOTS), "", "", "", {}, gr.Timer(active=False))
        try:
            found = get_deployment(store, int(deployment_id))
        except DeployError as error:
            return (error_message(error), "", *[gr.LinePlot(value=None)] * len(PLOTS), "", "", "", {},
                    gr.Timer(active=False))
        url = metrics_url(found)
        if found["status"] == DeployStatus.RUNNING and url:
            LIVE.sample(found["deployment_id"], url)
        latest, error = LIVE.latest(found["deployment_id"])
        panel = quality_panel(store, found["deployment_id"])
        frames = plot_frames(LIVE.series(found["deployment_id"]) if found["status"] == DeployStatus.RUNNING else [],
                             panel["series"])
        drawn, plots = {**(shown or {}), "deployment": deployment_id}, []
        for name, _, _ in PLOTS:
            plot, drawn[name] = live_plot(frames[name], (shown or {}).get(name, ()))
            plots.append(plot)
        curl, python = example_code(found, deployment_modality(store, found["deployment_id"]))
        return (details_markdown(found), live_markdown(found, latest, error), *plots, panel_markdown(panel), curl,
                python, drawn, gr.Timer(active=True))

    # One handler for both, each page's calls one after another (see the Train tab's refresh): apart, a view read
    # while the deployment was starting could land after one that shows it running.
    gr.on([tab.picked.change, tab.timer.tick], picked_view, [tab.picked, tab.shown_state], picked_outputs,
          show_progress="hidden", trigger_mode="always_last", api_visibility="private")

    def control(act, done: str):
        def handler(deployment_id, project_value, request: gr.Request = None):
            if not deployment_id:
                return "Pick a deployment first.", gr.skip(), gr.skip()
            try:
                act(store, int(deployment_id), actor=current_user(request))
            except DeployError as error:
                return error_message(error), gr.skip(), gr.skip()
            return done.format(id=deployment_id), *lists(project_value, int(deployment_id))
        return handler

    controls = [tab.control_message, tab.table, tab.picked]
    tab.stop.click(control(stop_deployment, "Deployment #{id} stopped."), [tab.picked, project], controls)
    restart = control(functools.partial(restart_deployment, wait=False),  # the list follows it to running
                      "Deployment #{id} is starting again: it shows *running* by itself.")
    tab.restart.click(restart, [tab.picked, project], controls)

    def on_delete(armed, deployment_id, project_value, request: gr.Request = None):
        if not confirmed(armed, deployment_id):
            return NOT_CONFIRMED, gr.skip(), gr.skip(), gr.Button(visible=False), None
        try:
            delete_deployment(store, int(deployment_id), actor=current_user(request))
        except DeployError as error:
            return error_message(error, "Nothing was deleted:"), gr.skip(), gr.skip(), gr.Button(visible=False), None
        LIVE.forget(int(deployment_id))
        return (f"Deployment #{deployment_id} deleted with its request log and feedback.",
                *lists(project_value, keep=False), gr.Button(visible=False), None)

    tab.confirm_delete.click(on_delete, [tab.armed_delete, tab.picked, project],
                             [tab.control_message, tab.table, tab.picked, tab.confirm_delete, tab.armed_delete])

    def on_feedback(deployment_id, request: gr.Request = None):
        if not deployment_id:
            return "Pick a deployment first."
        try:
            return feedback_text(feedback_to_dataset(store, int(deployment_id), actor=current_user(request)))
        except (DeployError, FeedbackError) as error:
            return error_message(error)

    tab.to_dataset.click(on_feedback, tab.picked, tab.feedback_message)  # the new version: every list follows

    wire_keys(store, tab)


def wire_keys(store: Store, tab: DeployTab) -> None:
    def key_lists(value=None):
        names = active_key_names(store)
        return keys_table(store), gr.Dropdown(choices=names, value=value if value in names else None)

    def on_add(name, rate, request: gr.Request = None):
        hidden = gr.Textbox(value="", visible=False)
        try:
            per_minute = None if is_empty(rate) else str(rate).strip()
            if per_minute is not None and not per_minute.isdigit():
                raise ApiKeyError(f"requests per minute: a whole number, or empty for each deployment's default "
                                  f"(got '{per_minute[:40]}')")
            token = add_key(store, name, actor=current_user(request),
                            rate_per_minute=None if per_minute is None else int(per_minute))
        except ApiKeyError as error:
            return error_message(error), hidden, *key_lists()
        return (f"Key **{html.escape(name.strip())}** made: copy it now, it is not shown again.",
                gr.Textbox(value=token, visible=True), *key_lists())

    def on_revoke(name, request: gr.Request = None):
        if not name:
            return "Pick a key first.", gr.skip(), *key_lists()
        try:
            revoke_key(store, name, actor=current_user(request))
        except ApiKeyError as error:
            return error_message(error), gr.skip(), *key_lists()
        return (f"Key **{html.escape(name)}** revoked: it opens no deployment any more.",
                gr.Textbox(value="", visible=False), *key_lists())

    key_outputs = [tab.key_message, tab.key_shown, tab.keys, tab.key_picked]
    tab.add_key.click(on_add, [tab.key_name, tab.key_rate], key_outputs, api_visibility="private")
    tab.revoke.click(on_revoke, tab.key_picked, key_outputs)
    on_page_load(lambda: key_lists(), None, [tab.keys, tab.key_picked])
