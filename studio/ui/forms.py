"""Form fields generated from pydantic params models, so the UI never disagrees with the CLI."""

from __future__ import annotations

import typing

from pydantic import BaseModel


def field_component(name: str, field, value):
    """A Gradio input for one pydantic field: Checkbox, Dropdown (Literal), Number or Textbox."""
    import gradio as gr

    label = name.replace("_", " ")
    info = field.description
    # Always editable: a field that an event fills in (recommended values) must stay a field people edit.
    kwargs = {"interactive": True}
    annotation = field.annotation
    if annotation is bool:
        return gr.Checkbox(value=value, label=label, info=info, **kwargs)
    if typing.get_origin(annotation) is typing.Literal:
        return gr.Dropdown(choices=list(typing.get_args(annotation)), value=value, label=label, info=info, **kwargs)
    if typing.get_origin(annotation) is list:
        return gr.Textbox(value="\n".join(value), label=label, info=(info or "") + " (one per line)", lines=2,
                          **kwargs)
    if annotation in (int, float):
        return gr.Number(value=value, label=label, info=info, precision=0 if annotation is int else None, **kwargs)
    return gr.Textbox(value=value, label=label, info=info, **kwargs)


def params_form(model: type[BaseModel], values: BaseModel | None = None) -> dict[str, object]:
    """One component per field of ``model``, showing ``values`` (default: the model's defaults)."""
    values = values if values is not None else model()
    return {name: field_component(name, field, getattr(values, name)) for name, field in model.model_fields.items()}


def form_values(model: type[BaseModel], values: dict) -> dict:
    """Form values back into the types ``model`` expects (numbers from gr.Number, lists from lines)."""
    result = {}
    for name, value in values.items():
        annotation = model.model_fields[name].annotation
        if typing.get_origin(annotation) is list:
            value = [line.strip() for line in (value or "").splitlines() if line.strip()]
        elif annotation is int and value is not None:
            value = int(value)
        result[name] = value
    return result
