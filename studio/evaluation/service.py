"""Blind human rating of sample sets, used by the Evaluate tab, the CLI and the API.

Pairwise: ``next_pair`` shows a rater two samples of the same prompt and seed as "A" (left) and "B" (right),
sides drawn at random and stored with the showing (a ``rating_assignments`` row); ``cast_vote`` records the
decision and only then reveals the variants. Absolute: ``next_item`` / ``cast_score`` (1-5, meanings from
``score_scale``). Every vote keeps the rater, session, what was shown on which side, both samples' seeds and
the set's settings, shown-at and decided-at times, the client's play durations and the prompt's origin.

Votes are never lost or doubled: each is one committed row; the unique assignment of a vote makes a double
click find the first vote ("already voted"); a rater's unanswered items survive a restart and come back
first. Votes decided faster than ``eval_min_decision_seconds`` are flagged, kept, and left out of the
leaderboard by default; a share ``eval_repeat_share`` of items comes back to the same rater (sides swapped)
to measure self-consistency and is never counted twice.

``leaderboard`` ranks variants (Bradley-Terry with bootstrap intervals, see ``ranking``) with win-rate and
vote-count matrices, mean scores with intervals and agreement (``agreement``); ``run_preference`` follows one
run's checkpoints against the base and each other; ``export_votes`` writes events, battles or preference
pairs (``export``).
"""

from __future__ import annotations

import hmac
import os
import secrets
import shutil
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from studio.evaluation import pairs as choosing
from studio.evaluation.choices import EXPORT_KINDS
from studio.store import Store
from studio.store.tables import GeneratedSample, RatingAssignment, RatingVote, Run, SampleSet
from studio.training.runs import checkpoint_of_folder

if TYPE_CHECKING:
    from studio.data.service import ImportResult

PAIRWISE, ABSOLUTE = "pairwise", "absolute"
_CHOICE_ALIASES = {"a": "a", "left": "a", "b": "b", "right": "b", "tie": "tie", "both_bad": "both_bad",
                   "bothbad": "both_bad", "both bad": "both_bad", "both-bad": "both_bad", "skip": "skip",
                   "cant_judge": "skip", "can't judge": "skip", "cannot_judge": "skip"}
OUTCOME_OF_SCORE = 0.5  # a tie and "both bad" count as half a win each way in Bradley-Terry
RETRIES = 5

# The meaning of every point, shown beside the buttons (audio: the ACR scale of ITU-T P.800, i.e. MOS).
SCALES = {
    "text": ["Bad: unusable: off-topic, broken or empty",
             "Poor: mostly misses the prompt, or major errors",
             "Fair: answers the prompt with clear flaws",
             "Good: does what the prompt asks, minor flaws",
             "Excellent: does what the prompt asks, fluent, nothing to fix"],
    "image": ["Bad: does not show the prompt, or broken",
              "Poor: little of the prompt, or strong artefacts",
              "Fair: recognisably the prompt, with visible flaws",
              "Good: matches the prompt, minor flaws",
              "Excellent: matches the prompt, clean, nothing to fix"],
    "audio": ["Bad: very annoying distortion, or not the prompt at all",
              "Poor: annoying distortion, or little of the prompt",
              "Fair: slightly annoying flaws; recognisably the prompt",
              "Good: flaws perceptible but not annoying; matches the prompt",
              "Excellent: no perceptible flaws; matches the prompt"],
}


class EvaluationError(ValueError):
    """A rating request that cannot be done as asked; the message says why and what to do."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # SQLite gives naive UTC back


def _iso(moment: datetime | None) -> str | None:
    return _aware(moment).isoformat() if moment else None


def score_scale(modality: str) -> list[dict]:
    """The 1-5 scale with the meaning of each point, for the page and the API."""
    return [{"value": value, "label": meaning.split(":", 1)[0], "meaning": meaning.split(":", 1)[1].strip()}
            for value, meaning in enumerate(SCALES.get(modality, SCALES["text"]), 1)]


# ----------------------------------------------------------------------------- checking input

def _rater(rater) -> str:
    name = (rater or "").strip() if isinstance(rater, str) else ""
    if not name:
        raise EvaluationError("give a rater name (who is rating): each rater sees each item once")
    if len(name) > 200:
        raise EvaluationError("a rater name is at most 200 characters")
    return name


def _choice(choice) -> str:
    found = _CHOICE_ALIASES.get(str(choice).strip().lower()) if choice is not None else None
    if found is None:
        raise EvaluationError(f"'{choice}' is not a choice: use a (left better), b (right better), tie, both_bad "
                              "or skip (can't judge)")
    return found


def _score(score) -> int | None:
    """1-5, or None for "skip" (can't judge)."""
    if isinstance(score, str) and score.strip().lower() in ("skip", "cant_judge", "can't judge"):
        return None
    try:
        value = int(str(score).strip()) if not isinstance(score, (int, float)) or isinstance(score, bool) else score
    except ValueError:
        value = None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 5:
        raise EvaluationError(f"a score is a whole number from 1 to 5, or skip (got {score!r})")
    return value


def _moment(value, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, datetime):
            return _aware(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), timezone.utc)
        return _aware(datetime.fromisoformat(str(value)))
    except (ValueError, OverflowError, OSError) as error:
        raise EvaluationError(f"{name} must be a time (ISO 8601 or seconds since 1970), got {value!r}") from error


