"""Template-conditioned sentence generator p_theta(x | template), and its MLE trainer.

Architecture (one file, top to bottom): a bidirectional GRU/LSTM encodes the template; a
GRU/LSTM decoder writes the sentence token by token, attending over the template at every
step (Luong "general" attention on the decoder output), with output embeddings tied to the
input embeddings by default.

Sentences are id sequences ending in ``<eos>`` and padded with ``<pad>``; the decoder reads
``<bos>`` first. ``log p(x | t) = sum_t log p(x_t | x_<t, t)`` counts the ``<eos>``.

Three ways to score:

* :meth:`TemplateGenerator.log_prob` / :meth:`~TemplateGenerator.token_log_probs` — teacher
  forcing over whole sentences, differentiable (MLE, Eq. 10's weighted likelihood);
* :meth:`~TemplateGenerator.step_log_probs` — ``log p(. | prefix, t)`` of arbitrary prefixes,
  the interface of :meth:`kcrl.envs.task.SequenceTask.base_log_probs`;
* :meth:`~TemplateGenerator.encode` + :meth:`~TemplateGenerator.decode_step` — incremental, one
  token at a time, for sampling and for environments that keep decoder state.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from kcrl.checkpoint import atomic_write_bytes
from kcrl.data.templates import TemplateSet, check_templates
from kcrl.data.vocab import BOS_ID, EOS_ID, MASK_ID, PAD_ID, UNK_ID, Vocabulary
from kcrl.errors import ConfigError, NonFiniteError, ShapeError
from kcrl.progress import progress

CHECKPOINT_FORMAT = "kcrl.TemplateGenerator/1"


@dataclass
class GeneratorConfig:
    """Sizes of :class:`TemplateGenerator` (the vocabulary size comes from the vocabulary)."""

    embed_dim: int = 128
    """token embedding size (shared by encoder, decoder and, if tied, the output layer)"""
    hidden_dim: int = 256
    """decoder state size; the encoder has hidden_dim // 2 per direction"""
    cell: str = "gru"
    """recurrent cell: "gru" or "lstm\""""
    dropout: float = 0.1
    """dropout on embeddings and the attentional output (training only)"""
    tie_embeddings: bool = True
    """output layer = input embedding matrix (fewer parameters)"""

    def __post_init__(self) -> None:
        if self.cell not in ("gru", "lstm"):
            raise ConfigError(f"cell must be 'gru' or 'lstm'; got {self.cell!r}.")
        if self.hidden_dim < 2 or self.hidden_dim % 2 or self.embed_dim < 1:
            raise ConfigError(
                f"hidden_dim must be an even integer >= 2 and embed_dim >= 1; got "
                f"hidden_dim={self.hidden_dim}, embed_dim={self.embed_dim}."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); got {self.dropout}.")


class Memory(NamedTuple):
    """The encoded templates: ``keys (N, L, H)``, ``mask (N, L)`` (True on real tokens) and the
    decoder's initial state ``(N, S)`` (S = H for a GRU, 2H for an LSTM: ``h`` and ``c``)."""

    keys: torch.Tensor
    mask: torch.Tensor
    init: torch.Tensor

    def select(self, index: torch.Tensor) -> "Memory":
        return Memory(self.keys[index], self.mask[index], self.init[index])


class Samples(NamedTuple):
    """Sampled sentences.

    Attributes:
        tokens: ``(N, T)`` ids; each row ends with ``<eos>`` unless cut at ``max_length``, then
            ``<pad>``.
        log_prob: ``(N,)`` ``log p_theta(x | t)`` under the model itself (temperature 1, no token
            forbidden): the density importance weights need.
        sample_log_prob: ``(N,)`` log-probability under the distribution actually sampled from
            (temperature, forbidden tokens); 0 for greedy decoding. ``log_prob - sample_log_prob``
            is the log importance ratio p_theta / proposal.
        lengths: ``(N,)`` tokens written, counting the ``<eos>``.
    """

    tokens: torch.Tensor
    log_prob: torch.Tensor
    sample_log_prob: torch.Tensor
    lengths: torch.Tensor


def target_lengths(x: torch.Tensor) -> torch.Tensor:
    """Scored tokens per row of ``(N, T)`` ids: through the first ``<eos>``, else up to the first ``<pad>``."""
    t = x.shape[1]
    pos = torch.arange(t, device=x.device).expand_as(x)
    first_eos = torch.where(x == EOS_ID, pos, t).min(1).values
    first_pad = torch.where(x == PAD_ID, pos, t).min(1).values
    return torch.where(first_eos < first_pad, first_eos + 1, first_pad)


