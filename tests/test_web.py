"""The web studio: starts without the model stack, serves all five tabs, and the Data tab works in a
real browser (Playwright driving Debian chromium)."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # browser walkthroughs, studio processes: -m "not slow" leaves them out

# Libraries the studio imports only when a model loads, a run trains, data is cleaned or a metric is computed. (pandas
# is not among them: Gradio itself imports it, gradio.utils -> gradio.caching -> pandas.)
HEAVY = ("torch", "transformers", "diffusers", "peft", "accelerate", "tokenizers", "safetensors", "datasketch", "ftfy",
         "imagehash", "scipy", "soundfile", "pyloudnorm", "matplotlib", "sacrebleu", "rouge_score")


def test_building_the_web_server_imports_no_model_library(tmp_path):
    """Start-up builds the whole web process (both Gradio apps, mounted) without the model stack, and keeps the
    studio's queue: four calls of a handler at once."""
    code = ("import sys\n"
            "from studio.settings import load_settings\n"
            "from studio.store import open_store\n"
            "from studio.ui.server import build_server\n"
            f"server = build_server(open_store(load_settings(home={str(tmp_path)!r})))\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
            "print(sorted({route.app.get_blocks()._queue.default_concurrency_limit\n"
            "              for route in server.routes if hasattr(getattr(route, 'app', None), 'get_blocks')}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    imported, limits = done.stdout.split("\n")[:2]
    assert imported == "", f"imported at start-up: {imported}"
    assert limits == "[4]"


def test_gradio_writes_no_type_stubs_when_the_studio_imports_it(tmp_path):
    """Gradio regenerates a .pyi next to the source of every component class it defines (~1.3 s of a 3 s start);
    imported through studio.ui it does not (studio.ui.gradio_import)."""
    (tmp_path / "my_component.py").write_text("import gradio as gr\n\n\nclass Mine(gr.Textbox):\n"
                                              "    EVENTS = ['change']\n")
    code = f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\nimport studio.ui\nimport my_component\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "my_component.pyi").exists()


def test_the_page_has_all_five_tabs(running_studio):
    config = urllib.request.urlopen(f"{running_studio}/config", timeout=10).read().decode()
    for tab in ("Data", "Model", "Train", "Generate", "Evaluate"):
        assert f'"label": "{tab}"' in config or f'"label":"{tab}"' in config


def _image_dataset(folder):
    folder.mkdir()
    for index, colour in enumerate(["red", "green", "blue"]):
        image = Image.new("RGB", (80, 80), "white")
        image.paste(colour, (10 + 8 * index, 10, 50 + 8 * index, 60 - 10 * index))
        image.save(folder / f"{colour}.png")
        (folder / f"{colour}.txt").write_text(f"a {colour} box")
    (folder / "red_again.png").write_bytes((folder / "red.png").read_bytes())
    (folder / "red_again.txt").write_text("a red box")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return sorted(folder.iterdir())


@pytest.mark.browser
def test_upload_reports_duplicate_and_corrupt_file(running_studio, browser_page, tmp_path):
    page = browser_page
    page.goto(running_studio)
    page.get_by_role("tab", name="Data").click()
    page.locator("#data-upload input[type=file]").set_input_files([str(p) for p in _image_dataset(tmp_path / "shapes")])
    # The modality is guessed from the uploaded files before anything is imported.
    page.wait_for_function("document.querySelector('#data-modality input[value=image]')?.checked === true",
                           timeout=30_000)
    page.locator("#data-import").click()
    summary = page.locator("#data-summary")
    summary.get_by_text("items kept").wait_for(timeout=60_000)
    text = summary.inner_text()
    assert "3 of 4 items kept" in text
    assert "corrupt.png" in text and ("truncated" in text or "unreadable" in text)
    report = page.locator("#data-report")
    page.wait_for_function("document.querySelector('#data-report').innerText.includes('exact duplicate of red.png')",
                           timeout=30_000)
    cells = [line.strip() for line in report.inner_text().splitlines() if line.strip()]
    row = cells.index("Exact duplicates")
    assert cells[row + 1:row + 3] == ["on", "1"]  # switched on, removed one item
    page.screenshot(path=str(tmp_path / "data_tab.png"), full_page=True)


@pytest.mark.browser
def test_an_import_that_loses_most_items_to_one_step_says_so_on_the_page(running_studio, browser_page, tmp_path):
    import numpy as np

    folder = tmp_path / "mostly_small"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for n, side in enumerate([24, 32, 40, 48, 56, 96, 128]):  # five under the 64-pixel minimum side
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"img{n}.png")
        (folder / f"img{n}.txt").write_text(f"picture {n}")
    page = browser_page
    page.goto(running_studio)
    page.get_by_role("tab", name="Data").click()
    page.locator("#data-upload input[type=file]").set_input_files([str(p) for p in sorted(folder.iterdir())])
    page.wait_for_function("document.querySelector('#data-modality input[value=image]')?.checked === true",
                           timeout=30_000)
    page.locator("#data-import").click()
    summary = page.locator("#data-summary")
    summary.get_by_text("items kept").wait_for(timeout=90_000)  # the import ran in a background worker
    text = summary.inner_text()
    assert "2 of 7 items kept" in text
    # a heading of its own, above the counts, with the step, the count and the setting that keeps them
    assert summary.get_by_role("heading", name="Warning: cleaning removed most of the data").is_visible()
    assert "min_size removed 5 of 7 images (71%)" in text
    assert "lower its min_side (now 64 pixels)" in text and "Cleaning steps → Too small" in text
    assert text.index("Warning: cleaning removed most") < text.index("2 of 7 items kept")


# The heading of every column of every table on the page (hidden tabs too: Gradio renders them), by table.
TABLE_HEADINGS = """() => [...document.querySelectorAll('table.header-table')].map(
    table => [...table.querySelectorAll('th[role=columnheader] .header-content')].map(th => th.innerText.trim()))"""


@pytest.mark.browser
def test_every_table_column_has_a_heading(running_studio, browser_page):
    page = browser_page
    page.goto(running_studio)
    for tab, table in (("Data", "data-report"), ("Evaluate", "board-table"),  # the cleaning reports; the
                       ("Deploy", "deploy-table")):                         # leaderboard and the 1-5 scores
        page.get_by_role("tab", name=tab).click()
        page.locator(f"#{table} th[role=columnheader]").first.wait_for(timeout=60_000)
        headings = page.evaluate(TABLE_HEADINGS)
        assert len(headings) >= 3 and all(all(row) for row in headings), headings
    page.get_by_role("tab", name="Data").click()
    report = page.locator("#data-report th[role=columnheader] .header-content")
    report.first.wait_for(timeout=30_000)
    assert report.all_inner_texts()[:2] == ["step", "on/off"]  # the column that says whether the step ran
