"""Model zoo: `build(name, scale=, in_channels=, **overrides)` returns a Flax Linen module.

  from medsr_jax import models
  models.available()                     # ['rdst', 'rdst_e', ...]
  net = models.build('rdst', scale=4)
"""

from medsr_jax.models.registry import available
from medsr_jax.models.registry import build
from medsr_jax.models.registry import count_params
from medsr_jax.models.registry import count_relative_position_params
from medsr_jax.models.registry import default_options
from medsr_jax.models.registry import register

__all__ = ['available', 'build', 'count_params', 'count_relative_position_params',
           'default_options', 'register']