def _played(played) -> dict | None:
    """The client's play durations per side (seconds), e.g. ``{"a": 3.2, "b": 4.0}``."""
    if not played:
        return None
    if not isinstance(played, dict):
        raise EvaluationError("played must map a side (a, b) to the seconds it was played")
    found = {}
    for side, seconds in played.items():
        key = {"left": "a", "right": "b"}.get(str(side).lower(), str(side).lower())
        try:
            value = float(seconds)
        except (TypeError, ValueError):
            value = -1.0
        if key not in ("a", "b", "sample") or not value >= 0:
            raise EvaluationError(f"played: {side!r} → {seconds!r} is not a side (a, b) and a number of seconds")
        found[key] = value
    return found


def _set(db, set_id) -> SampleSet:
    try:
        row = db.get(SampleSet, int(set_id))
    except (TypeError, ValueError):
        row = None
    if row is None:
        raise EvaluationError(f"no sample set {set_id} (see `studio samples list`)")
    return row


def _samples(db, set_id: int) -> list[GeneratedSample]:
    return list(db.scalars(select(GeneratedSample).where(GeneratedSample.set_id == set_id)
                           .order_by(GeneratedSample.id)))


def _as_item_input(samples: list[GeneratedSample]) -> list[dict]:
    return [{"id": s.id, "variant": s.variant, "prompt_index": s.prompt_index, "sample_index": s.sample_index}
            for s in samples]


# ----------------------------------------------------------------------------- what a rater sees

def _blind_key(store: Store) -> bytes:
    folder = store.path("blind")
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / "key"
    try:
        descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another thread may be writing it right now
            value = key.read_bytes()
            if len(value) == 32:
                return value
            import time

            time.sleep(0.01)
        raise
    with os.fdopen(descriptor, "wb") as handle:
        value = secrets.token_bytes(32)
        handle.write(value)
    return value


def _blind_path(store: Store, sample: GeneratedSample) -> str:
    """A copy of a media sample under a name that does not give its variant away (sample files live in folders
    named after their variant, and a browser shows file addresses)."""
    source = store.path(sample.path)
    token = hmac.new(_blind_key(store), f"{sample.set_id}:{sample.id}".encode(), "sha256").hexdigest()[:24]
    target = store.path(f"blind/{sample.set_id}/{token}{source.suffix}")
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{secrets.token_hex(4)}.partial")
        try:
            os.link(source, partial)
        except OSError:
            shutil.copyfile(source, partial)
        partial.replace(target)
    return str(target)


def _content(store: Store, sample: GeneratedSample) -> dict:
    return {"path": _blind_path(store, sample)} if sample.path else {"text": sample.text or ""}


def _origin(set_row: SampleSet, prompt_index: int) -> str:
    references = set_row.references or []
    return "test_split" if prompt_index < len(references) and references[prompt_index] else "typed"


def _reference(store: Store, set_row: SampleSet, prompt_index: int) -> dict | None:
    references = set_row.references or []
    reference = references[prompt_index] if prompt_index < len(references) else None
    if reference and reference.get("path"):
        return {**reference, "path": str(store.path(reference["path"]))}
    return reference or None


def _presentation(store: Store, db, assignment: RatingAssignment, set_row: SampleSet, total: int) -> dict:
    """What the page or CLI shows: the prompt and the contents, never the variants."""
    left = db.get(GeneratedSample, assignment.left_sample_id)
    done = len(list(db.scalars(select(RatingVote.id).where(
        RatingVote.set_id == set_row.id, RatingVote.rater == assignment.rater, RatingVote.mode == assignment.mode,
        RatingVote.repeat == 0))))
    shown = {"set_id": set_row.id, "mode": assignment.mode, "modality": set_row.modality, "prompt": left.prompt,
             "prompt_index": assignment.prompt_index, "origin": _origin(set_row, assignment.prompt_index),
             "reference": _reference(store, set_row, assignment.prompt_index), "shown_at": _iso(assignment.shown_at),
             "progress": {"done": done, "total": total}}
    if assignment.mode == PAIRWISE:
        right = db.get(GeneratedSample, assignment.right_sample_id)
        return {"pair_id": assignment.id, **shown, "a": _content(store, left), "b": _content(store, right)}
    return {"item_id": assignment.id, **shown, "sample": _content(store, left), "scale": score_scale(set_row.modality)}


# ----------------------------------------------------------------------------- choosing what comes next

def _pending(db, set_id: int, rater: str, mode: str) -> list[RatingAssignment]:
    voted = select(RatingVote.assignment_id).where(RatingVote.set_id == set_id)
    return list(db.scalars(select(RatingAssignment).where(
        RatingAssignment.set_id == set_id, RatingAssignment.rater == rater, RatingAssignment.mode == mode,
        RatingAssignment.id.not_in(voted)).order_by(RatingAssignment.id)))


def _items(db, set_row: SampleSet, mode: str) -> list[choosing.Item]:
    samples = _as_item_input(_samples(db, set_row.id))
    return choosing.pair_items(samples) if mode == PAIRWISE else choosing.single_items(samples)


