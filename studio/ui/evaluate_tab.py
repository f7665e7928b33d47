"""Evaluate tab: blind rating of a sample set's outputs, the leaderboard with its intervals, preference across
a run's checkpoints, and automatic metrics on held-out data.

The rating panel is also the whole of the rater-only page (``/rate``): a rater sees prompts and outputs
labelled A and B, never variant names (those are revealed after each vote), and nothing to train or delete.
Everything here calls ``studio.evaluation``; the web process does no model work: automatic metrics are computed by a
background task (``studio.tasks``) in a process of its own.
"""

from __future__ import annotations

import gradio as gr  # at module level: a handler's "request: gr.Request" hint must resolve, or Gradio passes no request
import html
import time
from dataclasses import dataclass

from studio.evaluation.export import LEFT_OUT
from studio.evaluation.metrics import METRICS, metric_rank_agreement, metrics_table
from studio.data.items import ImportRefused
from studio.evaluation.service import EvaluationError, cast_score, cast_vote, export_votes, leaderboard, next_item, \
    next_pair, preference_dataset, preference_rounds, preference_summary, run_preference
from studio.generation.service import get_set, list_sets
from studio.store import Store
from studio.store.changes import votes_signature
from studio.store.projects import DEFAULT_PROJECT
from studio.training.runs import list_runs
from studio.ui.background import BackgroundTask
from studio.ui.model_tab import OTHER, ModelTab, start_methods
from studio.ui.plots import by_step, intervals, matrix, rounds_chart
from studio.ui.representation_panel import build_evaluate_panel
from studio.ui.state import LISTS_POLL_SECONDS, current_user, error_message, follow, model_in_words, run_start, \
    version_choices
from studio.ui.train_tab import TrainTab, config_values, form_inputs, proposed_config

PICKED_SET_PROMPT = "Press **Start** to rate this set."  # shown when another set is picked
MIN_PLAY_SECONDS = 3.0  # an audio clip counts as heard after 3 s of playing, or when it ends sooner

RATER_INTRO = """### Rate outputs
Type your name, pick a sample set and a mode, and press **Start**. You see one prompt and two outputs,
**A** and **B** (which is which changes every time); choose the better one, or *tie*, *both bad*, or *can't
judge*. In *1-5 scores* mode you see one output at a time and give it a score. The model names appear only
after your vote. Audio: play each clip (3 seconds or to its end) before voting."""

CHOICES = [("A is better", "a"), ("B is better", "b"), ("Tie", "tie"), ("Both bad", "both_bad"),
           ("Can't judge", "skip")]


def rateable_set_choices(store: Store, project: str | None = None) -> list[tuple[str, int]]:
    """The sample sets with samples (of ``project``; every project's on the rater-only page)."""
    return [(f"#{s['set_id']} {s['modality']} · {s['prompts']} prompts · {len(s['variants'])} variants", s["set_id"])
            for s in list_sets(store, project) if s["samples"]]


def metrics_run_choices(store: Store, project: str | None = None) -> list[tuple[str, int]]:
    """The runs to compute automatic metrics for (labelled by what was trained; the Train tab's picker, which names
    the dataset, is ``state.run_choices``)."""
    return [(f"#{r['run_id']} {r['method']} {r['model']} · {r['status']}", r["run_id"])
            for r in list_runs(store, project)]


# ----------------------------------------------------------------------------- the rating panel

def output_name(shown: dict | None, side: str) -> str:
    """What the page calls an output: "A" or "B" in a pair; in 1-5 scoring, where one output is shown at a time,
    "Output N" (N: the item's number, as the prompt line counts them). Blind either way: never the variant."""
    if side == "sample" or (shown or {}).get("mode") == "absolute":
        return f"Output {(shown or {}).get('progress', {}).get('done', 0) + 1}"
    return side.upper()


def _side_updates(shown: dict | None, side: str):
    """(text, image, audio) updates for side ``a`` or ``b`` of a presented pair (or one scored sample), each
    labelled with the output's name."""
    content = (shown or {}).get(side) or {}
    modality = (shown or {}).get("modality")
    name = output_name(shown, side)
    return (gr.Textbox(value=content.get("text") or "", visible=modality == "text", label=name),
            gr.Image(value=content.get("path") if modality == "image" else None, visible=modality == "image",
                     label=name),
            gr.Audio(value=content.get("path") if modality == "audio" else None, visible=modality == "audio",
                     label=name))


