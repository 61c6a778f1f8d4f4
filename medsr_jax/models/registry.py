"""Model registry: names -> Linen module constructors, and parameter counting helpers.

  from medsr_jax import models
  model = models.build('rdst', scale=4, in_channels=1)          # or 'rdst_e', plus overrides
  variables = model.init(key, jnp.zeros((1, 40, 32, 1)))
  models.count_params(variables)                                  # 4,464,961 trainable

Registered here: 'rdst' (8 RDSTBs) and 'rdst_e' (4 RDSTBs; the thesis' RDST-E, spec §5.13).
Other model families add themselves with `register(name, constructor)`; a constructor takes
`scale`, `in_channels` and keyword overrides and returns an unbound `nn.Module`.

Counting: `count_params` counts the 'params' collection only (trainable), so the reference's
frozen MeanShift convs (in 'constants') are excluded: the reference total minus 2C(C + 1), i.e.
minus 4 for one channel. `count_relative_position_params` gives the Swin relative-position-bias table entries,
which the thesis' parameter tables leave out (64,800 for rdst, 32,400 for rdst_e).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np

from medsr_jax.errors import InputError
from medsr_jax.models import rdst

Constructor = Callable[..., nn.Module]

_REGISTRY: dict[str, Constructor] = {}

RPB_NAME = 'relative_position_bias_table'


def register(name: str, constructor: Constructor, *, overwrite: bool = False) -> None:
  """Adds `name` -> `constructor(scale=, in_channels=, **overrides)` to the registry."""
  if name in _REGISTRY and not overwrite:
    raise ValueError(f'model {name!r} is already registered')
  _REGISTRY[name] = constructor


def available() -> list[str]:
  """Sorted names accepted by `build`."""
  return sorted(_REGISTRY)


def _int_scale(scale: Any) -> int:
  s = float(scale)
  if s != int(s):
    raise InputError(f'this model needs an integer scale, got {scale}')
  return int(s)


def build(name: str, *, scale: Any = 4, in_channels: int = 1, **overrides) -> nn.Module:
  """Returns the unbound Linen module registered as `name`.

  Raises:
    ValueError: unknown `name` (the message lists the available ones).
    InputError: an override that the model does not have, or an unsupported scale.
  """
  if name not in _REGISTRY:
    raise ValueError(f'unknown model {name!r}; available: {", ".join(available())}')
  try:
    return _REGISTRY[name](scale=scale, in_channels=in_channels, **overrides)
  except TypeError as e:
    raise InputError(f'bad options for model {name!r}: {e}') from e


def default_options(name: str) -> dict[str, Any]:
  """Every architecture option of `name` with its default (not `scale`/`in_channels`).

  Config files start from these, so `--config.model.kwargs.<option>=...` can set any of them and
  a misspelt option is an error rather than a silently ignored key.
  """
  model = build(name)
  skip = {'parent', 'name', 'scale', 'in_channels'}
  return {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name not in skip}


def _make_rdst(num_blocks: int) -> Constructor:
  fields = {f.name for f in dataclasses.fields(rdst.RDST)} - {'parent', 'name'}

  def constructor(*, scale=4, in_channels=1, **overrides) -> nn.Module:
    unknown = sorted(set(overrides) - fields)
    if unknown:
      raise InputError(f'unknown RDST option(s) {unknown}; known: {sorted(fields)}')
    overrides.setdefault('num_blocks', num_blocks)
    model = rdst.RDST(scale=_int_scale(scale), in_channels=int(in_channels), **overrides)
    try:
      model.check_config()
    except ValueError as e:
      raise InputError(str(e)) from e
    return model

  return constructor


register('rdst', _make_rdst(8))
register('rdst_e', _make_rdst(4))


def _param_leaves(variables: Any):
  tree = variables.get('params', variables) if hasattr(variables, 'get') else variables
  return jax.tree_util.tree_leaves_with_path(tree)


def count_params(variables: Any) -> int:
  """Number of trainable scalars: the 'params' collection (or the whole tree if it has none).

  Works on real arrays and on `jax.eval_shape` output (ShapeDtypeStruct).
  """
  return int(sum(int(np.prod(leaf.shape)) for _, leaf in _param_leaves(variables)))


def count_relative_position_params(variables: Any) -> int:
  """Scalars in the Swin relative-position-bias tables (left out of the thesis' tables)."""
  total = 0
  for path, leaf in _param_leaves(variables):
    last = path[-1]
    key = getattr(last, 'key', getattr(last, 'name', None))
    if key == RPB_NAME:
      total += int(np.prod(leaf.shape))
  return total
