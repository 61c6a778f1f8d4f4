"""LayerNorm over the last axis with its own backward pass: PyTorch `nn.LayerNorm(d, eps)`.

The Swin models (RDST, RDST-E, SwinIR) normalise before every attention and MLP: RDST-E's train
step runs 52 LayerNorms over (32, 24, 24, 60..120) features. Flax's `nn.LayerNorm` leaves the
backward pass to JAX's autodiff of mean / variance / rsqrt, which XLA:CPU runs as several
full-size passes plus materialised broadcasts of the scale; in RDST-E's step the LayerNorms took
~19% of the time (xprof, docs/BENCHMARKS.md "LayerNorm"). Here the gradient is written out:

  forward    mean = E[x],  rstd = (E[(x - mean)^2] + eps)^-1/2,  x^ = (x - mean) rstd,
             y = x^ scale + bias                         (PyTorch's two-pass variance)
  backward   gx = g scale
             dx = rstd (gx - E[gx] - x^ E[gx x^])       (E over the normalised axis)
             dscale = sum over positions of g x^,   dbias = sum of g

The residuals are x, mean and rstd (x is alive anyway: it is the residual stream the block adds
back), so the backward pass recomputes x^ inside its fused loop instead of storing a second
full-size tensor. The sums over positions are `common.sum_to_shape`: one float32 matrix-vector
product (ones @ (positions, d)), which XLA:CPU runs through its dot library; a reduction over the
leading axis is several times slower there (`common.broadcast_like`, "Leading-axis sums").

Values equal Flax's / PyTorch's to float32 rounding (~1e-7 relative; tests/test_normalization.py
checks values and gradients against `flax.linen.LayerNorm`). Low-precision inputs (bfloat16) are
normalised in float32; the result has Flax's dtype, that of x, scale and bias together (float32
with float32 params, bfloat16 when the precision policy casts the params to bfloat16).
Parameters: 'scale' (ones) and 'bias' (zeros), Flax's names, so checkpoints, exports and the
PyTorch importer are unchanged.

Run `python -m pytest tests/test_normalization.py`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from medsr_jax.layers import common


def _row_mean(v: jax.Array) -> jax.Array:
  return jnp.mean(v, axis=-1, keepdims=True)


def _statistics(x: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
  mean = _row_mean(x)
  centred = x - mean
  return mean, jax.lax.rsqrt(_row_mean(centred * centred) + eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
  """(x - E[x]) / sqrt(Var[x] + eps) * scale + bias over the last axis (float32 `x`)."""
  return _forward(x, scale, bias, eps)[0]


def _forward(x, scale, bias, eps):
  mean, rstd = _statistics(x, eps)
  return (x - mean) * rstd * scale + bias, (x, mean, rstd, scale)


def _backward(eps, residuals, g):
  del eps
  x, mean, rstd, scale = residuals
  normalised = (x - mean) * rstd
  gx = g * scale
  dx = rstd * (gx - _row_mean(gx) - normalised * _row_mean(gx * normalised))
  d = (x.shape[-1],)
  return (dx, common.sum_to_shape(g * normalised, d).astype(scale.dtype),
          common.sum_to_shape(g, d).astype(scale.dtype))


layer_norm.defvjp(_forward, _backward)


class LayerNorm(nn.Module):
  """PyTorch `nn.LayerNorm(d, eps)` on the last axis; params 'scale' (ones), 'bias' (zeros)."""
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones_init(), (d,))
    bias = self.param('bias', nn.initializers.zeros_init(), (d,))
    out_dtype = jnp.result_type(x, scale, bias)   # Flax's rule (bfloat16 params: bfloat16)
    wide = jnp.float32 if common.is_low_precision(x.dtype) else x.dtype
    y = layer_norm(x.astype(wide), scale.astype(wide), bias.astype(wide), self.epsilon)
    return y.astype(out_dtype)
