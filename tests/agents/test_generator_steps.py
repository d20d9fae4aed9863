"""Agents as Algorithm 1's generator step: exact checks on TabularSequence-v0."""

import gymnasium as gym
import pytest
import torch

import kcrl  # noqa: F401
from kcrl.agents.generator_steps import AgentStep, PolicyGenerator
from kcrl.agents.soft_pg import SoftPGAgent, SoftPGArgs
from kcrl.benchmarks.tabular_exact import policy_log_probs
from kcrl.constraints import TokenPotentialConstraint
from kcrl.posterior import ExactPosterior, kl_divergence
from kcrl.trainer import PRConfig


def _agent(n=256, **args):
    env = gym.make_vec("TabularSequence-v0", num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode="Disabled", world_seed=3)
    return SoftPGAgent(env, SoftPGArgs(**args))


def test_policy_generator_log_prob_matches_sampling_and_enumeration():
    agent = _agent()
    gen = PolicyGenerator.from_agent(agent)
    x, log_p = gen.sample(300, context=None)
    assert x.shape == (300, 4)
    torch.testing.assert_close(gen.log_prob(x), log_p, atol=1e-5, rtol=0)
    world = agent.env.task
    total = torch.logsumexp(gen.log_prob(world.sequences()), 0)
    assert abs(total.item()) < 1e-5  # a distribution over all V^T sequences
    torch.testing.assert_close(gen.log_prob(world.sequences()), policy_log_probs(agent, world), atol=1e-5, rtol=0)


class _Trainer:  # the part of PRTrainer an AgentStep reads
    def __init__(self, constraint, iterations=1, alpha=1.0):
        self.constraint, self.iteration = constraint, 0
        self.config = PRConfig(iterations=iterations, alpha=alpha)


def test_agent_step_moves_policy_to_tilted_posterior():
    """With the KL term to the frozen policy, the step's optimum is q = pi_old exp(alpha f) / Z."""
    agent = _agent(1024, iterations=300, lr=1e-2)
    world = agent.env.task
    log_pi_old = policy_log_probs(agent, world)
    f = TokenPotentialConstraint(4, 4, init_std=0.5, generator=torch.Generator().manual_seed(0)).requires_grad_(False)
    target = ExactPosterior(log_pi_old, f(world.sequences()), world.alpha).log_q
    start = kl_divergence(log_pi_old, target).item()
    step = AgentStep(agent, updates=300)
    step(_Trainer(f))
    # the reference is fixed within one call, so the target stays pi_old exp(alpha f)
    final = kl_divergence(policy_log_probs(agent, world), target).item()
    assert start > 0.3 and final < 0.03, (start, final)
    assert agent.env.reference is None  # the base model is restored afterwards


class _NoStep:
    """The control: a generator step that does nothing (the tests below must fail with it)."""

    def __call__(self, trainer) -> dict[str, float]:
        return {}


def _step_moves_policy_to_tilted_posterior(gen, step, policy):
    """One call of a generator ``step`` with a fixed constraint f brings the policy closer (exact KL)
    to its optimum q = pi_old exp(alpha f) / Z and raises E_pi[f]; the other sub-steps of Algorithm 1
    do not run, so nothing else can move the policy. With :class:`_NoStep` both assertions fail."""
    world = gen.env.task
    xs = world.sequences()
    f = TokenPotentialConstraint(4, 4, init_std=0.5, generator=torch.Generator().manual_seed(0)).requires_grad_(False)
    log_pi_old = gen.log_prob(xs).detach()
    target = ExactPosterior(log_pi_old, f(xs), world.alpha).log_q
    start, f_start = kl_divergence(log_pi_old, target).item(), (log_pi_old.exp() * f(xs)).sum().item()
    step(_Trainer(f))
    log_pi = gen.log_prob(xs).detach()
    final, f_final = kl_divergence(log_pi, target).item(), (log_pi.exp() * f(xs)).sum().item()
    assert final < start - 0.02, (start, final)
    assert f_final > f_start + 0.02, (f_start, f_final)


def _exact_generator_and_joint_step(gen, step, policy):
    """A library's policy as a generator is an exact distribution over all sequences, its samples'
    log-probabilities match ``log_prob``, and 8 Algorithm 1 iterations with its generator ``step``
    (and MLE on the data as L(theta)) change the policy and bring it closer to p_data (exact KL).
    MLE alone would pass the last two checks; what the step itself does is checked by
    :func:`_step_moves_policy_to_tilted_posterior`."""
    from kcrl.trainer import PRConfig, PRTrainer

    world = gen.env.task
    log_p_all = gen.log_prob(world.sequences())
    assert abs(torch.logsumexp(log_p_all, 0).item()) < 1e-4
    x, log_p = gen.sample(128, torch.Generator().manual_seed(0))
    torch.testing.assert_close(gen.log_prob(x), log_p, atol=1e-4, rtol=0)
    data = world.sample_data(2000, torch.Generator().manual_seed(0))
    start = kl_divergence(world.data_log_probs(), log_p_all.detach()).item()
    trainer = PRTrainer(gen, TokenPotentialConstraint(4, 4), (data, None),
                        PRConfig(iterations=8, samples=512, mle_weight=1.0, generator_lr=1e-2, checkpoint_every=0),
                        generator_step=step)
    before = [p.detach().clone() for p in policy.parameters()]
    trainer.train(show_progress=False)
    assert any((p - b).abs().max() > 0 for p, b in zip(policy.parameters(), before))
    final = kl_divergence(world.data_log_probs(), gen.log_prob(world.sequences()).detach()).item()
    assert final < start, (start, final)


