"""kcrl: deep generative models with learnable knowledge constraints, as RL.

Importing kcrl registers its Gymnasium environments.
"""

from kcrl.envs import register_envs as _register_envs

__version__ = "0.1.0"

_register_envs()
