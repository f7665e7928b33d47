"""The Model tab's "Which architecture?" guide, rendered from the catalog (the one source of each architecture's
trade-offs and sampling cost) and from this studio's own runs (what training takes here); and the tab builds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gradio as gr

from studio.data.service import get_version, import_dataset
from studio.models import catalog
from studio.models.catalog import Entry, architectures
from studio.store.tables import Metric, Run
from studio.ui import model_tab
from studio.ui.model_tab import architecture_guide

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"


def guide_rows(text: str) -> dict[str, str]:
    """The guide's table rows by architecture key."""
    return {line.split("`")[1]: line for line in text.splitlines() if line.startswith("| `")}


def test_every_architecture_of_the_catalog_is_in_the_guide_with_its_trade_offs_and_cost(store):
    rows = guide_rows(architecture_guide(store))
    assert set(rows) == {a.key for a in architectures()}
    for architecture in architectures():
        row = rows[architecture.key]
        assert architecture.good_at.split(";")[0].replace("'", "") in row.replace("'", "")
        assert architecture.bad_at.split(";")[0].replace("'", "") in row.replace("'", "")
    assert "| 30 network passes per sample |" in rows["starter-image"]
    assert "| 8 network passes per sample |" in rows["starter-image+flow-matching"]
    assert "prediction_type=flow_matching" in rows["starter-audio+flow-matching"]
    assert "| 1 network pass per sample |" in rows["starter-image-gan"]
    assert "| 1 network pass per sample |" in rows["starter-image-vae"]
    assert "| 450 steps of 16 at learning rate 0.003 |" in rows["starter-image"]


def test_the_sampling_steps_the_catalog_states_are_the_samplers_defaults():
    from studio.models.diffusion import DIFFUSION_STEPS, FLOW_STEPS

    assert (catalog.DIFFUSION_PASSES, catalog.FLOW_PASSES) == (DIFFUSION_STEPS, FLOW_STEPS)


def test_a_new_catalog_starter_appears_by_itself(store, monkeypatch):
    newcomer = Entry("starter-image-newcomer", "image", "vae", 0.5, 4, 64, "offline: a small conditional VAE",
                     starter=True, recommended=("max_steps=200", "per_device_train_batch_size=32"),
                     good_at="a smooth latent space", bad_at="blurrier pictures", sampling_passes=1)
    monkeypatch.setattr(catalog, "CATALOG", [*catalog.CATALOG, newcomer])
    row = guide_rows(architecture_guide(store))["starter-image-newcomer"]
    assert "a smooth latent space" in row and "blurrier pictures" in row and "200 steps of 32" in row
    assert "not measured yet" in row  # no figure in the catalog, no run here


def test_the_time_here_is_measured_from_a_run_of_the_same_architecture(store, monkeypatch):
    monkeypatch.setattr(model_tab, "device_memory", lambda: ("CPU (no GPU found)", 2.0**34))
    version = get_version(store, str(import_dataset(store, [EXAMPLES / "shapes.zip"])["dataset_id"]))

    def finished_run(model: str, items_per_second: float, resolution: int = 32, **diffusion) -> int:
        with store.session() as session:
            run = Run(project_id=version.dataset.project_id, dataset_version_id=version.id, model_ref=model,
                      method="scratch", modality="image", status="completed", steps_done=10,
                      config={"per_device_train_batch_size": 16, "diffusion": diffusion,
                              "image": {"resolution": resolution}})
            session.add(run)
            session.flush()
            session.add_all([Metric(run_id=run.id, step=step, name="items_per_second", value=items_per_second)
                             for step in range(1, 6)])
            return run.id

    flow = finished_run("starter-image", 32.0, prediction_type="flow_matching")
    rows = guide_rows(architecture_guide(store))
    assert f"measured: run #{flow} trained 32.0 items/s here" in rows["starter-image+flow-matching"]
    # 450 steps of 16 at 32 items/s: 0.5 s a step, about 4 minutes
    assert "about 4 min (0.5 s per step;" in rows["starter-image+flow-matching"]
    assert f"run #{flow}" not in rows["starter-image"]  # flow matching is another architecture
    plain = finished_run("starter-image", 8.0, prediction_type="auto")
    smaller = finished_run("starter-image", 80.0, resolution=16, prediction_type="auto")  # not the recommended size
    row = guide_rows(architecture_guide(store))["starter-image"]
    assert f"measured: run #{plain} trained 8.0 items/s here" in row and f"run #{smaller}" not in row


def test_an_estimate_scales_the_reference_cpus_figure_by_cores(store, monkeypatch):
    monkeypatch.setattr(model_tab, "device_memory", lambda: ("CPU (no GPU found)", 2.0**34))
    monkeypatch.setattr(model_tab.os, "cpu_count", lambda: 4)
    gan = next(e for e in catalog.CATALOG if e.id == "starter-image-gan")
    monkeypatch.setattr(catalog, "CATALOG", [dataclasses.replace(e, reference_seconds_per_step=0.8) if e is gan else e
                                             for e in catalog.CATALOG])
    row = guide_rows(architecture_guide(store))["starter-image-gan"]
    # 0.8 s on one thread is about 0.2 s on 4 cores; 300 steps: 1 minute
    assert "about 60 s (0.2 s per step; estimated: 0.8 s on one thread of the development machine's CPU x 1/4 cores)" \
        in row


def test_the_model_tab_builds_with_the_guide_and_the_bakeoff_panel(store):
    with gr.Blocks():
        project = gr.Dropdown(["default"], value="default")
        version = gr.Dropdown([], value=None)
        tab = model_tab.build(store, project, version)
    assert "starter-image-gan" in tab.guide.value
    assert {value for _, value in tab.bakeoff.models.choices} == {a.key for a in architectures("text")}