@pytest.mark.parametrize("control", [False, True], ids=["SB3Step", "no-op control"])
def test_sb3_policy_as_generator_and_generator_step(control):
    from stable_baselines3 import PPO

    from kcrl.agents.sb3 import SB3Step, policy_generator
    from kcrl.agents.sb3 import TokenFeatureExtractor, make_sb3_vec_env

    venv = make_sb3_vec_env("TabularSequence-v0", num_envs=64, seed=0, world_seed=3)
    model = PPO("MultiInputPolicy", venv, n_steps=8, batch_size=256, n_epochs=2, seed=0, ent_coef=0.01,
                policy_kwargs=dict(features_extractor_class=TokenFeatureExtractor))
    step = _NoStep() if control else SB3Step(model, timesteps=4096)
    if control:
        with pytest.raises(AssertionError):
            _step_moves_policy_to_tilted_posterior(policy_generator(model), step, model.policy)
        return
    _step_moves_policy_to_tilted_posterior(policy_generator(model), step, model.policy)
    assert sb3_env_reference(model) is None
    _exact_generator_and_joint_step(policy_generator(model), SB3Step(model, timesteps=512), model.policy)
    assert model.num_timesteps >= 4096 + 8 * 512
    assert sb3_env_reference(model) is None


@pytest.mark.parametrize("control", [False, True], ids=["TianshouStep", "no-op control"])
def test_tianshou_policy_as_generator_and_generator_step(control):
    import numpy as np

    pytest.importorskip("tianshou")
    from tianshou.algorithm import PPO
    from tianshou.algorithm.modelfree.reinforce import DiscreteActorPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory
    from tianshou.utils.net.discrete import DiscreteActor, DiscreteCritic

    from kcrl.agents.tianshou import TianshouStep, policy_generator as tianshou_generator
    from kcrl.agents.tianshou import TokenNet, make_tianshou_vec_env

    torch.manual_seed(0)
    np.random.seed(0)
    venv = make_tianshou_vec_env("TabularSequence-v0", num_envs=64, seed=0, world_seed=3)
    space, n_actions = venv.dict_observation_space, venv.single_action_space.n
    actor = DiscreteActor(preprocess_net=TokenNet(space, (64,)), action_shape=n_actions, softmax_output=False)
    policy = DiscreteActorPolicy(actor=actor, action_space=venv.single_action_space)
    ppo = PPO(policy=policy, critic=DiscreteCritic(preprocess_net=TokenNet(space, (64,))),
              optim=AdamOptimizerFactory(lr=3e-4), ent_coef=0.01)
    step = _NoStep() if control else TianshouStep(ppo, venv, env_steps=512, batch_size=256, repeat=2)
    if control:
        with pytest.raises(AssertionError):
            _step_moves_policy_to_tilted_posterior(tianshou_generator(ppo, venv), step, actor)
        return
    _step_moves_policy_to_tilted_posterior(tianshou_generator(ppo, venv), step, actor)
    assert venv.env.reference is None
    _exact_generator_and_joint_step(tianshou_generator(ppo, venv), step, actor)
    assert venv.env.reference is None


def sb3_env_reference(model):
    from kcrl.agents.sb3 import sb3_kcrl_env

    return sb3_kcrl_env(model).env.reference


def test_trainer_logs_importance_weights_with_an_agent_step():
    """ESS, log Z and the constraint gap are logged whichever generator step follows Eq. 8."""
    from kcrl.trainer import PRTrainer

    agent = _agent(64, iterations=6)
    world = agent.env.task
    data = world.sample_data(256, torch.Generator().manual_seed(0))
    trainer = PRTrainer(PolicyGenerator.from_agent(agent), TokenPotentialConstraint(4, 4), (data, None),
                        PRConfig(iterations=3, samples=64, data_batch=64, checkpoint_every=0),
                        generator_step=AgentStep(agent, updates=2))
    history = trainer.train(show_progress=False)
    assert agent.iteration == 6
    for record in history:
        assert {"ess", "ess_fraction", "log_z", "constraint_gap", "agent_soft_return"} <= set(record)
        assert 0 < record["ess_fraction"] <= 1


def test_sb3_policy_with_separate_actor_and_critic_extractors():
    """PolicyGenerator reads the actor's extractor whether or not SB3 shares it with the critic."""
    from stable_baselines3 import PPO

    from kcrl.agents.sb3 import TokenFeatureExtractor, make_sb3_vec_env, policy_generator

    venv = make_sb3_vec_env("TabularSequence-v0", num_envs=8, seed=0, world_seed=3)
    model = PPO("MultiInputPolicy", venv, n_steps=8, seed=0, policy_kwargs=dict(
        features_extractor_class=TokenFeatureExtractor, share_features_extractor=False))
    gen = policy_generator(model)
    log_p_all = gen.log_prob(gen.env.task.sequences())
    assert abs(torch.logsumexp(log_p_all, 0).item()) < 1e-4
    x, log_p = gen.sample(64, torch.Generator().manual_seed(0))
    torch.testing.assert_close(gen.log_prob(x), log_p, atol=1e-4, rtol=0)
