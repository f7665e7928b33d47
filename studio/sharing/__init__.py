"""Sharing what the studio made: model and dataset cards (``card``) and pushes to the Hugging Face Hub (``hub``).
The formats themselves live in ``studio.training.export``; nothing here imports a model library at import."""
