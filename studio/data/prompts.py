"""A manifest row as a prompt and the reference it expects: a prompt/response pair or a conversation gives its
prompt and the reference answer; plain text its first words and the rest as the reference continuation; images
and audio their caption and the file. The Generate tab's test-split prompts, the prompts sampled during training
and the metrics' references all come from here.
"""

from __future__ import annotations

from pathlib import Path


def prompts_of(rows: list[dict], folder: Path, n: int) -> list[str]:
    """The first ``n`` different prompts that ``rows`` give: images of one class share a caption, and the same
    prompt thrice shows nothing more than once."""
    found = (p["prompt"] for p in (prompt_and_reference(row, folder) for row in rows) if p)
    return list(dict.fromkeys(found))[:n]


def prompt_and_reference(row: dict, folder: Path) -> dict | None:
    """What ``row`` asks and the answer it expects, as ``{"prompt", "reference"}`` (None when it gives no prompt)."""
    if row.get("file"):
        caption = (row.get("caption") or "").strip()
        return {"prompt": caption, "reference": {"path": str(folder / row["file"])}} if caption else None
    if row.get("messages"):
        turns = row["messages"]
        last = max((i for i, m in enumerate(turns) if m.get("role") == "assistant"), default=None)
        users = [m for m in turns[:last] if m.get("role") == "user"] if last is not None else []
        if users:
            return {"prompt": users[-1]["content"], "reference": {"text": turns[last]["content"]}}
        return None
    if row.get("prompt"):
        return {"prompt": row["prompt"], "reference": {"text": row.get("response") or ""}}
    words = (row.get("text") or "").split()
    if len(words) < 2:
        return None
    cut = min(8, max(1, len(words) // 3))
    return {"prompt": " ".join(words[:cut]), "reference": {"text": " ".join(words[cut:])}}
