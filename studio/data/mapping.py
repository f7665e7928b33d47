"""Which columns of a table hold the text: guessed from the names, shown before import, editable.

Column confusion is the most reported problem of tools like this one, so every failure names the
file, the columns it was looking for and the columns it found.
"""

from __future__ import annotations

import json

from pydantic import BaseModel

from studio.data.preferences import thumb

TEXT_NAMES = ("text", "content", "document", "body", "sentence", "passage", "story", "article")
PROMPT_NAMES = ("prompt", "instruction", "question", "query", "input_text", "user", "input")
CONTEXT_NAMES = ("input", "context")
RESPONSE_NAMES = ("response", "output", "answer", "completion", "target", "assistant", "chosen")
CHAT_NAMES = ("messages", "conversations", "conversation", "chat", "dialog", "dialogue")
LABEL_NAMES = ("label", "thumbs", "thumb", "kto_label")  # a thumbs up/down beside a prompt/response or chat
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
    label: str | None = None  # a thumbs up/down per row (KTO); default: a 'label' column beside a pair or chat

    def describe(self) -> str:
        rejected = f", rejected response from '{self.rejected}'" if self.rejected else ""
        label = f", thumbs up/down from '{self.label}'" if self.label else ""
        if self.format == "chat":
            return f"chat messages from column '{self.messages}'{rejected}{label}"
        if self.format == "pair":
            extra = f" + '{self.context}'" if self.context else ""
            return f"prompt from '{self.prompt}'{extra}, response from '{self.response}'{rejected}{label}"
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
        return complete_mapping(ColumnMapping(format="chat", messages=chat), columns)
    prompt = _find(columns, PROMPT_NAMES)
    response = _find(columns, RESPONSE_NAMES, exclude={prompt} if prompt else set())
    if prompt and response:
        context = _find(columns, CONTEXT_NAMES, exclude={prompt, response})
        return complete_mapping(ColumnMapping(format="pair", prompt=prompt, response=response, context=context),
                                columns)
    if response and str(response).lower() == "chosen" and _find(columns, ("rejected",)):
        # TRL's conversational preference form: two whole conversations sharing their prompt turns
        return complete_mapping(ColumnMapping(format="chat", messages=response), columns)
    if text := _find(columns, TEXT_NAMES):
        return ColumnMapping(format="text", text=text)
    if len(columns) == 1:
        return ColumnMapping(format="text", text=columns[0])
    return None


def complete_mapping(mapping: ColumnMapping, columns: list[str]) -> ColumnMapping:
    """``mapping`` with the preference columns it leaves unset filled from the table's own: ``rejected`` and
    ``label`` (a thumbs column) when such a column stands beside a pair or chat."""
    found = {}
    if mapping.format != "text" and mapping.rejected is None:
        found["rejected"] = _find(columns, ("rejected",))
    if mapping.format != "text" and mapping.label is None:
        found["label"] = _find(columns, LABEL_NAMES)
    return mapping.model_copy(update={k: v for k, v in found.items() if v})


def missing_columns(mapping: ColumnMapping, columns: list[str]) -> list[str]:
    wanted = {"chat": [mapping.messages], "pair": [mapping.prompt, mapping.response],
              "text": [mapping.text]}[mapping.format]
    if mapping.format != "text":
        wanted += [c for c in (mapping.context, mapping.rejected, mapping.label) if c]
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


def used_columns(mapping: ColumnMapping) -> list[str]:
    """The columns ``row_fields`` reads under ``mapping``, so a reader can leave the others unread."""
    if mapping.format == "chat":
        return [c for c in (mapping.messages, mapping.rejected, mapping.label) if c]
    if mapping.format == "pair":
        return [c for c in (mapping.prompt, mapping.context, mapping.response, mapping.rejected, mapping.label) if c]
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


def _is_conversation(value) -> bool:
    """A list of messages (a Parquet array, a JSON list, or such a list written as JSON text in a CSV cell)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str):
        return value.lstrip().startswith("[{")
    return isinstance(value, list)


def _conversation_pair(prompt, chosen, rejected) -> dict:
    """TRL's conversational preference forms → ``messages`` ending with the chosen assistant turn + ``rejected``
    (the rejected turn's content). ``prompt``: the shared turns (a list of messages, a plain question, or None
    when both conversations carry them)."""
    if _is_conversation(prompt):
        prefix = normalise_messages(prompt)
    else:
        prefix = [{"role": "user", "content": _as_text(prompt)}] if _as_text(prompt) else []
    chosen_turns, rejected_turns = prefix + normalise_messages(chosen), prefix + normalise_messages(rejected)
    if chosen_turns[:-1] != rejected_turns[:-1]:
        turn = next(n for n, (a, b) in enumerate(zip(chosen_turns, rejected_turns), 1) if a != b)
        raise ValueError(f"the chosen and rejected conversations do not share the prompt (they differ at turn {turn})")
    for name, turns in (("chosen", chosen_turns), ("rejected", rejected_turns)):
        if turns[-1]["role"] != "assistant" or not turns[-1]["content"].strip():
            raise ValueError(f"the {name} conversation does not end with an assistant answer")
    return {"messages": chosen_turns, "rejected": rejected_turns[-1]["content"]}


def _chat_fields(messages, rejected) -> dict:
    """A chat row; with ``rejected``, a preference: two conversations (TRL's form), or the studio's own form (the
    chosen conversation + the rejected answer's text)."""
    if rejected is None:
        return {"messages": normalise_messages(messages)}
    if _is_conversation(rejected):
        return _conversation_pair(None, messages, rejected)
    chosen = normalise_messages(messages)
    return _conversation_pair(chosen[:-1], chosen[-1:], [{"role": "assistant", "content": _as_text(rejected)}])


def _pair_fields(row: dict, mapping: ColumnMapping) -> dict:
    if mapping.rejected and _is_conversation(row.get(mapping.response)):
        return _conversation_pair(row.get(mapping.prompt), row.get(mapping.response), row.get(mapping.rejected))
    prompt = _as_text(row.get(mapping.prompt))
    context = _as_text(row.get(mapping.context)) if mapping.context else ""
    if context.strip():
        prompt = f"{prompt}\n\n{context}"
    fields = {"prompt": prompt, "response": _as_text(row.get(mapping.response))}
    if mapping.rejected:  # a preference dataset (prompt/chosen/rejected) keeps its rejected answer
        fields["rejected"] = _as_text(row.get(mapping.rejected))
        for name, answer in (("chosen", fields["response"]), ("rejected", fields["rejected"])):
            if not answer.strip():
                raise ValueError(f"the {name} answer is missing or empty")
    return fields


def row_fields(row: dict, mapping: ColumnMapping) -> dict:
    """The Item fields for one table row under ``mapping`` (ValueError: the row cannot be used, and why)."""
    if mapping.format == "chat":
        fields = _chat_fields(row.get(mapping.messages), row.get(mapping.rejected) if mapping.rejected else None)
    elif mapping.format == "pair":
        fields = _pair_fields(row, mapping)
    else:
        return {"text": _as_text(row.get(mapping.text))}
    if mapping.label:
        fields["label"] = thumb(row.get(mapping.label))
    return fields
