"""TemplateGenerator: consistent scoring paths, sampling, checkpoints and MLE."""

import pytest
import torch

from kcrl.models.text_generator import (
    GeneratorConfig,
    MLEArgs,
    TemplateGenerator,
    target_lengths,
    train_mle,
)
from kcrl.data import Vocabulary, VocabularyMismatchError
from kcrl.data.templates import TemplateError, TemplateSet
from kcrl.data.vocab import BOS_ID, EOS_ID, MASK_ID, PAD_ID, UNK_ID
from kcrl.errors import ConfigError

VOCAB = Vocabulary([f"w{i}" for i in range(20)])
TEMPLATES = torch.tensor([[5, MASK_ID, 6, 0], [MASK_ID, 7, MASK_ID, 8], [MASK_ID, 0, 0, 0]])


def model(cell="gru", seed=0):
    torch.manual_seed(seed)
    return TemplateGenerator(VOCAB, GeneratorConfig(embed_dim=12, hidden_dim=16, cell=cell)).eval()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_teacher_forcing_incremental_and_prefix_scoring_agree(cell):
    m = model(cell)
    x = torch.tensor([[9, 10, 11, EOS_ID, 0], [12, EOS_ID, 0, 0, 0], [13, 14, 15, 16, 17]])
    assert target_lengths(x).tolist() == [4, 2, 5]
    per_token = m.token_log_probs(x, TEMPLATES)  # (3, 5)
    memory, state = m.encode(TEMPLATES), None
    state = memory.init
    prev = torch.full((3,), BOS_ID)
    for t in range(5):
        step, state = m.decode_step(prev, state, memory)
        prefix = m.step_log_probs(x, torch.full((3,), t), TEMPLATES)
        torch.testing.assert_close(step, prefix, rtol=1e-5, atol=1e-5)
        expected = step.gather(1, x[:, t : t + 1]).squeeze(1)
        scored = t < target_lengths(x)
        torch.testing.assert_close(per_token[scored, t], expected[scored], rtol=1e-5, atol=1e-5)
        assert (per_token[~scored, t] == 0).all()
        prev = x[:, t]
    torch.testing.assert_close(m.log_prob(x, TEMPLATES), per_token.sum(1))
    assert torch.allclose(m.step_log_probs(x, torch.tensor([0, 1, 2]), TEMPLATES).exp().sum(-1), torch.ones(3))


def test_sampling_is_reproducible_and_reports_both_densities():
    m = model()
    a = m.sample(TEMPLATES.repeat(20, 1), generator=torch.Generator().manual_seed(1), max_length=6)
    b = m.sample(TEMPLATES.repeat(20, 1), generator=torch.Generator().manual_seed(1), max_length=6)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.log_prob, b.log_prob)
    banned = (a.tokens == BOS_ID) | (a.tokens == MASK_ID) | (a.tokens == UNK_ID)
    assert not banned.any()
    written = a.tokens != PAD_ID
    assert (written.long().cumprod(1).sum(1) == a.lengths).all()  # padding only after the sentence
    ended = (a.tokens == EOS_ID).any(1)
    assert ((a.lengths == 6) | ended).all()
    torch.testing.assert_close(a.log_prob, m.log_prob(a.tokens, TEMPLATES.repeat(20, 1)), rtol=1e-5, atol=1e-4)
    assert (a.sample_log_prob >= a.log_prob - 1e-5).all()  # the proposal excludes tokens, so it is more peaked
    with_unk = torch.tensor([[5, MASK_ID, UNK_ID, UNK_ID]]).repeat(30, 1)  # two literal <unk> to copy
    with torch.no_grad():
        m.out_bias[UNK_ID] = 20.0  # make <unk> the favourite token
    unk = m.sample(with_unk, generator=torch.Generator().manual_seed(3), max_length=6)
    assert (unk.tokens == UNK_ID).sum(1).max() == 2 and (m.greedy(TEMPLATES).tokens != UNK_ID).all()
    assert (m.sample(with_unk, forbid_unk=False, max_length=6).tokens == UNK_ID).sum(1).max() > 2
    with torch.no_grad():
        m.out_bias[UNK_ID] = 0.0
    hot = m.sample(TEMPLATES, temperature=1.0, forbid_unk=False, generator=torch.Generator().manual_seed(2), max_length=6)
    assert hot.tokens.shape == (3, 6)
    g1, g2 = m.greedy(TEMPLATES), m.greedy(TEMPLATES)
    assert torch.equal(g1.tokens, g2.tokens) and (g1.sample_log_prob == 0).all()
    with pytest.raises(ConfigError, match="temperature"):
        m.sample(TEMPLATES, temperature=0.0)
    with pytest.raises(TemplateError, match="no <mask>"):
        m.sample(torch.tensor([[5, 6, 0]]))


