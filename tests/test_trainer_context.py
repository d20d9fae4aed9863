"""Algorithm 1 with a conditional generator: K samples per context, weights normalised per context."""

import pytest
import torch
from torch import nn

from kcrl.constraints import TokenPotentialConstraint
from kcrl.envs.tabular import TabularWorld
from kcrl.models.tabular import TabularAutoregressive
from kcrl.posterior import ExactPosterior, kl_divergence
from kcrl.trainer import PRConfig, PRTrainer


class ConditionalTabular(nn.Module):
    """p(x | c) for c in {0, 1}: one tabular autoregressive model per context."""

    def __init__(self, worlds):
        super().__init__()
        self.models = nn.ModuleList()
        for world in worlds:
            model = TabularAutoregressive(world.vocab_size, world.max_length)
            model.load_state_dict(world.base.state_dict())
            self.models.append(model)

    def log_prob(self, x, context=None):
        c = context[:, 0]
        out = torch.zeros(len(x))
        for k, model in enumerate(self.models):
            mask = c == k
            if mask.any():
                out = out.index_put((mask.nonzero().squeeze(-1),), model.log_prob(x[mask]))
        return out

    def sample(self, n, generator=None, context=None):
        x = torch.zeros(n, self.models[0].length, dtype=torch.long)
        log_p = torch.zeros(n)
        for k, model in enumerate(self.models):
            mask = context[:, 0] == k
            if mask.any():
                x[mask], log_p[mask] = model.sample(int(mask.sum()), generator)
        return x, log_p


def _conditional_run(update, lam):
    worlds = [TabularWorld(vocab_size=3, length=3, world_seed=s) for s in (0, 1)]
    # the same hidden constraint for both contexts: p_data(x|c) ∝ p0_c(x) exp(f*(x))
    f_star = worlds[0].true_constraint
    log_p_data = [ExactPosterior(w.base_log_probs_all(), f_star(w.sequences()), 1.0).log_q for w in worlds]
    gen = torch.Generator().manual_seed(0)
    xs, cs = [], []
    for c, lp in enumerate(log_p_data):
        idx = torch.multinomial(lp.exp(), 3000, replacement=True, generator=gen)
        xs.append(worlds[0].sequences()[idx])
        cs.append(torch.full((3000, 1), c))
    perm = torch.randperm(6000, generator=gen)
    data = (torch.cat(xs)[perm], torch.cat(cs)[perm])

    model = ConditionalTabular(worlds)
    constraint = TokenPotentialConstraint(3, 3)
    # no MLE term: the generator moves only through the PR term with the learned constraint
    cfg = PRConfig(iterations=150, data_batch=512, contexts=64, samples_per_context=16, mle_weight=0.0, lam=lam,
                   constraint_steps=3, generator_update=update, checkpoint_every=0)

    def kl():
        with torch.no_grad():
            seqs = worlds[0].sequences()
            return sum(kl_divergence(lp, m.log_prob(seqs)).item() for lp, m in zip(log_p_data, model.models)) / 2

    start = kl()
    history = PRTrainer(model, constraint, data, cfg).train(show_progress=False)
    return start, kl(), history


@pytest.mark.parametrize("update", ["eq10", "eq12"])
def test_conditional_generator_learns_towards_data(update):
    start, end, history = _conditional_run(update, lam=1.0)
    assert start > 0.3
    assert end < 0.5 * start
    assert 0 < history[-1]["ess_fraction"] <= 1 and history[-1]["ess"] <= 16


def test_control_without_the_pr_term_the_generator_stays():
    start, end, _ = _conditional_run("eq10", lam=0.0)
    assert end > 0.95 * start
