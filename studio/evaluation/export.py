"""Writing votes out: raw events (JSONL), tidy battle rows (CSV) and preference pairs (JSONL).

The preference file has one row per rated pair, ``{"prompt", "chosen", "rejected"}``, the shape preference
tuning (DPO) expects; the Data tab imports it back as prompt/response pairs keeping ``rejected`` beside each
response (``studio.data.mapping``).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

BATTLE_COLUMNS = ("vote_id", "set_id", "rater", "session", "prompt_index", "sample_index", "seed", "origin",
                  "left_variant", "right_variant", "choice", "outcome", "winner_variant", "shown_at", "decided_at",
                  "decision_seconds", "flagged", "flag_reasons", "repeat", "counted")
OUTCOMES = {"a": "left", "b": "right", "tie": "tie", "both_bad": "both_bad", "skip": "skip"}


def _write_atomic(out: Path, text: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(out)
    return out


def write_events(events: list[dict], out: Path) -> Path:
    """Every vote as recorded, one JSON object a line."""
    return _write_atomic(Path(out), "".join(json.dumps(e, ensure_ascii=False, default=str) + "\n" for e in events))


def battle_row(event: dict) -> dict:
    left, right = event["left"], event["right"]
    winner = {"a": left["variant"], "b": right["variant"]}.get(event["choice"])
    flags = event.get("flags") or {}
    return {"vote_id": event["vote_id"], "set_id": event["set_id"], "rater": event["rater"],
            "session": event.get("session") or "", "prompt_index": event["prompt_index"],
            "sample_index": event["sample_index"], "seed": left.get("seed"), "origin": event.get("origin"),
            "left_variant": left["variant"], "right_variant": right["variant"], "choice": event["choice"],
            "outcome": OUTCOMES[event["choice"]], "winner_variant": winner or "", "shown_at": event["shown_at"],
            "decided_at": event["decided_at"], "decision_seconds": round(event["decision_seconds"], 3),
            "flagged": bool(flags), "flag_reasons": "; ".join(flags.values()), "repeat": bool(event["repeat"]),
            "counted": event["counted"]}


def write_battles(events: list[dict], out: Path) -> Path:
    """One CSV row per pairwise vote (skips, repeats and flagged votes included, marked; ``counted`` says whether
    the leaderboard uses it by default)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=BATTLE_COLUMNS)
        writer.writeheader()
        for event in events:
            if event["mode"] == "pairwise":
                writer.writerow(battle_row(event))
    partial.replace(out)
    return out


def preference_rows(events: list[dict], content: dict[int, str]) -> list[dict]:
    """One ``{prompt, chosen, rejected}`` row per pair with a majority among its counted decisive votes (pairs whose
    raters split evenly are left out). ``content``: sample id → text (or file path for images and audio)."""
    tally: dict[str, Counter] = {}
    first: dict[str, dict] = {}
    for event in events:
        if event["mode"] != "pairwise" or not event["counted"] or event["choice"] not in ("a", "b"):
            continue
        key = event["item_key"]
        side = event["left"] if event["choice"] == "a" else event["right"]
        tally.setdefault(key, Counter())[side["sample_id"]] += 1
        first.setdefault(key, event)
    rows = []
    for key, counts in tally.items():
        ranked = counts.most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            continue
        event = first[key]
        chosen = ranked[0][0]
        rejected = event["right"]["sample_id"] if event["left"]["sample_id"] == chosen else event["left"]["sample_id"]
        if content.get(chosen) is None or content.get(rejected) is None:
            continue
        rows.append({"prompt": event["prompt"], "chosen": content[chosen], "rejected": content[rejected]})
    return rows


def write_preferences(rows: list[dict], out: Path) -> Path:
    return _write_atomic(Path(out), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