def _pick(store: Store, db, set_row: SampleSet, rater: str, mode: str, items: list[choosing.Item],
          rng=None) -> tuple[choosing.Item, int, bool] | None:
    """(item, repeat, first sample on the left) for a new showing, or None when the rater has seen everything."""
    rng = rng or choosing._random
    mine = list(db.scalars(select(RatingAssignment).where(
        RatingAssignment.set_id == set_row.id, RatingAssignment.rater == rater, RatingAssignment.mode == mode)))
    seen = {a.item_key for a in mine if a.repeat == 0}
    repeated = {a.item_key for a in mine if a.repeat}
    candidates = [item for item in items if item.key not in seen]
    if not candidates:
        return None
    by_key = {item.key: item for item in items}
    share = store.settings.eval_repeat_share
    if share > 0 and rng.random() < share:
        votes = {v.assignment_id: v for v in db.scalars(select(RatingVote).where(
            RatingVote.set_id == set_row.id, RatingVote.rater == rater, RatingVote.mode == mode))}
        answered = sorted((a for a in mine if a.repeat == 0 and a.id in votes and votes[a.id].choice != "skip"),
                          key=lambda a: a.id)
        eligible = [a for a in answered[:-2] if a.item_key not in repeated and a.item_key in by_key]
        if eligible:
            first = rng.choice(eligible)
            # sides swapped from the first showing, so a rater answering by position is caught too
            return by_key[first.item_key], 1, first.left_sample_id != by_key[first.item_key].samples[0]
    per_item = Counter(db.scalars(select(RatingAssignment.item_key).where(
        RatingAssignment.set_id == set_row.id, RatingAssignment.mode == mode, RatingAssignment.repeat == 0)))
    if mode == PAIRWISE:
        from studio.evaluation.ranking import Battles, pair_uncertainty

        rows = _battle_rows(_events(db, set_row.id, PAIRWISE), include_flagged=False)
        names = sorted({v for item in items for v in item.variants})
        uncertainty = pair_uncertainty(Battles.of(names, rows))
        chosen = choosing.choose_pair(candidates, uncertainty, per_item, rng)
        return chosen, 0, choosing.left_first(rng)
    per_variant = Counter()
    for item in items:
        per_variant[item.variants[0]] += per_item.get(item.key, 0)
    return choosing.choose_single(candidates, per_item, per_variant, rng), 0, True


def _assign(store: Store, set_id, rater: str, mode: str, session: str | None, limit: int) -> list[dict]:
    """The rater's unanswered items (oldest first), topped up to ``limit`` with new ones; each marked shown now."""
    for _attempt in range(RETRIES):
        try:
            with store.session() as db:
                set_row = _set(db, set_id)
                items = _items(db, set_row, mode)
                if mode == PAIRWISE and not items:
                    variants = {v["ref"] for v in set_row.variants}
                    if len(variants) < 2:
                        raise EvaluationError(f"sample set {set_row.id} has one variant: comparing needs two or "
                                              "more (score its samples on the 1-5 scale instead)")
                pending = _pending(db, set_row.id, rater, mode)
                while len(pending) < limit:
                    picked = _pick(store, db, set_row, rater, mode, items)
                    if picked is None:
                        break
                    item, repeat, first_left = picked
                    ids = item.samples if first_left else tuple(reversed(item.samples))
                    row = RatingAssignment(set_id=set_row.id, mode=mode, rater=rater, session=session,
                                           item_key=item.key, prompt_index=item.prompt_index,
                                           sample_index=item.sample_index, left_sample_id=ids[0],
                                           right_sample_id=ids[1] if len(ids) > 1 else None, repeat=repeat)
                    db.add(row)
                    db.flush()
                    pending.append(row)
                now = _now()
                for row in pending[:limit]:
                    row.shown_at = now
                    if session:
                        row.session = session
                db.flush()
                return [_presentation(store, db, row, set_row, len(items)) for row in pending[:limit]]
        except IntegrityError:
            continue  # the same rater asked twice at once: the other request's item is now pending
    raise EvaluationError("could not assign an item right now (too many requests at once); try again")


def next_pair(store: Store, set_id: int, rater: str, session: str | None = None) -> dict | None:
    """The pair this rater should judge next, as ``{pair_id, prompt, origin, reference, a, b, progress, ...}`` with
    ``a``/``b`` as ``{"text"}`` or ``{"path"}`` and no variant names; an unanswered pair comes back first (after a
    reload or restart). None when the rater has judged every pair of the set."""
    shown = _assign(store, set_id, _rater(rater), PAIRWISE, session, 1)
    return shown[0] if shown else None


def assigned_pairs(store: Store, set_id: int, rater: str, limit: int = 10, session: str | None = None) -> list[dict]:
    """Up to ``limit`` pairs assigned to this rater and not yet judged (new ones assigned as needed): a batch for
    the CLI."""
    if int(limit) < 1:
        raise EvaluationError("limit must be at least 1")
    return _assign(store, set_id, _rater(rater), PAIRWISE, session, int(limit))


def next_item(store: Store, set_id: int, rater: str, session: str | None = None) -> dict | None:
    """The sample this rater should score next (absolute mode), with ``scale`` (the meaning of each point)."""
    shown = _assign(store, set_id, _rater(rater), ABSOLUTE, session, 1)
    return shown[0] if shown else None


# ----------------------------------------------------------------------------- recording decisions

def _side(sample: GeneratedSample, labels: dict[str, str]) -> dict:
    return {"sample_id": sample.id, "variant": sample.variant, "label": labels.get(sample.variant, sample.variant),
            "seed": sample.seed, "run_id": sample.run_id, "checkpoint_step": sample.checkpoint_step}


