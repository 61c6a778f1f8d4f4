"""Random model variables drawn on the host, for tests (no initialiser to compile).

  he_normal(model, seed): He-normal kernels, identity batch norm (scale 1, var 1), zero biases
  and means, in the order of `models.abstract_variables(model)`.
"""

import jax
import numpy as np

from medsr_jax import models


def he_normal(model, seed):
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = path[-1].key
    if name in ("var", "scale"):
      return np.ones(s.shape, np.float32)
    if name in ("mean", "bias"):
      return np.zeros(s.shape, np.float32)
    return (rng.standard_normal(s.shape) * np.sqrt(2 / np.prod(s.shape[:-1]))).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, models.abstract_variables(model))
