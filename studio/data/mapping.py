"""Which columns of a table hold the text: guessed from the names, shown before import, editable.

Column confusion is the most reported problem of tools like this one, so every failure names the
file, the columns it was looking for and the columns it found.
"""

from __future__ import annotations

import json

from pydantic import BaseModel

TEXT_NAMES = ("text", "content", "document", "body", "sentence", "passage", "story", "article")
PROMPT_NAMES = ("prompt", "instruction", "question", "query", "input_text", "user", "input")
CONTEXT_NAMES = ("input", "context")
RESPONSE_NAMES = ("response", "output", "answer", "completion", "target", "assistant", "chosen")
CHAT_NAMES = ("messages", "conversations", "conversation", "chat", "dialog", "dialogue")
ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                "bot": "assistant", "model": "assistant", "system": "system"}


class ColumnMapping(BaseModel):
    """How table rows become text items: plain ``text``, ``pair`` (prompt → response) or ``chat``."""
    format: str = "text"
    text: str | None = None
    prompt: str | None = None
    context: str | None = None
    response: str | None = None
    rejected: str | None = None  # a preference pair's rejected response; default: a 'rejected' column beside 'chosen'
    messages: str | None = None

    def describe(self) -> str:
        if self.format == "chat":
            return f"chat messages from column '{self.messages}'"
        if self.format == "pair":
            extra = f" + '{self.context}'" if self.context else ""
            rejected = f", rejected response from '{self.rejected}'" if self.rejected else ""
            return f"prompt from '{self.prompt}'{extra}, response from '{self.response}'{rejected}"
        return f"text from column '{self.text}'"


def _find(columns: list[str], names: tuple[str, ...], exclude: set[str] = frozenset()) -> str | None:
    lowered = {c.lower().strip(): c for c in columns if c not in exclude}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


def guess_mapping(columns: list[str]) -> ColumnMapping | None:
    """The most likely mapping for these column names, or None when nothing fits."""
    if chat := _find(columns, CHAT_NAMES):
        return ColumnMapping(format="chat", messages=chat)
    prompt = _find(columns, PROMPT_NAMES)
    response = _find(columns, RESPONSE_NAMES, exclude={prompt} if prompt else set())
    if prompt and response:
        context = _find(columns, CONTEXT_NAMES, exclude={prompt, response})
        return ColumnMapping(format="pair", prompt=prompt, response=response, context=context)
    if text := _find(columns, TEXT_NAMES):
        return ColumnMapping(format="text", text=text)
    if len(columns) == 1:
        return ColumnMapping(format="text", text=columns[0])
    return None


def missing_columns(mapping: ColumnMapping, columns: list[str]) -> list[str]:
    wanted = {"chat": [mapping.messages], "pair": [mapping.prompt, mapping.response],
              "text": [mapping.text]}[mapping.format]
    if mapping.format == "pair":
        wanted += [c for c in (mapping.context, mapping.rejected) if c]
    return [w or "(not chosen)" for w in wanted if w not in columns]


def mapping_problem(file: str, mapping: ColumnMapping | None, columns: list[str]) -> str | None:
    """A plain message when ``mapping`` cannot be applied to a table with ``columns``, else None."""
    found = ", ".join(columns) or "(none)"
    if mapping is None:
        return (f"could not tell which column holds the text. Columns found: {found}. "
                f"Pick the text column (or prompt/response, or messages) in the column mapping.")
    if missing := missing_columns(mapping, columns):
        return (f"column {', '.join(repr(m) for m in missing)} not found for {mapping.describe()}. "
                f"Columns found: {found}.")
    return None


def _rejected_column(mapping: ColumnMapping) -> str | None:
    return mapping.rejected or ("rejected" if str(mapping.response).lower() == "chosen" else None)


def used_columns(mapping: ColumnMapping) -> list[str]:
    """The columns ``row_fields`` reads under ``mapping``, so a reader can leave the others unread."""
    if mapping.format == "chat":
        return [mapping.messages]
    if mapping.format == "pair":
        return [c for c in (mapping.prompt, mapping.context, mapping.response, _rejected_column(mapping)) if c]
    return [mapping.text]


def _as_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN from pandas/parquet
        return ""
    return value if isinstance(value, str) else str(value)


def normalise_messages(value) -> list[dict]:
    """Chat messages in the OpenAI {role, content} shape, from that shape or ShareGPT's {from, value}."""
    if isinstance(value, str):
        value = json.loads(value)
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise ValueError("messages must be a non-empty list of {role, content}")
    messages = []
    for turn in value:
        if not isinstance(turn, dict):
            raise ValueError("each message must be an object with role and content")
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if role is None or content is None:
            raise ValueError(f"a message lacks role/content (keys: {', '.join(turn)})")
        messages.append({"role": ROLE_ALIASES.get(str(role).lower(), str(role).lower()),
                         "content": _as_text(content)})
    return messages


def row_fields(row: dict, mapping: ColumnMapping) -> dict:
    """The Item fields for one table row under ``mapping``."""
    if mapping.format == "chat":
        return {"messages": normalise_messages(row.get(mapping.messages))}
    if mapping.format == "pair":
        prompt = _as_text(row.get(mapping.prompt))
        context = _as_text(row.get(mapping.context)) if mapping.context else ""
        if context.strip():
            prompt = f"{prompt}\n\n{context}"
        fields = {"prompt": prompt, "response": _as_text(row.get(mapping.response))}
        rejected = _rejected_column(mapping)
        if rejected and rejected in row:  # a preference dataset (prompt/chosen/rejected) keeps its rejected answer
            fields["rejected"] = _as_text(row.get(rejected))
        return fields
    return {"text": _as_text(row.get(mapping.text))}