def _decide(store: Store, assignment_id, rater: str, mode: str, set_id, build) -> dict:
    """Records the vote ``build(db, assignment, set_row, sides) -> RatingVote fields`` once; a second call finds it."""
    name = {PAIRWISE: "pair", ABSOLUTE: "item"}[mode]
    try:
        with store.session() as db:
            if set_id is not None:
                _set(db, set_id)
            try:
                assignment = db.get(RatingAssignment, int(assignment_id))
            except (TypeError, ValueError):
                assignment = None
            if assignment is None or assignment.mode != mode or assignment.rater != rater or \
                    (set_id is not None and assignment.set_id != int(set_id)):
                where = f" in sample set {set_id}" if set_id is not None else ""
                hint = f" (see `studio eval pairs {set_id if set_id is not None else 'SET'} --rater {rater}`)" \
                    if mode == PAIRWISE else ""
                raise EvaluationError(f"{name} {assignment_id} is not assigned to rater '{rater}'{where}{hint}")
            existing = db.scalar(select(RatingVote).where(RatingVote.assignment_id == assignment.id))
            if existing is not None:
                return _vote_result(existing, already=True)
            set_row = db.get(SampleSet, assignment.set_id)
            labels = {v["ref"]: v["label"] for v in set_row.variants}
            left = db.get(GeneratedSample, assignment.left_sample_id)
            right = db.get(GeneratedSample, assignment.right_sample_id) if assignment.right_sample_id else None
            details = {"item_key": assignment.item_key, "prompt": left.prompt, "prompt_index": assignment.prompt_index,
                       "sample_index": assignment.sample_index, "origin": _origin(set_row, assignment.prompt_index),
                       "modality": set_row.modality, "settings": set_row.settings,
                       "left": _side(left, labels), "right": _side(right, labels) if right else None,
                       "assigned_at": _iso(assignment.assigned_at)}
            fields = build(assignment, left, right)
            decided = _now()
            shown = fields.pop("shown_at") or _aware(assignment.shown_at)
            seconds = max(0.0, (decided - shown).total_seconds())
            threshold = store.settings.eval_min_decision_seconds
            flags = {"fast": f"decided {seconds:.1f} s after it was shown (faster than {threshold:g} s)"} \
                if seconds < threshold and fields["choice"] != "skip" else None
            vote = RatingVote(assignment_id=assignment.id, set_id=assignment.set_id, mode=mode, rater=rater,
                              session=fields.pop("session") or assignment.session, shown_at=shown, decided_at=decided,
                              decision_seconds=seconds, flags=flags, repeat=assignment.repeat, details=details,
                              **fields)
            db.add(vote)
            db.flush()
            return _vote_result(vote, already=False)
    except IntegrityError:  # the same vote arrived twice at once (a double click): the first one stands
        with store.session() as db:
            existing = db.scalar(select(RatingVote).where(RatingVote.assignment_id == int(assignment_id)))
        if existing is None:
            raise
        return _vote_result(existing, already=True)


def _vote_result(vote: RatingVote, already: bool) -> dict:
    details = vote.details or {}
    reveal = {side: {k: details[where][k] for k in ("variant", "label")}
              for side, where in (("a", "left"), ("b", "right")) if details.get(where)}
    revealed = reveal if vote.mode == PAIRWISE else {"sample": reveal["a"]}
    what = f"score {vote.score}" if vote.choice == "score" else vote.choice
    message = (f"already voted on this item ({what}); the first vote stands" if already else f"vote recorded ({what})")
    if vote.flags and not already:
        message += "; flagged: " + "; ".join(vote.flags.values())
    key = "pair_id" if vote.mode == PAIRWISE else "item_id"
    return {"status": "already_voted" if already else "recorded", "message": message, "vote_id": vote.id,
            key: vote.assignment_id, "choice": vote.choice, "score": vote.score, "revealed": revealed,
            "decision_seconds": vote.decision_seconds, "flags": vote.flags or {}}


def cast_vote(store: Store, pair_id: int, rater: str, choice: str, comment: str | None = None,
              session: str | None = None, shown_at=None, played: dict | None = None,
              set_id: int | None = None) -> dict:
    """Records a rater's decision on a pair assigned to them: ``choice`` a (left better), b (right better), tie,
    both_bad or skip (can't judge). Returns ``{status: recorded | already_voted, message, vote_id, pair_id,
    choice, revealed: {a: {variant, label}, b: ...}, decision_seconds, flags}``; a second vote on the same pair
    changes nothing. ``shown_at``: when both sides were on screen (default: when the pair was served);
    ``played``: seconds each side was played, e.g. ``{"a": 3.1, "b": 4.0}``."""
    rater, choice = _rater(rater), _choice(choice)
    shown, played = _moment(shown_at, "shown_at"), _played(played)

    def build(assignment, left, right):
        winner = {"a": assignment.left_sample_id, "b": assignment.right_sample_id}.get(choice)
        return {"choice": choice, "winner_sample_id": winner, "comment": (comment or "").strip() or None,
                "played": played, "shown_at": shown, "session": session}

    return _decide(store, pair_id, rater, PAIRWISE, set_id, build)


def cast_score(store: Store, item_id: int, rater: str, score, comment: str | None = None,
               session: str | None = None, shown_at=None, played: dict | None = None,
               set_id: int | None = None) -> dict:
    """Records a 1-5 score (or ``"skip"``: can't judge) for a sample assigned to this rater by ``next_item``; the
    same contract as ``cast_vote``."""
    rater, value = _rater(rater), _score(score)
    shown, played = _moment(shown_at, "shown_at"), _played(played)

    def build(assignment, left, right):
        return {"choice": "score" if value is not None else "skip", "score": value,
                "comment": (comment or "").strip() or None, "played": played, "shown_at": shown, "session": session}

    return _decide(store, item_id, rater, ABSOLUTE, set_id, build)


# ----------------------------------------------------------------------------- reading votes back

def _event(vote: RatingVote, include_flagged: bool = False) -> dict:
    details = vote.details or {}
    counted = vote.repeat == 0 and vote.choice != "skip" and (include_flagged or not vote.flags)
    return {"vote_id": vote.id, "set_id": vote.set_id, "mode": vote.mode, "pair_id": vote.assignment_id,
            "rater": vote.rater, "session": vote.session, "choice": vote.choice, "score": vote.score,
            "winner_sample_id": vote.winner_sample_id, "comment": vote.comment, "shown_at": _iso(vote.shown_at),
            "decided_at": _iso(vote.decided_at), "decision_seconds": vote.decision_seconds, "played": vote.played,
            "flags": vote.flags or {}, "repeat": bool(vote.repeat), "counted": counted, **details}


