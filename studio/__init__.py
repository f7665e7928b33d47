"""Gen Studio: a no-code studio for adapting generative models."""

import os

__version__ = "0.1.0"

# Private by default, in every process (web, CLI, training worker): otherwise Gradio reports each app's use and
# checks for a newer version at api.gradio.app, and huggingface_hub adds telemetry to its requests. Set here,
# before either library is imported (both read them then or later); a value already in the environment wins.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# transformers fetches "hub kernels" (compiled code from the Hugging Face Hub: rotary embeddings, norms) on CUDA by
# default once the `kernels` package is there, which it now requires: offline that fails a run, and online it runs
# code from the Hub nobody asked for (as trust_remote_code would). Liger kernels and attention are the studio's own
# settings instead. USE_HUB_KERNELS=YES in the environment turns them back on.
os.environ.setdefault("USE_HUB_KERNELS", "NO")
