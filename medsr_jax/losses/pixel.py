"""Pixel losses (reference spec §7.1): mean absolute error (L1) and mean squared error (L2).

Each loss is a pure function `loss(pred, target) -> scalar` computed in float32, so the train step
can take any of them by name through `get`.
"""

from typing import Callable

import jax.numpy as jnp


def l1(pred, target):
  """Mean absolute error over every element (PyTorch `L1Loss()` with mean reduction)."""
  return jnp.mean(jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32)))


def mse(pred, target):
  """Mean squared error over every element (PyTorch `MSELoss()` with mean reduction)."""
  return jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)))


_LOSSES = {"l1": l1, "mse": mse, "l2": mse}


def get(name: str) -> Callable:
  """The pixel loss called `name` ('l1', 'mse' or 'l2')."""
  try:
    return _LOSSES[name.lower()]
  except KeyError:
    raise ValueError(f"unknown pixel loss {name!r}; known: {sorted(_LOSSES)}") from None
