"""The cleaning steps of each modality, in the order they run."""

from studio.data.steps.audio import AUDIO_STEPS
from studio.data.steps.base import Step, StepContext, StepOutcome
from studio.data.steps.image import IMAGE_STEPS
from studio.data.steps.text import TEXT_STEPS

STEPS: dict[str, list[Step]] = {"text": TEXT_STEPS, "image": IMAGE_STEPS, "audio": AUDIO_STEPS}

__all__ = ["STEPS", "Step", "StepContext", "StepOutcome"]
