"""Text metrics: perplexity with the model's own loss, diversity of generated samples, and overlap with
references (sacrebleu's BLEU and chrF, rouge-score's ROUGE-L).

Plain functions of strings or of a loaded handle; ``studio.evaluation.metrics`` puts them together for a run.
torch, sacrebleu and rouge-score are imported inside the functions.
"""

from __future__ import annotations

import math
import re
from collections import Counter

IGNORE = -100
_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks (Unicode-aware), the tokens distinct-n counts."""
    return _WORD.findall((text or "").lower())


def distinct_n(texts: list[str], n: int) -> float | None:
    """Distinct-n (Li et al. 2016): different n-grams / all n-grams over the whole set of samples (n-grams do
    not cross samples). 1.0: no n-gram repeats; None when the samples hold no n-gram."""
    grams: Counter = Counter()
    for text in texts:
        tokens = words(text)
        grams.update(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else None


def self_bleu(texts: list[str]) -> float | None:
    """Self-BLEU (Zhu et al. 2018): the mean sentence BLEU (sacrebleu, 0-100) of each sample against all the
    others as references. High: the samples say the same thing; None for fewer than two samples."""
    import sacrebleu

    texts = [t or "" for t in texts]
    if len(texts) < 2:
        return None
    scores = [sacrebleu.sentence_bleu(text, texts[:i] + texts[i + 1:]).score for i, text in enumerate(texts)]
    return sum(scores) / len(scores)


class _UnicodeWords:
    """rouge-score's tokenizer interface with Unicode words (its default keeps only ASCII letters and digits)."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", (text or "").lower())


def reference_scores(hypotheses: list[str], references: list[str]) -> dict:
    """Overlap of each hypothesis with its reference, all on 0-100: corpus BLEU and chrF (sacrebleu, default
    13a tokenisation) and the mean ROUGE-L F1 (rouge-score, Unicode words, no stemming)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not hypotheses:
        return {"bleu": None, "chrf": None, "rouge_l": None, "pairs": 0}
    hypotheses, references = [h or "" for h in hypotheses], [r or "" for r in references]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=_UnicodeWords())
    rouge = [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses, references)]
    return {"bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
            "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score,
            "rouge_l": 100 * sum(rouge) / len(rouge), "pairs": len(hypotheses)}


def perplexity(handle, dataset, collate, batch_size: int = 8) -> dict:
    """exp(mean negative log-likelihood per predicted token) of ``dataset`` (the backend's own examples, so
    the chat template and response-only labels are those of training), summed over tokens across batches.
    Returns ``{"perplexity", "loss" (nats per token), "tokens", "examples"}``; None values for no tokens."""
    import torch
    import torch.nn.functional as F

    from studio.models.text import model_inputs

    model = handle.parts.model
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, len(dataset), batch_size):
                batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
                batch = {name: value.to(device) for name, value in batch.items()}
                logits = model(**model_inputs(model, batch)).logits.float().view(*batch["input_ids"].shape, -1)
                labels = batch["labels"][:, 1:].to(device)
                total += F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                         ignore_index=IGNORE, reduction="sum").item()
                tokens += int((labels != IGNORE).sum())
    finally:
        model.train(was_training)
    loss = total / tokens if tokens else None
    return {"perplexity": math.exp(loss) if loss is not None else None, "loss": loss, "tokens": tokens,
            "examples": len(dataset)}
