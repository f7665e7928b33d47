"""What the long commands show while they work (studio/cli/progress.py): a bar on a terminal, plain lines otherwise,
nothing with --json or -q; `studio train` streams its worker's own lines and says what it does before the first step;
a run is followed incrementally (metrics after the last id read, the log after the last byte read)."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import time

import pytest

from studio.cli.progress import Progress
from studio.data.service import import_dataset
from studio.evaluation.metrics import run_metrics
from studio.settings import load_settings
from studio.store import open_store
from studio.store.tables import Metric
from studio.training import jobs
from studio.training.config import TrainConfig
from studio.training.runs import log_path, progress_marks, run_ids, run_progress, run_summary


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def flags(**given) -> argparse.Namespace:
    return argparse.Namespace(**{"json": False, "quiet": False, **given})


def studio(home, *args, timeout=300):
    env = {**os.environ, "STUDIO_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "studio.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


# ----------------------------------------------------------------------------- the three forms

@pytest.mark.parametrize("given", [{"json": True}, {"quiet": True}])
def test_json_or_quiet_shows_nothing(given):
    for stream in (io.StringIO(), Terminal()):
        with Progress(flags(**given), label="run 1", stream=stream) as shown:
            shown.update(0, None, "loading the model")
            shown.say("[12:00:00] resumed from step-0000004 at step 4")
            shown.update(3, 10, "step", ["loss 1.2000"])
            shown.fraction()(0.5, "half")
        assert stream.getvalue() == ""


def test_not_a_terminal_gets_plain_lines_at_most_every_few_seconds_and_the_last():
    stream = io.StringIO()
    with Progress(flags(), label="run 1", stream=stream, every=3600) as shown:
        shown.update(0, None, "loading the model")
        shown.update(1, 10, "step", ["loss 2.0000"])  # within the interval: left out
        shown.say("[12:00:01] out of memory: micro-batch halved to 2, gradient accumulation doubled to 2; going on")
        shown.update(5, 10, "step", ["loss 1.5000", ""])
        shown.update(10, 10, "step", ["loss 1.0000"])  # the last is always said
    assert stream.getvalue().splitlines() == [
        "run 1: loading the model",
        "[12:00:01] out of memory: micro-batch halved to 2, gradient accumulation doubled to 2; going on",
        "run 1: step 10/10 · loss 1.0000"]
    assert "\r" not in stream.getvalue()


def test_fractions_are_percentages_ending_at_100_when_the_work_returns():
    stream = io.StringIO()
    with Progress(flags(), label="import", unit="%", stream=stream, every=3600) as shown:
        report = shown.fraction()
        report(0.0, "reading file 1 of 2: a.txt (0 items so far)")
        report(1.2, "cleaning")  # out of range: held to 100 %, and the last is always said
        report(0.95, "writing the dataset version")
    assert stream.getvalue().splitlines() == ["import: reading file 1 of 2: a.txt (0 items so far) 0%",
                                              "import: cleaning 100%", "import: writing the dataset version 100%"]
    with pytest.raises(KeyError), Progress(flags(), label="push", unit="%", stream=(failed := io.StringIO())) as shown:
        shown.fraction()(0.5, "uploading")
        raise KeyError("no token")
    assert failed.getvalue().splitlines() == ["push: uploading 50%"]  # not said to be done


def test_a_terminal_gets_a_bar_with_the_worker_lines_above_it():
    stream = Terminal()
    with Progress(flags(), label="run 7", unit="step", stream=stream) as shown:
        shown.update(0, None, "loading the model (starter-text)")
        shown.say("[12:00:00] preparing the data")
        shown.update(4, 8, "step", ["loss 1.2345", "about 12 s left"])
    drawn = stream.getvalue()
    assert "\r" in drawn  # drawn over itself
    assert "run 7: loading the model (starter-text)" in drawn and "0/?" not in drawn  # no bar before the total
    assert re.search(r"run 7: step:  50%\|.*\| 4/8 \[.*loss 1\.2345 · about 12 s left\]", drawn), drawn
    assert "\r[12:00:00] preparing the data\n" in drawn  # the bar cleared, the line written, the bar again


def test_train_says_what_the_run_does_until_its_first_step_then_step_loss_and_time_left():
    from studio.cli.training import _Following

    stream = io.StringIO()
    following = _Following(0, 0)

    def look(status, steps, total, lines=(), metrics=()):
        found = {"status": status, "steps": steps, "total_steps": total, "metrics": list(metrics),
                 "last_metric": 0, "log_offset": 0, "log_lines": list(lines)}
        for line in following.take(found):
            shown.say(line)
        following.update(shown, found)

    with Progress(flags(), label="run 4", stream=stream, every=0) as shown:
        look("queued", 0, 0)
        look("running", 30, 40, ["[12:00:00] loading the model (gpt2)", "a library's own warning"])  # a resume
        look("running", 0, 0, ["[12:00:09] training 40 steps: 10 batches of 4 per epoch per process, 1 process(es) "
                               "on cpu", "[12:00:10] step 1/40 · loss 2.0000 · learning rate 1.00e-03"])
        look("running", 1, 40)  # no loss yet (logging_steps): the bar counts steps all the same
        look("running", 20, 40, metrics=[{"step": 20, "name": "train_loss", "value": 1.5},
                                          {"step": 20, "name": "eta_seconds", "value": 95.0}])
    assert stream.getvalue().splitlines() == [
        "run 4: waiting in the queue",
        "[12:00:00] loading the model (gpt2)",
        "run 4: loading the model (gpt2)",
        "[12:00:09] training 40 steps: 10 batches of 4 per epoch per process, 1 process(es) on cpu",
        "run 4: training 40 steps: 10 batches of 4 per epoch per process, 1…",  # one line, shortened
        "run 4: step 1/40",
        "run 4: step 20/40 · loss 1.5000 · about 2 min left"]


# ----------------------------------------------------------------------------- reading a run incrementally

@pytest.fixture
def queued_run(store, tmp_path):
    corpus = tmp_path / "tales.txt"
    corpus.write_text("\n\n".join(f"The {a} fox met the {b} hen." for a in ("red", "old", "quick")
                                  for b in ("white", "brown", "tiny", "grey")))
    dataset = import_dataset(store, [corpus], name="tales")["dataset_id"]
    config = TrainConfig(max_steps=2, use_cpu=True)
    return store, jobs.create_run(store, str(dataset), "starter-text", "scratch", config)


def add_metrics(store, run_id, *rows):
    with store.session() as session:
        session.add_all([Metric(run_id=run_id, step=step, name=name, value=value) for step, name, value in rows])


def test_run_progress_returns_only_the_metrics_and_complete_log_lines_that_are_new(queued_run):
    store, run_id = queued_run
    assert progress_marks(store, run_id) == (0, 0)
    first = run_progress(store, run_id)
    assert (first["status"], first["metrics"], first["log_lines"], first["log_offset"]) == ("queued", [], [], 0)

    add_metrics(store, run_id, (0, "val_loss", 5.0), (1, "train_loss", 4.0))
    log = log_path(store, run_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"[12:00:00] loading the model (starter-text)\n[12:00:05] prepar")  # a line half written
    second = run_progress(store, run_id, first["last_metric"], first["log_offset"])
    assert [(m["step"], m["name"], m["value"]) for m in second["metrics"]] == [(0, "val_loss", 5.0),
                                                                               (1, "train_loss", 4.0)]
    assert second["log_lines"] == ["[12:00:00] loading the model (starter-text)"]  # the half line waits

    add_metrics(store, run_id, (2, "train_loss", 3.0))
    with open(log, "ab") as more:
        more.write(b"ing the data\n")
    third = run_progress(store, run_id, second["last_metric"], second["log_offset"])
    assert [(m["step"], m["value"]) for m in third["metrics"]] == [(2, 3.0)]  # only what is new
    assert third["log_lines"] == ["[12:00:05] preparing the data"]
    assert third["log_offset"] == log.stat().st_size
    assert progress_marks(store, run_id) == (third["last_metric"], third["log_offset"])

    again = run_progress(store, run_id, third["last_metric"], third["log_offset"])
    assert again["metrics"] == [] and again["log_lines"] == []
    log.write_bytes(b"[13:00:00] a new log\n")  # shorter than where the reader was: read from its start
    assert run_progress(store, run_id, third["last_metric"], third["log_offset"])["log_lines"] == \
        ["[13:00:00] a new log"]


def test_a_summary_without_the_history_says_what_one_with_it_says(queued_run):
    """The Train tab lists every run's summary each refresh: it reads the losses, not every metric."""
    store, run_id = queued_run
    add_metrics(store, run_id, (0, "val_loss", 5.0), (1, "train_loss", 4.0), (1, "learning_rate", 0.1),
                (2, "train_loss", 2.5), (2, "val_loss", 3.0), (3, "train_loss", 2.75))
    light, full = run_summary(store, run_id), run_summary(store, run_id, with_history=True)
    assert light["train_loss"] == full["train_loss"] == {"last": 2.75, "best": 2.5}
    assert light["val_loss"] == full["val_loss"] == {"last": 3.0, "best": 3.0}
    assert "history" not in light and len(full["history"]) == 6


