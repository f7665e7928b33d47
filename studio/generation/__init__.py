"""Generate: the base model and trained variants side by side on the same prompts, seeds and settings.

``service`` is what the UI and the CLI call; ``variants`` resolves what to compare, ``cache`` keeps models
loaded (LoRA adapters switched on one shared base), ``options`` holds the per-modality settings models and
``blocklist`` the optional output filter. Nothing here imports a model library at import time.
"""
