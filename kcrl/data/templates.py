"""Templates: sentences with masked segments, and the rule "does a sentence follow its template?".

A template is a corpus sentence in which each masked segment (one or more consecutive words)
is replaced by ONE ``<mask>`` token standing for any number (>= 1) of words, e.g.
``the <mask> was <mask> .`` from ``the plot was far too thin .``. Because every template is
cut from a real sentence, it has a true infill (the reference sentence).

Strategies (:class:`MaskingConfig`):

* ``"spans"``: 1..``max_spans`` random spans covering about ``mask_fraction`` of the tokens;
* ``"content"``: each content word (not a function word or punctuation) is masked with
  probability ``mask_fraction``; adjacent masked words merge into one segment.

Both always leave at least one visible token and mask at least one.

The rule (:func:`template_distance`) is an edit distance between a sentence and a template in
which a ``<mask>`` consumes one or more words at no cost: literal tokens must appear in order,
each masked segment must be filled with at least one word. Distance 0 means the sentence
follows the template exactly. It is computed for a whole batch with one loop over sentence
positions (each row of the dynamic programme is a ``cummin``), on any device.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from kcrl.checkpoint import atomic_write_bytes
from kcrl.constraints import Constraint
from kcrl.data.corpus import (
    SPLITS,
    Corpus,
    CorpusConfig,
    cache_dir,
    corpus_cache_key,
    load_corpus,
)
from kcrl.data.vocab import EOS_ID, MASK, MASK_ID, PAD_ID, UNK_ID, Vocabulary
from kcrl.errors import ConfigError, ShapeError

STRATEGIES = ("spans", "content")
TEMPLATE_CACHE_FORMAT = 1


class TemplateError(ConfigError):
    """A template is malformed (e.g. it has no ``<mask>``), so it has nothing to fill in."""


# A small list of English function words; every other alphanumeric token is a content word.
FUNCTION_WORDS = frozenset(
    """a about above after again against all also am an and any are aren't as at be because been
    before being below between both but by can can't could couldn't did didn't do does doesn't doing
    don't down during each even ever few for from further had hadn't has hasn't have haven't having he
    he'd he's her here here's hers herself him himself his how how's i i'd i'll i'm i've if in into is
    isn't it it's its itself just let's me more most much my myself no nor not now of off on once only
    or other our ours ourselves out over own same she she's should shouldn't so some such than that
    that's the their theirs them themselves then there there's these they they'd they'll they're
    they've this those through to too under until up upon very was wasn't we we'd we'll we're we've
    were weren't what what's when where which while who who's whom why will with won't would wouldn't
    yet you you'd you'll you're you've your yours yourself yourselves""".split()
)


@dataclass(frozen=True)
class MaskingConfig:
    """How templates are cut from sentences."""

    strategy: str = "spans"
    """"spans" (random spans) or "content" (content words)"""
    mask_fraction: float = 0.5
    """spans: share of a sentence's tokens masked; content: probability a content word is masked"""
    max_spans: int = 3
    """most masked segments per template"""
    seed: int = 0
    """seed of the masking (templates are a deterministic function of the split and this)"""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"masking strategy must be one of {STRATEGIES}; got {self.strategy!r}.")
        if not 0.0 < self.mask_fraction < 1.0:
            raise ConfigError(f"mask_fraction must be in (0, 1); got {self.mask_fraction!r}.")
        if not isinstance(self.max_spans, int) or self.max_spans < 1:
            raise ConfigError(f"max_spans must be an integer >= 1; got {self.max_spans!r}.")


def is_content_word(token: str) -> bool:
    return token not in FUNCTION_WORDS and any(ch.isalnum() for ch in token)


def _spans_mask(n: int, config: MaskingConfig, rng: random.Random) -> list[bool]:
    m = min(max(round(config.mask_fraction * n), 1), n - 1)  # masked tokens
    k = rng.randint(1, min(config.max_spans, m, n - m + 1))  # masked segments
    cuts = sorted(rng.sample(range(1, m), k - 1))
    span_lengths = [b - a for a, b in zip([0] + cuts, cuts + [m])]  # k positive parts of m
    free = n - m - (k - 1)  # visible tokens left after one between each pair of spans
    bars = sorted(rng.sample(range(free + k), k))  # stars and bars: k+1 parts of `free`
    gaps = [b - a - 1 for a, b in zip([-1] + bars, bars + [free + k])]
    gaps = [g + (1 if 0 < i < k else 0) for i, g in enumerate(gaps)]
    masked: list[bool] = []
    for i in range(k):
        masked += [False] * gaps[i] + [True] * span_lengths[i]
    return masked + [False] * gaps[k]


