"""Settings fields in people's words, for the forms and the CLI alike: the label a form shows, what a field
takes, and a pydantic ``ValidationError`` as one readable line instead of pydantic's dump with ``input_value``
and a URL.

A field may carry a plain label (``Field(title=...)``) and labels for its choices
(``json_schema_extra={"choices": {"no": "full (32-bit)"}}``); its name stays the technical one (the ``--set``
key and the YAML key). A message names both, so the page's reader and the command line's find what they
saw or typed: "guidance scale (guidance_scale): must be ...". No Gradio here.
"""

from __future__ import annotations

import types
import typing

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

M = typing.TypeVar("M", bound=BaseModel)


class InvalidSettings(ValueError):
    """Settings that do not validate; the message names each field and what it takes."""


def label(name: str, field: FieldInfo) -> str:
    """What a form calls the field: its plain title, else its name in words."""
    return field.title or name.replace("_", " ")


def choice_labels(field: FieldInfo) -> dict[str, str]:
    """Plain words for a Literal field's values (a value without one is shown as it is)."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return dict(extra.get("choices") or {})


def unwrap_optional(annotation) -> tuple[object, bool]:
    """(the type, whether None is allowed): ``float | None`` → (float, True)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _bounds(field: FieldInfo) -> str:
    found = {}
    for item in field.metadata:
        for kind in ("ge", "gt", "le", "lt"):
            if isinstance(item, getattr(annotated_types, kind.capitalize())):
                found[kind] = _number(getattr(item, kind))
    low = f"at least {found['ge']}" if "ge" in found else f"above {found['gt']}" if "gt" in found else ""
    high = f"at most {found['le']}" if "le" in found else f"below {found['lt']}" if "lt" in found else ""
    if "ge" in found and "le" in found:
        return f"between {found['ge']} and {found['le']}"
    return " and ".join(part for part in (low, high) if part)


def takes(field: FieldInfo) -> str:
    """What the field accepts, in words: 'a whole number between 1 and 500', 'one of ddim, model'."""
    annotation, optional = unwrap_optional(field.annotation)
    if typing.get_origin(annotation) is typing.Literal:
        text = "one of " + ", ".join(map(str, typing.get_args(annotation)))
    elif annotation is bool:
        text = "true or false"
    elif annotation in (int, float):
        text = " ".join(part for part in ("a whole number" if annotation is int else "a number", _bounds(field))
                        if part)
    elif typing.get_origin(annotation) is list:
        text = "a list of text" if typing.get_args(annotation) == (str,) else "a list"
    else:
        text = "text"
    return text + (", or empty for the default" if optional else "")


def _field_at(model: type[BaseModel] | None, loc: tuple) -> tuple[str, FieldInfo | None]:
    """The field an error's location points at, through nested sections (``("image", "snr_gamma")``)."""
    field = None
    for part in loc:
        if model is None or part not in model.model_fields:
            return str(part), None
        field = model.model_fields[part]
        inner, _ = unwrap_optional(field.annotation)
        model = inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None
    return (str(loc[-1]) if loc else ""), field


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def describe(error: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line naming each field that failed and what it takes; ``model`` (the validated class) supplies
    the labels and the full ranges. Without it pydantic's own sentence is used, minus the dump."""
    problems, seen = [], set()
    for item in error.errors(include_url=False):
        loc = tuple(p for p in item["loc"] if isinstance(p, str))
        name, field = _field_at(model, loc)
        if loc and loc in seen:
            continue  # one line per field (a union reports each of its branches)
        seen.add(loc)
        called = name.replace("_", " ") if field is None else label(name, field)
        if field is not None and called != name:
            called = f"{called} ({name})"  # and the key to type on the command line or in YAML
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown setting '{'.'.join(loc)}'")
        elif item["type"] == "missing":
            problems.append(f"{called}: required")
        elif item["type"] in ("value_error", "assertion_error"):  # a validator's own sentence
            reason = item["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            problems.append(f"{called}: {reason[0].lower()}{reason[1:]}" if loc else reason)
        elif field is None:  # no model to say the whole range: pydantic's sentence, without its dump
            reason = f"{item['msg'][0].lower()}{item['msg'][1:]} (got {_shown(item['input'])})"
            problems.append(f"{called}: {reason}" if loc else reason)
        else:
            problems.append(f"{called}: must be {takes(field)} (got {_shown(item['input'])})")
    return "; ".join(problems)


def validated(model: type[M], data: dict) -> M:
    """``model.model_validate(data)``, with a failure raised as ``InvalidSettings`` in people's words."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InvalidSettings(describe(error, model)) from None
