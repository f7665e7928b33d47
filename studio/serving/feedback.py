"""A deployment's feedback (thumbs up/down on the answers it served) made a dataset version for the next round.

``feedback_to_dataset`` writes one new, immutable version whose rows have the shapes of ``studio.data.preferences``:

- every liked answer as an example (SFT): text ``prompt`` + ``response`` (a chat: its ``messages`` ending with the
  answer), images and audio ``caption`` + ``file``;
- liked-vs-disliked answers to the same prompt (a chat: the same conversation) as preference pairs (DPO, ORPO,
  Diffusion-DPO): each liked and each disliked answer in at least one pair, in the order they were served;
- every thumb as a thumbs row (KTO): the answer and its ``label``.

A rating is of a whole response: with several choices (``n``), each choice counts as rated so. Images and audio
are copied into the version (the served files go with their retention period, the dataset stays). What cannot be
used is counted by reason in ``skipped``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import func, select

from studio.data.preferences import EXAMPLE, PAIR, THUMBS
from studio.serving.service import DeployError, deployment_modality
from studio.store import Store
from studio.store.projects import DEFAULT_PROJECT
from studio.store.tables import Deployment, ServedRequest


class FeedbackError(ValueError):
    """No dataset can be made of a deployment's feedback (nothing rated, nothing usable); the message says why."""


@dataclass
class Judged:
    """One rated answer: what it answered (``key``: the same for the same prompt or conversation), the answer and
    the thumb."""
    key: str
    prompt: str
    conversation: list[dict] | None  # a chat's turns before the answer; None for a completion, an image, a clip
    content: str                     # the answer's text, or its file (relative to STUDIO_HOME)
    liked: bool
    source: str
    meta: dict = field(default_factory=dict)  # a file's (width, duration, ...)


