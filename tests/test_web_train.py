"""In a real browser: pick a dataset, start a starter-text run in the Train tab, and watch the loss plot, the
progress and the run's label update while the run trains in its own process; ask for samples, then stop it."""

from __future__ import annotations

import re

import pytest

from studio.data.service import import_dataset
from studio.settings import load_settings
from studio.store import open_store

pytestmark = pytest.mark.slow  # browser walkthroughs, studio processes: -m "not slow" leaves them out


@pytest.fixture
def home_with_corpus(web_home, tmp_path):
    corpus = tmp_path / "tales.txt"
    corpus.write_text("\n\n".join(f"The {a} fox met the {b} hen by the {c} barn." for a in ("red", "quick", "old")
                                  for b in ("white", "brown", "tiny") for c in ("big", "green", "far", "old")))
    store = open_store(load_settings(home=web_home))
    import_dataset(store, [corpus], name="tales")
    store.close()
    return web_home


PLOT_STATE = """() => {
  const plot = (id) => {
    const root = document.querySelector(id);
    if (!root) return null;
    const all = (selector) => [...root.querySelectorAll(selector)];
    return {
      axes: all('[aria-label*="-axis titled"]').map(a => a.getAttribute('aria-label')),
      legend: all('.role-legend-label text').map(t => t.textContent),
      lines: all('.mark-line path').map(p => !['', 'none'].includes(p.getAttribute('stroke') || '')),
    };
  };
  const progress = document.querySelector('#train-progress')?.innerText || '';
  return {progress, loss: plot('#loss-plot'), lr: plot('#lr-plot')};
}"""  # Vega's SVG: its axes' descriptions ("X-axis titled 'step' for a linear scale ..."), legend, line colours


def plots_while_running(page) -> dict:
    """The loss and learning-rate plots as drawn (Vega's SVG: axis descriptions, legend, line colours), read in
    one go with the progress line, once the run has logged a few steps and both plots have both axes."""
    page.wait_for_function(f"""() => {{
        const state = ({PLOT_STATE})();
        return /running · step ([3-9]|[1-9][0-9])/.test(state.progress) && state.loss && state.lr
            && state.loss.axes.length >= 2 && state.lr.axes.length >= 2;
    }}""", timeout=180_000)
    return page.evaluate(PLOT_STATE)


@pytest.mark.browser
def test_train_tab_follows_a_run_from_the_train_button_to_its_end(home_with_corpus, running_studio, browser_page):
    page = browser_page
    page.goto(running_studio)
    page.locator("#dataset-version input").click()
    page.locator("li[data-testid=dropdown-option]").first.click()
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-intro").get_by_text("tales v1").wait_for(timeout=20_000)
    page.get_by_text("Training settings", exact=True).click()
    # Far more steps than the test can see trained (hours of CPU): the run is still running whenever the test looks,
    # however fast the machine, until the test stops it; "/ 100000" below shows the typed value is the run's.
    page.get_by_label("max steps", exact=True).fill("100000")
    page.locator("#train-start").click()
    page.locator("#train-message").get_by_text("queued").wait_for(timeout=30_000)
    progress = page.locator("#train-progress")
    page.wait_for_function("/running · step [1-9]\\d* \\/ 100000/.test(document.querySelector('#train-progress')"
                           "?.innerText || '')", timeout=180_000)
    plots = plots_while_running(page)
    assert "running" in plots["progress"], plots  # looked at while the run trains, not after
    for axis in plots["loss"]["axes"] + plots["lr"]["axes"]:
        assert "linear scale" in axis, plots  # steps and values on number lines, not one category per step
    assert {"train", "validation"} <= set(plots["loss"]["legend"]), plots
    assert plots["loss"]["lines"] and all(plots["loss"]["lines"]), plots  # every series drawn with a colour
    assert plots["lr"]["lines"] and all(plots["lr"]["lines"]), plots
    lines = "[...document.querySelectorAll('#loss-plot .mark-line path')].map(p => p.getAttribute('d')).join()"
    drawn = page.evaluate(f"() => {lines}")
    page.wait_for_function(f"() => {lines} !== {drawn!r}", timeout=120_000)  # the lines grow as the run trains

    message = page.locator("#run-control-message")
    page.locator("#run-sample").click()
    message.get_by_text("Samples will be made after the current step").wait_for(timeout=30_000)
    message.get_by_text(re.compile(r"Samples made at step \d+: see them below")).wait_for(timeout=120_000)
    page.locator("#run-stop").click()  # seen what it came for
    page.wait_for_function("/stopped/.test(document.querySelector('#train-progress')?.innerText || '')",
                           timeout=240_000)
    assert "best validation loss" in progress.inner_text()
    # What was asked from the page is answered once done, never left promising what will not come.
    message.get_by_text(re.compile(r"Run #1 stopped at step \d+; its checkpoint was saved")).wait_for(timeout=30_000)
    page.wait_for_function("/checkpoint saved/.test(document.querySelector('#run-log textarea')?.value || '')",
                           timeout=30_000)
    # The Run picker's label follows the run's status (it was "#1 queued" when the Train button made it).
    page.wait_for_function("document.querySelector('#run-select input')?.value.startsWith('#1 stopped')",
                           timeout=30_000)
    page.locator("#run-select input").click()
    option = page.locator("li[data-testid=dropdown-option]").filter(has_text="#1 ")
    assert "#1 stopped ·" in option.inner_text() and "queued" not in option.inner_text(), option.inner_text()


