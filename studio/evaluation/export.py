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


# Why a rated pair gives no preference row (``decide_pairs``), in the words a count of them reads with ("3 ties").
LEFT_OUT = {"tie": "ties", "both_bad": "both bad", "no_majority": "without a majority", "flagged": "flagged",
            "skipped": "skipped"}


def decide_pairs(events: list[dict]) -> tuple[list[dict], Counter]:
    """Each rated pair's preference, from its counted votes (repeats, skips, and flagged votes unless they were read
    with ``include_flagged``, do not count): ``{item_key, prompt, chosen, rejected, votes}`` (sample ids) for a
    pair whose winner has more than half of its votes; the others are counted by why they are left out:
    ``tie`` / ``both_bad`` (most of its votes said so), ``no_majority`` (raters split), ``flagged`` (its only
    votes were flagged), ``skipped`` (every vote was "can't judge")."""
    votes_of: dict[str, list[dict]] = {}
    for event in events:
        if event["mode"] == "pairwise" and not event["repeat"]:
            votes_of.setdefault(event["item_key"], []).append(event)
    decided, left_out = [], Counter()
    for key, votes in votes_of.items():
        counted = [e for e in votes if e["counted"]]
        if not counted:
            left_out["flagged" if any(e["flags"] and e["choice"] != "skip" for e in votes) else "skipped"] += 1
            continue
        outcomes = Counter(e["winner_sample_id"] if e["choice"] in ("a", "b") else e["choice"] for e in counted)
        top, most = outcomes.most_common(1)[0]
        if top not in LEFT_OUT and most * 2 > len(counted):
            shown = counted[0]
            rejected = ({shown["left"]["sample_id"], shown["right"]["sample_id"]} - {top}).pop()
            decided.append({"item_key": key, "prompt": shown["prompt"], "chosen": top, "rejected": rejected,
                            "votes": len(counted)})
        else:
            alone = sum(count == most for count in outcomes.values()) == 1
            left_out[top if alone and top in ("tie", "both_bad") else "no_majority"] += 1
    return decided, left_out


def preference_rows(events: list[dict], content: dict[int, str]) -> list[dict]:
    """One ``{prompt, chosen, rejected}`` row per pair with a majority (``decide_pairs``). ``content``: sample id →
    text (or file path for images and audio)."""
    decided, _ = decide_pairs(events)
    return [{"prompt": pair["prompt"], "chosen": content[pair["chosen"]], "rejected": content[pair["rejected"]]}
            for pair in decided
            if content.get(pair["chosen"]) is not None and content.get(pair["rejected"]) is not None]


def write_preferences(rows: list[dict], out: Path) -> Path:
    return _write_atomic(Path(out), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
