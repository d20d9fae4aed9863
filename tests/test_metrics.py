"""Text metrics against exact answers (kcrl.metrics)."""

import math
import random
from collections import Counter

import pytest
import torch

from kcrl.data import Vocabulary
from kcrl.data.templates import TemplateSet
from kcrl.errors import ConfigError
from kcrl.metrics import corpus_bleu, distinct_n, perplexity, self_bleu, sentence_bleu_terms, template_accuracy


class ConstantModel:
    """Every token gets log-probability ``log_p`` (a uniform model over V has log_p = -log V)."""

    def __init__(self, log_p):
        self.log_p = log_p

    def token_log_probs(self, x, templates, lengths):
        scored = torch.arange(x.shape[1])[None, :] < lengths[:, None]
        return torch.where(scored, torch.tensor(self.log_p, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))


def tiny_set():
    sentences = torch.tensor([[5, 6, 7, 0], [5, 6, 0, 0], [8, 0, 0, 0]])
    return TemplateSet(torch.full((3, 2), 4), sentences, torch.tensor([3, 2, 1]))


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    for v in (7, 5000):
        assert perplexity(ConstantModel(-math.log(v)), tiny_set()) == pytest.approx(v, rel=1e-9)
        assert perplexity(ConstantModel(-math.log(v)), tiny_set(), count_eos=False, batch_size=2) == pytest.approx(v, rel=1e-9)


def test_perplexity_counts_eos_as_stated():
    class HalfThenEos(ConstantModel):
        """log 1/2 on words, log 1 on <eos>."""

        def token_log_probs(self, x, templates, lengths):
            out = super().token_log_probs(x, templates, lengths)
            return torch.where(x == 2, torch.tensor(0.0, dtype=torch.float64), out)

    model = HalfThenEos(math.log(0.5))
    # 6 words at log 1/2, 3 <eos> at log 1: with <eos> exp(6 log 2 / 9), without 2.
    assert perplexity(model, tiny_set(), count_eos=True) == pytest.approx(2 ** (6 / 9))
    assert perplexity(model, tiny_set(), count_eos=False) == pytest.approx(2.0)


def test_template_accuracy_exact():
    v = Vocabulary(["the", "film", "was", "good", "."])
    t = v.encode_batch([["the", "<mask>", "."]] * 4, 3)
    x = v.encode_batch([["the", "film", "."], ["the", "."], ["the", "film", "was", "."], ["film", "."]], 5)
    assert template_accuracy(x, t) == 0.5


def test_corpus_bleu_known_values():
    assert corpus_bleu(["a b c d"], ["a b c d"]) == pytest.approx(100.0)
    # p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0 -> sacrebleu's "exp" smoothing gives 1/2 for p4; BP = 1.
    assert corpus_bleu([["a", "b", "c", "d"]], [["a", "b", "c", "e"]]) == pytest.approx(100 * (0.75 * (2 / 3) * 0.5 * 0.5) ** 0.25)
    # shorter hypothesis: brevity penalty exp(1 - 5/4) on the same precisions
    short = corpus_bleu(["a b c d"], ["a b c e f"])
    assert short == pytest.approx(100 * math.exp(1 - 5 / 4) * (0.75 * (2 / 3) * 0.5 * 0.5) ** 0.25)
    with pytest.raises(ConfigError, match="one reference per hypothesis"):
        corpus_bleu(["a"], [])


def test_distinct_n_known_values():
    sents = ["a b a b", ["a", "b", "c"]]
    assert distinct_n(sents, 1) == pytest.approx(3 / 7)
    assert distinct_n(sents, 2) == pytest.approx(3 / 5)
    assert distinct_n(sents, 4) == 1.0
    assert distinct_n(["a"], 2) == 0.0


def naive_self_bleu(sentences, max_n=4, epsilon=0.1):
    """Quadratic reference implementation of the same definition."""
    sents = [s.split() for s in sentences]
    scores = []
    for i, hyp in enumerate(sents):
        refs = [s for j, s in enumerate(sents) if j != i]
        matches = []
        for n in range(1, max_n + 1):
            grams = Counter(tuple(hyp[k : k + n]) for k in range(len(hyp) - n + 1))
            clip = Counter()
            for ref in refs:
                ref_grams = Counter(tuple(ref[k : k + n]) for k in range(len(ref) - n + 1))
                for g in grams:
                    clip[g] = max(clip[g], ref_grams[g])
            matches.append(sum(min(c, clip[g]) for g, c in grams.items()))
        ref_len = min((len(r) for r in refs), key=lambda r: (abs(r - len(hyp)), r))
        scores.append(sentence_bleu_terms(len(hyp), matches, ref_len, epsilon))
    return sum(scores) / len(scores)


def test_self_bleu_matches_the_naive_implementation():
    rng = random.Random(0)
    words = "a b c d e the film was".split()
    sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 9))) for _ in range(60)]
    sentences += sentences[:5]  # exact duplicates: ties for the maximum count
    assert self_bleu(sentences, sample_size=1000) == pytest.approx(naive_self_bleu(sentences), abs=1e-12)
    assert self_bleu(sentences, max_n=2) == pytest.approx(naive_self_bleu(sentences, max_n=2), abs=1e-12)


def test_self_bleu_known_values_and_fixed_sample():
    assert self_bleu(["a b c d", "a b c d", "a b c d"]) == pytest.approx(1.0)
    expected = (0.1 / 4 * 0.1 / 3 * 0.1 / 2 * 0.1 / 1) ** 0.25  # nothing shared; same lengths (BP = 1)
    assert self_bleu(["a b c d", "e f g h"]) == pytest.approx(expected)
    rng = random.Random(1)
    many = [" ".join(rng.choice("abcdefgh") for _ in range(6)) for _ in range(300)]
    assert self_bleu(many, sample_size=50, seed=3) == self_bleu(many, sample_size=50, seed=3)
    assert self_bleu(many, sample_size=50, seed=3) != self_bleu(many, sample_size=50, seed=4)
    with pytest.raises(ConfigError, match="at least 2"):
        self_bleu(["a"])
