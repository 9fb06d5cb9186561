"""BLEU and TER with the output shape of the Hugging Face ``evaluate`` metrics the reference model card used."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from invoice_vlm.errors import InputError, MissingDependencyError

__all__ = ["bleu", "ter"]


def _references(
    predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]
) -> list[list[str]]:
    if isinstance(predictions, str) or isinstance(references, str):
        raise InputError("predictions and references must be lists of strings, not a single string.")
    if len(predictions) != len(references):
        raise InputError(
            f"{len(predictions)} predictions but {len(references)} references; they must pair up."
        )
    if not predictions:
        raise InputError("No predictions to score.")
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    for i, r in enumerate(refs):
        if not r or not all(isinstance(x, str) for x in r):
            raise InputError(
                f"references[{i}] must be a string or a non-empty list of strings, got {references[i]!r}."
            )
    for i, p in enumerate(predictions):
        if not isinstance(p, str):
            raise InputError(f"predictions[{i}] must be a string, got {type(p).__name__}.")
    return refs


def _streams(refs: list[list[str]]) -> list[list[str | None]]:
    """Reference streams for sacrebleu: one per position, shorter reference lists padded with None."""
    width = max(len(r) for r in refs)
    return [[r[k] if k < len(r) else None for r in refs] for k in range(width)]


def _sacrebleu() -> None:
    try:
        import sacrebleu  # noqa: F401
    except ImportError:
        raise MissingDependencyError("BLEU and TER", "metrics", "sacrebleu") from None


def bleu(
    predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], max_order: int = 4
) -> dict[str, Any]:
    """Corpus BLEU in 0..1 exactly as the ``evaluate`` library's ``bleu`` metric reports it.

    13a tokenization, n-grams up to ``max_order``, no smoothing, brevity penalty against the shortest reference of
    each prediction. N-gram statistics come from sacrebleu.

    Returns:
        ``{"bleu", "precisions", "brevity_penalty", "length_ratio", "translation_length", "reference_length"}``;
        precisions are fractions in 0..1, one per n-gram order.

    Examples:
        >>> round(bleu(["the cat sat on the mat"], ["the cat sat on the mat"])["bleu"], 4)
        1.0
    """
    refs = _references(predictions, references)
    _sacrebleu()
    from sacrebleu.metrics import BLEU
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    metric = BLEU(tokenize="13a", smooth_method="none", max_ngram_order=max_order, force=True)
    score = metric.corpus_score(list(predictions), _streams(refs))
    tokenize = Tokenizer13a()
    translation_length = int(score.sys_len)
    reference_length = sum(min(len(tokenize(r).split()) for r in rs) for rs in refs)
    precisions = [c / t if t > 0 else 0.0 for c, t in zip(score.counts, score.totals, strict=True)]
    geo_mean = math.exp(sum(math.log(p) for p in precisions) / max_order) if min(precisions) > 0 else 0.0
    ratio = translation_length / reference_length if reference_length else 0.0
    if ratio > 1.0:
        brevity_penalty = 1.0
    else:
        brevity_penalty = math.exp(1 - 1.0 / ratio) if ratio > 0 else 0.0
    return {
        "bleu": geo_mean * brevity_penalty,
        "precisions": precisions,
        "brevity_penalty": brevity_penalty,
        "length_ratio": ratio,
        "translation_length": translation_length,
        "reference_length": reference_length,
    }


def ter(predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> dict[str, Any]:
    """Corpus TER (in percent, lower is better) as the ``evaluate`` library's ``ter`` metric reports it.

    sacrebleu's TER with its default options (case-insensitive, no normalization, punctuation kept).

    Returns:
        ``{"score", "num_edits", "ref_length"}``.

    Examples:
        >>> ter(["a b c d"], ["a b x d"])["score"]
        25.0
    """
    refs = _references(predictions, references)
    _sacrebleu()
    from sacrebleu.metrics import TER

    score = TER().corpus_score(list(predictions), _streams(refs))
    return {"score": score.score, "num_edits": score.num_edits, "ref_length": score.ref_length}
