"""Stable-Baselines3 adapter: SB3 algorithms on kcrl's batched generation envs.

The only place in kcrl that imports ``stable_baselines3``:

* :mod:`kcrl.agents.sb3.vec_env` — :class:`SB3VecEnv` (an SB3 ``VecEnv`` over one batched env),
  :func:`make_sb3_vec_env`, :class:`TokenFeatureExtractor` (token embeddings instead of one-hots).
* :mod:`kcrl.agents.sb3.generator_policy` — :class:`GeneratorPolicy`, a policy that starts at a trained
  kcrl generator's next-token distribution (PPO fine-tunes p_theta instead of starting uniform).
* :mod:`kcrl.agents.sb3.onestep` — :class:`SB3OneStepVecEnv`, the ``VecEnv`` over the one-step ``Box``
  envs (``GaussianRing-v0``, ``StructuredDigits-v0``; :func:`make_sb3_vec_env` picks it).
* :mod:`kcrl.agents.sb3.steps` — an SB3 model as Algorithm 1's generator (:func:`policy_generator`)
  and generator step (:class:`SB3Step`).
* :mod:`kcrl.agents.sb3.hyperparams` — the schema of ``sb3.yaml`` (:data:`SB3_PPO`) and
  :func:`sb3_policy_kwargs`.
* :mod:`kcrl.agents.sb3.training` — :func:`build_ppo` from a hyperparameter entry, and helpers.

Example (a few hundred PPO steps; see ``docs/adapters.md`` and ``tests/agents/test_sb3.py``):

    >>> from stable_baselines3 import PPO
    >>> from kcrl.agents.sb3 import TokenFeatureExtractor, make_sb3_vec_env
    >>> venv = make_sb3_vec_env("TabularSequence-v0", num_envs=8, seed=0)
    >>> model = PPO("MultiInputPolicy", venv, n_steps=16, batch_size=64, n_epochs=1, seed=0,
    ...             policy_kwargs=dict(features_extractor_class=TokenFeatureExtractor))
    >>> model = model.learn(total_timesteps=256)
    >>> obs = venv.reset()
    >>> sorted(obs), obs["tokens"].shape
    (['length', 'tokens'], (8, 4))
"""

from kcrl.agents.sb3.generator_policy import GeneratorFeatureExtractor, GeneratorPolicy
from kcrl.agents.sb3.hyperparams import SB3_PPO, sb3_policy_kwargs
from kcrl.agents.sb3.onestep import SB3OneStepVecEnv
from kcrl.agents.sb3.steps import SB3Step, policy_generator, sb3_kcrl_env, sb3_logits_fn
from kcrl.agents.sb3.training import build_ppo, learn_with_snapshots, single_env_vec_env
from kcrl.agents.sb3.vec_env import SB3VecEnv, TokenFeatureExtractor, make_sb3_vec_env

__all__ = [
    "GeneratorFeatureExtractor", "GeneratorPolicy", "SB3OneStepVecEnv", "SB3_PPO", "SB3Step", "SB3VecEnv", "TokenFeatureExtractor", "build_ppo", "learn_with_snapshots",
    "make_sb3_vec_env", "policy_generator", "sb3_kcrl_env", "sb3_logits_fn", "sb3_policy_kwargs",
    "single_env_vec_env",
]