@pytest.mark.browser
def test_a_run_made_after_the_studio_started_is_listed_when_a_page_loads(home_with_corpus, running_studio,
                                                                         browser_page):
    from studio.training import jobs
    from studio.training.config import TrainConfig

    store = open_store(load_settings(home=home_with_corpus))  # e.g. a teammate's `studio train`, after start-up
    run = jobs.create_run(store, "1", "starter-text", "scratch", TrainConfig(max_steps=1))
    store.close()
    page = browser_page
    page.goto(running_studio)
    page.get_by_role("tab", name="Train").click()
    page.locator("#run-select input").click()
    page.locator("li[data-testid=dropdown-option]").filter(has_text=f"#{run} ").first.wait_for(timeout=20_000)


@pytest.mark.browser
def test_an_audio_dataset_gets_the_audio_and_diffusion_options_in_the_train_form(web_home, tmp_path, running_studio,
                                                                               browser_page):
    from playwright.sync_api import expect

    from studio.examples.tones import make_tones
    from test_web_generate import pick

    make_tones(tmp_path / "tones", 2, 0)
    store = open_store(load_settings(home=web_home))
    import_dataset(store, [tmp_path / "tones"], name="tones")
    store.close()
    page = browser_page
    page.goto(running_studio)
    page.get_by_role("tab", name="Train").click()
    pick(page, "train-dataset", "tones v1")
    page.locator("#train-intro").get_by_text("audio").first.wait_for(timeout=30_000)
    # Only what trains an audio model: its own options and the diffusion ones (prediction type, ...) it shares
    # with image models; no block of another modality's.
    for block, shown in (("audio options", True), ("diffusion options", True), ("image options", False),
                         ("text options", False), ("augmentation (clips, while training)", True),
                         ("augmentation (pictures, while training)", False)):
        heading = page.get_by_role("button", name=block)
        expect(heading).to_be_visible(timeout=30_000) if shown else expect(heading).to_be_hidden(timeout=30_000)
    page.get_by_role("button", name="audio options").click()
    clip = page.get_by_label("clip seconds")
    expect(clip).to_have_value("0.5", timeout=30_000)  # the audio starter's settings have arrived: edit after them
    page.get_by_label("sample rate").fill("8000")
    page.get_by_role("button", name="diffusion options").click()
    page.get_by_label("what the model predicts").click()
    page.locator("li[data-testid=dropdown-option]").filter(has_text="flow matching").first.click()
    page.get_by_role("button", name="Show config as YAML").click()
    config = page.locator(".cm-content")
    expect(config).to_contain_text("learning_rate", timeout=30_000)
    config.evaluate("element => element.scrollIntoView({block: 'end'})")  # the editor draws the lines in view
    expect(config).to_contain_text("prediction_type: flow_matching", timeout=30_000)
    expect(config).to_contain_text("sample_rate: 8000")
    # what the form's augmentation makes of the first clip, as players
    page.get_by_role("button", name="augmentation (clips, while training)").click()
    page.get_by_label("added noise (SNR dB)").fill("20")
    page.get_by_role("button", name="Preview augmentation").first.click()
    page.locator("#train-augment-preview").click()
    expect(page.locator("#train-augment-message")).to_contain_text("white noise at 20 dB SNR", timeout=30_000)
    expect(page.get_by_text("item 1 · epoch 8")).to_be_visible(timeout=30_000)


@pytest.fixture
def home_with_preference_run(home_with_corpus):
    """A finished DPO run with its losses and TRL's reward curves, recorded before the studio starts."""
    from studio.status import RunStatus
    from studio.store.tables import Metric
    from studio.training import jobs
    from studio.training.config import TrainConfig

    store = open_store(load_settings(home=home_with_corpus))
    run = jobs.create_run(store, "1", "starter-text", "scratch", TrainConfig(max_steps=3))
    jobs.finish_run(store, run, RunStatus.COMPLETED)
    curves = {"train_loss": 0.6, "val_loss": 0.65, "rewards/chosen": 0.2, "rewards/rejected": -0.3,
              "rewards/accuracies": 0.8, "rewards/margins": 0.5, "val_rewards/margins": 0.4}
    with store.session() as session:
        session.add_all([Metric(run_id=run, step=step, name=name, value=value * step)
                         for step in (1, 2, 3) for name, value in curves.items()])
    store.close()
    return run


