"""layers/normalization.py: the LayerNorm with its own backward pass against Flax's LayerNorm
(PyTorch's two-pass numerics), values and every gradient, float32 and bfloat16."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax.layers import common, normalization


def _flax(eps):
  return nn.LayerNorm(epsilon=eps, use_fast_variance=False)


def _case(shape, seed=0):
  rng = np.random.default_rng(seed)
  d = shape[-1]
  # An offset and spread per row, so the two-pass variance matters.
  x = rng.standard_normal(shape).astype(np.float32) * 3.0 + 5.0
  params = {'scale': jnp.asarray(1.0 + 0.3 * rng.standard_normal(d), jnp.float32),
            'bias': jnp.asarray(0.2 * rng.standard_normal(d), jnp.float32)}
  g = rng.standard_normal(shape).astype(np.float32)
  return jnp.asarray(x), {'params': params}, jnp.asarray(g)


@pytest.mark.parametrize('shape,eps', [((2, 5, 6, 30), 1e-5), ((3, 7, 12), 1e-6)])
def test_values_and_gradients_match_flax_layer_norm(shape, eps):
  x, variables, g = _case(shape)
  ours = normalization.LayerNorm(epsilon=eps)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(
      jnp.shape, variables)
  y, vjp = jax.vjp(lambda v, x: ours.apply(v, x), variables, x)
  y_ref, vjp_ref = jax.vjp(lambda v, x: _flax(eps).apply(v, x), variables, x)
  np.testing.assert_allclose(y, y_ref, rtol=0, atol=2e-6)
  for got, want in zip(jax.tree.leaves(vjp(g)), jax.tree.leaves(vjp_ref(g))):
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * float(jnp.max(jnp.abs(want))))


def test_init_is_ones_and_zeros_and_common_layer_norm_uses_it():
  module = common.layer_norm('norm')
  assert isinstance(module, normalization.LayerNorm) and module.epsilon == 1e-5
  params = module.init(jax.random.key(0), jnp.zeros((1, 4, 4, 8)))['params']
  np.testing.assert_array_equal(params['scale'], np.ones(8))
  np.testing.assert_array_equal(params['bias'], np.zeros(8))


def test_second_derivative_through_the_custom_backward():
  """WGAN-GP differentiates a discriminator's input gradient again: the backward pass must be
  differentiable (it is plain jnp); checked against Flax's."""
  x, variables, g = _case((2, 3, 4, 16), seed=1)

  def penalty(module):
    grad_x = jax.grad(lambda x: jnp.sum(module.apply(variables, x) * g))
    return jax.grad(lambda x: jnp.sum(grad_x(x) ** 2))(x)

  np.testing.assert_allclose(penalty(normalization.LayerNorm()), penalty(_flax(1e-5)),
                             rtol=0, atol=1e-4)


def test_bfloat16_input_is_normalised_in_float32():
  x, variables, g = _case((2, 4, 4, 24), seed=2)
  xb = x.astype(jnp.bfloat16)
  y = normalization.LayerNorm().apply(variables, xb)
  assert y.dtype == jnp.float32   # as Flax's LayerNorm with float32 params
  np.testing.assert_allclose(y, _flax(1e-5).apply(variables, xb), rtol=0, atol=2e-6)
  dx = jax.grad(lambda x: jnp.sum(normalization.LayerNorm().apply(variables, x) * g))(xb)
  assert dx.dtype == jnp.bfloat16
  low = jax.tree.map(lambda p: p.astype(jnp.bfloat16), variables)   # the bf16 policy's params
  y = normalization.LayerNorm().apply(low, xb)
  assert y.dtype == jnp.bfloat16
  want = _flax(1e-5).apply(low, xb)
  np.testing.assert_allclose(y.astype(jnp.float32), want.astype(jnp.float32), rtol=8e-3, atol=8e-3)
