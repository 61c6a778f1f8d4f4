"""layers/projection.py: the Linear products with their own backward passes give JAX's values
and gradients (first and second order), in float32 and bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax.layers import projection


def _plain_split(x, kernel, splits, heads):
  b, n, _ = x.shape
  y = (x @ kernel).reshape(b, n, splits, heads, -1)
  return tuple(jnp.transpose(y[:, :, t], (0, 2, 1, 3)) for t in range(splits))


def _plain_merge(y, kernel):
  b, h, n, hd = y.shape
  return jnp.transpose(y, (0, 2, 1, 3)).reshape(b, n, h * hd) @ kernel


def _inputs(*shapes, dtype=jnp.float32):
  keys = jax.random.split(jax.random.PRNGKey(0), len(shapes))
  return [jax.random.normal(k, s).astype(dtype) for k, s in zip(keys, shapes)]


def _assert_trees_close(a, b, **tol):
  jax.tree_util.tree_map(
      lambda u, v: np.testing.assert_allclose(np.asarray(u, np.float32), np.asarray(v, np.float32),
                                              **tol), a, b)


@pytest.mark.parametrize('shape', [(7,), (5, 7), (2, 3, 4, 7)])
def test_dense_values_and_gradients_match_matmul(shape):
  x, kernel, g = _inputs(shape, (7, 6), shape[:-1] + (6,))
  np.testing.assert_allclose(projection.dense(x, kernel), x @ kernel, rtol=1e-6, atol=1e-6)
  grads = [jax.grad(lambda x, w: jnp.sum(f(x, w) * g), argnums=(0, 1))(x, kernel)
           for f in (projection.dense, jnp.matmul)]
  _assert_trees_close(*grads, rtol=1e-5, atol=1e-5)


def test_split_and_merge_heads_match_the_plain_formulation():
  """q, k, v in PyTorch's order; gradients to second order (grad of a gradient norm, the form
  WGAN-GP's penalty takes)."""
  b, n, c, h = 3, 5, 12, 4
  x, kernel, proj = _inputs((b, n, c), (c, 3 * c), (c, 7))

  def loss(split, merge, x, kernel, proj):
    q, k, v = split(x, kernel, 3, h)
    return jnp.sum(jnp.sin(merge(q * k + v, proj)))

  ours = lambda *a: loss(projection.split_heads, projection.merge_heads, *a)
  plain = lambda *a: loss(_plain_split, _plain_merge, *a)
  for got, want in zip(projection.split_heads(x, kernel, 3, h), _plain_split(x, kernel, 3, h)):
    assert got.shape == (b, h, n, c // h)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ours(x, kernel, proj), plain(x, kernel, proj), rtol=1e-5)
  first = [jax.grad(f, argnums=(0, 1, 2))(x, kernel, proj) for f in (ours, plain)]
  _assert_trees_close(*first, rtol=1e-4, atol=1e-5)
  penalty = lambda f: lambda x, kernel, proj: jnp.sum(jax.grad(f)(x, kernel, proj) ** 2)
  second = [jax.grad(penalty(f), argnums=(1, 2))(x, kernel, proj) for f in (ours, plain)]
  _assert_trees_close(*second, rtol=1e-4, atol=1e-4)


def test_bfloat16_products_stay_in_the_compute_dtype():
  x, kernel, g = _inputs((4, 9, 8), (8, 6), (4, 9, 6), dtype=jnp.bfloat16)
  dx, dw = jax.grad(lambda x, w: jnp.sum(projection.dense(x, w) * g), argnums=(0, 1))(x, kernel)
  assert projection.dense(x, kernel).dtype == dx.dtype == dw.dtype == jnp.bfloat16
  want = jax.grad(lambda x, w: jnp.sum((x @ w) * g), argnums=(0, 1))(x, kernel)
  _assert_trees_close((dx, dw), want, rtol=2e-2, atol=5e-2)
