"""Gen Studio: a no-code studio for adapting generative models."""

import os

__version__ = "0.1.0"

# Private by default, in every process (web, CLI, training worker): otherwise Gradio reports each app's use and
# checks for a newer version at api.gradio.app, and huggingface_hub adds telemetry to its requests. Set here,
# before either library is imported (both read them then or later); a value already in the environment wins.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