class TemplateGenerator(nn.Module):
    """Encoder-decoder p_theta(x | template) over a :class:`~kcrl.data.vocab.Vocabulary`.

    Args:
        vocab: the vocabulary (stored with the weights by :meth:`save`).
        config: sizes (:class:`GeneratorConfig`).

    Example:
        >>> import torch
        >>> from kcrl.data import Vocabulary
        >>> vocab = Vocabulary(["the", "film", "was", "great", "."])
        >>> _ = torch.manual_seed(0)
        >>> model = TemplateGenerator(vocab, GeneratorConfig(embed_dim=8, hidden_dim=8)).eval()
        >>> t = vocab.encode_batch([["the", "<mask>", "was", "great", "."]], 5)
        >>> out = model.sample(t, generator=torch.Generator().manual_seed(0), max_length=8)
        >>> out.tokens.shape, bool(torch.allclose(out.log_prob, model.log_prob(out.tokens, t)))
        (torch.Size([1, 8]), True)
    """

    def __init__(self, vocab: Vocabulary, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.vocab, self.config = vocab, config or GeneratorConfig()
        cfg, v = self.config, len(vocab)
        rnn = nn.GRU if cfg.cell == "gru" else nn.LSTM
        self.embed = nn.Embedding(v, cfg.embed_dim, padding_idx=PAD_ID)
        self.encoder = rnn(cfg.embed_dim, cfg.hidden_dim // 2, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(cfg.hidden_dim, cfg.hidden_dim)
        self.decoder = rnn(cfg.embed_dim, cfg.hidden_dim, batch_first=True)
        self.query = nn.Linear(cfg.hidden_dim, cfg.hidden_dim, bias=False)  # attention score h^T W k
        self.combine = nn.Linear(2 * cfg.hidden_dim, cfg.embed_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.out_bias = nn.Parameter(torch.zeros(v))
        self.out = None if cfg.tie_embeddings else nn.Linear(cfg.embed_dim, v, bias=False)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ the network
    def encode(self, templates: torch.Tensor) -> Memory:
        """Encode ``(N, L)`` template ids (right-padded with ``<pad>``) into a :class:`Memory`."""
        if templates.dim() != 2:
            raise ShapeError(f"templates must be (N, L) token ids; got shape {tuple(templates.shape)}.")
        mask = templates != PAD_ID  # (N, L)
        lengths = mask.sum(1).clamp(min=1)
        packed = pack_padded_sequence(self.drop(self.embed(templates)), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.encoder(packed)
        keys, _ = pad_packed_sequence(out, batch_first=True, total_length=templates.shape[1])  # (N, L, H)
        h_n = final[0] if self.config.cell == "lstm" else final  # (2, N, H/2)
        h0 = torch.tanh(self.bridge(torch.cat([h_n[0], h_n[1]], dim=-1)))  # (N, H)
        init = torch.cat([h0, torch.zeros_like(h0)], -1) if self.config.cell == "lstm" else h0
        return Memory(keys, mask, init)

    def _rnn_state(self, state: torch.Tensor):
        if self.config.cell == "lstm":
            h, c = state.chunk(2, dim=-1)
            return h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()
        return state.unsqueeze(0).contiguous()

    def _flat_state(self, rnn_state) -> torch.Tensor:
        if self.config.cell == "lstm":
            return torch.cat([rnn_state[0][0], rnn_state[1][0]], dim=-1)
        return rnn_state[0]

    def _features(self, outputs: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Attention on decoder outputs ``(N, T, H)`` -> attentional features ``(N, T, E)``."""
        scores = torch.bmm(self.query(outputs), memory.keys.transpose(1, 2))  # (N, T, L)
        scores = scores.masked_fill(~memory.mask[:, None, :], float("-inf"))
        context = torch.bmm(torch.softmax(scores, dim=-1), memory.keys)  # (N, T, H)
        return self.drop(torch.tanh(self.combine(torch.cat([outputs, context], dim=-1))))  # (N, T, E)

    def _project(self, features: torch.Tensor) -> torch.Tensor:
        """Output layer: features ``(..., E)`` -> logits ``(..., V)``."""
        weight = self.embed.weight if self.out is None else self.out.weight
        return features @ weight.t() + self.out_bias

    def _logits(self, outputs: torch.Tensor, memory: Memory) -> torch.Tensor:
        return self._project(self._features(outputs, memory))  # (N, T, V)

    def forward(self, inputs: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Teacher forcing: decoder inputs ``(N, T)`` (``<bos>`` first) -> logits ``(N, T, V)``."""
        outputs, _ = self.decoder(self.drop(self.embed(inputs)), self._rnn_state(memory.init))
        return self._logits(outputs, memory)

    def decode_step(self, prev: torch.Tensor, state: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: previous tokens ``(N,)`` and states ``(N, S)`` -> ``(log p(. | ...) (N, V), new state)``."""
        out, rnn_state = self.decoder(self.drop(self.embed(prev[:, None])), self._rnn_state(state))
        return torch.log_softmax(self._logits(out, memory)[:, 0], dim=-1), self._flat_state(rnn_state)

    def prefix_state(self, tokens: torch.Tensor, lengths: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        """State after reading ``<bos>`` and the first ``lengths`` tokens of each row, and the
        next-token log-probs there: ``((N, V), (N, S))``."""
        n = tokens.shape[0]
        steps = int(lengths.max()) + 1 if n else 1
        inputs = torch.full((n, steps), BOS_ID, dtype=torch.long, device=tokens.device)
        if steps > 1:
            inputs[:, 1:] = tokens[:, : steps - 1]
        packed = pack_padded_sequence(self.drop(self.embed(inputs)), (lengths + 1).cpu(), batch_first=True, enforce_sorted=False)
        out, rnn_state = self.decoder(packed, self._rnn_state(memory.init))
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)  # (N, steps, H)
        last = out[torch.arange(n, device=out.device), lengths][:, None]  # (N, 1, H)
        return torch.log_softmax(self._logits(last, memory)[:, 0], dim=-1), self._flat_state(rnn_state)

    # ------------------------------------------------------------------ scoring
    def token_log_probs(
        self, x: torch.Tensor, templates: torch.Tensor, lengths: torch.Tensor | None = None, proposal: bool = False
    ) -> torch.Tensor:
        """``log p(x_t | x_<t, template)`` per position, ``(N, T)``; 0 after each row's last scored
        token (``lengths``, default :func:`target_lengths`: through the first ``<eos>``).

        With ``proposal`` the distribution is the one :meth:`sample` draws from with ``forbid_unk``:
        ``<pad>``, ``<bos>`` and ``<mask>`` never, and ``<unk>`` only while the sentence has written
        fewer than its template shows (the softmax is renormalised over the allowed tokens).
        """
        if x.dim() != 2 or templates.dim() != 2 or x.shape[0] != templates.shape[0]:
            raise ShapeError(
                f"expected x (N, T) and templates (N, L) with the same N; got {tuple(x.shape)} and {tuple(templates.shape)}."
            )
        lengths = target_lengths(x) if lengths is None else lengths
        inputs = torch.cat([torch.full_like(x[:, :1], BOS_ID), x[:, :-1]], dim=1)  # (N, T)
        memory = self.encode(templates)
        outputs, _ = self.decoder(self.drop(self.embed(inputs)), self._rnn_state(memory.init))
        features = self._features(outputs, memory)  # (N, T, E)
        scored = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]  # (N, T)
        # The output layer dominates the cost: apply it to scored positions only.
        logits = self._project(features[scored])  # (K, V)
        if proposal:
            banned = torch.zeros(x.shape[0], x.shape[1], self.vocab_size, dtype=torch.bool, device=x.device)  # (N, T, V)
            banned[..., [PAD_ID, BOS_ID, MASK_ID]] = True
            unk_before = torch.cumsum((x == UNK_ID).long(), dim=1) - (x == UNK_ID).long()  # (N, T)
            banned[..., UNK_ID] = unk_before >= (templates == UNK_ID).sum(-1, keepdim=True)
            logits = logits.masked_fill(banned[scored], float("-inf"))
        log_probs = torch.log_softmax(logits, dim=-1)  # (K, V)
        picked = log_probs.gather(-1, x[scored][:, None]).squeeze(-1)  # (K,)
        out = torch.zeros(x.shape, dtype=picked.dtype, device=x.device)
        return out.masked_scatter(scored, picked)

    def log_prob(
        self, x: torch.Tensor, templates: torch.Tensor, lengths: torch.Tensor | None = None, proposal: bool = False
    ) -> torch.Tensor:
        """``log p_theta(x | template)`` per sentence, ``(N,)``, differentiable (counts ``<eos>``);
        ``proposal``: of the sampler's restricted distribution (see :meth:`token_log_probs`)."""
        return self.token_log_probs(x, templates, lengths, proposal).sum(-1)

    def step_log_probs(self, tokens: torch.Tensor, lengths: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
        """``log p(. | tokens[:, :lengths], template)`` for each prefix, ``(N, V)``.

        Recomputes each prefix from scratch (O(T) per call); :class:`kcrl.envs.template.TemplateWorld`
        keeps decoder state between steps instead.
        """
        return self.prefix_state(tokens, lengths.clamp(max=tokens.shape[1]), self.encode(templates))[0]

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        templates: torch.Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        forbid_unk: bool = True,
        max_length: int = 20,
        greedy: bool = False,
    ) -> Samples:
        """Draw one sentence per template (batched, on the model's device).

        ``<pad>``, ``<bos>`` and ``<mask>`` are never written. With ``forbid_unk``, ``<unk>`` is
        written at most as often as the template shows it: a template's own ``<unk>`` stand for
        words to copy, but as filler ``<unk>`` is banned (docs/design.md §5: an unrestricted generator
        fills masks with it). Runs in eval mode; stops early once every row has written ``<eos>``.

        Args:
            templates: ``(N, L)`` template ids, each with at least one ``<mask>``.
            temperature: > 0; divides the logits.
            generator: RNG (on the model's device) for reproducible draws.
            forbid_unk: no ``<unk>`` beyond the template's own.
            max_length: most tokens per sentence, ``<eos>`` included.
            greedy: argmax decoding instead of sampling.
        """
        if not greedy and not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"temperature must be a positive finite number; got {temperature!r}.")
        if max_length < 1:
            raise ConfigError(f"max_length must be >= 1; got {max_length}.")
        templates = templates.to(self.device)
        check_templates(templates)
        was_training = self.training
        self.eval()
        try:
            n, dev = templates.shape[0], self.device
            memory = self.encode(templates)
            state = memory.init
            banned = torch.zeros(self.vocab_size, dtype=torch.bool, device=dev)
            banned[[PAD_ID, BOS_ID, MASK_ID]] = True
            unk_budget = (templates == UNK_ID).sum(-1)  # (N,) <unk> the template itself shows
            unk_written = torch.zeros_like(unk_budget)
            tokens = torch.full((n, max_length), PAD_ID, dtype=torch.long, device=dev)
            log_prob = torch.zeros(n, device=dev)
            sample_log_prob = torch.zeros(n, device=dev)
            done = torch.zeros(n, dtype=torch.bool, device=dev)
            prev = torch.full((n,), BOS_ID, dtype=torch.long, device=dev)
            for t in range(max_length):
                step, state = self.decode_step(prev, state, memory)  # (N, V)
                logits = (step / (1.0 if greedy else temperature)).masked_fill(banned, float("-inf"))
                if forbid_unk:
                    logits[:, UNK_ID] = logits[:, UNK_ID].masked_fill(unk_written >= unk_budget, float("-inf"))
                proposal = torch.log_softmax(logits, -1)
                if greedy:
                    choice = proposal.argmax(-1)
                else:
                    choice = torch.multinomial(proposal.exp(), 1, generator=generator).squeeze(-1)
                    sample_log_prob += torch.where(done, 0.0, proposal.gather(-1, choice[:, None]).squeeze(-1))
                log_prob += torch.where(done, 0.0, step.gather(-1, choice[:, None]).squeeze(-1))
                tokens[:, t] = torch.where(done, PAD_ID, choice)
                unk_written += ((choice == UNK_ID) & ~done).long()
                done = done | (choice == EOS_ID)
                prev = choice
                if bool(done.all()):
                    break
            lengths = (tokens != PAD_ID).sum(-1)
        finally:
            self.train(was_training)
        return Samples(tokens, log_prob, sample_log_prob, lengths)

    def greedy(self, templates: torch.Tensor, max_length: int = 20, forbid_unk: bool = True) -> Samples:
        """Greedy (argmax) decoding; see :meth:`sample`."""
        return self.sample(templates, greedy=True, max_length=max_length, forbid_unk=forbid_unk)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path) -> None:
        """Write weights, config and vocabulary atomically (loadable with ``weights_only=True``)."""
        payload = {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(self.config),
            "vocab": self.vocab.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write_bytes(Path(path), buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path, vocab: Vocabulary | None = None, map_location: str | torch.device = "cpu") -> "TemplateGenerator":
        """Load a checkpoint written by :meth:`save`.

        Raises:
            ConfigError: the file is missing or is not a TemplateGenerator checkpoint.
            VocabularyMismatchError: ``vocab`` is given and differs from the checkpoint's.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"no generator checkpoint at {str(path)!r}. The default one ships with kcrl "
                "(kcrl/benchmarks/results/template-base/generator.pt in the installed package; reinstall kcrl if it is "
                "missing there); `kcrl bench template-base --out DIR` trains a new one into DIR/generator.pt."
            )
        try:
            payload = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # unpickling errors vary by torch version
            raise ConfigError(f"{str(path)!r} is not a readable TemplateGenerator checkpoint: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise ConfigError(f"{str(path)!r} is not a {CHECKPOINT_FORMAT} checkpoint (found {found!r}).")
        stored = Vocabulary.from_dict(payload["vocab"])
        if vocab is not None:
            vocab.check_same(stored, f"checkpoint {path}")
        model = cls(stored, GeneratorConfig(**payload["config"]))
        model.load_state_dict(payload["state_dict"])
        return model.to(map_location)


# ---------------------------------------------------------------------------- MLE training
@dataclass
class MLEArgs:
    """Hyperparameters of :func:`train_mle`."""

    steps: int = 2000
    """optimiser steps"""
    batch_size: int = 64
    """sentences per step"""
    lr: float = 2e-3
    """Adam learning rate, decayed linearly to ``lr * final_lr_fraction`` over ``steps`` (or over
    ``time_budget_s``, whichever is used up faster)"""
    final_lr_fraction: float = 0.1
    """learning rate at the last step, as a fraction of ``lr``"""
    max_grad_norm: float = 5.0
    """gradient-norm clip"""
    max_length: int = 20
    """longest target (sentence + <eos>); longer targets are cut"""
    time_budget_s: float | None = None
    """stop after this many seconds even if steps remain (None: run every step)"""
    seed: int = 0
    """seed of batch order and dropout"""


def train_mle(
    model: TemplateGenerator,
    data: TemplateSet,
    args: MLEArgs | None = None,
    show_progress: bool = True,
    log_every: int = 100,
) -> list[dict[str, float]]:
    """Maximum likelihood: minimise ``-mean_t log p(x_t | x_<t, template)`` over ``data``.

    Batches are drawn epoch by epoch from a seeded permutation. Returns one record per
    ``log_every`` steps: ``step``, ``loss`` (mean per-token NLL over those steps, nats),
    ``seconds``.
    """
    args = args or MLEArgs()
    if len(data) == 0:
        raise ConfigError("train_mle needs at least one sentence; got an empty TemplateSet.")
    device = model.device
    data = data.to(device)
    targets = data.targets(args.max_length)
    gen = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    model.train()
    history: list[dict[str, float]] = []
    order = torch.randperm(len(data), generator=gen)
    cursor, total, count, start = 0, 0.0, 0, time.perf_counter()
    bar = progress(range(args.steps), "MLE", enabled=show_progress)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)  # dropout masks
        for step in bar:
            if cursor + args.batch_size > len(order):
                order, cursor = torch.randperm(len(data), generator=gen), 0
            idx = order[cursor : cursor + args.batch_size].to(device)
            cursor += args.batch_size
            x, t = targets[idx], data.templates[idx]
            width = int(target_lengths(x).max())
            x = x[:, :width]
            n_tokens = target_lengths(x).sum()
            loss = -model.token_log_probs(x, t).sum() / n_tokens
            if not torch.isfinite(loss):
                raise NonFiniteError(f"MLE loss is {loss.item()} at step {step}; lower the learning rate.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            frac = step / max(args.steps - 1, 1)
            if args.time_budget_s:  # on a slow machine the schedule follows the clock instead
                frac = max(frac, min(1.0, (time.perf_counter() - start) / args.time_budget_s))
            for group in optimizer.param_groups:
                group["lr"] = args.lr * (1.0 - (1.0 - args.final_lr_fraction) * frac)
            optimizer.step()
            total, count = total + loss.item(), count + 1
            if (step + 1) % log_every == 0 or step + 1 == args.steps:
                history.append({"step": step + 1, "loss": total / count, "seconds": time.perf_counter() - start})
                bar.set_postfix(loss=f"{total / count:.3f}", refresh=False)
                total, count = 0.0, 0
            if args.time_budget_s is not None and time.perf_counter() - start > args.time_budget_s:
                if count:
                    history.append({"step": step + 1, "loss": total / count, "seconds": time.perf_counter() - start})
                break
    model.eval()
    return history


# ---------------------------------------------------------------------------- trainer protocol
class TrainerAdapter(nn.Module):
    """A :class:`TemplateGenerator` behind :class:`kcrl.trainer.PRTrainer`'s generator protocol.

    The context of a sample is its encoded template ``(N, L)``. With ``forbid_unk`` (the default, as
    docs/design.md §5 advises) the sampler writes ``<unk>`` only where the template shows it, so its samples
    are draws of that restricted distribution p~_theta, not of p_theta: ``<unk>`` filler has a large
    share of p_theta's mass where the real infills hold rare words.

    ``log_prob`` is always ``log p_theta`` (L(theta), MLE on data, uses it). ``density`` says which
    density ``sample`` returns and ``sample_log_prob`` computes, the one Eq. 10 raises on the samples
    (``sum_i w_i log p(x_i)``): ``"model"``, ``log p_theta`` with no token forbidden, or
    ``"proposal"``, ``log p~_theta``, the distribution the samples come from. With ``"model"`` the
    target is ``q ∝ p_theta exp(alpha f)`` and ``sample`` also returns the log ratio
    ``log p_theta - log p~_theta`` of each draw, which the trainer adds to ``alpha f`` in the
    importance weights; samples that never hold ``<unk>`` filler still cannot show q's ``<unk>``
    mass, so Eq. 10 pushes ``p_theta(<unk>)`` down, which costs test perplexity where real
    sentences hold ``<unk>`` (a subword vocabulary has none). With ``"proposal"`` the banned
    entries get no gradient from the PR term and ``q ∝ p~_theta exp(alpha f)`` is exactly what the
    weights ``softmax(alpha f)`` of these samples estimate.

    Example:
        >>> from kcrl.data import Vocabulary
        >>> vocab = Vocabulary(["the", "film", "was", "great", "."])
        >>> _ = torch.manual_seed(0)
        >>> adapter = TrainerAdapter(TemplateGenerator(vocab, GeneratorConfig(embed_dim=8, hidden_dim=8)), max_length=7).eval()
        >>> t = vocab.encode_batch([["the", "<mask>", "was", "great", "."]] * 3, 5)
        >>> x, log_p, log_ratio = adapter.sample(3, generator=torch.Generator().manual_seed(0), context=t)
        >>> x.shape, bool(torch.allclose(log_p, adapter.log_prob(x, t)))
        (torch.Size([3, 7]), True)
    """

    def __init__(self, model: TemplateGenerator, max_length: int = 20, temperature: float = 1.0, forbid_unk: bool = True,
                 density: str = "model") -> None:
        super().__init__()
        if density not in ("model", "proposal"):
            raise ConfigError(f"density must be 'model' or 'proposal'; got {density!r}.")
        if density == "proposal" and (not forbid_unk or temperature != 1.0):
            raise ConfigError("density='proposal' is the density of the sampler with forbid_unk=True at temperature 1; "
                              f"got forbid_unk={forbid_unk}, temperature={temperature}.")
        self.model, self.max_length, self.temperature, self.forbid_unk = model, max_length, temperature, forbid_unk
        self.density = density

    def sample(self, n: int, generator: torch.Generator | None = None, context: torch.Tensor | None = None):
        """One sentence per template row: ``(x (n, max_length), log p(x | context) (n,))`` with p the
        ``density``; with ``density="model"`` also ``log p_theta(x) - log p~_theta(x)`` ``(n,)``, the log
        importance ratio of p_theta to the sampler (0 where nothing was banned)."""
        if context is None or context.shape[0] != n:
            got = None if context is None else tuple(context.shape)
            raise ShapeError(f"TrainerAdapter.sample needs one template per sample: context ({n}, L); got {got}.")
        out = self.model.sample(context, self.temperature, generator, self.forbid_unk, self.max_length)
        if self.density == "proposal":
            return out.tokens, out.sample_log_prob
        # the draws come from the restricted sampler, the PR term raises p_theta: the third item is
        # the log importance ratio p_theta / sampler, which the trainer adds to alpha f
        return out.tokens, out.log_prob, out.log_prob - out.sample_log_prob

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable ``log p_theta(x | context)``, ``(N,)`` (through each row's ``<eos>``)."""
        if context is None:
            raise ShapeError("TrainerAdapter.log_prob needs the (N, L) templates as context; got None.")
        return self.model.log_prob(x, context)

    def sample_log_prob(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Differentiable log-density of this adapter's samples under ``density`` (what Eq. 10 raises), ``(N,)``."""
        return self.model.log_prob(x, context, proposal=self.density == "proposal")
