"""Algorithm 1 on several processes or GPUs with ``torch.distributed`` (DDP).

Run it with ``torchrun``, one process per GPU (or per CPU worker)::

    torchrun --nproc_per_node 2 -m kcrl.cli train run.yaml --out runs/ddp --ddp
    torchrun --nproc_per_node 2 $(which kcrl) train run.yaml --out runs/ddp --ddp

Both are :func:`kcrl.benchmarks.train.train` with a :class:`DistributedPRTrainer`
(:func:`kcrl.benchmarks.train.train_distributed`). The backend is ``nccl``
when CUDA is available (rank ``LOCAL_RANK`` on ``cuda:LOCAL_RANK``), ``gloo`` on CPU.

What is split, and why the update is the single-process update
-------------------------------------------------------------
The *global batch* of one iteration is ``data_batch`` data rows and ``K = samples`` generator
samples, exactly as in :class:`kcrl.trainer.PRTrainer`. Each of the ``W`` processes holds a
contiguous shard of it (sizes as :func:`shard_sizes`; shards may differ by one row) and runs the
differentiable forward passes (``log p_theta``, ``f_phi``) on its shard only.

The importance weights of Eq. 8 and Eq. 10, ``w_i = softmax_i(alpha f_phi(x_i))``, are
self-normalised over all K samples, not per shard. So the per-sample values a loss needs
(constraint scores, log-probabilities) are **all-gathered** (``W x`` a few floats per row): every
process then evaluates the *global* loss on the global vector, with its own rows carrying gradient
and the other processes' rows entering as constants. The gather's backward returns ``W`` times the
gradient of the global loss through this process's rows, and DDP averages over the ``W`` processes:
``(1/W) sum_r W g_r = sum_r g_r``, the gradient of the global loss. Every loss of the trainer (Eq. 8,
Eq. 10, Eq. 12 with its leave-one-out baseline over all K rewards, the M-step and binary
classifier baselines, the MLE term) is therefore reproduced exactly, up to floating-point summation
order, and the logged statistics (ESS, log Z, losses) are those of the global batch.

How the global batch is drawn (``sampling``):

- ``"replicated"``: every process draws the whole global batch with the run's seed, as one process
  would, and keeps its shard. The run equals ``PRTrainer`` with the same config for any number of
  processes (and can resume a single-process checkpoint), but each process pays for drawing all
  K samples.
- ``"sharded"`` (default): process ``r`` draws only its shard, from its own stream
  (:func:`rank_seed`; rank 0 uses the run's seed). Sampling is split too; the global batch is then
  a different (equally valid) draw for each world size, and a run resumes only with the same
  number of processes.

Checkpoints are written by rank 0 only (every process holds the same parameters) and carry every
rank's random stream; on resume rank 0 reads the file and broadcasts it, so the output folder need
only be visible to rank 0.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kcrl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from kcrl.constraints import Constraint
from kcrl.errors import ConfigError, unknown_name
from kcrl.rng import counter_hash
from kcrl.trainer import PRConfig, PRTrainer, sampler_log_ratio

SAMPLING = ("sharded", "replicated")
_RANK_STREAM = 0x5EED  # stream id of counter_hash for the per-rank seeds


def shard_sizes(n: int, world_size: int) -> list[int]:
    """Rows of each rank when ``n`` rows are split into ``world_size`` contiguous shards.

    >>> shard_sizes(10, 4)
    [3, 3, 2, 2]
    """
    return [n // world_size + (1 if r < n % world_size else 0) for r in range(world_size)]


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s stream in ``"sharded"`` sampling: ``seed`` itself for rank 0.

    >>> rank_seed(7, 0)
    7
    >>> rank_seed(7, 1) == rank_seed(7, 1) != rank_seed(7, 2)
    True
    """
    if rank == 0:
        return seed
    return int(counter_hash(torch.tensor(seed), torch.tensor(rank), stream=_RANK_STREAM))


def _shard(values: torch.Tensor | None, rank: int, world_size: int) -> torch.Tensor | None:
    if values is None:
        return None
    return torch.split(values, shard_sizes(len(values), world_size))[rank]


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 (rank order); backward: this rank's rows of the gradient, times W."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, group, sizes: list[int] | None) -> torch.Tensor:
        world_size, rank = dist.get_world_size(group), dist.get_rank(group)
        if sizes is None:  # one more collective (and a host sync on GPUs)
            n = torch.tensor([local.shape[0]], device=local.device)
            gathered = [torch.zeros_like(n) for _ in range(world_size)]
            dist.all_gather(gathered, n, group=group)
            sizes = [int(s) for s in gathered]
        padded = local.new_zeros((max(sizes), *local.shape[1:]))  # all_gather needs equal shapes
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(world_size)]
        dist.all_gather(parts, padded, group=group)
        ctx.start, ctx.size, ctx.world_size = sum(sizes[:rank]), sizes[rank], world_size
        return torch.cat([part[:size] for part, size in zip(parts, sizes)])  # (N, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # The global loss depends on this rank's parameters through its rows only; times W because
        # DDP divides the sum of the ranks' gradients by W.
        return grad[ctx.start : ctx.start + ctx.size] * ctx.world_size, None, None