def _events(db, set_ids, mode: str | None = None, include_flagged: bool = False) -> list[dict]:
    ids = [set_ids] if isinstance(set_ids, int) else list(set_ids)
    query = select(RatingVote).where(RatingVote.set_id.in_(ids)).order_by(RatingVote.id)
    if mode:
        query = query.where(RatingVote.mode == mode)
    return [_event(v, include_flagged) for v in db.scalars(query)]


def _battle_rows(events: list[dict], include_flagged: bool) -> list[tuple[str, str, float]]:
    rows = []
    for e in events:
        if e["mode"] != PAIRWISE or e["repeat"] or e["choice"] == "skip" or (e["flags"] and not include_flagged):
            continue
        result = {"a": 1.0, "b": 0.0}.get(e["choice"], OUTCOME_OF_SCORE)
        rows.append((e["left"]["variant"], e["right"]["variant"], result))
    return rows


def _outcome(event: dict) -> str:
    """A pairwise vote in the pair's own orientation (its smaller sample id first), whatever side it was shown on."""
    if event["choice"] in ("tie", "both_bad"):
        return event["choice"]
    first = min(event["left"]["sample_id"], event["right"]["sample_id"])
    return "first" if event["winner_sample_id"] == first else "second"


def _agreement(events: list[dict]) -> dict:
    from studio.evaluation.agreement import krippendorff_alpha, raw_agreement

    pairwise = defaultdict(list)
    scores = defaultdict(list)
    for e in events:
        if not e["counted"]:
            continue
        if e["mode"] == PAIRWISE:
            pairwise[e["item_key"]].append(_outcome(e))
        else:
            scores[e["item_key"]].append(e["score"])

    def summary(units: dict, level: str, ignore=()) -> dict:
        values = list(units.values())
        shared = [v for v in values if len(v) >= 2]
        found = {"alpha": krippendorff_alpha(values, level), "level": level, "raw": raw_agreement(values),
                 "units": len(shared), "ratings": sum(len(v) for v in shared)}
        if ignore:
            found["raw_without_ties"] = raw_agreement(values, ignore)
        return found

    return {"pairwise": summary(pairwise, "nominal", ("tie", "both_bad")), "scores": summary(scores, "interval")}


def _raters(events: list[dict]) -> list[dict]:
    """Per rater: votes, skips, flagged votes, and self-consistency on repeated items (pairwise: the share of
    repeats decided the same way; scores: the share within one point, and the mean difference)."""
    first: dict[tuple, dict] = {}
    for e in events:
        if not e["repeat"]:
            first[(e["rater"], e["mode"], e["item_key"])] = e
    found: dict[str, dict] = {}
    for e in events:
        row = found.setdefault(e["rater"], {"rater": e["rater"], "votes": 0, "skips": 0, "flagged": 0, "repeats": 0,
                                            "self_consistency": None, "score_repeat_mean_difference": None,
                                            "_same": [], "_diff": []})
        if e["repeat"]:
            row["repeats"] += 1
            original = first.get((e["rater"], e["mode"], e["item_key"]))
            if original is None or "skip" in (original["choice"], e["choice"]):
                continue
            if e["mode"] == PAIRWISE:
                row["_same"].append(_outcome(original) == _outcome(e))
            else:
                row["_same"].append(abs(original["score"] - e["score"]) <= 1)
                row["_diff"].append(abs(original["score"] - e["score"]))
            continue
        row["votes"] += 1
        row["skips"] += e["choice"] == "skip"
        row["flagged"] += bool(e["flags"])
    for row in found.values():
        same, diff = row.pop("_same"), row.pop("_diff")
        row["self_consistency"] = sum(same) / len(same) if same else None
        row["score_repeat_mean_difference"] = sum(diff) / len(diff) if diff else None
    return sorted(found.values(), key=lambda r: r["rater"])