def test_checkpoint_round_trip_and_typed_errors(tmp_path):
    m = model("lstm")
    m.save(tmp_path / "g.pt")
    loaded = TemplateGenerator.load(tmp_path / "g.pt", vocab=VOCAB).eval()
    assert loaded.config == m.config and loaded.vocab == VOCAB
    x = torch.tensor([[9, 10, EOS_ID, 0]] * 3)
    torch.testing.assert_close(loaded.log_prob(x, TEMPLATES), m.log_prob(x, TEMPLATES))
    payload = torch.load(tmp_path / "g.pt", weights_only=True)  # plain data only
    assert payload["vocab"]["words"] == VOCAB.itos[5:]
    with pytest.raises(VocabularyMismatchError, match="first difference at id 5"):
        TemplateGenerator.load(tmp_path / "g.pt", vocab=Vocabulary(["other"] + [f"w{i}" for i in range(19)]))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable TemplateGenerator checkpoint"):
        TemplateGenerator.load(tmp_path / "junk.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="is not a kcrl.TemplateGenerator/1 checkpoint"):
        TemplateGenerator.load(tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="no generator checkpoint"):
        TemplateGenerator.load(tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="cell must be"):
        GeneratorConfig(cell="rnn")


def test_mle_learns_a_deterministic_infill():
    """Known answer: every sentence is "wA wB wC" with the template "wA <mask> wC" and wB = wA + 9."""
    firsts = torch.arange(5, 15)
    sentences = torch.stack([firsts, firsts + 9, torch.full_like(firsts, 24)], 1)  # (10, 3)
    templates = torch.stack([firsts, torch.full_like(firsts, MASK_ID), torch.full_like(firsts, 24)], 1)
    data = TemplateSet(templates, sentences, torch.full((10,), 3))
    m = model()
    m.train()
    history = train_mle(m, data, MLEArgs(steps=150, batch_size=10, lr=3e-2, seed=0), show_progress=False, log_every=50)
    assert [h["step"] for h in history] == [50, 100, 150]
    out = m.greedy(templates, max_length=5)
    expected = torch.cat([sentences, torch.full((10, 1), EOS_ID), torch.zeros(10, 1, dtype=torch.long)], 1)
    assert torch.equal(out.tokens, expected)
    assert history[-1]["loss"] < 0.05
    with pytest.raises(ConfigError, match="empty"):
        train_mle(m, data.subset(slice(0, 0)), MLEArgs(steps=1))


def test_proposal_density_is_the_samplers_and_leaves_banned_tokens_alone():
    """``proposal=True`` scores the distribution ``sample(forbid_unk=True)`` draws from: it equals the
    sampler's own log-probability (also with ``<unk>`` the template shows), and Eq. 10 on it gives the
    banned ``<unk>`` logit no gradient, where the model density pushes it down."""
    from kcrl.models.text_generator import TrainerAdapter

    m = model()
    templates = torch.cat([TEMPLATES, torch.tensor([[UNK_ID, MASK_ID, UNK_ID, 0]])]).repeat(30, 1)
    s = m.sample(templates, generator=torch.Generator().manual_seed(2), max_length=6)
    assert ((s.tokens == UNK_ID).sum(1) <= (templates == UNK_ID).sum(1)).all()
    assert (s.tokens == UNK_ID).any()  # the template's own <unk> are written
    proposal = m.log_prob(s.tokens, templates, proposal=True)
    torch.testing.assert_close(proposal, s.sample_log_prob, rtol=1e-5, atol=1e-4)
    assert (proposal >= m.log_prob(s.tokens, templates) - 1e-6).all()

    plain = TEMPLATES.repeat(30, 1)  # no <unk> in the templates: <unk> is banned everywhere
    for density, moves in (("proposal", False), ("model", True)):
        adapter = TrainerAdapter(m, max_length=6, density=density)
        x, log_p = adapter.sample(len(plain), torch.Generator().manual_seed(3), context=plain)[:2]
        torch.testing.assert_close(log_p, adapter.sample_log_prob(x, plain), rtol=1e-5, atol=1e-4)
        m.zero_grad()
        torch.testing.assert_close(adapter.log_prob(x, plain), m.log_prob(x, plain))  # L(theta) always scores p_theta
        (-adapter.sample_log_prob(x, plain).mean()).backward()  # Eq. 10 with uniform weights
        assert (m.out_bias.grad[UNK_ID].abs() > 1e-6) == moves, density
    with pytest.raises(ConfigError, match="density must be 'model' or 'proposal'"):
        TrainerAdapter(m, density="q")
