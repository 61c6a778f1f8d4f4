"""Import / export of the author's PyTorch state dicts for registered models (numpy, no torch).

  from medsr_jax.export_torch import variables_from_torch, variables_to_torch
  variables = variables_from_torch('rdst', state_dict, scale=4, in_channels=1)
  y = models.build('rdst', scale=4).apply(variables, x_nhwc)
  state_dict = variables_to_torch('rdst', variables, scale=4, in_channels=1)

`state_dict` maps PyTorch keys to arrays (numpy arrays or CPU torch tensors on input; numpy
float32 / int64 arrays on output, in the reference's key order). Every key is consumed or
reported: a missing, extra or mis-shaped key, a buffer that differs from what the model computes,
or a MeanShift that is not a per-channel mean/std shift raises `InputError` (a ValueError) naming
it. Buffers are never imported; export regenerates them. The round trip
`variables_to_torch(variables_from_torch(sd))` returns `sd` exactly (plus regenerated buffers).

Extra keyword `overrides` are model options for `models.build` (e.g. `scan_blocks=False`) and
must match how `variables` are or will be used. The key maps live in `medsr_jax.torch_layouts`.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from medsr_jax import torch_layouts
from medsr_jax.errors import InputError
from medsr_jax.models import registry


def _check_against_model(model, variables: Mapping[str, Any]) -> None:
  """Internal consistency: imported params / batch_stats must have exactly the model's shapes."""
  want = registry.abstract_variables(model)
  for col in ('params', 'batch_stats'):
    want_shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), want.get(col, {}))
    got_shapes = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), variables.get(col, {}))
    if want_shapes != got_shapes:
      raise InputError(f'imported {col} do not match the model structure '
                       f'(layout bug or wrong options for {type(model).__name__})')


def variables_from_torch(name: str, state_dict: Mapping[str, Any], *, scale: Any,
                         in_channels: int, **overrides) -> dict:
  """Flax variables ({'params', 'constants'}) for model `name` from a reference state dict."""
  model = registry.build(name, scale=scale, in_channels=in_channels, **overrides)
  variables = torch_layouts.get(name).from_torch(model, state_dict)
  _check_against_model(model, variables)
  return variables


def variables_to_torch(name: str, variables: Mapping[str, Any], *, scale: Any,
                       in_channels: int, **overrides) -> dict[str, np.ndarray]:
  """The reference state dict (numpy arrays) for model `name`'s Flax `variables`."""
  model = registry.build(name, scale=scale, in_channels=in_channels, **overrides)
  variables = jax.device_get(variables)
  return torch_layouts.get(name).to_torch(model, variables)