def _prompt_markdown(shown: dict | None) -> str:
    if not shown:
        return ""
    done, total = shown["progress"]["done"], shown["progress"]["total"]
    origin = "from the dataset's test split" if shown.get("origin") == "test_split" else "typed"
    reference = shown.get("reference") or {}
    extra = f"\n\n*Reference:* {html.escape(str(reference['text']))}" if reference.get("text") else ""
    return f"**Prompt** ({origin}; item {done + 1} of {total}):\n\n> {html.escape(shown['prompt'])}{extra}"


@dataclass
class RatingPanel:
    """The blind rating panel's components."""
    rater: object
    chosen_set: object
    mode: object
    start: object
    prompt: object
    text_a: object
    image_a: object
    audio_a: object
    column_b: object
    text_b: object
    image_b: object
    audio_b: object
    pair_buttons: object
    buttons: list  # one per CHOICES, in its order
    score_row: object
    score: object
    score_button: object
    comment: object
    result: object
    current: object  # State: the presented pair or item
    played: object  # State: seconds each clip was played
    started: object  # State: when each clip started


def build_rating(store: Store, project=None) -> RatingPanel:
    """The blind rating panel (every project's sets when ``project`` is None: the rater-only page); its ``rater``
    box is filled with the signed-in name when sign-in is on."""
    panel = rating_layout(store, every_project=project is None)
    wire_rating(store, panel, project)
    return panel


def rating_layout(store: Store, every_project: bool) -> RatingPanel:
    gr.Markdown(RATER_INTRO)
    with gr.Row():
        rater = gr.Textbox(label="Your name", elem_id="rate-name", scale=2,
                           info="With sign-in on, votes go under your signed-in name.")
        chosen_set = gr.Dropdown(rateable_set_choices(store, None if every_project else DEFAULT_PROJECT),
                                 value=None, label="Sample set", elem_id="rate-set", scale=3)
        mode = gr.Radio([("A/B comparison", "pairwise"), ("1-5 scores", "absolute")], value="pairwise",
                        label="Mode", scale=2)
        start = gr.Button("Start", variant="primary", elem_id="rate-start", scale=1)
    prompt = gr.Markdown(elem_id="rate-prompt")
    with gr.Row(elem_id="rate-sides"):  # each side named once, by its own label
        with gr.Column():
            text_a = gr.Textbox(label="A", interactive=False, lines=6, visible=False, elem_id="rate-a")
            image_a = gr.Image(label="A", interactive=False, visible=False, height=280)
            audio_a = gr.Audio(label="A", interactive=False, visible=False, elem_id="rate-audio-a")
        with gr.Column() as column_b:
            text_b = gr.Textbox(label="B", interactive=False, lines=6, visible=False, elem_id="rate-b")
            image_b = gr.Image(label="B", interactive=False, visible=False, height=280)
            audio_b = gr.Audio(label="B", interactive=False, visible=False, elem_id="rate-audio-b")
    with gr.Row(visible=False) as pair_buttons:
        buttons = [gr.Button(label, interactive=False, elem_id=f"vote-{value}") for label, value in CHOICES]
    with gr.Row(visible=False) as score_row:
        score = gr.Radio([], label="Score", elem_id="rate-score")
        score_button = gr.Button("Submit score", interactive=False, elem_id="vote-score")
    comment = gr.Textbox(label="Comment (optional)", lines=1)
    result = gr.Markdown(elem_id="rate-result")
    current = gr.State(None)   # the presented pair or item, as the service returned it
    played = gr.State({})      # seconds each clip was played: {"a": 3.2, "b": 1.0}
    started = gr.State({})     # when each clip started playing
    return RatingPanel(rater=rater, chosen_set=chosen_set, mode=mode, start=start, prompt=prompt, text_a=text_a,
                       image_a=image_a, audio_a=audio_a, column_b=column_b, text_b=text_b, image_b=image_b,
                       audio_b=audio_b, pair_buttons=pair_buttons, buttons=buttons, score_row=score_row, score=score,
                       score_button=score_button, comment=comment, result=result, current=current, played=played,
                       started=started)