def _content_mask(tokens: Sequence[str], config: MaskingConfig, rng: random.Random) -> list[bool]:
    n = len(tokens)
    content = [i for i, t in enumerate(tokens) if is_content_word(t)]
    masked = [False] * n
    for i in content:
        masked[i] = rng.random() < config.mask_fraction
    if not any(masked):
        masked[rng.choice(content) if content else rng.randrange(n)] = True
    if all(masked):
        masked[rng.randrange(n)] = False
    runs = _runs(masked)
    if len(runs) > config.max_spans:  # keep max_spans of the segments, unmask the rest
        keep = set(rng.sample(runs, config.max_spans))
        for start, end in runs:
            if (start, end) not in keep:
                masked[start:end] = [False] * (end - start)
    return masked


def _runs(masked: list[bool]) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, m in enumerate(masked + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    return runs


def make_template(tokens: Sequence[str], config: MaskingConfig, rng: random.Random) -> list[str]:
    """Cut one template from a sentence of >= 2 tokens.

    >>> make_template("the plot was far too thin .".split(), MaskingConfig(), random.Random(0))
    ['<mask>', 'was', '<mask>', 'thin', '.']
    """
    if len(tokens) < 2:
        raise TemplateError(f"a template needs a sentence of at least 2 tokens; got {list(tokens)!r}.")
    masked = _spans_mask(len(tokens), config, rng) if config.strategy == "spans" else _content_mask(tokens, config, rng)
    out: list[str] = []
    for token, m in zip(tokens, masked):
        if not m:
            out.append(token)
        elif not out or out[-1] != MASK:
            out.append(MASK)
    return out


def parse_template(text: str | Sequence[str], tokenizer=None) -> list[str]:
    """A user's template (a string with ``<mask>`` markers, or a token list), checked to have a mask.

    >>> parse_template("The <mask> was <mask>!")
    ['the', '<mask>', 'was', '<mask>', '!']
    >>> parse_template("no mask here")
    Traceback (most recent call last):
    ...
    kcrl.data.templates.TemplateError: template 'no mask here' has no <mask>: there is nothing to fill in. Mark each segment to generate with <mask>, e.g. 'the <mask> was great .'.
    """
    if isinstance(text, str):
        from kcrl.data.corpus import RegexTokenizer

        tokenizer = tokenizer or RegexTokenizer()
        tokens: list[str] = []
        for i, piece in enumerate(text.split(MASK)):
            if i:
                tokens.append(MASK)
            tokens += tokenizer(piece)
    else:
        tokens = list(text)
    if MASK not in tokens:
        raise TemplateError(
            f"template {text!r} has no {MASK}: there is nothing to fill in. Mark each segment to "
            f"generate with {MASK}, e.g. 'the {MASK} was great .'."
        )
    return tokens


def check_templates(templates: torch.Tensor) -> None:
    """Raise :class:`TemplateError` unless every row of ``(N, L)`` template ids has a ``<mask>``."""
    if templates.dim() != 2:
        raise ShapeError(f"templates must be token ids of shape (N, L); got {tuple(templates.shape)}.")
    missing = ~(templates == MASK_ID).any(-1)
    if missing.any():
        rows = missing.nonzero().squeeze(-1)[:5].tolist()
        raise TemplateError(
            f"{int(missing.sum())} template(s) have no <mask> (id {MASK_ID}), e.g. rows {rows}: there is "
            "nothing to fill in. Build templates with make_template/parse_template."
        )


# ---------------------------------------------------------------------------- encoded sets
@dataclass
class TemplateSet:
    """Encoded templates of one split and their true infills.

    Attributes:
        templates: ``(M, L)`` long, template ids right-padded with ``<pad>``.
        sentences: ``(M, S)`` long, the reference sentences (no ``<eos>``), padded with ``<pad>``.
        lengths: ``(M,)`` long, reference sentence lengths in tokens.
    """

    templates: torch.Tensor
    sentences: torch.Tensor
    lengths: torch.Tensor

    def __len__(self) -> int:
        return self.templates.shape[0]

    def to(self, device: torch.device | str) -> "TemplateSet":
        return TemplateSet(self.templates.to(device), self.sentences.to(device), self.lengths.to(device))

    def subset(self, index: torch.Tensor | slice) -> "TemplateSet":
        return TemplateSet(self.templates[index], self.sentences[index], self.lengths[index])

    def targets(self, length: int | None = None) -> torch.Tensor:
        """References with ``<eos>`` appended, padded to ``length`` (default ``S + 1``), ``(M, length)``."""
        length = self.sentences.shape[1] + 1 if length is None else length
        out = torch.full((len(self), length), PAD_ID, dtype=torch.long, device=self.sentences.device)
        width = min(length, self.sentences.shape[1])
        out[:, :width] = self.sentences[:, :width]
        rows = torch.arange(len(self), device=out.device)
        keep = self.lengths < length
        out[rows[keep], self.lengths[keep]] = EOS_ID
        return out


def build_template_set(
    sentences: Sequence[Sequence[str]], vocab: Vocabulary, masking: MaskingConfig, width: int | None = None
) -> TemplateSet:
    """Cut one template per sentence (seeded by ``masking.seed``) and encode both."""
    if len(sentences) == 0:
        raise ConfigError("cannot build templates from an empty list of sentences.")
    width = width or max(len(s) for s in sentences)
    rng = random.Random(masking.seed)
    templates = [make_template(s, masking, rng) for s in sentences]
    return TemplateSet(
        vocab.encode_batch(templates, width),
        vocab.encode_batch(sentences, width),
        torch.tensor([min(len(s), width) for s in sentences], dtype=torch.long),
    )


def prepare_templates(
    corpus: str | os.PathLike | Sequence[str] | Corpus | None = None,
    split: str = "train",
    vocab_size: int = 5000,
    masking: MaskingConfig | None = None,
    corpus_config: CorpusConfig | None = None,
    tokenizer=None,
    cache: bool = True,
) -> tuple[Vocabulary, TemplateSet]:
    """The vocabulary of a corpus and the encoded templates of one split, cached when possible.

    ``corpus``, ``corpus_config`` and ``tokenizer`` are as in :func:`kcrl.data.load_corpus`.
    The vocabulary comes from the train split; templates are ``max_tokens`` wide. The result is
    cached in ``$KCRL_CACHE/templates/KEY.npz``, keyed by the corpus's cache key, the split,
    ``vocab_size`` and the masking config, so a cached call reads neither the corpus nor its
    JSON cache. Uncacheable corpora (lists of strings) are built every time.
    """
    masking = masking or MaskingConfig()
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}; got {split!r}.")
    if isinstance(corpus, Corpus):
        corpus_config = corpus.config
    corpus_config = corpus_config or CorpusConfig()
    corpus_key = corpus_cache_key(corpus, corpus_config, tokenizer) if cache else None
    key = None
    if corpus_key is not None:
        material = json.dumps(
            {"format": TEMPLATE_CACHE_FORMAT, "corpus": corpus_key, "split": split, "vocab_size": vocab_size, "masking": asdict(masking)},
            sort_keys=True,
        )
        key = hashlib.sha256(material.encode()).hexdigest()
        hit = _read_template_cache(key)
        if hit is not None:
            return hit
    loaded = load_corpus(corpus, corpus_config, tokenizer, cache=cache)
    vocab = loaded.vocabulary(vocab_size)
    sentences = loaded.split(split)
    if len(sentences) == 0:
        raise ConfigError(f"the {split!r} split of {loaded.source} is empty; choose another split or resize it.")
    tset = build_template_set(sentences, vocab, masking, width=corpus_config.max_tokens)
    if key is not None:
        _write_template_cache(key, vocab, tset)
    return vocab, tset


