"""The settings forms are generated from the params models (studio.ui.forms): an emptied field means the field's
default in every one of them, and a number that may be left empty is shown empty, not as 0."""

from __future__ import annotations

import typing

import pytest

from studio.data.steps import STEPS
from studio.generation.options import SETTINGS
from studio.training.config import SECTIONS, TrainConfig
from studio.ui.forms import field_component, form_values

STEP_FORMS = {step.params for steps in STEPS.values() for step in steps}  # steps share some: each once
FORMS = [TrainConfig, *SECTIONS.values(), *SETTINGS.values(), *sorted(STEP_FORMS, key=lambda model: model.__name__)]


def form_fields(model) -> list[str]:
    """The fields a form shows (a section of TrainConfig is a form of its own); lists excepted: an emptied list
    of lines is no lines."""
    return [name for name, field in model.model_fields.items()
            if name not in SECTIONS and typing.get_origin(field.annotation) is not list]


@pytest.mark.parametrize("model", FORMS, ids=lambda model: model.__name__)
@pytest.mark.parametrize("empty", ["", None, "  "])
def test_an_emptied_field_is_its_default_in_every_form(model, empty):
    names = form_fields(model)
    values = form_values(model, {name: empty for name in names})
    assert model.model_validate(values).model_dump(include=set(names)) == model().model_dump(include=set(names))


def test_a_number_that_may_be_empty_shows_empty_and_whole_numbers_stay_whole():
    import gradio as gr

    from studio.generation.options import ImageSettings

    guidance = field_component("guidance_scale", ImageSettings.model_fields["guidance_scale"], None)
    assert isinstance(guidance, gr.Textbox) and guidance.value == ""  # Gradio's Number would show and send 0
    assert form_values(ImageSettings, {"guidance_scale": " 4.5 ", "steps": 12.0}) == {"guidance_scale": "4.5",
                                                                                    "steps": 12}
    assert ImageSettings.model_validate(form_values(ImageSettings, {"guidance_scale": " 4.5 "})).guidance_scale == 4.5


def test_a_run_saved_with_the_diffusion_options_under_image_loads_with_them_in_their_own_section():
    """Runs stored before the diffusion options (shared by image and audio models) had a section kept them under
    ``image``: their configs still load (resume, generation, the model card), with the values kept."""
    saved = TrainConfig(image={"resolution": 16}).model_dump()
    saved["image"].update(prediction_type="flow_matching", snr_gamma=5.0)
    del saved["diffusion"]
    config = TrainConfig.model_validate(saved)
    assert (config.diffusion.prediction_type, config.diffusion.snr_gamma, config.image.resolution) == \
        ("flow_matching", 5.0, 16)
    assert TrainConfig.from_yaml(config.to_yaml()) == config