def wire_rating(store: Store, tab: RatingPanel, project) -> None:
    outputs = [tab.current, tab.played, tab.started, tab.prompt, tab.text_a, tab.image_a, tab.audio_a, tab.column_b,
               tab.text_b, tab.image_b, tab.audio_b, tab.pair_buttons, tab.score_row, tab.score, tab.score_button,
               *tab.buttons]

    def present(shown: dict | None, message: str = ""):
        """Every output of the panel for ``shown`` (None: nothing left to rate)."""
        if shown is None:
            hidden = [gr.update(visible=False)] * 9
            return [None, {}, {}, message or "Nothing left for you to rate in this set — thank you!", *hidden,
                    gr.Radio(), gr.Button(interactive=False), *[gr.Button(interactive=False)] * len(tab.buttons)]
        pairwise = shown["mode"] == "pairwise"
        ready = shown["modality"] != "audio"  # text and images are both on screen at once: vote right away
        scale = [(f"{s['value']} — {s['label']}: {s['meaning']}", s["value"]) for s in shown.get("scale") or []]
        side_a = _side_updates({**shown, "a": shown.get("a") or shown.get("sample")}, "a")
        side_b = _side_updates(shown if pairwise else None, "b")
        header = _prompt_markdown(shown) + (f"\n\n{message}" if message else "")
        return [shown, {}, {}, header, *side_a, gr.Column(visible=pairwise), *side_b, gr.Row(visible=pairwise),
                gr.Row(visible=not pairwise), gr.Radio(choices=scale, value=None), gr.Button(interactive=ready),
                *[gr.Button(interactive=ready) for _ in tab.buttons]]

    def on_start(name, set_id, chosen_mode, request: gr.Request = None):
        name = current_user(request) or name
        if not set_id:
            return present(None, "Choose a sample set.")
        session = getattr(request, "session_hash", None)
        try:
            fetch = next_pair if chosen_mode == "pairwise" else next_item
            return present(fetch(store, int(set_id), name, session=session))
        except EvaluationError as error:
            return present(None, error_message(error))

    tab.start.click(on_start, [tab.rater, tab.chosen_set, tab.mode], outputs)
    # Another set picked: the last set's answer ("Nothing left…") no longer describes it. Said in the browser (no
    # server round trip), so it can never land after the answer of a Start pressed right after the pick.
    tab.chosen_set.input(None, None, tab.prompt, js=f"() => {PICKED_SET_PROMPT!r}")

    def revealed_text(outcome: dict, shown: dict) -> str:
        sides = outcome.get("revealed") or {}
        names = ", ".join(f"**{output_name(shown, side)}** was {html.escape(info['label'])}"
                          for side, info in sides.items())
        flags = "; ".join((outcome.get("flags") or {}).values())
        flag = f" **Warning:** {html.escape(flags)}" if flags else ""
        return f"{html.escape(outcome['message'])} {names}.{flag}"

    def decide(choice):
        def handler(name, set_id, chosen_mode, shown, heard, note, value=None, request: gr.Request = None):
            if not shown:
                return [gr.Markdown(), *present(None, "Press Start first.")]
            name = current_user(request) or name
            session = getattr(request, "session_hash", None)
            try:
                if shown["mode"] == "pairwise":
                    outcome = cast_vote(store, shown["pair_id"], name, choice, note, session=session,
                                        shown_at=shown.get("shown_at"), played=heard or None, set_id=shown["set_id"])
                else:
                    outcome = cast_score(store, shown["item_id"], name, value if choice == "score" else "skip",
                                         note, session=session, shown_at=shown.get("shown_at"), played=heard or None,
                                         set_id=shown["set_id"])
                fetch = next_pair if shown["mode"] == "pairwise" else next_item
                return [revealed_text(outcome, shown), *present(fetch(store, int(shown["set_id"]), name, session=session))]
            except EvaluationError as error:
                return [error_message(error), *[gr.update()] * len(outputs)]
        return handler

    common = [tab.rater, tab.chosen_set, tab.mode, tab.current, tab.played, tab.comment]
    for button, (_, value) in zip(tab.buttons, CHOICES):
        # concurrency_limit=1 per button and the service's unique (pair, rater) vote: a double click votes once
        button.click(decide(value), common, [tab.result, *outputs], concurrency_limit=1)
    tab.score_button.click(decide("score"), common + [tab.score], [tab.result, *outputs], concurrency_limit=1)

    # Audio: voting opens once each clip has played 3 s (or to its end); the play time goes with the vote.
    def on_play(side):
        def handler(when):
            return {**(when or {}), side: time.time()}
        return handler

    def on_stop(side, ended: bool):
        def handler(shown, heard, when):
            heard, when = dict(heard or {}), dict(when or {})
            if side in when:
                heard[side] = heard.get(side, 0.0) + time.time() - when.pop(side)
            if ended:
                heard[side] = max(heard.get(side, 0.0), MIN_PLAY_SECONDS)
            ready = bool(shown) and all(heard.get(s, 0.0) >= MIN_PLAY_SECONDS
                                        for s in (("a", "b") if shown.get("mode") == "pairwise" else ("a",)))
            return [heard, when, gr.Button(interactive=ready)] + [gr.Button(interactive=ready) for _ in tab.buttons]
        return handler

    # One at a time, in the order they came: at a clip's end the player reports a pause and an end together, and
    # two handlers reading `played` at once would each write back their own view, the later undoing the other.
    in_turn = dict(concurrency_id="listen-gate", concurrency_limit=1)
    for side, player in (("a", tab.audio_a), ("b", tab.audio_b)):
        player.play(on_play(side), tab.started, tab.started, **in_turn)
        player.pause(on_stop(side, False), [tab.current, tab.played, tab.started],
                     [tab.played, tab.started, tab.score_button, *tab.buttons], **in_turn)
        player.stop(on_stop(side, True), [tab.current, tab.played, tab.started],
                    [tab.played, tab.started, tab.score_button, *tab.buttons], **in_turn)

    # sets generated since the page opened are offered at once
    follow(store, project, tab.chosen_set, rateable_set_choices)


