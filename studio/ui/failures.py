"""The safety net under every handler: an error no handler expected still reaches people as a readable message
that says what to do next, not a bare "Error" or a Python exception name alone.

Handlers catch the errors they expect (a bad file, a refused deletion) and say so in the page; this wraps each
handler of a built app once, the way Gradio's own ZeroGPU support wraps them, keeping its signature (so Gradio
still passes ``gr.Request`` and ``gr.Progress``) and its kind (a generator stays a generator, for streaming).
"""

from __future__ import annotations

import functools
import inspect
import logging

import gradio as gr
from pydantic import ValidationError

from studio.fields import describe

log = logging.getLogger("studio")


def failure_message(error: Exception) -> str:
    if isinstance(error, ValidationError):  # settings no handler checked: their fields, never pydantic's dump
        return f"{describe(error)}. Nothing already stored was lost: change the value and try again."
    return (f"Something went wrong: {type(error).__name__}: {error}. Nothing already stored was lost. Try again; if "
            "it happens again, the studio's log (the terminal running it) has the details to report.")


def _passes_through(error: Exception) -> bool:
    # gr.Error and Gradio's own control-flow errors are already meant for the page.
    return type(error).__module__.split(".")[0] == "gradio"


def readable(fn):
    """``fn`` with unexpected errors turned into ``gr.Error(failure_message(...))`` (logged with the traceback)."""
    if getattr(fn, "_readable_failures", False) or inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        return fn

    def explain(error: Exception):
        log.exception("handler %s failed", getattr(fn, "__name__", fn))
        return gr.Error(failure_message(error))

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - the point: nothing unexpected reaches people raw
                if _passes_through(error):
                    raise
                raise explain(error) from error
    else:
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - the point: nothing unexpected reaches people raw
                if _passes_through(error):
                    raise
                raise explain(error) from error
    wrapped._readable_failures = True
    return wrapped


def readable_failures(app) -> None:
    """Wraps every handler of the built Blocks ``app`` with ``readable``."""
    for block_fn in app.fns.values():
        if block_fn.fn is not None:
            block_fn.fn = readable(block_fn.fn)
