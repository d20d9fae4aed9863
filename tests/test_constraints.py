import pytest
import torch

from kcrl.constraints import NeuralConstraint, RuleConstraint, SumConstraint, TokenPotentialConstraint, scaled
from kcrl.errors import ConfigError, NonFiniteError, ShapeError


def count_ones(x, context):
    return (x == 1).float().sum(-1)


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x, context=None):
        return self.w * x.float().sum(-1)


def test_tiers_forward_predict_reward():
    f = NeuralConstraint(Linear())
    x = torch.tensor([[1, 2], [0, 0]])
    assert f(x).requires_grad
    assert not f.predict(x).requires_grad and f.predict(x).tolist() == [6.0, 0.0]
    assert f.reward(x, alpha=0.5).tolist() == [3.0, 0.0]
    assert f.learnable and not RuleConstraint(count_ones).learnable


def test_sum_rule_plus_learned_residual():
    total = SumConstraint([RuleConstraint(count_ones), NeuralConstraint(Linear())], weights=[1.0, 0.25])
    assert total.predict(torch.tensor([[1, 1]])).tolist() == [2.0 + 0.25 * 4.0]
    assert scaled(RuleConstraint(count_ones), 3.0).predict(torch.tensor([[1, 0]])).tolist() == [3.0]
    assert sum(p.numel() for p in total.parameters()) == 1


def test_token_potentials():
    f = TokenPotentialConstraint(3, 2)
    with torch.no_grad():
        f.unary[0, 2] = 1.0
        f.binary[0, 2, 1] = 0.5
    assert f.predict(torch.tensor([[2, 1], [2, 0], [0, 1]])).tolist() == [1.5, 1.0, 0.0]
    with pytest.raises(ShapeError, match=r"shape \(N, 2\)"):
        f(torch.zeros(4, 3, dtype=torch.long))


def test_constraint_errors():
    with pytest.raises(NonFiniteError, match="non-finite"):
        RuleConstraint(lambda x, c: torch.full((x.shape[0],), float("nan"))).reward(torch.zeros(2, 1))
    with pytest.raises(ShapeError, match="one score per sample"):
        RuleConstraint(lambda x, c: torch.zeros(x.shape[0], 2)).predict(torch.zeros(2, 1))
    with pytest.raises(ConfigError, match="2 terms but 1 weights"):
        SumConstraint([RuleConstraint(count_ones)] * 2, weights=[1.0])
    with pytest.raises(ConfigError, match="alpha must be"):
        scaled(RuleConstraint(count_ones), -1.0)