# ----------------------------------------------------------------------------- results (editors only)

def leaderboard_outputs(store: Store, set_id, include_flagged: bool):
    if not set_id:
        return "Choose a sample set.", [], None, None, None, []
    try:
        board = leaderboard(store, int(set_id), include_flagged=bool(include_flagged))
    except EvaluationError as error:
        return error_message(error), [], None, None, None, []
    rows = [[v["rank"], v["label"], _round(v["strength"]), _round(v["ci_low"]), _round(v["ci_high"]), v["wins"],
             v["losses"], v["ties"], v["both_bad"], v["votes"], "preliminary" if v["preliminary"] else ""]
            for v in board["variants"]]
    agreement = board["agreement"]
    summary = (f"**{board['votes']} counted votes** ({board['excluded']['flagged']} flagged left out, "
               f"{board['excluded']['skipped']} skipped). {board['method']}. "
               + ("*Preliminary: some variants have fewer than "
                  f"{board['min_votes']} votes.* " if board["preliminary"] else "")
               + f"\n\nAgreement: {_agreement_text(agreement)}")
    mats = board["matrices"]
    strength = intervals(board["variants"], "Preference (Bradley-Terry strength, 95 % interval)", "strength",
                         short=lambda variant: short_label(variant["variant"]))
    short = [short_label(ref) for ref in mats["variants"]]
    wins = matrix(mats["win_rate"], short, "Win rate (row against column)", names=mats["labels"]) \
        if mats["variants"] else None
    counts = matrix(mats["votes"], short, "Votes (row against column)", "{:.0f}", names=mats["labels"]) \
        if mats["variants"] else None
    scores = [[s["label"], _round(s.get("mean")), _round(s.get("ci_low")), _round(s.get("ci_high")), s.get("n"),
               "preliminary" if s["preliminary"] else ""] for s in board["scores"]["variants"]]
    return summary, rows, strength, wins, counts, scores