def leaderboard(store: Store, set_id: int, include_flagged: bool = False, rounds: int = 200, seed: int = 0) -> dict:
    """The set's ranking: ``variants`` (``variant``, ``label``, ``strength``, ``ci_low``/``ci_high`` (95 %),
    ``wins``/``losses``/``ties``/``both_bad``, ``votes``, ``win_rate``, ``preliminary``) sorted by the interval's
    lower bound; ``matrices`` (win rate and vote counts, row variant against column variant); ``scores`` (mean
    score with its interval per variant); ``agreement`` (Krippendorff's alpha and raw agreement); ``raters``
    (votes, flagged, self-consistency); ``flagged`` (left out unless ``include_flagged``, with the reason)."""
    from studio.evaluation.ranking import Battles, mean_interval, rank

    if int(rounds) < 100:
        raise EvaluationError("use at least 100 bootstrap rounds")
    with store.session() as db:
        set_row = _set(db, set_id)
        events = _events(db, set_row.id, include_flagged=include_flagged)
    labels = {v["ref"]: v["label"] for v in set_row.variants}
    names = [v["ref"] for v in set_row.variants]
    pairwise = [e for e in events if e["mode"] == PAIRWISE]
    ranked = rank(Battles.of(names, _battle_rows(pairwise, include_flagged)), int(rounds), seed)
    both_bad = Counter()
    for e in pairwise:
        if e["counted"] and e["choice"] == "both_bad":
            both_bad[e["left"]["variant"]] += 1
            both_bad[e["right"]["variant"]] += 1
    threshold = store.settings.eval_preliminary_votes
    variants = []
    for position, row in enumerate(ranked["variants"], 1):
        name = row["variant"]
        variants.append({**row, "rank": position if row["strength"] is not None else None,
                         "label": labels.get(name, name), "ties": row["ties"] - both_bad[name],
                         "both_bad": both_bad[name], "preliminary": row["votes"] < threshold})
    scored = defaultdict(list)
    for e in events:
        if e["mode"] == ABSOLUTE and e["counted"]:
            scored[e["left"]["variant"]].append(e["score"])
    scores = [{"variant": name, "label": labels.get(name, name), **mean_interval(scored[name]),
               "counts": {str(k): scored[name].count(k) for k in range(1, 6)},
               "preliminary": len(scored[name]) < threshold} for name in names]
    scores.sort(key=lambda s: (s["mean"] is None, -(s["mean"] or 0.0)))
    counted = [e for e in events if e["counted"]]
    return {"set_id": set_row.id, "modality": set_row.modality, "variants": variants,
            "matrices": {**ranked["matrices"], "labels": [labels.get(n, n) for n in ranked["matrices"]["variants"]]},
            "scores": {"variants": scores, "scale": score_scale(set_row.modality),
                       "votes": sum(1 for e in counted if e["mode"] == ABSOLUTE)},
            "agreement": _agreement(events), "raters": _raters(events),
            "votes": sum(1 for e in counted if e["mode"] == PAIRWISE),
            "preliminary": any(v["preliminary"] for v in variants),
            "excluded": {"flagged": sum(1 for e in events if e["flags"] and not e["repeat"] and e["choice"] != "skip"
                                        and not include_flagged),
                         "skipped": sum(1 for e in events if e["choice"] == "skip" and not e["repeat"]),
                         "repeats": sum(1 for e in events if e["repeat"])},
            "flagged": [{"vote_id": e["vote_id"], "pair_id": e["pair_id"], "rater": e["rater"], "mode": e["mode"],
                         "reason": "; ".join(e["flags"].values()), "counted": e["counted"]}
                        for e in events if e["flags"]],
            "include_flagged": bool(include_flagged), "min_votes": threshold, "bootstrap_rounds": int(rounds),
            "method": "Bradley-Terry maximum likelihood (ties and both-bad as half a win each way, a prior of "
                      "half a win each way between every two variants), 95 % bootstrap intervals"}


def run_preference(store: Store, run_id: int, include_flagged: bool = False, rounds: int = 200,
                   seed: int = 0) -> dict:
    """Human preference against training step for one run, from every sample set with its checkpoints: per point
    (the base at step 0, then each checkpoint) the strength with its interval, and for each checkpoint whether it
    is significantly preferred over the base (``vs_base``) and over the checkpoint before it (``vs_previous``):
    the bootstrap interval of the strength difference above zero, with the direct head-to-head and its sign
    test."""
    from studio.evaluation.ranking import Battles, compare, head_to_head, rank

    with store.session() as db:
        if db.get(Run, int(run_id)) is None:
            raise EvaluationError(f"no run {run_id} (see `studio runs list`)")
        set_ids = sorted(set(db.scalars(select(GeneratedSample.set_id).where(GeneratedSample.run_id == int(run_id)))))
        events = _events(db, set_ids, PAIRWISE, include_flagged) if set_ids else []
    rows = _battle_rows(events, include_flagged)
    steps: dict[str, int] = {}
    for e in events:
        for side in (e["left"], e["right"]):
            # "base" may be the run's own untrained start (step 0): it is the base point, not a checkpoint's
            if side["run_id"] == int(run_id) and side["checkpoint_step"] is not None and side["variant"] != "base":
                steps[side["variant"]] = side["checkpoint_step"]
    names = sorted({name for a, b, _r in rows for name in (a, b)} | set(steps))
    battles = Battles.of(names, rows)
    ranked = rank(battles, int(rounds), seed) if names else {"variants": [], "fits": {}}
    by_name = {v["variant"]: v for v in ranked["variants"]}
    points = []
    if "base" in by_name:
        points.append({"variant": "base", "step": 0, **_strength(by_name["base"])})
    previous = None
    for name in sorted(steps, key=steps.get):
        point = {"variant": name, "step": steps[name], **_strength(by_name[name])}
        for key, against in (("vs_base", "base" if "base" in by_name else None), ("vs_previous", previous)):
            found = compare(ranked["fits"], name, against) if against else None
            if found is not None:
                found = {"against": against, **found, "head_to_head": head_to_head(battles, name, against)}
            point[key] = found
        points.append(point)
        previous = name
    return {"run_id": int(run_id), "sets": set_ids, "votes": len(rows), "points": points,
            "preliminary": any(p["votes"] < store.settings.eval_preliminary_votes for p in points) or not points}


