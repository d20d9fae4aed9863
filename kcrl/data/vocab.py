"""Word vocabularies with the special tokens every kcrl text model shares.

Ids ``0..4`` are the specials, in this order, for every vocabulary:

=======  ==========  ===================================================================
id       token       meaning
=======  ==========  ===================================================================
0        ``<pad>``   unwritten / padding slot
1        ``<bos>``   start of a sentence (decoder input only)
2        ``<eos>``   end of a sentence (ends an episode)
3        ``<unk>``   a word outside the vocabulary (counts as a word, but see docs/design.md §5)
4        ``<mask>``  in a template: a masked segment of one or more words
=======  ==========  ===================================================================

Words follow, most frequent first (ties broken alphabetically, so a vocabulary is a
deterministic function of the word counts).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import torch

from kcrl.errors import ConfigError

PAD, BOS, EOS, UNK, MASK = "<pad>", "<bos>", "<eos>", "<unk>", "<mask>"
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK, MASK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID, MASK_ID = range(len(SPECIALS))


class VocabularyMismatchError(ConfigError):
    """Two components (e.g. an environment and a checkpoint) use different vocabularies."""


class Vocabulary:
    """Token <-> id mapping: the specials, then up to ``size - 5`` words.

    Args:
        words: the words (not the specials), in id order; duplicates and specials are rejected.

    Example:
        >>> vocab = Vocabulary.build([["the", "film", "."], ["the", "end", "."]], size=8)
        >>> len(vocab), vocab.itos[5:]
        (8, ['.', 'the', 'end'])
        >>> vocab.encode(["the", "plot", "."], add_eos=True)
        [6, 3, 5, 2]
        >>> vocab.decode([6, 7, 2, 6])
        ['the', 'end']
    """

    def __init__(self, words: Sequence[str]) -> None:
        words = list(words)
        bad = [w for w in words if not isinstance(w, str) or not w or w in SPECIALS]
        if bad:
            raise ConfigError(
                f"vocabulary words must be non-empty strings other than the specials {SPECIALS}; "
                f"got {bad[:5]!r}."
            )
        if len(set(words)) != len(words):
            dupes = [w for w, c in Counter(words).items() if c > 1]
            raise ConfigError(f"vocabulary words must be unique; duplicated: {dupes[:5]!r}.")
        self.itos: list[str] = list(SPECIALS) + words
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_counts(cls, counts: Mapping[str, int] | Iterable[tuple[str, int]], size: int, min_count: int = 1) -> "Vocabulary":
        """The ``size - 5`` most frequent words with at least ``min_count`` occurrences."""
        if not isinstance(size, int) or size <= len(SPECIALS):
            raise ConfigError(
                f"vocab_size counts the {len(SPECIALS)} specials {SPECIALS} too, so it must be an "
                f"integer > {len(SPECIALS)}; got {size!r}. Use e.g. vocab_size=5000."
            )
        items = counts.items() if isinstance(counts, Mapping) else counts
        ranked = sorted(((w, c) for w, c in items if c >= min_count and w not in SPECIALS), key=lambda wc: (-wc[1], wc[0]))
        return cls([w for w, _ in ranked[: size - len(SPECIALS)]])

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], size: int, min_count: int = 1) -> "Vocabulary":
        """Count the tokens of ``sentences`` and keep the most frequent (see :meth:`from_counts`)."""
        counts: Counter[str] = Counter()
        for sentence in sentences:
            counts.update(sentence)
        return cls.from_counts(counts, size, min_count)

    # ------------------------------------------------------------------ mapping
    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, fingerprint={self.fingerprint()[:12]})"

    def fingerprint(self) -> str:
        """A SHA-256 of the id -> token table: equal fingerprints mean equal vocabularies."""
        return hashlib.sha256("\n".join(self.itos).encode("utf-8")).hexdigest()

    def encode(self, tokens: Sequence[str], add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token strings -> ids; out-of-vocabulary words become ``<unk>``."""
        ids = [self.stoi.get(t, UNK_ID) for t in tokens]
        return ([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else [])

    def decode(self, ids: Iterable[int] | torch.Tensor, stop_at_eos: bool = True, keep_specials: bool = False) -> list[str]:
        """Ids -> token strings; stops at the first ``<eos>`` and drops ``<pad>``/``<bos>``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_ID and stop_at_eos:
                break
            if not keep_specials and i in (PAD_ID, BOS_ID, EOS_ID):
                continue
            if not 0 <= i < len(self.itos):
                raise ConfigError(f"token id {i} is outside this vocabulary of size {len(self)}.")
            out.append(self.itos[i])
        return out

    def encode_batch(self, sentences: Sequence[Sequence[str]], length: int, add_eos: bool = False) -> torch.Tensor:
        """Encode and right-pad with ``<pad>`` to ``length`` (longer rows are cut), ``(N, length)`` long."""
        rows = []
        for sentence in sentences:
            ids = self.encode(sentence, add_eos=add_eos)[:length]
            rows.append(ids + [PAD_ID] * (length - len(ids)))
        return torch.tensor(rows, dtype=torch.long).reshape(len(sentences), length)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        """A JSON/``torch.load(weights_only=True)``-safe description (plain lists and strings)."""
        return {"specials": list(SPECIALS), "words": self.itos[len(SPECIALS):]}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Vocabulary":
        if not isinstance(data, Mapping) or "words" not in data:
            raise ConfigError(f"a stored vocabulary needs a 'words' list; got {type(data).__name__}.")
        if list(data.get("specials", SPECIALS)) != list(SPECIALS):
            raise VocabularyMismatchError(
                f"stored vocabulary has specials {data.get('specials')!r}; this kcrl uses {list(SPECIALS)!r}."
            )
        return cls(list(data["words"]))

    def check_same(self, other: "Vocabulary", what: str = "the checkpoint") -> None:
        """Raise :class:`VocabularyMismatchError` unless ``other`` equals this vocabulary."""
        if self == other:
            return
        first = next((i for i, (a, b) in enumerate(zip(self.itos, other.itos)) if a != b), min(len(self), len(other)))
        raise VocabularyMismatchError(
            f"vocabulary mismatch with {what}: sizes {len(self)} vs {len(other)}, first difference at id "
            f"{first} ({_at(self.itos, first)!r} vs {_at(other.itos, first)!r}). A model only works with the "
            "vocabulary it was trained on: build the environment with the same corpus and vocab_size, "
            "or train a new base generator."
        )

    # ------------------------------------------------------------------ id classes
    @staticmethod
    def is_word(ids: torch.Tensor) -> torch.Tensor:
        """True where an id stands for a word (including ``<unk>``); False for the other specials."""
        return (ids >= len(SPECIALS)) | (ids == UNK_ID)


def _at(items: list[str], i: int) -> str | None:
    return items[i] if i < len(items) else None
