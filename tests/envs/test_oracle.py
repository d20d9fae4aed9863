"""OracleSequence-v0: the oracle's construction, its reference points, the NLL metrics, MLE."""

import math
import pickle
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

import kcrl  # noqa: F401  (registers the envs)
from kcrl.models.lstm_generator import LSTMGenerator, MLEArgs, PrefixStateCache, train_mle
from kcrl.models.sequence_scorer import CNNSequenceScorer, cnn_constraint
from kcrl.constraints import Constraint
from kcrl.envs.oracle import OracleLikelihoodConstraint, OracleLSTM, OracleWorld
from kcrl.errors import ConfigError, ShapeError, UnknownNameError
from kcrl.losses import constraint_loss
from kcrl.oracle_metrics import (
    ci95_of_mean, evaluate_generator, heldout_nll, mean_token_nll, nll_oracle, oracle_floor, self_nll, sequence_token_nll,
    uniform_nll_oracle,
)
from kcrl.posterior import ImportanceWeights

SMALL = dict(vocab_size=50, length=8)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def seqgan_log_probs(params, x, start_token=0):
    """log p(x_t | x_<t) by SeqGAN's LSTM equations written out in float64 numpy, (N, T)."""
    p = [np.asarray(a, dtype=np.float64) for a in params]
    emb, (wi, ui, bi), (wf, uf, bf), (wo, uo, bo), (wc, uc, bc), w_out, b_out = (
        p[0], p[1:4], p[4:7], p[7:10], p[10:13], p[13], p[14],
    )
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    n, t_max = x.shape
    h, c = np.zeros((n, wi.shape[1])), np.zeros((n, wi.shape[1]))
    inputs = emb[np.full(n, start_token)]
    out = np.zeros((n, t_max))
    for t in range(t_max):
        i = sigmoid(inputs @ wi + h @ ui + bi)
        f = sigmoid(inputs @ wf + h @ uf + bf)
        o = sigmoid(inputs @ wo + h @ uo + bo)
        c = f * c + i * np.tanh(inputs @ wc + h @ uc + bc)
        h = o * np.tanh(c)
        logits = h @ w_out + b_out
        top = logits.max(-1, keepdims=True)
        log_z = top[:, 0] + np.log(np.exp(logits - top).sum(-1))
        out[:, t] = logits[np.arange(n), x[:, t]] - log_z
        inputs = emb[x[:, t]]
    return out


# ---------------------------------------------------------------------- construction
def test_one_bias_per_gate_and_the_draw_order_of_the_seed():
    oracle = OracleLSTM(seed=3)  # SeqGAN's sizes: 5000 / 32 / 32
    g = gen(3)
    expected = {
        "embedding.weight": torch.randn(5000, 32, generator=g),
        "lstm.weight_ih_l0": torch.randn(128, 32, generator=g),
        "lstm.weight_hh_l0": torch.randn(128, 32, generator=g),
        "lstm.bias_ih_l0": torch.randn(128, generator=g),
        "lstm.bias_hh_l0": torch.zeros(128),  # one bias per gate: the second is zero
        "output.weight": torch.randn(5000, 32, generator=g),
        "output.bias": torch.randn(5000, generator=g),
    }
    state = oracle.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    assert not any(p.requires_grad for p in oracle.parameters())
    assert abs(oracle.embedding.weight.std().item() - 1.0) < 0.02  # N(0, 1), not PyTorch's init


def test_generator_keeps_its_second_bias_frozen_at_zero():
    lm = LSTMGenerator(**SMALL, generator=gen(0))
    assert not lm.lstm.bias_hh_l0.requires_grad and lm.lstm.bias_hh_l0.abs().max() == 0
    data = OracleLSTM(**SMALL, seed=0).sample(64, gen(1))[0]
    train_mle(lm, data, args=MLEArgs(epochs=1), show_progress=False)
    assert lm.lstm.bias_hh_l0.abs().max() == 0


def test_oracle_is_determined_by_its_seed_and_data_by_the_data_seed():
    a, b, c = OracleLSTM(**SMALL, seed=5), OracleLSTM(**SMALL, seed=5), OracleLSTM(**SMALL, seed=6)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert not torch.equal(a.output.weight, c.output.weight)

    world = OracleWorld(**SMALL, train_samples=300, test_samples=200)
    other = OracleWorld(**SMALL, train_samples=300, test_samples=200)
    _ = other.data("test")  # the order in which splits are first asked for does not matter
    assert torch.equal(world.data("train"), other.data("train"))
    assert torch.equal(world.data("test"), other.data("test"))
    assert not torch.equal(world.data("train")[:200], world.data("test"))
    reseeded = OracleWorld(**SMALL, train_samples=300, data_seed=1)
    assert not torch.equal(world.data("train"), reseeded.data("train"))
    assert world.data("train").shape == (300, 8) and world.data("train").max() < 50
    with pytest.raises(UnknownNameError, match="Did you mean 'valid'"):
        world.data("vaild")