def _template_cache_path(key: str) -> Path:
    return cache_dir() / "templates" / f"{key}.npz"


def _read_template_cache(key: str) -> tuple[Vocabulary, TemplateSet] | None:
    path = _template_cache_path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            vocab = Vocabulary(json.loads(bytes(data["words"]).decode("utf-8")))
            tset = TemplateSet(
                torch.from_numpy(data["templates"].astype(np.int64)),
                torch.from_numpy(data["sentences"].astype(np.int64)),
                torch.from_numpy(data["lengths"].astype(np.int64)),
            )
        return vocab, tset
    except (OSError, ValueError, KeyError) as exc:
        import warnings

        warnings.warn(f"ignoring unreadable template cache {path} ({exc}); rebuilding it.", stacklevel=3)
        return None


def _write_template_cache(key: str, vocab: Vocabulary, tset: TemplateSet) -> None:
    import io
    import warnings

    buffer = io.BytesIO()
    words = json.dumps(vocab.itos[5:], ensure_ascii=False).encode("utf-8")
    np.savez(
        buffer,
        words=np.frombuffer(words, dtype=np.uint8),
        templates=tset.templates.numpy().astype(np.int32),
        sentences=tset.sentences.numpy().astype(np.int32),
        lengths=tset.lengths.numpy().astype(np.int32),
    )
    try:
        atomic_write_bytes(_template_cache_path(key), buffer.getvalue())
    except OSError as exc:
        warnings.warn(f"could not write the template cache under {cache_dir()} ({exc}).", stacklevel=3)


