"""Text-generation metrics: template accuracy, perplexity, BLEU, distinct-n and self-BLEU.

Conventions (docs/design.md §4, "Text metrics"):

* sentences are lists of tokens (or space-joined strings of them), already tokenised and
  lowercased by :class:`kcrl.data.RegexTokenizer`; BLEU therefore uses sacrebleu with
  ``tokenize="none"`` (our tokens, not sacrebleu's 13a re-tokenisation);
* perplexity is per token, natural log inside, over held-out sentences, counting the
  ``<eos>`` token by default (``count_eos``);
* self-BLEU depends on how many sentences are compared: it is always computed on a fixed-size
  sample (``sample_size``), which results must state.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from kcrl.data.templates import TemplateSet, template_distance
from kcrl.data.vocab import EOS_ID
from kcrl.errors import ConfigError, ShapeError

Sentence = Sequence[str] | str


def _tokens(sentence: Sentence) -> list[str]:
    return sentence.split() if isinstance(sentence, str) else list(sentence)


def template_accuracy(samples: torch.Tensor, templates: torch.Tensor) -> float:
    """Share of sentences ``(N, T)`` that follow their templates ``(N, L)`` exactly (distance 0).

    >>> from kcrl.data import Vocabulary
    >>> v = Vocabulary(["the", "film", "was", "great", "."])
    >>> t = v.encode_batch([["the", "<mask>", "was", "great", "."]] * 2, 5)
    >>> x = v.encode_batch([["the", "film", "was", "great", "."], ["the", "was", "great", "."]], 6)
    >>> template_accuracy(x, t)
    0.5
    """
    if samples.shape[0] == 0:
        raise ShapeError("template_accuracy needs at least one sample; got none.")
    return (template_distance(samples, templates) == 0).float().mean().item()


@torch.no_grad()
def perplexity(model, data: TemplateSet, count_eos: bool = True, batch_size: int = 256) -> float:
    """``exp(-sum log p(x_t | x_<t, template) / #tokens)`` over the reference sentences of ``data``.

    Args:
        model: anything with ``token_log_probs(x (N, T), templates (N, L), lengths (N,)) -> (N, T)``
            (e.g. :class:`~kcrl.models.text_generator.TemplateGenerator`); run in eval mode.
        data: held-out templates and their true sentences (score the *test* split).
        count_eos: include each sentence's ``<eos>`` among the scored tokens.
        batch_size: sentences per forward pass.
    """
    if len(data) == 0:
        raise ConfigError("perplexity needs at least one sentence; got an empty TemplateSet.")
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    device = getattr(model, "device", torch.device("cpu"))
    total, count = 0.0, 0
    try:
        for start in range(0, len(data), batch_size):
            part = data.subset(slice(start, start + batch_size)).to(device)
            x = part.targets()  # sentence + <eos>, (B, S + 1)
            lengths = part.lengths + 1
            logp = model.token_log_probs(x, part.templates, lengths).double()  # (B, S + 1)
            if not count_eos:
                logp = logp.masked_fill(x == EOS_ID, 0.0)
                lengths = part.lengths
            total -= logp.sum().item()
            count += int(lengths.sum())
    finally:
        if was_training:
            model.train()
    return math.exp(total / count)


def corpus_bleu(hypotheses: Sequence[Sentence], references: Sequence[Sentence]) -> float:
    """Corpus-level BLEU-4 (sacrebleu, ``tokenize="none"``, 0-100) of hypotheses against one
    reference each.

    >>> round(corpus_bleu(["the film was great ."], ["the film was great ."]), 6)
    100.0
    """
    import sacrebleu

    if len(hypotheses) != len(references) or not hypotheses:
        raise ConfigError(
            f"corpus_bleu needs one reference per hypothesis and at least one pair; got "
            f"{len(hypotheses)} hypotheses and {len(references)} references."
        )
    hyps = [" ".join(_tokens(h)) for h in hypotheses]
    refs = [" ".join(_tokens(r)) for r in references]
    return float(sacrebleu.corpus_bleu(hyps, [refs], tokenize="none", force=True).score)


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def distinct_n(sentences: Sequence[Sentence], n: int) -> float:
    """Distinct n-grams / all n-grams over the sentences (0 if there are no n-grams).

    >>> distinct_n(["a b a b", "a b c"], 2)
    0.6
    """
    if n < 1:
        raise ConfigError(f"n must be >= 1; got {n}.")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for sentence in sentences:
        grams = _ngrams(_tokens(sentence), n)
        total += sum(grams.values())
        seen.update(grams)
    return len(seen) / total if total else 0.0


def sentence_bleu_terms(hyp_len: int, matches: Sequence[int], ref_len: int, epsilon: float = 0.1) -> float:
    """BLEU of one hypothesis from its clipped n-gram matches (n = 1..len(matches)).

    ``p_n = matches_n / max(1, hyp_len - n + 1)``, with ``matches_n = 0`` replaced by ``epsilon``
    (smoothing "method 1"); uniform weights; brevity penalty ``exp(1 - r / c)`` when the
    hypothesis length c is below the reference length r (1 if c = 0 and r = 0).
    """
    log_p = 0.0
    for n, m in enumerate(matches, start=1):
        total = max(1, hyp_len - n + 1)
        log_p += math.log((m if m > 0 else epsilon) / total)
    bp = 1.0 if hyp_len >= ref_len else (math.exp(1.0 - ref_len / hyp_len) if hyp_len > 0 else 0.0)
    return bp * math.exp(log_p / len(matches))


def _closest_length(hist: Counter, own: int) -> int:
    """Reference length closest to ``own`` among the others' lengths (ties: the shorter)."""
    best = None
    for length, count in hist.items():
        if length == own and count < 2:
            continue  # only the sentence itself has this length
        if best is None or abs(length - own) < abs(best - own) or (abs(length - own) == abs(best - own) and length < best):
            best = length
    return own if best is None else best


def self_bleu(sentences: Sequence[Sentence], max_n: int = 4, sample_size: int = 1000, seed: int = 0, epsilon: float = 0.1) -> float:
    """Mean BLEU-``max_n`` (0-1) of each sentence against all the *other* sentences as references.

    Higher means less diverse. Computed on ``sample_size`` sentences drawn without replacement
    with ``seed`` (all of them if fewer): the value depends on the sample size, so report it.

    Linear time: one table per n holds, for every n-gram, its highest count in any sentence, which
    sentence holds it, and the highest count among the *other* sentences; a sentence's clipped
    matches against "everyone but me" read the second value where it holds the first. Each
    sentence's BLEU is :func:`sentence_bleu_terms` with the closest other sentence's length as
    reference length.

    >>> self_bleu(["the film was great", "the film was great"], sample_size=10)
    1.0
    """
    sents = [_tokens(s) for s in sentences]
    if len(sents) < 2:
        raise ConfigError(f"self_bleu needs at least 2 sentences; got {len(sents)}.")
    if len(sents) > sample_size:
        pick = np.sort(np.random.default_rng(seed).choice(len(sents), sample_size, replace=False))
        sents = [sents[i] for i in pick]
    matches = [[0] * max_n for _ in sents]
    for n in range(1, max_n + 1):
        grams = [_ngrams(s, n) for s in sents]
        table: dict[tuple[str, ...], list[int]] = {}  # n-gram -> [best count, holder, runner-up count]
        for i, counts in enumerate(grams):
            for gram, c in counts.items():
                entry = table.get(gram)
                if entry is None:
                    table[gram] = [c, i, 0]
                elif c > entry[0]:
                    entry[2], entry[0], entry[1] = entry[0], c, i
                elif c > entry[2]:
                    entry[2] = c
        for i, counts in enumerate(grams):
            total = 0
            for gram, c in counts.items():
                best, holder, second = table[gram]
                total += min(c, second if holder == i else best)
            matches[i][n - 1] = total
    hist = Counter(len(s) for s in sents)
    scores = [
        sentence_bleu_terms(len(s), matches[i], _closest_length(hist, len(s)), epsilon) for i, s in enumerate(sents)
    ]
    return float(np.mean(scores))
