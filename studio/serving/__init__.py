"""Serving (issue 15): trained checkpoints behind an OpenAI-compatible API, each deployment a process of its own.

``app`` builds the HTTP application a deployment's process runs (``python -m studio.serving.process ID``); the
studio and the CLI start, stop and watch those processes through ``service``. The web process never loads a
served model."""
