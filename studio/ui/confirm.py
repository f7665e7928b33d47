"""Two-step deletion in the UI: a first button arms a second, explicit one naming what will go.

The armed value is kept in a ``gr.State``; the delete handler acts only when it still equals the selection,
so a handler called without the first step (or after the selection changed) deletes nothing.
"""

from __future__ import annotations

from typing import Callable


def confirmed(armed, selected) -> bool:
    """Whether the delete button was armed for exactly what is selected now."""
    return armed not in (None, "", []) and str(armed) == str(selected)


def two_step_delete(ask, selected, describe: Callable[[object], str], elem_id: str | None = None):
    """Under ``ask`` (a "Delete …" button), a hidden "Yes, delete …" button armed for ``selected``'s value.
    Returns ``(confirm_button, armed_state)``; wire ``confirm_button.click(handler, [armed_state, selected], …)``
    and check :func:`confirmed` in the handler."""
    import gradio as gr

    armed = gr.State(None)
    confirm = gr.Button("Yes, delete", variant="stop", visible=False, elem_id=elem_id)

    def arm(value):
        if not value:
            return None, gr.Button(visible=False)
        return value, gr.Button(value=f"Yes, delete {describe(value)}", visible=True)

    ask.click(arm, selected, [armed, confirm])
    selected.change(lambda: (None, gr.Button(visible=False)), None, [armed, confirm])
    return confirm, armed


NOT_CONFIRMED = "Nothing was deleted: press the delete button, then the **Yes, delete …** button that appears."