def votes_to_train(store: Store, set_id, include_flagged: bool):
    """(the line under the board: usable pairs, why the others are not, the proposed start; the "Train on these
    votes" button, shut when there is nothing to train on)."""
    if not set_id:
        return "", gr.Button(interactive=False)
    try:
        found = preference_summary(store, int(set_id), include_flagged=bool(include_flagged))
    except EvaluationError as error:
        return error_message(error), gr.Button(interactive=False)
    if not found["pairs"]:
        return f"**Nothing to train on yet:** {html.escape(found['message'])}.", gr.Button(interactive=False)
    left_out = ", ".join(f"{count} {LEFT_OUT.get(reason, reason)}" for reason, count in found["removed"].items()
                         if count)
    why = f" Pairs left out: {left_out}." if left_out else ""
    start = proposed_start(store, int(set_id), found["winner"])
    return (f"**{found['pairs']} usable preference pairs** in these votes.{why} Proposed start: "
            f"**{html.escape(model_in_words(store, start))}**, the leaderboard's first. *Train on these votes* keeps "
            "the pairs as a new dataset version and opens the Train tab set to train on them (DPO) from there.",
            gr.Button(interactive=True))


def proposed_start(store: Store, set_id: int, winner: dict | None) -> str:
    """Where a run on the set's votes starts: the leaderboard's winner (its ``start``, ``RUN_ID:STEP``); when the
    base leads, the base: a starter's untrained start (its run's step 0), or the pretrained model."""
    if winner and winner.get("start"):
        return winner["start"]
    found = get_set(store, set_id)
    base = next((s for s in found["samples"] if s["variant"] == "base"), None)
    if base and base["run_id"] is not None:
        return f"{base['run_id']}:{base['checkpoint_step']}"
    return found["base_model"]


def short_label(ref: str) -> str:
    """A variant's name short enough for a chart's axis and still distinct: "base" or "run 3 step 40" (the method,
    which cut the full names off at "run 1 · scratch ·", is the run's, so the run and step tell them apart)."""
    run, _, step = str(ref).partition(":")
    return f"run {run} step {step}" if step else str(ref)


def _agreement_text(agreement: dict) -> str:
    parts = []
    for key, value in agreement.items():
        if isinstance(value, (int, float)):
            parts.append(f"{key.replace('_', ' ')} {value:.2f}")
        elif isinstance(value, dict):
            inner = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in value.items() if isinstance(v, (int, float)))
            if inner:
                parts.append(f"{key.replace('_', ' ')}: {inner}")
    return "; ".join(parts) or "not enough overlapping votes yet"


def _round(value):
    return None if value is None else round(float(value), 3)


@dataclass
class EvaluateTab:
    """The Evaluate tab's components: the rating panel, the leaderboard and the run's curves."""
    rating: RatingPanel
    board_set: object
    flagged: object
    show: object
    board_summary: object
    board_table: object
    strength_plot: object
    wins_plot: object
    counts_plot: object
    score_table: object
    votes_line: object
    train_on_votes: object
    kind: object
    export: object
    exported: object
    run: object
    curve_button: object
    compute: object
    computing: BackgroundTask
    curve_text: object
    curve_plot: object
    rounds_plot: object
    metric_plot: object
    metric_table: object


@dataclass
class TrainingPages:
    """What "Train on these votes" fills in and opens: the page's tabs, the shared dataset version, the Model tab
    (the start) and the Train tab (its settings)."""
    tabs: object
    version: object
    model: ModelTab
    train: TrainTab


def build(store: Store, project=None, training: TrainingPages | None = None) -> EvaluateTab:
    """The Evaluate tab; its sample-set and run lists follow the shared ``project`` selector; "Train on these votes"
    opens the ``training`` pages."""
    tab = layout(store, project)
    wire(store, tab, project)
    build_evaluate_panel(store, project, rateable_set_choices)
    if training is not None:
        wire_train_on_votes(store, tab, project, training)
    return tab