@pytest.mark.browser
def test_a_preference_run_shows_its_reward_curves_under_the_loss(home_with_preference_run, running_studio,
                                                                 browser_page):
    from test_web_generate import pick

    page = browser_page
    page.goto(running_studio)
    page.get_by_role("tab", name="Train").click()
    assert not page.locator("#rewards-plot").is_visible()  # no run picked: no reward curves
    pick(page, "run-select", f"#{home_with_preference_run} ")
    page.wait_for_function("""() => {
        const names = [...document.querySelectorAll('#rewards-plot .role-legend-label text')].map(t => t.textContent);
        return ['chosen', 'rejected', 'accuracies', 'margins', 'validation margins'].every(n => names.includes(n));
    }""", timeout=60_000)
    state = page.evaluate(PLOT_STATE)
    assert {"train", "validation"} <= set(state["loss"]["legend"]), state  # the loss plot as for any run


@pytest.mark.browser
def test_a_job_file_round_trips_through_the_train_tab(home_with_corpus, running_studio, browser_page, tmp_path):
    """"Show config as YAML" downloads the job file `studio train` reads (dataset version, model, method and every
    setting); "Load a job file" fills the page with one, and showing it again gives the very same file."""
    from playwright.sync_api import expect

    from studio.training.job_file import job_yaml, read_job

    page = browser_page
    page.goto(running_studio)
    page.locator("#dataset-version input").click()
    page.locator("li[data-testid=dropdown-option]").first.click()
    page.get_by_role("tab", name="Model").click()  # as a person choosing the model would (the tab draws its radios)
    expect(page.locator("#model-method input[value=scratch]")).to_be_checked(timeout=30_000)
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-intro").get_by_text("tales v1").wait_for(timeout=20_000)
    page.get_by_text("Training settings", exact=True).click()
    page.get_by_label("max steps", exact=True).fill("7")

    def shown_job() -> str:
        page.locator("#train-show-yaml").click()
        download = page.locator("#train-download-job")
        expect(download).to_be_visible(timeout=30_000)
        with page.expect_download() as started:
            download.click()
        return open(started.value.path(), encoding="utf-8").read()

    job = read_job(shown_job(), "job.yaml")
    assert (job.dataset, job.model, job.method) == ("1:1", "starter-text", "scratch")
    assert job.config.max_steps == 7  # what was typed, over the starter's recommended values

    edited = job.config.model_copy(update={"learning_rate": 0.0042, "max_steps": 9, "seed": 5,
                                           "report_to": ["tensorboard"]})
    text = job_yaml("1:1", "starter-text", "scratch", edited)
    path = tmp_path / "my-job.yaml"
    path.write_text(text)
    with page.expect_file_chooser() as chooser:
        page.locator("#train-load-job").click()
    chooser.value.set_files(str(path))
    page.locator("#train-message").get_by_text("Loaded my-job.yaml").wait_for(timeout=30_000)
    expect(page.get_by_label("max steps", exact=True)).to_have_value("9", timeout=30_000)
    expect(page.get_by_label("seed", exact=True)).to_have_value("5")
    assert shown_job() == text  # the page holds exactly the file: every setting came through the form and back

    # Another model and a method it does not propose first (a Hub model proposes lora): the Model tab shows both,
    # and the model's settings as written, not the ones recommended for it.
    hub = job_yaml("1:1", "HuggingFaceTB/SmolLM2-135M-Instruct", "full", edited)
    path.write_text(hub)
    with page.expect_file_chooser() as chooser:
        page.locator("#train-load-job").click()
    chooser.value.set_files(str(path))
    page.locator("#train-message").get_by_text("SmolLM2-135M-Instruct").wait_for(timeout=30_000)
    expect(page.locator("#train-intro")).to_contain_text("SmolLM2-135M-Instruct", timeout=30_000)
    page.get_by_role("tab", name="Model").click()
    expect(page.locator("#model-ref textarea, #model-ref input").first).to_have_value(
        "HuggingFaceTB/SmolLM2-135M-Instruct", timeout=30_000)
    expect(page.locator("#model-method input[value=full]")).to_be_checked(timeout=30_000)
    page.get_by_role("tab", name="Train").click()
    assert shown_job() == hub

    path.write_text(text.replace("method: scratch\n", ""))  # a file that is not a job changes nothing
    with page.expect_file_chooser() as chooser:
        page.locator("#train-load-job").click()
    chooser.value.set_files(str(path))
    page.locator("#train-message").get_by_text("my-job.yaml: method missing").wait_for(timeout=30_000)
    expect(page.get_by_label("max steps", exact=True)).to_have_value("9")
