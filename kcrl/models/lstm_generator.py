"""SeqGAN's generator: an LSTM language model over fixed-length token sequences, and its MLE.

Reads top to bottom: the model (:class:`LSTMGenerator`), the per-prefix state cache the
environments use (:class:`PrefixStateCache`), then maximum-likelihood training
(:class:`MLEArgs`, :func:`train_mle`).

The model is autoregressive with an explicit density, so it serves as

* the base model p_theta of a generation environment (``base_log_probs`` of
  :class:`kcrl.envs.oracle.OracleWorld` is :meth:`LSTMGenerator.prefix_log_probs`);
* the generator updated by Eq. 10 (``weighted_mle_loss(model.log_prob(x), log_w)``) or by
  Eq. 12 (``score_function_loss(model.log_prob(x), alpha * f(x))``), see :mod:`kcrl.losses`;
* with N(0, 1) parameters, the oracle of SeqGAN's synthetic benchmark
  (:class:`kcrl.envs.oracle.OracleLSTM`).

Recurrence (SeqGAN, Yu et al. AAAI 2017): the state of the empty prefix is one LSTM step on
the start token's embedding from a zero state; each written token is fed back as the next
input; ``log p(x_t | x_<t) = log_softmax(W h_t + b)``. The start token is an ordinary id of
the vocabulary (0 in SeqGAN), only its role as first input is special.
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from kcrl.errors import ConfigError, ShapeError
from kcrl.oracle_metrics import mean_token_nll
from kcrl.progress import progress

LSTMState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (N, H)
FILE_FORMAT = "kcrl.lstm_lm/1"
SAMPLE_CHUNK = 4096  # rows sampled at once; fixed, so samples depend only on the RNG


class LSTMGenerator(nn.Module):
    """An LSTM language model ``p(x) = prod_t p(x_t | x_<t)`` over sequences of ``length`` ids.

    Args:
        vocab_size: V; token ids are ``0..V-1``.
        embed_dim: token embedding size (SeqGAN: 32).
        hidden_dim: LSTM hidden size (SeqGAN: 32).
        length: T, the sequence length :meth:`sample` draws by default.
        start_token: the id fed as the first input (SeqGAN: 0).
        init_std: every parameter is drawn from N(0, init_std^2) (SeqGAN's generator: 0.1;
            its oracle: 1.0), in the order of :meth:`named_parameters`.
        one_bias_per_gate: keep ``lstm.bias_hh_l0`` at zero and frozen, so that each gate has
            one bias (``bias_ih``) as in SeqGAN's LSTM; PyTorch's second bias would double the
            bias variance of a random initialisation.
        generator: RNG of the initialisation (CPU); ``None`` uses torch's global RNG.

    Shapes: ``x`` is ``(N, T)`` long; log-probabilities of next tokens are ``(N, V)``.

    Example:
        >>> import torch
        >>> lm = LSTMGenerator(vocab_size=7, length=5, generator=torch.Generator().manual_seed(0))
        >>> x, log_p = lm.sample(3, torch.Generator().manual_seed(1))
        >>> x.shape, torch.allclose(log_p, lm.log_prob(x))
        (torch.Size([3, 5]), True)
    """

    def __init__(
        self,
        vocab_size: int = 5000,
        embed_dim: int = 32,
        hidden_dim: int = 32,
        length: int = 20,
        start_token: int = 0,
        init_std: float = 0.1,
        one_bias_per_gate: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim), ("hidden_dim", hidden_dim), ("length", length)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer; got {value!r}.")
        if not 0 <= start_token < vocab_size:
            raise ConfigError(f"start_token must be a token id in [0, {vocab_size}); got {start_token!r}.")
        if not init_std >= 0:
            raise ConfigError(f"init_std must be >= 0; got {init_std!r}.")
        self.vocab_size, self.embed_dim, self.hidden_dim = vocab_size, embed_dim, hidden_dim
        self.length, self.start_token, self.init_std = length, start_token, float(init_std)
        self.one_bias_per_gate = one_bias_per_gate
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.output = nn.Linear(hidden_dim, vocab_size)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if one_bias_per_gate and name == "lstm.bias_hh_l0":
                    param.zero_()
                else:
                    param.copy_(init_std * torch.randn(param.shape, generator=generator))
        if one_bias_per_gate:
            self.lstm.bias_hh_l0.requires_grad_(False)

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this architecture (saved with the weights)."""
        return {
            "vocab_size": self.vocab_size, "embed_dim": self.embed_dim, "hidden_dim": self.hidden_dim,
            "length": self.length, "start_token": self.start_token, "init_std": self.init_std,
            "one_bias_per_gate": self.one_bias_per_gate,
        }

    @property
    def device(self) -> torch.device:
        return self.output.weight.device

    # ------------------------------------------------------------------ one step at a time
    def begin(self, n: int) -> LSTMState:
        """The state of the empty prefix for n sequences: the start token read from zeros."""
        zeros = torch.zeros(n, self.hidden_dim, device=self.device)
        start = torch.full((n,), self.start_token, dtype=torch.long, device=self.device)
        return self.step(start, (zeros, zeros))

    def step(self, tokens: torch.Tensor, state: LSTMState) -> LSTMState:
        """Read one token per sequence: ``tokens`` ``(N,)``, state ``(h, c)`` -> next state."""
        h, c = state
        _, (h, c) = self.lstm(self.embedding(tokens)[:, None, :], (h[None], c[None]))  # (1, N, H) each
        return h[0], c[0]

    def next_log_probs(self, state: LSTMState, temperature: float = 1.0) -> torch.Tensor:
        """``log p(. | prefix)`` at ``temperature`` from the prefix's state, ``(N, V)``."""
        return torch.log_softmax(self.output(state[0]) / temperature, dim=-1)

    # ------------------------------------------------------------------ whole sequences
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher-forced next-token logits: position t predicts ``x[:, t]``, ``(N, T, V)``."""
        x = self._check_tokens(x)
        start = torch.full((x.shape[0], 1), self.start_token, dtype=torch.long, device=x.device)
        inputs = torch.cat([start, x[:, :-1]], dim=1)  # (N, T)
        hidden, _ = self.lstm(self.embedding(inputs))  # (N, T, H), zero initial state
        return self.output(hidden)  # (N, T, V)

    def log_prob(self, x: torch.Tensor, per_token: bool = False, temperature: float = 1.0) -> torch.Tensor:
        """``log p(x)`` ``(N,)``, or ``log p(x_t | x_<t)`` ``(N, T)`` with ``per_token``; differentiable."""
        logits = self(x)  # (N, T, V)
        if temperature != 1.0:
            logits = logits / temperature
        token_log_p = logits.gather(-1, x[..., None].long()).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (N, T)
        return token_log_p if per_token else token_log_p.sum(-1)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        length: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n sequences; returns ``x`` ``(n, T)`` and ``log p_temperature(x)`` ``(n,)``.

        ``generator`` must live on the model's device. The log-probability is that of the
        distribution actually sampled (at ``temperature``); call :meth:`log_prob` for others.
        """
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0; got {temperature!r}.")
        length = self.length if length is None else length
        xs, log_ps = [], []
        for start in range(0, n, SAMPLE_CHUNK):
            rows = min(SAMPLE_CHUNK, n - start)
            state = self.begin(rows)
            x = torch.empty(rows, length, dtype=torch.long, device=self.device)
            log_p = torch.zeros(rows, device=self.device)
            for t in range(length):
                logits = self.output(state[0])  # (rows, V)
                if temperature != 1.0:
                    logits = logits.div_(temperature)
                x[:, t], step_log_p = sample_categorical(logits, generator, inplace=True)
                log_p += step_log_p
                if t + 1 < length:
                    state = self.step(x[:, t], state)
            xs.append(x)
            log_ps.append(log_p)
        if not xs:
            return torch.empty(0, length, dtype=torch.long, device=self.device), torch.empty(0, device=self.device)
        return torch.cat(xs), torch.cat(log_ps)

    # ------------------------------------------------------------------ prefixes (environments)
    @torch.no_grad()
    def prefix_log_probs(
        self, tokens: torch.Tensor, lengths: torch.Tensor, cache: PrefixStateCache | None = None
    ) -> torch.Tensor:
        """``log p(. | tokens[i, :lengths[i]])`` for each row, ``(N, V)``.

        Without ``cache`` every prefix is re-read from the start. With a cache, a row whose
        prefix extends the prefix scored at the previous call (checked token by token) resumes
        from the stored state, so an environment stepping N episodes pays one LSTM step per
        token; any other row (a reset, another batch) is re-read. The answer is the same
        either way.
        """
        n = tokens.shape[0]
        lengths = lengths.to(tokens.device)
        resume = cache.resumable(self, tokens, lengths) if cache is not None else None
        if resume is not None and bool(resume.all()):
            (h, c), consumed = (cache.h.clone(), cache.c.clone()), cache.lengths.clone()
        else:
            h, c = self.begin(n)
            consumed = torch.zeros_like(lengths)
            if resume is not None:
                h = torch.where(resume[:, None], cache.h, h)
                c = torch.where(resume[:, None], cache.c, c)
                consumed = torch.where(resume, cache.lengths, consumed)
        if n > 0:
            for t in range(int(consumed.min()), int(lengths.max())):
                rows = ((consumed <= t) & (t < lengths)).nonzero().squeeze(-1)
                if rows.numel() > 0:
                    h_rows, c_rows = self.step(tokens[rows, t], (h[rows], c[rows]))
                    h, c = h.index_copy(0, rows, h_rows), c.index_copy(0, rows, c_rows)
        if cache is not None:
            cache.store(self, tokens, lengths, h, c)
        return self.next_log_probs((h, c))

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> None:
        """Write the architecture and weights to ``path`` (loadable with ``weights_only=True``)."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save({"format": FILE_FORMAT, "config": self.config(), "state_dict": state}, tmp)
        os.replace(tmp, path)  # atomic: a reader never sees half a file

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "LSTMGenerator":
        """Rebuild a model written by :meth:`save` (or a bare ``state_dict`` of one)."""
        record = torch.load(Path(path), map_location=map_location, weights_only=True)
        if isinstance(record, dict) and record.get("format") == FILE_FORMAT:
            config, state = dict(record["config"]), record["state_dict"]
        elif isinstance(record, dict) and "embedding.weight" in record:
            state = record
            vocab, embed = state["embedding.weight"].shape
            config = {"vocab_size": int(vocab), "embed_dim": int(embed), "hidden_dim": int(state["lstm.weight_hh_l0"].shape[1])}
        else:
            raise ConfigError(
                f"{path} is not an LSTM language-model file: expected a dict written by "
                f"LSTMGenerator.save (format {FILE_FORMAT!r}) or a state_dict with 'embedding.weight', "
                f"'lstm.*' and 'output.*' keys; got {type(record).__name__}"
                + (f" with keys {sorted(record)[:6]}" if isinstance(record, dict) else "") + "."
            )
        model = cls(**cls._constructor_args(config))
        model.load_weights(state)
        return model.to(map_location)

    @classmethod
    def _constructor_args(cls, config: dict[str, Any]) -> dict[str, Any]:
        accepted = inspect.signature(cls.__init__).parameters
        return {k: v for k, v in config.items() if k in accepted}

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy weights in, with an error naming the first mismatching tensor."""
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
        if missing or unexpected:
            raise ConfigError(
                f"parameter file does not match {type(self).__name__}: missing {missing}, unexpected {unexpected}."
            )
        for key, value in state_dict.items():
            if tuple(value.shape) != tuple(own[key].shape):
                raise ShapeError(
                    f"parameter {key!r} has shape {tuple(value.shape)} in the file but {tuple(own[key].shape)} "
                    f"in the model ({self.config()}); build the model with the file's sizes."
                )
        self.load_state_dict(state_dict)

    def _check_tokens(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.dtype not in (torch.long, torch.int32, torch.int64):
            raise ShapeError(f"expected token ids of shape (N, T) and an integer dtype; got {tuple(x.shape)} {x.dtype}.")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
            raise ShapeError(
                f"token ids must lie in [0, {self.vocab_size}); got values in [{int(x.min())}, {int(x.max())}]."
            )
        return x.long()


def sample_categorical(
    logits: torch.Tensor, generator: torch.Generator | None = None, inplace: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw per row of ``softmax(logits)`` ``(N, V)`` by inverting the CDF with one uniform.

    Returns the ids ``(N,)`` and their log-probabilities ``(N,)``. One uniform per row keeps
    the draws independent of V and several times faster than ``torch.multinomial`` on CPU.
    ``inplace`` lets it overwrite ``logits`` (saves two passes over ``(N, V)``).
    """
    top = logits.max(dim=-1, keepdim=True).values  # (N, 1)
    weights = (logits.sub_(top) if inplace else logits - top).exp_()  # (N, V), max 1
    cdf = weights.cumsum(dim=-1)  # (N, V), unnormalised
    total = cdf[:, -1:]
    u = torch.rand(logits.shape[0], 1, generator=generator, device=logits.device, dtype=cdf.dtype)
    ids = torch.searchsorted(cdf, u * total, right=True).clamp_(max=logits.shape[-1] - 1)  # (N, 1)
    log_p = torch.log(weights.gather(-1, ids)) - torch.log(total)
    return ids.squeeze(-1), log_p.squeeze(-1)


class PrefixStateCache:
    """The recurrent states of the prefixes a model scored last, so the next call can resume.

    Holds ``tokens`` ``(N, T)``, ``lengths`` ``(N,)`` and the state ``(h, c)`` after reading
    ``tokens[i, :lengths[i]]``. It is valid only for the same model with unchanged weights:
    a weight update (optimizer step, ``load_state_dict``) is detected through the parameters'
    version counters and empties the cache.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.tokens = self.lengths = self.h = self.c = None
        self.key: tuple | None = None

    @staticmethod
    def _key(model: nn.Module) -> tuple:
        return (id(model),) + tuple((p.data_ptr(), p._version) for p in model.parameters())

    def resumable(self, model: nn.Module, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor | None:
        """Rows whose current prefix extends the cached one, ``(N,)`` bool; ``None`` if unusable."""
        if self.key is None or self.key != self._key(model) or self.tokens.shape != tokens.shape:
            return None
        if self.tokens.device != tokens.device:
            return None
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        in_cached = positions[None, :] < self.lengths[:, None]  # (N, T)
        same = ((tokens == self.tokens) | ~in_cached).all(dim=1)
        return same & (self.lengths <= lengths)

    def store(self, model: nn.Module, tokens: torch.Tensor, lengths: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> None:
        self.tokens, self.lengths, self.h, self.c = tokens.clone(), lengths.clone(), h, c
        self.key = self._key(model)

    def __getstate__(self) -> dict:
        return {}  # ids and version counters do not survive pickling: start empty

    def __setstate__(self, state: dict) -> None:
        self.clear()


# ---------------------------------------------------------------------- maximum likelihood
@dataclass
class MLEArgs:
    """Hyperparameters of :func:`train_mle` (defaults: SeqGAN's generator pre-training)."""

    epochs: int = 120
    """passes over the training data (SeqGAN pre-trains for 120)"""
    batch_size: int = 64
    """sequences per step"""
    lr: float = 0.01
    """Adam learning rate"""
    final_lr_fraction: float = 1.0
    """learning rate at the last step as a fraction of ``lr``, reached by linear decay over the
    run's steps (1.0: constant, SeqGAN's recipe)"""
    max_grad_norm: float = 5.0
    """gradient-norm clip"""
    eval_every: int = 1
    """evaluate the validation NLL every this many epochs"""
    patience: int = 0
    """stop after this many evaluations without a better validation NLL (0: never stop early)"""
    keep_best: bool = True
    """restore the weights of the best validation NLL at the end"""
    seed: int = 0
    """seed of the minibatch order"""


def train_mle(
    model: LSTMGenerator,
    train: torch.Tensor,
    valid: torch.Tensor | None = None,
    args: MLEArgs | None = None,
    show_progress: bool = True,
    on_eval: Callable[[LSTMGenerator, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Maximum likelihood: minimise the mean per-token NLL of ``train`` ``(N, T)`` by Adam.

    Returns one record per evaluation (``epoch``, ``train_nll``, ``seconds``, and with
    ``valid``: ``valid_nll`` and ``improved``, whether it is the best so far). With ``valid``
    and ``patience`` it stops early; with ``keep_best`` the model ends with the weights of its
    best validation NLL. ``on_eval(model, record)`` runs after each evaluation (e.g. to
    snapshot the model or add measurements to the record).
    """
    import time

    args = args or MLEArgs()
    if args.epochs < 0 or args.batch_size < 1 or args.eval_every < 1 or not 0 <= args.final_lr_fraction <= 1:
        raise ConfigError(
            f"MLEArgs needs epochs >= 0, batch_size >= 1, eval_every >= 1 and 0 <= final_lr_fraction <= 1; got {args}."
        )
    train = model._check_tokens(train).to(model.device)
    valid = None if valid is None else model._check_tokens(valid).to(model.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=args.lr)
    total_steps = max(1, args.epochs * -(-len(train) // args.batch_size))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 - (1.0 - args.final_lr_fraction) * min(step, total_steps - 1) / max(1, total_steps - 1)
    )
    order_rng = torch.Generator().manual_seed(args.seed)
    history: list[dict[str, float]] = []
    best, best_state, stale = float("inf"), None, 0
    start = time.perf_counter()
    bar = progress(range(1, args.epochs + 1), "MLE", enabled=show_progress)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(train), generator=order_rng).to(model.device)
        total, count = 0.0, 0
        for idx in order.split(args.batch_size):
            x = train[idx]
            logits = model(x)  # (B, T, V)
            loss = F.cross_entropy(logits.reshape(-1, model.vocab_size), x.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            optimizer.step()
            schedule.step()
            total, count = total + loss.item() * x.numel(), count + x.numel()
        if epoch % args.eval_every and epoch != args.epochs:
            continue
        record = {"epoch": epoch, "train_nll": total / count, "seconds": time.perf_counter() - start}
        if valid is not None:
            model.eval()
            record["valid_nll"] = mean_token_nll(model, valid)
            record["improved"] = record["valid_nll"] < best
            if record["improved"]:
                best, stale = record["valid_nll"], 0
                if args.keep_best:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
        if on_eval is not None:
            on_eval(model, record)
            model.train()
        history.append(record)
        bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k.endswith("nll")}, refresh=False)
        if valid is not None and args.patience and stale >= args.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history