def layout(store: Store, project) -> EvaluateTab:
    with gr.Accordion("Rate (blind)", open=True):
        rating = rating_layout(store, every_project=project is None)
        gr.Markdown("Raters who should see nothing else can use the rater-only page: **/rate** on this server.")
    with gr.Accordion("Leaderboard", open=True):
        with gr.Row():
            board_set = gr.Dropdown(rateable_set_choices(store, DEFAULT_PROJECT), value=None, label="Sample set",
                                    elem_id="board-set")
            flagged = gr.Checkbox(False, label="include votes flagged as too fast")
            show = gr.Button("Show / refresh", elem_id="board-show")
        board_summary = gr.Markdown(elem_id="board-summary")
        board_table = gr.Dataframe(headers=["rank", "variant", "strength", "95% low", "95% high", "wins", "losses",
                                            "ties", "both bad", "votes", "note"], interactive=False, elem_id="board-table")
        with gr.Row():
            strength_plot = gr.Plot(label="Strength")
            wins_plot = gr.Plot(label="Win rate")
            counts_plot = gr.Plot(label="Votes")
        with gr.Row():
            votes_line = gr.Markdown(elem_id="votes-to-train")
            train_on_votes = gr.Button("Train on these votes", interactive=False, elem_id="train-on-votes", scale=0,
                                       min_width=200)
        score_table = gr.Dataframe(headers=["variant", "mean score", "95% low", "95% high", "scores", "note"],
                                   interactive=False, label="1-5 scores")
        with gr.Row():
            kind = gr.Radio([("vote events (JSONL)", "events"), ("battles (CSV)", "battles"),
                             ("preference pairs for DPO (JSONL)", "preferences")], value="events", label="Export")
            export = gr.Button("Export")
            exported = gr.File(visible=False)
    with gr.Accordion("Across a run's checkpoints", open=False):
        with gr.Row():
            run = gr.Dropdown(metrics_run_choices(store, DEFAULT_PROJECT), value=None, label="Run", elem_id="eval-run")
            curve_button = gr.Button("Show human preference and metrics by step")
            compute = gr.Button("Compute automatic metrics for the last checkpoint", elem_id="eval-compute")
            computing = BackgroundTask(store, "eval-compute-cancel")
        curve_text = gr.Markdown()
        with gr.Row():
            curve_plot = gr.Plot(label="Human preference by step")
            rounds_plot = gr.Plot(label="Human preference across rounds", elem_id="eval-rounds")
            metric_plot = gr.Plot(label="Automatic metrics by step")
        metric_table = gr.Dataframe(interactive=False, label="Automatic metrics per checkpoint")
    return EvaluateTab(rating=rating, board_set=board_set, flagged=flagged, show=show, board_summary=board_summary,
                       board_table=board_table, strength_plot=strength_plot, wins_plot=wins_plot,
                       counts_plot=counts_plot, votes_line=votes_line, train_on_votes=train_on_votes,
                       score_table=score_table, kind=kind, export=export, exported=exported,
                       run=run, curve_button=curve_button, compute=compute, computing=computing,
                       curve_text=curve_text, curve_plot=curve_plot, rounds_plot=rounds_plot, metric_plot=metric_plot,
                       metric_table=metric_table)