def preference_rounds(store: Store, run_id: int, include_flagged: bool = False, rounds: int = 200,
                      seed: int = 0) -> dict:
    """Human preference across the rounds that led to run ``run_id`` (base → SFT → round 1 → round 2 ...): the
    base model, then the checkpoint each run of the line started from, back to front, then the run's newest rated
    checkpoint. One Bradley-Terry fit over every counted pairwise vote between two of them, in whichever sample
    sets they met, puts every round on one scale. ``points`` oldest first, each with ``variant`` (``base`` or
    ``RUN_ID:STEP``), ``run_id``, ``step``, ``objective``, ``round`` (how many preference runs led to it) and
    strength, interval, votes, wins, losses, ties; only what was rated."""
    from studio.evaluation.ranking import Battles, rank

    with store.session() as db:
        if db.get(Run, int(run_id)) is None:
            raise EvaluationError(f"no run {run_id} (see `studio runs list`)")
        line = _line_of(store, db, int(run_id))  # [(run, the step the next one started from, or None)], oldest
        runs = [run.id for run, _ in line]
        set_ids = sorted(set(db.scalars(select(GeneratedSample.set_id).where(GeneratedSample.run_id.in_(runs)))))
        events = _events(db, set_ids, PAIRWISE, include_flagged) if set_ids else []
    last_rated = max((side["checkpoint_step"] for e in events for side in (e["left"], e["right"])
                      if side["run_id"] == int(run_id) and side["checkpoint_step"]), default=None)
    steps = [step for _, step in line[:-1]] + [last_rated]
    root = line[0][0]
    wanted = {"base": None} if root.method != "scratch" else {f"{root.id}:0": None}  # a starter's base: its step 0
    objectives = [(run.config or {}).get("objective") or "sft" for run, _ in line]
    for position, ((run, _), step) in enumerate(zip(line, steps)):
        if step is not None:
            wanted[f"{run.id}:{step}"] = position
    rows = []
    for e in events:
        a, b = _checkpoint_key(e["left"]), _checkpoint_key(e["right"])
        if a in wanted and b in wanted and a != b:
            rows.append((a, b, {"a": 1.0, "b": 0.0}.get(e["choice"], OUTCOME_OF_SCORE)))
    names = [name for name in wanted if any(name in row[:2] for row in rows)]
    fitted = {v["variant"]: v for v in rank(Battles.of(names, rows), int(rounds), seed)["variants"]} if rows else {}
    points = []
    for name in names:
        position = wanted[name]
        run, _ = line[position] if position is not None else (None, None)
        objective = objectives[position] if position is not None else None
        points.append({"variant": name, "run_id": run.id if run else None,
                       "step": int(name.split(":")[1]) if ":" in name else 0, "objective": objective,
                       "round": sum(o != "sft" for o in objectives[:position + 1]) if position is not None else 0,
                       **_strength(fitted[name])})
    return {"run_id": int(run_id), "runs": runs, "sets": set_ids, "votes": len(rows), "points": points}


def _checkpoint_key(side: dict) -> str:
    """What a voted sample was made with, the same in every set: ``RUN_ID:STEP`` (a starter's base is its run's
    step 0), or ``base`` (a pretrained model)."""
    if side.get("run_id") is not None and side.get("checkpoint_step") is not None:
        return f"{side['run_id']}:{side['checkpoint_step']}"
    return "base"


def _line_of(store: Store, db, run_id: int) -> list[tuple[Run, int | None]]:
    """The runs that led to ``run_id``, oldest first, each with the step of its checkpoint the next one started
    from (None for ``run_id`` itself)."""
    line, step, run = [], None, db.get(Run, run_id)
    while run is not None and all(run.id != seen.id for seen, _ in line):
        line.insert(0, (run, step))
        start = checkpoint_of_folder(store, run.model_ref)  # a run that started from a checkpoint: its model
        if start is None:
            break
        run, step = db.get(Run, start[0]), start[1]
    return line


def _strength(row: dict) -> dict:
    return {k: row[k] for k in ("strength", "ci_low", "ci_high", "votes", "wins", "losses", "ties")}


# ----------------------------------------------------------------------------- training on the votes

MIN_PAIRS_TO_VALIDATE = 20  # fewer pairs all go to train: a validation split of one or two pairs measures nothing
VALIDATION_SHARE = 0.1


def _decided_pairs(store: Store, set_id, include_flagged: bool):
    from studio.evaluation.export import decide_pairs

    with store.session() as db:
        set_row = _set(db, set_id)
        events = _events(db, set_row.id, PAIRWISE, include_flagged)
        samples = {s.id: s for s in _samples(db, set_row.id)}
    decided, left_out = decide_pairs(events)
    return set_row, decided, left_out, samples, events


def _why_none(set_id: int, left_out: Counter) -> str:
    from studio.evaluation.export import LEFT_OUT

    if not left_out:
        return f"sample set {set_id} has no rated pair yet: rate some pairs first"
    reasons = ", ".join(f"{count} {LEFT_OUT.get(reason, reason)}" for reason, count in left_out.most_common())
    return f"sample set {set_id} has no usable preference pair ({reasons})"


def _winner(store: Store, set_row: SampleSet, include_flagged: bool) -> dict | None:
    """The leaderboard's first variant: ``{variant, label, start}``; ``start`` is its ``RUN_ID:STEP`` (None for
    the base model)."""
    board = leaderboard(store, set_row.id, include_flagged=include_flagged, rounds=100)
    ranked = [v for v in board["variants"] if v["rank"] is not None]
    if not ranked:
        return None
    top = ranked[0]["variant"]
    resolved = next((v for v in set_row.variants if v["ref"] == top), {})
    run, step = resolved.get("run"), resolved.get("step")
    start = f"{run}:{step}" if run is not None and step is not None else (None if top == "base" else top)
    return {"variant": top, "label": ranked[0]["label"], "start": start}


def preference_summary(store: Store, set_id: int, include_flagged: bool = False) -> dict:
    """What training on a set's votes would use, without writing anything: ``pairs`` (usable), ``votes`` (behind
    them), ``removed`` (pairs left out by reason, see ``export.decide_pairs``), ``winner`` (the leaderboard's first
    variant, whose ``start`` is the run checkpoint to start from, None for the base) and ``message`` (why there is
    nothing to train on, or None)."""
    set_row, decided, left_out, _samples_by_id, _events = _decided_pairs(store, set_id, include_flagged)
    return {"set_id": set_row.id, "modality": set_row.modality, "pairs": len(decided),
            "votes": sum(pair["votes"] for pair in decided), "removed": dict(left_out),
            "winner": _winner(store, set_row, include_flagged), "include_flagged": bool(include_flagged),
            "message": None if decided else _why_none(set_row.id, left_out)}


