"""Model zoo: `build(name, scale=, in_channels=, **overrides)` returns a Flax Linen module.

  from medsr_jax import models
  models.available()                     # ['convnet_large', ..., 'rdst', 'rdst_e', ...]
  net = models.build('rdst', scale=4)
  variables = models.init(net, jax.random.key(0))

Each family has its own module here (`rdst.py`, `resnets.py`, `swinir.py`, ...); see
`registry.py` for the calling conventions shared by all of them; `call_model(model, variables,
x, scale=, train=, rngs=, mutable=)` calls any of them and `primary_output` picks its SR image.
"""

from medsr_jax.models.registry import abstract_variables
from medsr_jax.models.registry import available
from medsr_jax.models.registry import build
from medsr_jax.models.registry import call_model
from medsr_jax.models.registry import CallConvention
from medsr_jax.models.registry import convention_of
from medsr_jax.models.registry import count_params
from medsr_jax.models.registry import count_relative_position_params
from medsr_jax.models.registry import default_options
from medsr_jax.models.registry import example_inputs
from medsr_jax.models.registry import init
from medsr_jax.models.registry import make_constructor
from medsr_jax.models.registry import primary_output
from medsr_jax.models.registry import random_like
from medsr_jax.models.registry import random_variables
from medsr_jax.models.registry import register

__all__ = ['CallConvention', 'abstract_variables', 'available', 'build', 'call_model',
           'convention_of', 'count_params', 'count_relative_position_params',
           'default_options', 'example_inputs', 'init', 'make_constructor', 'primary_output',
           'random_like', 'random_variables', 'register']