# ---------------------------------------------------------------------------- the rule
def sentence_lengths(x: torch.Tensor) -> torch.Tensor:
    """Tokens before the first ``<eos>`` or ``<pad>`` in each row of ``(N, T)`` ids, ``(N,)``."""
    stop = (x == EOS_ID) | (x == PAD_ID)
    t = x.shape[1]
    positions = torch.arange(t, device=x.device).expand_as(x)
    return torch.where(stop, positions, t).min(dim=1).values


def template_distance(x: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Edit distance from each sentence to its template, ``(N,)`` float; 0 iff it follows it.

    Operations and costs: a literal template token matched (0) or substituted (1) by a sentence
    token, or deleted (1); a ``<mask>`` consumes one or more *words* (ids >= 5 or ``<unk>``) at
    cost 0, or none at cost 1; any other sentence token is an insertion (1). The sentence is read
    up to its first ``<eos>``/``<pad>``, the template up to its first ``<pad>``.

    Args:
        x: ``(N, T)`` sentence ids.
        template: ``(N, L)`` template ids.

    >>> from kcrl.data.vocab import Vocabulary
    >>> v = Vocabulary(["the", "film", "was", "great", "."])
    >>> t = v.encode_batch([["the", "<mask>", "was", "great", "."]] * 3, 5)
    >>> x = v.encode_batch([["the", "film", "was", "great", "."], ["the", "was", "great", "."], ["the", "film", "film", "was", "."]], 6)
    >>> template_distance(x, t).tolist()
    [0.0, 1.0, 1.0]
    """
    if x.dim() != 2 or template.dim() != 2 or x.shape[0] != template.shape[0]:
        raise ShapeError(
            f"template_distance expects x (N, T) and template (N, L) with the same N; got "
            f"{tuple(x.shape)} and {tuple(template.shape)}."
        )
    n, big = x.shape[0], 1e6
    x_len = sentence_lengths(x)  # (N,)
    t_len = (template != PAD_ID).long().cumprod(-1).sum(-1)  # (N,)
    is_mask = template == MASK_ID  # (N, L)
    cols = torch.arange(template.shape[1] + 1, device=x.device, dtype=torch.float32)  # (L+1,)
    dist = cols.expand(n, -1).clone()  # D[0, j] = j: delete every element / leave masks empty
    for i in range(x.shape[1]):
        xi = x[:, i : i + 1]  # (N, 1)
        word = Vocabulary.is_word(xi)  # (N, 1)
        diag = torch.where(is_mask, torch.where(word, 0.0, big), (template != xi).float())  # (N, L)
        vert = torch.where(is_mask & word, 0.0, 1.0)  # a mask keeps consuming words; else insert
        from_above = dist + torch.cat([torch.ones_like(dist[:, :1]), vert], dim=1)  # (N, L+1)
        from_diag = torch.cat([torch.full_like(dist[:, :1], big), dist[:, :-1] + diag], dim=1)
        best = torch.minimum(from_above, from_diag)
        row = cols + torch.cummin(best - cols, dim=1).values  # horizontal moves cost 1 each
        dist = torch.where((i < x_len)[:, None], row, dist)
    return dist.gather(1, t_len[:, None]).squeeze(1)


def rule_score(x: torch.Tensor, template: torch.Tensor, unk_penalty: float = 0.5, exact_bonus: float = 1.0) -> torch.Tensor:
    """Graded template score, ``(N,)``: ``max(0, 1 - d / |template|) + exact_bonus * [d = 0]``
    ``- unk_penalty * (extra <unk>)``, where d is :func:`template_distance` and "extra <unk>" counts
    the sentence's ``<unk>`` beyond those in the template (``<unk>`` used as filler).

    In ``[0, 1 + exact_bonus]`` without ``<unk>`` filler; ``1 + exact_bonus`` iff exact.
    """
    d = template_distance(x, template)
    t_len = (template != PAD_ID).long().cumprod(-1).sum(-1).clamp(min=1).float()
    x_len = sentence_lengths(x)
    in_sentence = torch.arange(x.shape[1], device=x.device)[None, :] < x_len[:, None]
    unk_x = ((x == UNK_ID) & in_sentence).sum(-1)
    unk_t = ((template == UNK_ID)).sum(-1)
    extra_unk = (unk_x - unk_t).clamp(min=0).float()
    return (1.0 - d / t_len).clamp(min=0.0) + exact_bonus * (d == 0).float() - unk_penalty * extra_unk


class TemplateRule(Constraint):
    """The fixed knowledge constraint of ``TemplateSentence-v0``: :func:`rule_score`.

    ``higher_is_satisfied``: 2 (with the default bonus) for a sentence that follows its template,
    graded down to 0 with the edit distance, minus ``unk_penalty`` per ``<unk>`` used as filler.
    ``context`` is the ``(N, L)`` template ids.

    Example:
        >>> v = Vocabulary(["the", "film", "was", "great", "."])
        >>> t = v.encode_batch([["the", "<mask>", "was", "great", "."]] * 2, 5)
        >>> x = v.encode_batch([["the", "film", "was", "great", "."], ["the", "<unk>", "was", "great", "."]], 6)
        >>> TemplateRule().predict(x, t).tolist()
        [2.0, 1.5]
    """

    def __init__(self, unk_penalty: float = 0.5, exact_bonus: float = 1.0) -> None:
        super().__init__()
        self.unk_penalty, self.exact_bonus = float(unk_penalty), float(exact_bonus)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:
            raise ConfigError("TemplateRule needs the template ids as context; got context=None.")
        return rule_score(x, context, self.unk_penalty, self.exact_bonus)

    def follows(self, x: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        """``(N,)`` bool: the sentence follows its template exactly."""
        return template_distance(x, template) == 0

    def extra_repr(self) -> str:
        return f"unk_penalty={self.unk_penalty}, exact_bonus={self.exact_bonus}"


def template_prefix(template: torch.Tensor) -> torch.Tensor:
    """Each template cut after its first ``<mask>`` (the rest becomes ``<pad>``): the part of the
    knowledge an incomplete rule checks, ``(N, L)``.

    >>> v = Vocabulary(["the", "film", "was", "great", "."])
    >>> t = v.encode_batch([["the", "<mask>", "was", "<mask>", "."]], 5)
    >>> v.decode(template_prefix(t)[0], keep_specials=True)
    ['the', '<mask>', '<pad>', '<pad>', '<pad>']
    """
    after = (template == MASK_ID).long().cumsum(-1) - (template == MASK_ID).long() > 0
    return template.masked_fill(after, PAD_ID)


class IncompleteTemplateRule(TemplateRule):
    """A rule that knows only part of the template: :func:`rule_score` against
    :func:`template_prefix` (the words before the first ``<mask>`` and that mask, which then
    consumes the rest of the sentence). A sentence that follows its template scores full marks;
    so does one that keeps the opening and ignores everything after it."""

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:
            raise ConfigError("IncompleteTemplateRule needs the template ids as context; got context=None.")
        return rule_score(x, template_prefix(context), self.unk_penalty, self.exact_bonus)