def _pair_item(store: Store, pair: dict, samples: dict, modality: str):
    """A decided pair as a data item; None when a sample's file is gone or unreadable."""
    from studio.data.items import Item
    from studio.data.read_media import media_meta
    from studio.data.text_lines import BadFile

    chosen, rejected = samples[pair["chosen"]], samples[pair["rejected"]]
    source = f"set {chosen.set_id} pair {pair['item_key']}"
    if modality == "text":
        return Item(source=source, prompt=pair["prompt"], response=chosen.text or "", rejected=rejected.text or "")
    paths = [store.path(s.path) if s.path else None for s in (chosen, rejected)]
    try:
        meta = [media_meta(p, modality, store.settings) for p in paths if p and p.is_file()]
    except BadFile:
        return None
    if len(meta) < 2:
        return None
    return Item(source=source, caption=pair["prompt"], path=paths[0], meta=meta[0], rejected_path=paths[1],
                rejected_meta=meta[1])


def preference_dataset(store: Store, set_id: int, include_flagged: bool = False, name: str | None = None,
                       actor: str | None = None) -> ImportResult:
    """A new version of dataset ``name`` (default ``votes-set-<id>``, in the set's project) holding the set's
    decided pairs as preference rows (studio.data.preferences): text ``prompt``/``response``/``rejected``, images
    and audio ``caption``/``file``/``rejected_file`` with both files copied in. Its ``source`` names the set and
    the votes behind it; ``removed`` counts the pairs left out by reason (plus ``missing_sample``: a sample's file
    is gone or unreadable). No cleaning step runs: every pair is a human judgement of the studio's own outputs.
    Returns the import's summary (studio.data.service.ImportResult); EvaluationError when no pair is usable."""
    from studio.data.service import VersionOrigin
    from studio.store.projects import DEFAULT_PROJECT, project_name

    set_row, decided, left_out, samples, events = _decided_pairs(store, set_id, include_flagged)
    items, used = [], []
    for pair in decided:
        item = _pair_item(store, pair, samples, set_row.modality)
        if item is None:
            left_out["missing_sample"] += 1
        else:
            items.append(item)
            used.append(pair)
    if not items:
        raise EvaluationError(_why_none(set_row.id, left_out))
    with store.session() as db:
        project = project_name(db, set_row.project_id) or DEFAULT_PROJECT
    voters = {e["rater"] for e in events if e["item_key"] in {pair["item_key"] for pair in used} and e["counted"]}
    source = {"sample_set": set_row.id, "set_name": set_row.name, "votes": sum(pair["votes"] for pair in used),
              "raters": len(voters), "pairs": len(items), "include_flagged": bool(include_flagged)}
    origin = VersionOrigin(source, "dataset.from_votes", set_aside=dict(left_out))
    return store_judged(store, items, origin, f"{len(items)} preference pairs from the votes of sample set "
                        f"{set_row.id}", name=name or f"votes-set-{set_row.id}", project=project,
                        modality=set_row.modality, actor=actor)


def store_judged(store: Store, items: list, origin, note: str, *, name: str, project: str, modality: str,
                 actor: str | None) -> ImportResult:
    """People's judgements of the studio's own outputs (``items``: votes made pairs, a deployment's feedback) as the
    next version of dataset ``name``: no cleaning step runs (every item is a judgement, kept as made), and a tenth
    is held out for validation once there are ``MIN_PAIRS_TO_VALIDATE`` items (all train below)."""
    from studio.data.clean import default_config
    from studio.data.read_text import ReadResult
    from studio.data.service import Recipe, store_version

    validation = VALIDATION_SHARE if len(items) >= MIN_PAIRS_TO_VALIDATE else 0.0
    recipe = Recipe({step: {"enabled": False} for step in default_config(modality)}, None, "auto",
                    (1.0 - validation, validation, 0.0), 0)
    return store_version(store, ReadResult(items=items, notes=[note]), recipe, origin, name=name, project=project,
                         modality=modality, created_by=actor)


# ----------------------------------------------------------------------------- export

def export_votes(store: Store, set_id: int, kind: str = "events", out: Path | None = None) -> Path:
    """Writes the set's votes: ``events`` (every vote as recorded, JSONL), ``battles`` (one tidy CSV row per pairwise
    vote) or ``preferences`` (``{prompt, chosen, rejected}`` JSONL from the counted votes, one row per pair with a
    majority: a preference-tuning dataset the Data tab imports). Returns the file written."""
    from studio.evaluation import export

    if kind not in EXPORT_KINDS:
        raise EvaluationError(f"'{kind}' is not an export: use {', '.join(EXPORT_KINDS)}")
    with store.session() as db:
        set_row = _set(db, set_id)
        events = _events(db, set_row.id)
        samples = {s.id: s for s in _samples(db, set_row.id)}
    out = Path(out) if out else store.path(f"exports/ratings-{set_row.id}-{kind}.{EXPORT_KINDS[kind]}")
    if kind == "events":
        return export.write_events(events, out)
    if kind == "battles":
        return export.write_battles(events, out)
    content = {i: (str(store.path(s.path)) if s.path else s.text) for i, s in samples.items()}
    rows = export.preference_rows(events, content)
    if not rows:
        raise EvaluationError(f"sample set {set_row.id} has no pair with a decided preference yet (votes of a or b "
                              "that are not flagged): nothing to export as preference pairs")
    return export.write_preferences(rows, out)
