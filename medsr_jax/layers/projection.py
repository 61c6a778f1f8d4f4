"""Channel projections (the Linear layers' matrix products) with their own backward passes.

A Linear layer on (..., C) activations is one matrix product of the (M, C) rows (M = batch x
tokens) with the (C, F) kernel. Its two gradients are dx = g W^T and dW = x^T g, the second a
product *over the long M axis*. Left to JAX's transpose rule, XLA:CPU (jax 0.10.2) wrote dW as
(g^T x)^T and made a transposed copy of the (M, F) cotangent first (RDST-E's step: 2% of its
time in the MLPs' `copy_bitcast_fusion`s alone). Here dW is asked for as one product that
contracts the rows of both operands, which XLA runs without the copy (docs/BENCHMARKS.md,
"Projections without transposed copies").

  * `dense(x, kernel)`: `x @ kernel` over the last axis (`common.Linear`).
  * `split_heads(x, kernel, splits, heads)`: the Swin attention's qkv Linear (dissertation
    Eq. 5.5; SwinIR's `WindowAttention.qkv`), (B_, N, C) -> `splits` arrays (B_, heads, N, C / heads)
    in PyTorch's order (q, k, v; then heads; then the head's channels). The product is made in
    the natural (rows, splits * C) layout and each split transposed to (B_, heads, N, hd); the
    backward pass writes the three cotangents back into one (rows, splits * C) matrix (one copy)
    and uses it for both gradients.
  * `merge_heads(y, kernel)`: the attention's proj Linear on (B_, heads, N, hd): the heads merged
    (one transposed copy, kept for the backward pass) and then `dense`.

Values are the same products as the plain formulation (float32 rounding); the gradients are
tested against JAX's own (tests/test_projection.py), to second order (WGAN-GP's gradient penalty
differentiates a backward pass again). Like every `custom_vjp`, forward-mode (`jax.jvp`) is not
supported. Under bfloat16 compute the products and their gradients stay in the compute dtype as
before (XLA accumulates dots in float32). Biases are added by the layers (`common.broadcast_like`:
float32 gradient sums).

Run `python -m pytest tests/test_projection.py`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

# dot_general dimension numbers: contract the last axis of a with the first of b; contract the
# first (row) axis of both (x^T g without a transposed copy); contract the last axes of both (g W^T).
_ROWS_BY_COLUMNS = (((1,), (0,)), ((), ()))
_OVER_ROWS = (((0,), (0,)), ((), ()))
_OVER_COLUMNS = (((1,), (1,)), ((), ()))


def _rows(a: jax.Array) -> jax.Array:
  return a.reshape(-1, a.shape[-1])


def _product(a2: jax.Array, b: jax.Array, numbers, precision: Any) -> jax.Array:
  return jax.lax.dot_general(a2, b, numbers, precision=precision)


def over_rows(a: jax.Array, b: jax.Array, precision: Any = None) -> jax.Array:
  """a^T b for a (..., K) and b (..., F) with the same leading axes: the sum over every row
  (batch x positions) as one product contracting the rows of both operands, which XLA:CPU runs
  without a transposed copy of either. Kernel gradients: here, and `convolution`'s by taps."""
  return _product(_rows(a), _rows(b), _OVER_ROWS, precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dense(x: jax.Array, kernel: jax.Array, precision: Any = None) -> jax.Array:
  """`x @ kernel` over the last axis of `x`: (..., C) x (C, F) -> (..., F)."""
  return _product(_rows(x), kernel, _ROWS_BY_COLUMNS, precision).reshape(
      x.shape[:-1] + kernel.shape[1:])


def _dense_fwd(x, kernel, precision):
  return dense(x, kernel, precision), (x, kernel)


def _dense_bwd(precision, residuals, g):
  x, kernel = residuals
  g2 = _rows(g)
  dx = _product(g2, kernel, _OVER_COLUMNS, precision).reshape(x.shape)
  return dx, over_rows(x, g2, precision)


dense.defvjp(_dense_fwd, _dense_bwd)


def _split_values(x, kernel, splits, heads):
  b, n, _ = x.shape
  y = dense(x, kernel).reshape(b, n, splits, heads, -1)
  return tuple(jnp.transpose(y[:, :, t], (0, 2, 1, 3)) for t in range(splits))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def split_heads(x: jax.Array, kernel: jax.Array, splits: int, heads: int) -> tuple[jax.Array, ...]:
  """`x @ kernel` split into `splits` x `heads`: (B_, N, C) with kernel (C, splits * width) ->
  `splits` arrays (B_, heads, N, width / heads)."""
  return _split_values(x, kernel, splits, heads)


def _split_fwd(x, kernel, splits, heads):
  return _split_values(x, kernel, splits, heads), (x, kernel)


def _split_bwd(splits, heads, residuals, gs):
  del splits, heads
  # The cotangents of all splits written once into the (rows, splits * width) layout of the
  # product, then used by both gradients.
  g = jnp.stack([jnp.transpose(g, (0, 2, 1, 3)) for g in gs], axis=2)
  return _dense_bwd(None, residuals, g.reshape(residuals[0].shape[:-1] + (-1,)))


split_heads.defvjp(_split_fwd, _split_bwd)


def merge_heads(y: jax.Array, kernel: jax.Array) -> jax.Array:
  """(B_, heads, N, hd) -> (B_, N, heads * hd) -> `dense` with kernel (heads * hd, F)."""
  b, h, n, hd = y.shape
  return dense(jnp.transpose(y, (0, 2, 1, 3)).reshape(b, n, h * hd), kernel)