def gather_rows(local: torch.Tensor, group=None, sizes: list[int] | None = None) -> torch.Tensor:
    """Concatenate every rank's ``(n_r, ...)`` rows in rank order -> ``(sum_r n_r, ...)``, differentiably.

    ``sizes`` (every rank's ``n_r``, the same list on all ranks) saves a collective when known.
    """
    return _GatherRows.apply(local, group, sizes)


class _Method(nn.Module):
    """Makes ``module.<method>`` the ``forward`` of a module, so that DDP sees the call."""

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.module, self.method = module, method

    def forward(self, *args: Any) -> torch.Tensor:
        return getattr(self.module, self.method)(*args)


class DistributedPRTrainer(PRTrainer):
    """:class:`kcrl.trainer.PRTrainer` on one rank of an initialised process group (see module doc).

    Every rank constructs it with the same arguments; the parts are moved to ``device`` and
    rank 0's parameters are broadcast to all. With a process group of size 1 it is ``PRTrainer``.

    Args:
        generator, constraint, data, config, evaluate: as for :class:`~kcrl.trainer.PRTrainer`
            (``evaluate`` runs on every rank).
        sampling: ``"sharded"`` or ``"replicated"`` (see the module docstring).
        device: this rank's device; default ``cuda:LOCAL_RANK`` when the backend is NCCL, else CPU.
        group: the process group (default: the whole world).
        find_unused_parameters: passed to DDP, for models whose parameters are not all used each step.
    """

    def __init__(
        self,
        generator: nn.Module,
        constraint: Constraint,
        data: tuple[torch.Tensor, torch.Tensor | None],
        config: PRConfig | None = None,
        evaluate=None,
        sampling: str = "sharded",
        device: str | torch.device | None = None,
        group=None,
        find_unused_parameters: bool = False,
    ) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise ConfigError(
                "DistributedPRTrainer needs an initialised torch.distributed process group; launch with "
                "`torchrun --nproc_per_node N -m kcrl.cli train CONFIG --out DIR --ddp` or call "
                "kcrl.distributed.init_process_group() first."
            )
        if sampling not in SAMPLING:
            raise unknown_name("sampling", sampling, SAMPLING)
        if hasattr(generator, "sample_log_prob"):
            raise ConfigError(
                f"{type(generator).__name__} scores its samples with its own sample_log_prob, which DDP cannot "
                "wrap (gradients are synchronised through forward); train it in one process."
            )
        self.group, self.sampling = group, sampling
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        self.is_main_process = self.rank == 0
        device = torch.device(device) if device is not None else default_device(group)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        generator.to(device)
        constraint.to(device)
        x, context = data
        data = (x.to(device), None if context is None else context.to(device))
        # DDP broadcasts rank 0's parameters and buffers; a module without trainable parameters
        # (a fixed rule) cannot be wrapped, so it is broadcast here.
        ddp = functools.partial(
            DistributedDataParallel, process_group=group, find_unused_parameters=find_unused_parameters,
            device_ids=[device.index] if device.type == "cuda" else None,
        )
        self._ddp_generator = ddp(_Method(generator, "log_prob"))
        if any(p.requires_grad for p in constraint.parameters()):
            self._ddp_constraint = ddp(constraint)
        else:
            self._ddp_constraint = None
            for tensor in constraint.state_dict().values():
                dist.broadcast(tensor, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
        super().__init__(generator, constraint, data, config, evaluate)
        if sampling == "sharded":
            self.rng.manual_seed(rank_seed(self.config.seed, self.rank))
        self._global_context: torch.Tensor | None = None
        self._partitions: list[list[int]] = []  # shard sizes of this iteration's data and sample batches

    # ------------------------------------------------------------------ the global batch, sharded
    def _data_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        n, batch = len(self.data_x), self.config.data_batch
        samples = min(n, batch) if self.data_context is not None else self.config.samples  # one per context row
        self._partitions = [shard_sizes(min(n, batch), self.world_size), shard_sizes(samples, self.world_size)]
        if self.sampling == "replicated" or batch >= n:
            x, context = super()._data_batch()  # the whole global batch, then this rank's rows
            self._global_context = context
            return _shard(x, self.rank, self.world_size), _shard(context, self.rank, self.world_size)
        idx = torch.randint(n, (shard_sizes(batch, self.world_size)[self.rank],), generator=self.rng, device=self.data_x.device)
        return self.data_x[idx], None if self.data_context is None else self.data_context[idx]

    def _sample(self, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int], torch.Tensor | None]:
        """This rank's shard of the K generator samples, and the global grouping (1, K)."""
        if context is not None:
            raise ConfigError(
                "data-parallel training of conditional generators (data with contexts) is not supported yet; "
                "train them in one process."
            )
        groups = (1, self.config.samples)
        if self.sampling == "replicated":
            x, _, _, log_ratio = super()._sample(None)
            return _shard(x, self.rank, self.world_size), None, groups, _shard(log_ratio, self.rank, self.world_size)
        with torch.no_grad():
            out = self.generator.sample(shard_sizes(self.config.samples, self.world_size)[self.rank], generator=self.rng)
        return out[0], None, groups, sampler_log_ratio(out)

    # ------------------------------------------------------------------ hooks of PRTrainer
    def _global_rows(self, values: torch.Tensor) -> torch.Tensor:
        """``values``: per-row values of this iteration's data shard or sample shard (on every rank)."""
        return gather_rows(values, self.group, self._known_sizes(values.shape[0]))

    def _known_sizes(self, n_local: int) -> list[int] | None:
        """Every rank's row count for a tensor with ``n_local`` rows here, if the batch plan tells.

        Rows are data rows or sample rows. Unless the two partitions coincide, this rank tells them
        apart by its row count only if every rank can (the same answer on all ranks); else ``None``,
        and the gather asks the other ranks.
        """
        distinct = [p for i, p in enumerate(self._partitions) if p not in self._partitions[:i]]
        if len(distinct) == 1:
            return distinct[0]
        if len(distinct) == 2 and all(a != b for a, b in zip(*distinct)):
            for partition in distinct:
                if partition[self.rank] == n_local:
                    return partition
        return None

    def _generator_log_prob(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return self._ddp_generator(x, context)

    def _constraint_forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return self._ddp_constraint(x, context)

    def state_dict(self) -> dict[str, Any]:
        """PRTrainer's state plus every rank's random stream (collective: call it on every rank)."""
        state = super().state_dict()
        streams: list[Any] = [None] * self.world_size
        dist.all_gather_object(streams, self.rng.get_state().cpu(), group=self.group)
        state["distributed"] = {"world_size": self.world_size, "sampling": self.sampling, "rank_rng": streams}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("distributed")
        if self.sampling == "sharded":
            if saved is None or saved["sampling"] != "sharded" or saved["world_size"] != self.world_size:
                found = "a single-process run" if saved is None else f"{saved['world_size']} processes, {saved['sampling']!r} sampling"
                raise CheckpointError(
                    f"the checkpoint was written by {found}; 'sharded' sampling resumes only with the same "
                    f"number of processes ({self.world_size} now). Relaunch with that many processes, or "
                    "use sampling='replicated' (which resumes at any size)."
                )
        elif saved is not None and saved["sampling"] != "replicated":
            raise CheckpointError(
                f"the checkpoint was written with {saved['sampling']!r} sampling; resume it with the same "
                f"sampling and {saved['world_size']} processes."
            )
        super().load_state_dict(state)
        if self.sampling == "sharded":
            self.rng.set_state(saved["rank_rng"][self.rank])

    def _save(self, path: Path) -> None:
        state = self.state_dict()  # collective
        if self.is_main_process:
            save_checkpoint(path, state)
        dist.barrier(group=self.group)

    def _restore(self, path: Path) -> dict[str, Any] | None:
        holder = [load_checkpoint(path, "cpu") if self.is_main_process and path.is_file() else None]
        dist.broadcast_object_list(holder, src=dist.get_global_rank(self.group, 0) if self.group is not None else 0,
                                   group=self.group)
        return holder[0]  # on the CPU: load_state_dict copies onto this rank's device


# ---------------------------------------------------------------------- launching
def default_device(group=None) -> torch.device:
    """``cuda:LOCAL_RANK`` under the NCCL backend, else the CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def init_process_group(backend: str | None = None) -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment; returns ``(rank, world_size)``.

    ``backend`` defaults to ``nccl`` when CUDA is available and ``gloo`` otherwise. Does nothing
    if a group is already initialised.
    """
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ConfigError(
                f"data-parallel training needs the process-group variables that torchrun sets; missing "
                f"{', '.join(missing)}. Launch with `torchrun --nproc_per_node N -m kcrl.cli train CONFIG --out DIR --ddp`."
            )
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()
