"""Text data: sentence corpora, vocabularies and templates (see the submodules)."""

from kcrl.data.corpus import (
    Corpus,
    CorpusConfig,
    CorpusError,
    RegexTokenizer,
    cache_dir,
    load_corpus,
)
from kcrl.data.vocab import SPECIALS, Vocabulary, VocabularyMismatchError

__all__ = [
    "SPECIALS",
    "Corpus",
    "CorpusConfig",
    "CorpusError",
    "RegexTokenizer",
    "Vocabulary",
    "VocabularyMismatchError",
    "cache_dir",
    "load_corpus",
]