def wire(store: Store, tab: EvaluateTab, project) -> None:
    wire_rating(store, tab.rating, project)
    board_outputs = [tab.board_summary, tab.board_table, tab.strength_plot, tab.wins_plot, tab.counts_plot,
                     tab.score_table, tab.votes_line, tab.train_on_votes]
    drawn_votes = gr.State(None)  # the votes the board on show counts (votes_signature)

    def board(set_id, include_flagged):
        drawn = votes_signature(store, int(set_id)) if set_id else None  # before: a vote cast meanwhile is drawn next
        return (*leaderboard_outputs(store, set_id, include_flagged), *votes_to_train(store, set_id, include_flagged),
                drawn)

    for trigger in (tab.show.click, tab.board_set.change, tab.flagged.change):  # picking a set shows its board
        trigger(board, [tab.board_set, tab.flagged], board_outputs + [drawn_votes])

    def follow_votes(set_id, include_flagged, drawn):
        """The board drawn again once votes were cast on its set (here, on the rater page or through the API)."""
        if not set_id or votes_signature(store, int(set_id)) == drawn:
            return [gr.skip()] * (len(board_outputs) + 1)
        return board(set_id, include_flagged)

    gr.Timer(LISTS_POLL_SECONDS).tick(follow_votes, [tab.board_set, tab.flagged, drawn_votes],
                                      board_outputs + [drawn_votes], show_progress="hidden", api_visibility="private")

    def on_export(set_id, chosen):
        if not set_id:
            return gr.File(visible=False)
        return gr.File(value=str(export_votes(store, int(set_id), chosen)), visible=True)

    tab.export.click(on_export, [tab.board_set, tab.kind], tab.exported)
    tab.curve_button.click(lambda r: run_outputs(store, r), tab.run,
                           [tab.curve_text, tab.curve_plot, tab.metric_plot, tab.metric_table])
    for trigger in (tab.curve_button.click, tab.run.change):
        trigger(lambda r: rounds_figure(store, r), tab.run, tab.rounds_plot)

    def on_compute(run_id, project_value, request: gr.Request):
        if not run_id:
            yield "Choose a run.", None, None, None, *tab.computing.idle()
            return
        yield from tab.computing.run("metrics", {"ref": str(run_id)}, project=project_value,
                                     actor=current_user(request),
                                     working=lambda text: (text, gr.skip(), gr.skip(), gr.skip()),
                                     done=lambda _result: run_outputs(store, run_id),
                                     failed=lambda why: (error_message(why), None, None, None))

    tab.compute.click(on_compute, [tab.run, project],
                      [tab.curve_text, tab.curve_plot, tab.metric_plot, tab.metric_table, *tab.computing.outputs],
                      show_progress="minimal")
    register_api(store)
    follow(store, project, tab.board_set, rateable_set_choices)
    follow(store, project, tab.run, metrics_run_choices)


def run_outputs(store: Store, run_id):
    """Human preference and automatic metrics against the training step for one run."""
    if not run_id:
        return "Choose a run.", None, None, None
    lines = []
    try:
        preference = run_preference(store, int(run_id))
    except EvaluationError as error:
        preference, lines = {"points": []}, [error_message(error)]
    for point in preference["points"]:
        for against in ("vs_base", "vs_previous"):
            found = point.get(against)
            if found:
                verdict = "significantly preferred" if found.get("significant") else "not significantly different"
                lines.append(f"step {point['step']} {verdict} over {found['against']} "
                             f"(P(better) {found['prob_better']:.2f}, {point['votes']} votes)")
    curve = by_step(preference["points"], "Human preference by step", "strength") if preference["points"] else None
    rows = metrics_table(store, int(run_id))
    numbers = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and k != "step"})
    table = [[r.get("step")] + [_round(r.get(k)) if isinstance(r.get(k), (int, float)) else None for k in numbers]
             for r in rows]
    lines += agreement_lines(preference["points"], rows)
    first = numbers[0] if numbers else None
    chart = by_step([{"step": r["step"], "value": r.get(first)} for r in rows], f"{first} by step", first,
                    value="value") if first else None
    return ("\n\n".join(lines) or "No votes on this run's checkpoints yet.", curve, chart,
            gr.Dataframe(value=table, headers=["step"] + numbers) if rows else None)


def rounds_figure(store: Store, run_id):
    """The rounds that led to the run (base → SFT → round 1 ...) on one chart, once two of them were rated."""
    if not run_id:
        return None
    try:
        points = preference_rounds(store, int(run_id))["points"]
    except EvaluationError:
        return None
    return rounds_chart(points) if len(points) > 1 else None


