"""Form fields generated from pydantic params models, so the UI never disagrees with the CLI."""

from __future__ import annotations

import contextlib
import typing

from pydantic import BaseModel

from studio.fields import choice_labels, label, unwrap_optional

EMPTY_MEANS_DEFAULT = "empty: the default"


def is_choice_list(annotation) -> bool:
    """A list of fixed choices (``list[Literal[...]]``): shown as checkboxes, not as lines of text."""
    return typing.get_origin(annotation) is list and typing.get_origin(typing.get_args(annotation)[0]) is typing.Literal


def form_value(field, value):
    """``value`` as ``field``'s form component shows it: a list of free text as lines."""
    annotation, _ = unwrap_optional(field.annotation)
    return "\n".join(value) if typing.get_origin(annotation) is list and not is_choice_list(annotation) else value


def field_component(name: str, field, value):
    """A Gradio input for one pydantic field: Checkbox, Dropdown (Literal), Number or Textbox. The label is the
    field's plain title; the help text ends with its technical name (the ``--set`` and YAML key) when the two
    differ."""
    import gradio as gr

    shown = label(name, field)
    info = field.description
    if shown.replace(" ", "_").lower() != name:
        info = f"{info} · setting: {name}" if info else f"setting: {name}"
    # Always editable: a field that an event fills in (recommended values) must stay a field people edit.
    kwargs = {"interactive": True}
    annotation, optional = unwrap_optional(field.annotation)
    if annotation is bool:
        return gr.Checkbox(value=value, label=shown, info=info, **kwargs)
    if typing.get_origin(annotation) is typing.Literal:
        names = choice_labels(field)
        choices = [(names.get(choice, choice), choice) for choice in typing.get_args(annotation)]
        return gr.Dropdown(choices=choices, value=value, label=shown, info=info, **kwargs)
    if is_choice_list(annotation):
        return gr.CheckboxGroup(choices=list(typing.get_args(typing.get_args(annotation)[0])), value=value,
                                label=shown, info=info, **kwargs)
    if typing.get_origin(annotation) is list:
        return gr.Textbox(value=form_value(field, value), label=shown, info=(info or "") + " (one per line)", lines=2,
                          **kwargs)
    if annotation in (int, float) and not optional:
        # precision None: a whole-number field gets what was typed and the model says if it is not whole
        # (precision 0 would round 2.7 to 3 silently).
        return gr.Number(value=value, label=shown, info=info, **kwargs)
    # Text, and numbers that may be left empty: Gradio's Number shows (and sends) 0 for "no value".
    return gr.Textbox(value="" if value is None else str(value), label=shown, info=info,
                      placeholder=EMPTY_MEANS_DEFAULT if optional else None, **kwargs)


def params_form(model: type[BaseModel], values: BaseModel | None = None, *, only: list[str] | None = None,
                per_row: int | None = None) -> dict[str, object]:
    """The one way a settings form is built: a component per field of ``model`` (or of its fields named in
    ``only``), showing ``values`` (default: the model's defaults), in the caller's container, or ``per_row`` to a
    row."""
    import gradio as gr

    values = values if values is not None else model()
    names = list(only if only is not None else model.model_fields)
    form = {}
    for start in range(0, len(names), per_row or len(names) or 1):
        with gr.Row() if per_row else contextlib.nullcontext():
            for name in names[start:start + (per_row or len(names))]:
                form[name] = field_component(name, model.model_fields[name], getattr(values, name))
    return form


def is_empty(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def form_values(model: type[BaseModel], values: dict) -> dict:
    """Form values back into what ``model`` validates: lists from lines, whole numbers as int, and an emptied
    field as the field's default (None where the field allows it, e.g. 'the model's default')."""
    result = {}
    for name, value in values.items():
        field = model.model_fields[name]
        annotation, _ = unwrap_optional(field.annotation)
        if is_choice_list(annotation):
            value = list(value or [])  # a checkbox group's ticks
        elif typing.get_origin(annotation) is list:
            value = [line.strip() for line in (value or "").splitlines() if line.strip()]
        elif is_empty(value):
            value = field.get_default(call_default_factory=True)
        elif annotation is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str) and annotation in (int, float):
            value = value.strip()
        result[name] = value
    return result