def test_an_import_says_each_file_it_reads_with_the_items_so_far(store, tmp_path):
    files = []
    for name, count in (("a.txt", 3), ("b.txt", 4)):
        files.append(tmp_path / name)
        files[-1].write_text(" ".join(f"Sentence {i} of {name} says something." for i in range(count)))
    heard = []
    import_dataset(store, files, name="two", text_split="file", progress=lambda f, m: heard.append((f, m)))
    reading = [m for _, m in heard if m.startswith("reading file")]
    assert reading == ["reading file 1 of 2: a.txt (0 items so far)", "reading file 2 of 2: b.txt (1 items so far)"]
    fractions = [f for f, _ in heard]
    assert fractions == sorted(fractions) and fractions[-1] <= 1.0  # never goes back


# ----------------------------------------------------------------------------- the commands, end to end

@pytest.mark.slow
def test_train_streams_the_worker_lines_and_says_what_it_does_before_the_first_step(tmp_path):
    """Two `studio train`, one -q and one not, queued behind it, both writing to a pipe (not a terminal); then
    `generate` and `eval metrics` on the run, with and without --json, and the metrics' progress."""
    home = tmp_path / "home"
    corpus = tmp_path / "tales.txt"
    corpus.write_text("\n\n".join(f"The {a} fox met the {b} hen." for a in ("red", "old", "quick")
                                  for b in ("white", "brown", "tiny", "grey")))
    imported = studio(home, "data", "import", str(corpus))
    assert imported.returncode == 0, imported.stderr
    assert imported.stderr.splitlines()[0] == "import: reading 1 file(s) 0%", imported.stderr
    assert studio(home, "data", "import", str(corpus), "--name", "again", "-q").stderr == ""

    env = {**os.environ, "STUDIO_HOME": str(home)}
    train = [sys.executable, "-m", "studio.cli", "train", "--dataset", "1", "--model", "starter-text", "--method",
             "scratch", "--set", "eval_steps=2", "--set", "sample_steps=0"]
    quiet = subprocess.Popen([*train, "--max-steps", "2", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    store = open_store(load_settings(home=home))
    while not run_ids(store) and quiet.poll() is None:  # run 1 is the quiet one's, so the other waits behind it
        time.sleep(0.2)
    try:
        loud = subprocess.run([*train, "--max-steps", "3"], capture_output=True, text=True, env=env, timeout=400)
        quiet_out, quiet_err = quiet.communicate(timeout=400)
    finally:
        quiet.kill()
    assert quiet.returncode == 0 and quiet_err == "", quiet_err
    assert quiet_out.startswith("run 1: completed after 2 steps")
    assert loud.returncode == 0, loud.stderr
    lines = loud.stderr.splitlines()

    def first(pattern: str) -> int:
        return next(i for i, line in enumerate(lines) if re.search(pattern, line))

    assert "run 2: waiting in the queue" in lines  # behind run 1
    loading = first(r"^\[\d\d:\d\d:\d\d\] loading the model \(starter-text\)$")  # the worker's own line
    preparing = first(r"^\[\d\d:\d\d:\d\d\] preparing the data$")
    stepping = first(r"^run 2: step \d/3")
    assert loading < preparing < stepping
    assert first(r"validation loss [\d.]+ at step 0") < stepping  # streamed as the worker says it
    assert first(r"^\[\d\d:\d\d:\d\d\] checkpoint saved at step 3$") > preparing
    assert "run 2: step 3/3 · loss " in loud.stderr  # the last is always said
    assert "0/0" not in loud.stderr and "learning rate" not in loud.stderr  # the worker's step lines: the bar's
    assert "\r" not in loud.stderr  # lines, not a bar, into a pipe
    assert loud.stdout.startswith("run 2: completed after 3 steps")

    out = tmp_path / "samples"
    made = studio(home, "generate", "--variant", "base", "--variant", "2", "--prompt", "The red", "--out", str(out),
                  "--set", "max_new_tokens=4")
    assert made.returncode == 0, made.stderr
    assert made.stderr.splitlines()[0].startswith("generate: loading base") and "generate: done 2/2" in made.stderr
    assert "Loading weights" not in made.stderr  # the libraries' bars are left out
    quietly = studio(home, "generate", "--variant", "2", "--prompt", "The old", "--out", str(tmp_path / "s2"),
                     "--set", "max_new_tokens=4", "--json")
    assert quietly.returncode == 0 and quietly.stderr == "", quietly.stderr
    assert json.loads(quietly.stdout)["status"] == "completed"

    measured = studio(home, "eval", "metrics", "2")
    assert measured.returncode == 0, measured.stderr
    assert measured.stderr.startswith("metrics of 2: reading the held-out split of run 2"), measured.stderr
    assert studio(home, "eval", "metrics", "2:0", "--json").stderr == ""

    heard = []  # each metric as it starts (the command's lines are a few seconds apart: the service is asked)
    run_metrics(store, "2", force=True, progress=lambda fraction, message: heard.append((fraction, message)))
    said = [m for _, m in heard]
    assert said[0].startswith("reading the held-out split") and said[1].startswith("loading run 2")
    assert any(m.startswith("perplexity on") for m in said) and any(m.startswith("generating") for m in said)
    assert [f for f, _ in heard] == sorted(f for f, _ in heard)