# ---------------------------------------------------------------------- NLL against a direct computation
def test_log_probs_match_seqgans_equations_token_by_token():
    oracle = OracleLSTM(**SMALL, seed=2)
    x, log_p_sampled = oracle.sample(40, gen(0))
    direct = torch.as_tensor(seqgan_log_probs(oracle.to_seqgan_params(), x.numpy()), dtype=torch.float32)
    torch.testing.assert_close(oracle.log_prob(x, per_token=True), direct, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(log_p_sampled, direct.sum(1), atol=1e-3, rtol=1e-5)
    # the metrics are means of these numbers
    assert mean_token_nll(oracle, x) == pytest.approx(-direct.double().mean().item(), abs=1e-5)
    # next-token log-probs for every prefix (the env's base_log_probs)
    for t in range(8):
        step = oracle.prefix_log_probs(x, torch.full((40,), t))
        torch.testing.assert_close(step.gather(1, x[:, t : t + 1]).squeeze(1), direct[:, t], atol=1e-4, rtol=1e-5)


def test_seqgan_parameter_arrays_round_trip():
    oracle = OracleLSTM(**SMALL, seed=4)
    params = oracle.to_seqgan_params()
    assert [a.shape for a in params[:4]] == [(50, 32), (32, 32), (32, 32), (32,)]
    assert params[13].shape == (32, 50) and params[14].shape == (50,)
    again = OracleLSTM.from_seqgan_params(params, length=8)
    x = oracle.sample(16, gen(0))[0]
    torch.testing.assert_close(again.log_prob(x), oracle.log_prob(x), atol=1e-5, rtol=1e-6)
    assert again.origin == "SeqGAN parameter arrays" and again.seed is None
    with pytest.raises(ConfigError, match="15 parameter arrays; got 14"):
        OracleLSTM.from_seqgan_params(params[:-1])


def test_nll_oracle_and_heldout_nll_are_means_over_samples():
    oracle, model = OracleLSTM(**SMALL, seed=0), LSTMGenerator(**SMALL, generator=gen(9))
    x, log_p = model.sample(500, gen(1))
    assert nll_oracle(oracle, model, 500, gen(1)) == pytest.approx(-oracle.log_prob(x).sum().item() / x.numel(), rel=1e-5)
    assert self_nll(model, 500, gen(1)) == pytest.approx(-log_p.sum().item() / x.numel(), rel=1e-5)
    data = oracle.sample(300, gen(2))[0]
    assert heldout_nll(model, data) == pytest.approx(-model.log_prob(data).sum().item() / data.numel(), rel=1e-5)


def test_evaluate_generator_gives_the_sampling_interval_of_nll_oracle():
    oracle, model = OracleLSTM(**SMALL, seed=0), LSTMGenerator(**SMALL, generator=gen(9))
    scores = evaluate_generator(oracle, model, oracle.sample(100, gen(2))[0], n=400, seed=3)["T=1"]
    x, _ = model.sample(400, gen(3))
    per_sequence = -oracle.log_prob(x).double() / x.shape[1]  # (400,)
    assert scores["nll_oracle"] == pytest.approx(per_sequence.mean().item(), rel=1e-6)
    assert scores["nll_oracle_ci95"] == pytest.approx(1.96 * per_sequence.std().item() / 20, rel=1e-6)
    assert sequence_token_nll(oracle, x).shape == (400,) and ci95_of_mean(torch.ones(5)) == 0.0


# ---------------------------------------------------------------------- reference points
def test_uniform_generator_scores_exactly_log_v_on_held_out_data():
    uniform = LSTMGenerator(**SMALL, init_std=0.0)  # every parameter 0: all logits equal
    data = OracleLSTM(**SMALL, seed=0).sample(200, gen(0))[0]
    assert heldout_nll(uniform, data) == pytest.approx(math.log(50), abs=1e-6)
    assert self_nll(uniform, 200, gen(1)) == pytest.approx(math.log(50), abs=1e-6)


def test_oracle_floor_below_log_v_below_uniform_tokens():
    oracle = OracleLSTM(**SMALL, seed=0)
    floor = oracle_floor(oracle, 2000, gen(0))
    uniform = uniform_nll_oracle(oracle, 2000, 8, gen(1))
    # floor = entropy rate < log V <= cross-entropy of the uniform distribution with the oracle
    assert floor < math.log(50) - 0.3 < uniform - 0.3
    samples = oracle.sample(2000, gen(0))[0]
    assert floor == pytest.approx(mean_token_nll(oracle, samples), abs=1e-4)


@pytest.mark.slow
def test_full_spec_reference_points_near_seqgans():
    """SeqGAN's oracle: floor ~5.75, uniform tokens ~11.43 (other seeds move both by ~0.15)."""
    oracle = OracleLSTM()
    assert 5.6 < oracle_floor(oracle, 2000, gen(0)) < 6.0
    assert 11.1 < uniform_nll_oracle(oracle, 2000, 20, gen(1)) < 11.6


# ---------------------------------------------------------------------- learning
def test_mle_lowers_nll_oracle_towards_the_floor():
    world = OracleWorld(vocab_size=20, length=6, oracle_seed=1, train_samples=2000, valid_samples=400, test_samples=1000)
    model = LSTMGenerator(20, 32, 32, 6, generator=gen(0))
    before = nll_oracle(world.oracle, model, 2000, gen(1))
    heldout_before = heldout_nll(model, world.data("test"))
    history = train_mle(model, world.data("train"), world.data("valid"), MLEArgs(epochs=6, batch_size=64, seed=0), show_progress=False)
    after = nll_oracle(world.oracle, model, 2000, gen(1))
    floor = oracle_floor(world.oracle, 2000, gen(2))
    assert len(history) == 6 and history[-1]["train_nll"] < history[0]["train_nll"]
    assert after < before - 0.5
    assert heldout_nll(model, world.data("test")) < heldout_before - 0.5
    assert heldout_nll(model, world.data("test")) > floor - 0.1  # cannot beat the truth (up to noise)
    report = evaluate_generator(world.oracle, model, world.data("test"), 500, 0, (0.8, 1.0))
    assert report["T=0.8"]["self_nll"] < report["T=1"]["self_nll"]  # colder: less diverse


def test_mle_stops_early_and_keeps_the_best_weights():
    oracle = OracleLSTM(**SMALL, seed=0)
    train, valid = oracle.sample(100, gen(0))[0], oracle.sample(200, gen(1))[0]
    model = LSTMGenerator(**SMALL, generator=gen(0))
    history = train_mle(model, train, valid, MLEArgs(epochs=200, lr=0.05, patience=2), show_progress=False)
    assert len(history) < 200  # 100 samples: it overfits and stops
    best = min(r["valid_nll"] for r in history)
    assert heldout_nll(model, valid) == pytest.approx(best, abs=1e-5)


def test_mle_learning_rate_decays_linearly_to_its_final_fraction():
    """Two steps (one batch per epoch) with final_lr_fraction=0: the second step has lr 0, so the
    model equals one trained for a single step at the full rate."""
    train = OracleLSTM(**SMALL, seed=0).sample(32, gen(0))[0]
    one, two = (LSTMGenerator(**SMALL, generator=gen(0)) for _ in range(2))
    train_mle(one, train, args=MLEArgs(epochs=1, batch_size=32), show_progress=False)
    train_mle(two, train, args=MLEArgs(epochs=2, batch_size=32, final_lr_fraction=0.0), show_progress=False)
    for a, b in zip(one.parameters(), two.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ConfigError, match=r"0 <= final_lr_fraction <= 1; got MLEArgs\(.*final_lr_fraction=1.5"):
        train_mle(one, train, args=MLEArgs(final_lr_fraction=1.5), show_progress=False)


def test_generator_is_an_eq10_policy():
    """Eq. 10 with all weight on one sample raises that sample's log-probability."""
    from kcrl.losses import weighted_mle_loss

    model = LSTMGenerator(**SMALL, generator=gen(0))
    x = model.sample(8, gen(1))[0]
    log_w = torch.full((8,), -1e9)
    log_w[3] = 0.0
    before = model.log_prob(x).detach()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(10):
        loss = weighted_mle_loss(model.log_prob(x), log_w, lengths=torch.full((8,), 8))  # Eq. 10
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model.log_prob(x)[3] > before[3] + 1.0


# ---------------------------------------------------------------------- incremental state
def test_prefix_cache_gives_the_same_log_probs_as_rereading():
    model = LSTMGenerator(**SMALL, generator=gen(0))
    x = model.sample(6, gen(1))[0]
    cache = PrefixStateCache()
    lengths = torch.zeros(6, dtype=torch.long)
    for step in range(12):
        if step == 5:
            lengths[2] = 0  # a reset
        if step == 7:
            x[4, 0] = (x[4, 0] + 1) % 50  # a different prefix with the same length
        if step == 9:  # the weights change: the cache must not be reused
            with torch.no_grad():
                model.output.bias.add_(0.5)
        cached = model.prefix_log_probs(x, lengths, cache)
        torch.testing.assert_close(cached, model.prefix_log_probs(x, lengths), atol=1e-5, rtol=1e-5)
        lengths = (lengths + 1).clamp(max=8)
    other_batch = model.sample(3, gen(2))[0]
    torch.testing.assert_close(
        model.prefix_log_probs(other_batch, torch.tensor([1, 5, 8]), cache),
        model.prefix_log_probs(other_batch, torch.tensor([1, 5, 8])), atol=1e-5, rtol=1e-5,
    )


# ---------------------------------------------------------------------- files
def test_parameter_file_round_trip(tmp_path):
    oracle = OracleLSTM(**SMALL, seed=7)
    path = tmp_path / "oracle.pt"
    oracle.save(path)
    record = torch.load(path, weights_only=True)
    assert record["config"]["seed"] == 7 and record["config"]["vocab_size"] == 50
    loaded = OracleLSTM.load(path)
    for key, value in oracle.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    assert loaded.origin == "file oracle.pt" and not any(p.requires_grad for p in loaded.parameters())
    # a world built from the file draws the same data as one built from the seed
    seeded = OracleWorld(**SMALL, oracle_seed=7, train_samples=100)
    from_file = OracleWorld(length=8, oracle_params=path, train_samples=100)
    assert torch.equal(seeded.data("train"), from_file.data("train"))
    # a bare state_dict loads too; a mismatching one says which tensor
    torch.save(oracle.state_dict(), tmp_path / "bare.pt")
    assert torch.equal(OracleLSTM.load(tmp_path / "bare.pt").output.bias, oracle.output.bias)
    torch.save(OracleLSTM(vocab_size=50, hidden_dim=16).state_dict(), tmp_path / "small.pt")
    with pytest.raises(ConfigError, match="vocab_size=60 does not match"):
        OracleWorld(vocab_size=60, oracle_params=tmp_path / "small.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="not an LSTM language-model file"):
        OracleLSTM.load(tmp_path / "other.pt")
    model = LSTMGenerator(**SMALL, generator=gen(0))
    model.save(tmp_path / "gen.pt")
    again = LSTMGenerator.load(tmp_path / "gen.pt")
    assert again.config() == model.config() and torch.equal(again.embedding.weight, model.embedding.weight)
    with pytest.raises(ShapeError, match="'embedding.weight' has shape"):
        LSTMGenerator(vocab_size=51, length=8).load_weights(model.state_dict())


# ---------------------------------------------------------------------- the environment
def test_full_spec_env_builds_fast_and_pays_base_and_oracle_rewards():
    start = time.perf_counter()
    env = gym.make("OracleSequence-v0")
    assert time.perf_counter() - start < 2.0
    world = env.unwrapped.task
    assert (world.vocab_size, world.max_length, world.eos_id) == (5000, 20, None)
    assert env.action_space.n == 5000 and env.spec.max_episode_steps is None
    env.reset(seed=0)
    actions = torch.randint(5000, (20,), generator=gen(0))
    base_rewards = []
    for t, a in enumerate(actions.tolist()):
        obs, reward, terminated, truncated, info = env.step(a)
        base_rewards.append(info["reward_base"])
        assert terminated == (t == 19) and not truncated
    x = actions[None]
    assert sum(base_rewards) == pytest.approx(world.base.log_prob(x).item(), abs=1e-3)
    assert info["constraint"] == pytest.approx(world.oracle.log_prob(x).item() / 20, abs=1e-4)
    assert reward == pytest.approx(base_rewards[-1] + info["constraint"], abs=1e-5)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)


def test_batched_env_resumes_lstm_state_and_matches_rereading():
    env = gym.make_vec("OracleSequence-v0", num_envs=5, vectorization_mode="vector_entry_point", **SMALL)
    world = env.unwrapped.task if hasattr(env, "unwrapped") else env.task
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(20):  # crosses episode ends (NEXT_STEP autoreset)
        tokens, lengths, resetting = env.tokens.clone(), env.lengths.clone(), env.done.clone()
        actions = torch.as_tensor(env.action_space.sample())
        _, _, _, _, info = env.step(actions.numpy())
        reread = world.base.prefix_log_probs(tokens, lengths)[torch.arange(5), actions]  # no cache
        expected = torch.where(resetting, 0.0, reread)
        torch.testing.assert_close(torch.as_tensor(info["reward_base"]), expected, atol=1e-5, rtol=1e-5)
        assert world._base_cache.key is not None


def test_env_options_and_errors():
    env = gym.make("OracleSequence-v0", constraint="cnn", alpha=0.5, **SMALL)
    world = env.unwrapped.task
    assert world.constraint.learnable and world.alpha == 0.5
    with pytest.raises(ConfigError, match="unknown argument 'vocab'.*Did you mean 'vocab_size'"):
        gym.make("OracleSequence-v0", vocab=50)
    with pytest.raises(UnknownNameError, match="Did you mean 'oracle'"):
        OracleWorld(constraint="oracel", **SMALL)
    with pytest.raises(ConfigError, match="base model's vocabulary"):
        OracleWorld(base=LSTMGenerator(vocab_size=40, length=8), **SMALL)
    trained = LSTMGenerator(**SMALL, generator=gen(5))
    world = OracleWorld(base=trained, **SMALL)
    x, ctx = world.sample_base(4, gen(0))
    assert x.shape == (4, 8) and ctx is None and world.base is trained
    world.set_base(LSTMGenerator(**SMALL, generator=gen(6)))
    assert world.base is not trained
    clone = pickle.loads(pickle.dumps(world))
    torch.testing.assert_close(clone.base.log_prob(x), world.base.log_prob(x))


# ---------------------------------------------------------------------- the learnable constraint
def test_cnn_constraint_trains_by_eq8_and_drops_wide_filters():
    scorer = CNNSequenceScorer(vocab_size=50, length=8)
    assert len(scorer.convs) == 8  # widths 1..8 of SeqGAN's 1..10, 15, 20
    assert isinstance(OracleLikelihoodConstraint(OracleLSTM(**SMALL)), Constraint)
    f = cnn_constraint(50, 8, embed_dim=16, filter_sizes=(2, 3), num_filters=(8, 8), seed=0)
    oracle, model = OracleLSTM(**SMALL, seed=0), LSTMGenerator(**SMALL, generator=gen(1))
    data, samples = oracle.sample(128, gen(2))[0], model.sample(128, gen(3))[0]
    optimizer = torch.optim.Adam(f.parameters(), lr=0.01)
    gaps = []
    for _ in range(30):
        f_data, f_samples = f(data), f(samples)
        weights = ImportanceWeights.from_scores(f_samples.detach(), 1.0)
        loss = constraint_loss(f_data, f_samples, weights.log_weights, 1.0)  # Eq. 8
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        gaps.append((f.predict(data).mean() - f.predict(samples).mean()).item())
    assert gaps[-1] > gaps[0] + 0.5  # learns to score oracle data above generator samples
    with pytest.raises(ConfigError, match="exceeds the sequence length"):
        CNNSequenceScorer(50, 4, filter_sizes=(5,), num_filters=(3,))
    with pytest.raises(ShapeError, match=r"shape \(N, 8\)"):
        f(torch.zeros(2, 7, dtype=torch.long))


# ---------------------------------------------------------------------- the benchmark suite
def test_oracle_mle_suite_smoke(tmp_path):
    from kcrl.benchmarks import get_suite
    from kcrl.benchmarks.oracle_mle import OracleMLEConfig

    config = OracleMLEConfig(
        vocab_size=30, length=5, train_samples=256, valid_samples=64, test_samples=128, eval_samples=128,
        mle=MLEArgs(epochs=2, keep_best=False), curve_every=1, curve_samples=64,
    )
    result = get_suite("oracle-mle")(seed=0, out=tmp_path, config=config, progress=False)
    m = result["metrics"]
    assert m["oracle_floor"] < m["uniform_nll_oracle"] and m["epochs_run"] == 2
    assert set(m["arms"]) == {"MLE, 2 epochs", f"MLE, best validation (epoch {m['best_epoch']})"}
    assert "passed" not in m  # the published bar applies to SeqGAN's sizes only
    assert m["arms"]["MLE, 2 epochs"]["T=1"]["nll_oracle_ci95"] > 0
    assert f"{m['nll_oracle']:.3f} ± " in result["table"]
    assert "Command: `OMP_NUM_THREADS=1 kcrl bench oracle-mle --seed 0" in (tmp_path / "results.md").read_text()
