"""The Evaluate tab's "Train on these votes", through the page's own handlers (the browser's round trip is
test_web_preference_loop): what it says about a set's votes, and what one press fills in and opens."""

from __future__ import annotations

import gradio as gr
import pytest

from studio.data.service import get_version, read_manifest
from studio.ui import evaluate_tab, model_tab, train_tab
from studio.ui.model_tab import OTHER
from test_evaluation import SLOW, fake_run, long_ago, make_set, simulate
from studio.evaluation.service import cast_vote, next_pair


@pytest.fixture
def rating_store(stores):
    return stores(**SLOW)


def page(store) -> dict:
    """The Model, Train and Evaluate tabs as the studio lays them out; their handlers by name, with the
    components."""
    with gr.Blocks() as blocks:
        project = gr.Dropdown(["default"], value="default")
        version = gr.Dropdown([], value=None)
        with gr.Tabs() as tabs:
            with gr.Tab("Model", id="model"):
                model = model_tab.build(store, project, version)
            with gr.Tab("Train", id="train"):
                train = train_tab.build(store, project, version, model)
            with gr.Tab("Evaluate", id="evaluate"):
                evaluate = evaluate_tab.build(store, project, evaluate_tab.TrainingPages(tabs, version, model, train))
    handlers = {fn.name: fn.fn for fn in blocks.fns.values()}
    return {"handlers": handlers, "model": model, "train": train, "evaluate": evaluate}


def test_train_on_these_votes_makes_the_pairs_a_version_and_opens_train_filled_in(rating_store):
    store = rating_store
    run = fake_run(store)  # run 7, a LoRA on "tiny"
    set_id = make_set(store, variants=("base", f"{run}:2", f"{run}:4"), prompts=4, run_id=run)
    simulate(store, set_id, ["ann", "bob", "cy"], {"base": 0.0, f"{run}:2": 0.5, f"{run}:4": 6.0})
    line, button = evaluate_tab.votes_to_train(store, set_id, False)
    assert button.interactive is True
    assert "usable preference pairs" in line and f"run #{run} at step 4 (lora)" in line  # the board's first

    built = page(store)
    outputs = built["handlers"]["on_train_on_votes"](set_id, False, "default", None)
    message, tabs, version, choice, other, method, model_ref, train_message, filled, *settings = outputs
    assert message.startswith("Made **votes-set-") and tabs.selected == "train"
    found = get_version(store, version.value)
    rows = read_manifest(store, found)
    assert rows and all(row.get("rejected") is not None for row in rows)  # preference pairs
    assert (choice.value, other.value, model_ref) == (OTHER, f"{run}:4", f"{run}:4")
    assert method.value == "lora" and [c for c, _ in method.choices] == ["lora", "full", "scratch"]  # it goes on
    form = dict(zip(train_tab.form_inputs(built["train"], built["model"].lora), settings))
    assert form[built["train"].top_components["objective"]] == "dpo"
    assert f"run #{run} at step 4 (lora)" in train_message and "dpo" in train_message
    assert filled == [f"{run}:4", "dpo"]  # the model's change event, answered later, leaves the form as filled


def test_a_set_without_a_usable_pair_shuts_the_button_and_says_why(rating_store):
    store = rating_store
    set_id = make_set(store, variants=("base", "7:2"), prompts=2)
    line, button = evaluate_tab.votes_to_train(store, set_id, False)
    assert button.interactive is False and "Nothing to train on yet" in line and "rate some pairs first" in line
    for _ in range(2):
        shown = next_pair(store, set_id, "ann")
        cast_vote(store, shown["pair_id"], "ann", "tie", shown_at=long_ago())
    line, button = evaluate_tab.votes_to_train(store, set_id, False)
    assert button.interactive is False and "2 ties" in line and "Traceback" not in line
    outputs = page(store)["handlers"]["on_train_on_votes"](set_id, False, "default", None)
    assert "Nothing to train on yet" in outputs[0]
    assert all(o == gr.skip() for o in outputs[1:])  # nothing else changes


def test_a_runs_checkpoint_as_a_model_is_named_in_words_back_to_the_model_the_line_came_from(rating_store):
    from studio.training.runs import checkpoint_of_folder
    from studio.ui.state import model_in_words, root_model
    from test_generation import add_run

    store = rating_store
    run = fake_run(store)  # run 7, a LoRA on "tiny"
    start = str(store.path(f"runs/{run}/checkpoints/step-0000004/model"))  # as create_run records a start
    later = add_run(store, run, model_ref=start)
    assert checkpoint_of_folder(store, start) == (run, 4)
    assert checkpoint_of_folder(store, str(store.path(f"runs/{run}"))) is None
    assert model_in_words(store, f"{later}:2") == f"run #{later} at step 2 (lora)"
    assert model_in_words(store, start) == f"run #{run} at step 4 (lora)"
    assert model_in_words(store, str(later)) == f"run #{later} at its last checkpoint (lora)"
    assert model_in_words(store, "tiny") == "tiny" and model_in_words(store, "99:1") == "99:1"  # no run 99
    assert root_model(store, f"{later}:2") == root_model(store, start) == "tiny"


def test_a_checkpoint_goes_on_as_its_run_trained_and_a_starters_never_starts_anew():
    from studio.ui.model_tab import start_methods

    assert start_methods("lora") == ["lora", "full", "scratch"]  # the adapter trained further
    # a starter's weights trained further: "scratch" would drop its training, so it is last, never the default
    assert start_methods("full") == start_methods("scratch") == ["full", "lora", "scratch"]