def _text_of(content) -> str:
    """A chat message's content as text (OpenAI clients may send a list of parts)."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _conversation(request: dict) -> list[dict] | None:
    messages = (request or {}).get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    return [{"role": str(m.get("role", "user")), "content": _text_of(m.get("content"))}
            for m in messages if isinstance(m, dict)]


def _judged(store: Store, row: ServedRequest, modality: str, skipped: Counter) -> list[Judged]:
    """The rated answers of one served request (one per choice), those that can be used."""
    from studio.data.read_media import media_meta
    from studio.data.text_lines import BadFile

    if row.status_code >= 400:
        skipped["the request failed (no answer)"] += 1
        return []
    conversation = _conversation(row.request) if modality == "text" else None
    key = json.dumps(conversation) if conversation else f"prompt:{row.prompt}"
    outputs = [o for o in row.outputs or [] if isinstance(o, dict)]
    if not outputs:
        skipped["no answer was stored"] += 1
    found = []
    for number, output in enumerate(outputs):
        source = f"response {row.response_id}" + (f" choice {number}" if len(outputs) > 1 else "")
        meta = {}
        if modality == "text":
            content = output.get("text") or ""
            if not content.strip():
                skipped["an empty answer"] += 1
                continue
        else:
            content = output.get("path") or ""
            path = store.path(content)
            try:
                if not content or not path.is_file():
                    raise BadFile("gone")
                meta = media_meta(path, modality, store.settings)
            except BadFile:
                skipped["its file is gone or unreadable"] += 1
                continue
        found.append(Judged(key, row.prompt, conversation, content, row.rating == "up", source, meta))
    return found


def _item(store: Store, modality: str, answer: Judged, rejected: Judged | None = None, label: bool | None = None):
    """``answer`` as a data item: an example, a pair with ``rejected``, or a thumbs row with ``label``."""
    from studio.data.items import Item

    source = answer.source + (f" over {rejected.source}" if rejected else "")
    if modality != "text":
        return Item(source=source, caption=answer.prompt, path=store.path(answer.content), meta=answer.meta,
                    rejected_path=store.path(rejected.content) if rejected else None,
                    rejected_meta=rejected.meta if rejected else {}, label=label)
    if answer.conversation:
        return Item(source=source, messages=[*answer.conversation, {"role": "assistant", "content": answer.content}],
                    rejected=rejected.content if rejected else None, label=label)
    return Item(source=source, prompt=answer.prompt, response=answer.content,
                rejected=rejected.content if rejected else None, label=label)


def _unique(answers: list[Judged]) -> list[Judged]:
    """The first of each answer to each prompt (a cached answer rated twice counts once)."""
    return list({(a.key, a.content): a for a in reversed(answers)}.values())[::-1]


def _pairs(judged: list[Judged], skipped: Counter) -> list[tuple[Judged, Judged]]:
    """Liked-vs-disliked answers to the same prompt: every liked and every disliked answer in at least one pair,
    matched in the order they were served (3 liked and 2 disliked make 3 pairs, not 6)."""
    by_prompt: dict[str, list[Judged]] = {}
    for answer in judged:
        by_prompt.setdefault(answer.key, []).append(answer)
    pairs = []
    for answers in by_prompt.values():
        liked = _unique([a for a in answers if a.liked])
        liked_contents = {a.content for a in liked}
        disliked = [a for a in _unique([a for a in answers if not a.liked]) if a.content not in liked_contents]
        skipped["an answer both liked and disliked (no pair)"] += len(
            _unique([a for a in answers if not a.liked])) - len(disliked)
        if liked and disliked:
            pairs += [(liked[n % len(liked)], disliked[n % len(disliked)])
                      for n in range(max(len(liked), len(disliked)))]
    return pairs


def _deployment(store: Store, deployment_id: int) -> Deployment:
    with store.session() as session:
        row = session.get(Deployment, int(deployment_id))
    if row is None:
        raise DeployError(f"no deployment {deployment_id} (see `studio deploy list`)")
    return row


def feedback_summary(store: Store, deployment_id: int) -> dict:
    """How many requests the deployment has stored and how many of them were rated up and down."""
    deployment = _deployment(store, deployment_id)
    with store.session() as session:
        counts = dict(session.execute(select(ServedRequest.rating, func.count()).where(
            ServedRequest.deployment_id == deployment.id).group_by(ServedRequest.rating)).all())
    return {"deployment_id": deployment.id, "name": deployment.name, "requests": sum(counts.values()),
            "rated": counts.get("up", 0) + counts.get("down", 0), "up": counts.get("up", 0),
            "down": counts.get("down", 0)}


def feedback_to_dataset(store: Store, deployment_id: int, actor: str | None = None, name: str | None = None) -> dict:
    """A new version of dataset ``name`` (default ``feedback-<deployment name>``, in the deployment's project) made of
    every rated answer still stored (see the module's docstring). Returns ``{deployment_id, dataset, dataset_id,
    version, version_id, counts: {example, pair, thumbs}, skipped: {reason: count}, path}``; FeedbackError when
    nothing was rated or nothing rated can be used."""
    from studio.data.service import VersionOrigin
    from studio.evaluation.service import store_judged

    deployment = _deployment(store, deployment_id)
    modality = deployment_modality(store, deployment.id)
    with store.session() as session:
        rated = list(session.scalars(select(ServedRequest).where(ServedRequest.deployment_id == deployment.id,
                                                                 ServedRequest.rating.in_(("up", "down")))
                                     .order_by(ServedRequest.id)))
    if not rated:
        raise FeedbackError(f"deployment {deployment.id} ({deployment.name}) has no rated answer yet: rate answers "
                            "with thumbs up or down (POST /v1/feedback, or the try-it page) first")
    skipped: Counter = Counter()
    judged = [answer for row in rated for answer in _judged(store, row, modality, skipped)]
    if not judged:
        reasons = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
        raise FeedbackError(f"none of the {len(rated)} rated answers of deployment {deployment.id} can be used "
                            f"({reasons})")
    kinds = {EXAMPLE: [_item(store, modality, answer) for answer in _unique([a for a in judged if a.liked])],
             PAIR: [_item(store, modality, chosen, rejected) for chosen, rejected in _pairs(judged, skipped)],
             THUMBS: [_item(store, modality, answer, label=answer.liked) for answer in _unique(judged)]}
    items = [item for made in kinds.values() for item in made]
    source = {"deployment": deployment.id, "deployment_name": deployment.name, "rated": len(rated),
              "up": sum(a.liked for a in judged), "down": sum(not a.liked for a in judged)}
    skipped = +skipped  # the reasons with a count only
    made = store_judged(store, items, VersionOrigin(source, "dataset.from_feedback", set_aside=dict(skipped)),
                        f"{len(items)} rows from the feedback on deployment {deployment.id} ({deployment.name})",
                        name=name or f"feedback-{deployment.name}", project=deployment.project or DEFAULT_PROJECT,
                        modality=modality, actor=actor)
    return {"deployment_id": deployment.id, "dataset": made["name"], "dataset_id": made["dataset_id"],
            "version": made["version"], "version_id": made["version_id"],
            "counts": {kind: len(made_of_kind) for kind, made_of_kind in kinds.items()}, "skipped": dict(skipped),
            "path": made["path"]}
