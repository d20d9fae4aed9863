"""What the trainer does with its samples: importance weights for any proposal, and which contexts it draws.

Exact on enumerable worlds: the trainer's log Z estimate is compared with the enumerated
log E_p[exp(alpha f)], and the PR contexts of a two-context data set are counted.
"""

import math

import torch
from torch import nn

from kcrl.constraints import TokenPotentialConstraint
from kcrl.envs.tabular import TabularWorld
from kcrl.models.tabular import TabularAutoregressive
from kcrl.trainer import PRConfig, PRTrainer


class UniformProposal(nn.Module):
    """p_theta is a tabular model, but ``sample`` draws uniformly over all sequences and says so
    with the third item (the log ratio p_theta / uniform), as a restricted sampler does."""

    def __init__(self, world: TabularWorld, report_ratio: bool = True):
        super().__init__()
        self.model = TabularAutoregressive(world.vocab_size, world.max_length)
        self.model.load_state_dict(world.base.state_dict())
        self.sequences, self.report_ratio = world.sequences(), report_ratio

    def log_prob(self, x, context=None):
        return self.model.log_prob(x)

    def sample(self, n, generator=None, context=None):
        idx = torch.randint(len(self.sequences), (n,), generator=generator)
        x = self.sequences[idx]
        log_p = self.model.log_prob(x)
        if not self.report_ratio:
            return x, log_p
        return x, log_p, log_p + math.log(len(self.sequences))


def _log_z_estimate(report_ratio: bool) -> tuple[float, float, float]:
    world = TabularWorld(vocab_size=3, length=4, world_seed=6)
    constraint = world.true_constraint
    alpha = 1.0
    exact_p = torch.logsumexp(world.base_log_probs_all() + alpha * constraint(world.sequences()), 0).item()
    exact_uniform = (torch.logsumexp(alpha * constraint(world.sequences()), 0) - math.log(len(world.sequences()))).item()
    generator = UniformProposal(world, report_ratio)
    cfg = PRConfig(variant="fixed", iterations=1, samples=200_000, alpha=alpha, data_batch=16, generator_lr=1e-9,
                   checkpoint_every=0)
    stats = PRTrainer(generator, constraint, (world.sample_data(16, torch.Generator().manual_seed(0)), None), cfg).step()
    return stats["log_z"], exact_p, exact_uniform


def test_importance_weights_use_the_samplers_log_ratio():
    log_z, exact_p, exact_uniform = _log_z_estimate(report_ratio=True)
    assert abs(exact_p - exact_uniform) > 0.8  # the two targets are far apart
    assert abs(log_z - exact_p) < 0.1


def test_control_without_the_ratio_the_weights_target_the_proposal():
    log_z, exact_p, exact_uniform = _log_z_estimate(report_ratio=False)
    assert abs(log_z - exact_uniform) < 0.1
    assert abs(log_z - exact_p) > 0.7


class ContextRecorder(nn.Module):
    """A tabular model that ignores its context and records the contexts it was asked to sample."""

    def __init__(self, world: TabularWorld):
        super().__init__()
        self.model = TabularAutoregressive(world.vocab_size, world.max_length)
        self.seen: list[int] = []

    def log_prob(self, x, context=None):
        return self.model.log_prob(x)

    def sample(self, n, generator=None, context=None):
        self.seen += context[:, 0].tolist()
        return self.model.sample(n, generator)


def test_pr_contexts_cover_the_data_when_the_batch_is_the_whole_data_set():
    world = TabularWorld(vocab_size=3, length=3, world_seed=0)
    x = world.sample_data(8, torch.Generator().manual_seed(0))
    context = torch.tensor([[0]] * 4 + [[1]] * 4)
    recorder = ContextRecorder(world)
    cfg = PRConfig(variant="fixed", iterations=40, data_batch=64, contexts=1, samples_per_context=2, checkpoint_every=0)
    PRTrainer(recorder, TokenPotentialConstraint(3, 3), (x, context), cfg).train(show_progress=False)
    share = sum(recorder.seen) / len(recorder.seen)
    assert len(recorder.seen) == 80
    assert 0.3 < share < 0.7  # both contexts drawn about equally (was: context 0 only)