def wire_train_on_votes(store: Store, tab: EvaluateTab, project, pages: TrainingPages) -> None:
    """"Train on these votes": the board's set's preference pairs as a new dataset version, then the Train tab with
    that version, the proposed start as the model (its run's method) and DPO's settings: one click on Train."""
    model, train = pages.model, pages.train
    settings = form_inputs(train, model.lora)
    outputs = [tab.votes_line, pages.tabs, pages.version, model.choice, model.other, model.method, model.model_ref,
               train.message, train.filled_for, *settings]

    def on_train_on_votes(set_id, include_flagged, project_value, request: gr.Request = None):
        unchanged = [gr.skip()] * (len(outputs) - 1)
        if not set_id:
            return "Choose a sample set.", *unchanged
        try:
            found = preference_summary(store, int(set_id), include_flagged=bool(include_flagged))
            if not found["pairs"]:
                return votes_to_train(store, set_id, include_flagged)[0], *unchanged
            start = proposed_start(store, int(set_id), found["winner"])
            made = preference_dataset(store, int(set_id), include_flagged=bool(include_flagged),
                                      actor=current_user(request))
        except (EvaluationError, ImportRefused) as error:
            return error_message(error), *unchanged
        ref = f"{made['dataset_id']}:{made['version']}"
        begun = run_start(store, start)
        methods = start_methods(begun["method"]) if begun else ["lora", "full"]  # a pretrained base: a LoRA on it
        config = proposed_config(store, start, "dpo")
        words = html.escape(model_in_words(store, start))
        return (f"Made **{html.escape(made['name'])} v{made['version']}** ({made['items_kept']} pairs) and opened "
                "the Train tab.", gr.Tabs(selected="train"),
                gr.Dropdown(choices=version_choices(store, project_value), value=ref),
                gr.Radio(value=OTHER), gr.Textbox(value=start, visible=True),
                gr.Radio(choices=methods, value=methods[0]), start,
                f"Dataset version **{html.escape(made['name'])} v{made['version']}**: {made['items_kept']} preference "
                f"pairs from the votes on sample set #{int(set_id)}. Model: **{words}**; objective "
                f"**{config.objective}** with its recommended settings. Press **Train** to start.",
                [start, config.objective], *config_values(train, model.lora, config))

    tab.train_on_votes.click(on_train_on_votes, [tab.board_set, tab.flagged, project], outputs)


def register_api(store: Store, include_leaderboard: bool = True) -> None:
    """Gradio API endpoints for external rating tools (documented in the README): ``/rating_next_pair``,
    ``/rating_vote`` and ``/leaderboard``. Pairs come without variant names; a vote reveals them. With sign-in
    on, the rater is the signed-in account whatever name the call gives: nobody votes for someone else."""
    def rating_next_pair(set_id: int, rater: str, request: gr.Request) -> dict:
        """The next pair this rater should judge in the sample set (null when none is left)."""
        return next_pair(store, int(set_id), current_user(request) or rater, session="api") or {}

    def rating_vote(set_id: int, rater: str, pair_id: int, choice: str, comment: str = "",
                    request: gr.Request = None) -> dict:
        """Cast a vote: choice a | b | tie | both_bad | skip. A second vote on the same pair changes nothing."""
        return cast_vote(store, int(pair_id), current_user(request) or rater, choice, comment or None,
                         session="api", set_id=int(set_id))

    def leaderboard(set_id: int, include_flagged: bool = False) -> dict:
        """The sample set's Bradley-Terry leaderboard with 95 % intervals and agreement (votes flagged as too
        fast are left out unless ``include_flagged``)."""
        from studio.evaluation.service import leaderboard as board  # this function is the API's ``leaderboard``

        found = board(store, int(set_id), include_flagged=bool(include_flagged))
        return {"variants": found["variants"], "agreement": found["agreement"], "votes": found["votes"]}

    gr.api(rating_next_pair, api_name="rating_next_pair")
    gr.api(rating_vote, api_name="rating_vote")
    if include_leaderboard:
        gr.api(leaderboard, api_name="leaderboard")


def agreement_lines(points: list[dict], rows: list[dict]) -> list[str]:
    """How well each automatic metric orders the run's checkpoints the way people do (rank correlation)."""
    human = {str(p["step"]): p["strength"] for p in points if p.get("strength") is not None and p.get("step")}
    lines = []
    for name, (_, higher_is_better, _) in METRICS.items():
        values = {str(r["step"]): r[name] for r in rows if isinstance(r.get(name), (int, float))}
        if len(set(values) & set(human)) < 2:
            continue
        found = metric_rank_agreement(values, human, higher_is_better)
        if found.get("spearman") is not None:
            lines.append(f"{name} agrees with the human ranking: Spearman {found['spearman']:.2f} over "
                         f"{found['n']} checkpoints")
    return lines
