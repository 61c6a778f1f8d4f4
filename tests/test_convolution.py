"""layers.convolution: gradients equal JAX's own, second derivatives, and the compiled scan body.

The speed of the scanned backward pass (issue 13) is measured in experiments/bench_train.py, never
asserted here; what is tested is its cause: inside a scanned gradient every convolution XLA:CPU
compiles has the canonical `b01f_01io->b01f` dimension labels (the form its fast convolution
library takes), and depthwise convolutions compile to no convolution at all.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax.layers import common
from medsr_jax.layers import convolution

DN = convolution.DIMENSION_NUMBERS
CASES = [  # kernel, padding, input H x W
    (3, ((1, 1), (1, 1)), (8, 9)),
    (1, ((0, 0), (0, 0)), (5, 7)),
    (5, ((2, 2), (2, 2)), (6, 6)),
    (3, ((0, 0), (0, 0)), (9, 7)),
    (3, ((0, 2), (1, 0)), (6, 5)),  # asymmetric (the bottom/right padding of window models)
    (7, ((3, 3), (3, 3)), (5, 8)),
]


def _reference(x, w, padding, groups=1):
  return jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DN,
                                      feature_group_count=groups)


def _loss(conv):
  return lambda x, w: jnp.sum(jnp.sin(conv(x, w)) * jnp.arange(1.0, 1.0 + w.shape[-1]))


@pytest.mark.parametrize('k,padding,hw', CASES)
def test_dense_gradients_equal_jax(k, padding, hw):
  rng = np.random.default_rng(k)
  x = jnp.asarray(rng.standard_normal((2, *hw, 3)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((k, k, 3, 4)), jnp.float32)
  ours = _loss(lambda a, b: convolution.conv2d(a, b, padding=padding))
  ref = _loss(lambda a, b: _reference(a, b, padding))
  np.testing.assert_array_equal(jax.jit(ours)(x, w), jax.jit(ref)(x, w))
  for got, want in zip(jax.jit(jax.grad(ours, (0, 1)))(x, w), jax.grad(ref, (0, 1))(x, w)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('k,padding,hw', CASES)
def test_kernel_gradient_by_taps_for_few_output_channels(k, padding, hw):
  """k * k * C_out <= C_in (the 3x3 C -> 1 output convolution, 1x1 projections down) takes the
  kernel gradient as one product against shifted copies of dy: same values as JAX's."""
  rng = np.random.default_rng(20 + k)
  cin = k * k * 2
  x = jnp.asarray(rng.standard_normal((2, *hw, cin)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((k, k, cin, 2)), jnp.float32)
  ours = _loss(lambda a, b: convolution.conv2d(a, b, padding=padding))
  ref = _loss(lambda a, b: _reference(a, b, padding))
  hlo = jax.jit(jax.grad(ours, 1)).lower(x, w).compile().as_text()
  # The forward only (XLA makes a 1x1 one a dot): no convolution for the kernel gradient.
  assert len(re.findall(r'= \S+ convolution\(', hlo)) == (k > 1)
  for got, want in zip(jax.jit(jax.grad(ours, (0, 1)))(x, w), jax.grad(ref, (0, 1))(x, w)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('k,padding,hw', CASES)
def test_depthwise_matches_grouped_convolution(k, padding, hw):
  rng = np.random.default_rng(10 + k)
  x = jnp.asarray(rng.standard_normal((2, *hw, 5)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((k, k, 1, 5)), jnp.float32)
  ours = _loss(lambda a, b: convolution.conv2d(a, b, padding=padding, groups=5))
  ref = _loss(lambda a, b: _reference(a, b, padding, groups=5))
  np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-5)
  for got, want in zip(jax.grad(ours, (0, 1))(x, w), jax.grad(ref, (0, 1))(x, w)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('groups', [1, 4])
def test_second_derivative_matches_jax(groups):
  """WGAN-GP differentiates an input-gradient norm w.r.t. the weights: reverse over reverse."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((2, 6, 6, 4)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 4 // groups, 4)), jnp.float32)
  pad = ((1, 1), (1, 1))

  def penalty(conv):
    def input_grad_norm(w):
      g = jax.grad(lambda a: jnp.sum(jnp.tanh(conv(a, w))))(x)
      return jnp.sum(g ** 2)
    return jax.grad(input_grad_norm)(w)

  got = penalty(lambda a, b: convolution.conv2d(a, b, padding=pad, groups=groups))
  want = penalty(lambda a, b: _reference(a, b, pad, groups))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_strided_convolution_is_lax():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.standard_normal((1, 8, 8, 2)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 2, 3)), jnp.float32)
  got = convolution.conv2d(x, w, padding=((1, 1), (1, 1)), stride=2)
  want = jax.lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=DN)
  np.testing.assert_array_equal(got, want)


class _Block(nn.Module):
  @nn.compact
  def __call__(self, x, _=None):
    y = common.Conv2d(8, 3, name='dense')(x)
    y = common.Conv2d(8, 7, groups=8, name='depthwise')(jax.nn.relu(y))
    return x + y, None


def test_scanned_gradient_compiles_canonical_convolutions():
  stack = nn.scan(_Block, variable_axes={'params': 0}, split_rngs={'params': True}, length=3)()
  x = jnp.ones((2, 6, 6, 8))
  params = stack.init(jax.random.key(0), x)['params']
  grad = jax.jit(jax.grad(lambda p: jnp.sum(stack.apply({'params': p}, x)[0] ** 2)))
  hlo = grad.lower(params).compile().as_text()
  assert 'while' in hlo  # the blocks stay one loop
  labels = re.findall(r'convolution\(.*?dim_labels=(\S+?),', hlo)
  assert labels and set(labels) == {'b01f_01io->b01f'}, sorted(set(labels))
  assert 'feature_group_count' not in hlo and 'batch_group_count' not in hlo


def test_compiler_options_eigen_convolutions_for_conv_models_on_cpu(monkeypatch):
  """Convolutional models compile CPU programs without YNNPACK fusions (cpu_compile.py), the
  Swin models with its dot and reduce fusions only; other backends, XLA_FLAGS naming the flag and
  MEDSR_XLA_CPU_DEFAULTS=1 keep XLA's defaults; the options compile and give the same gradients
  to float32 rounding."""
  from medsr_jax import cpu_compile
  from medsr_jax.models import rdst, resnets, swinir
  monkeypatch.delenv(cpu_compile.DEFAULTS_ENV, raising=False)
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
  conv_model = resnets.EDSR(n_resblocks=1, n_feats=4, scale=2)
  assert cpu_compile.compiler_options(conv_model, 'cpu') == {cpu_compile.YNN_FLAG: ''}
  assert cpu_compile.compiler_options(conv_model, 'gpu') is None
  swin_options = {cpu_compile.YNN_FLAG: 'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE'}
  assert cpu_compile.compiler_options(rdst.RDST(), 'cpu') == swin_options
  assert cpu_compile.compiler_options(swinir.SwinIR(), 'cpu') == swin_options
  assert cpu_compile.compiler_options(swinir.SwinIR(), 'tpu') is None
  assert (cpu_compile.scan_unroll(4, 'cpu'), cpu_compile.scan_unroll(4, 'gpu')) == (4, 1)
  monkeypatch.setenv(cpu_compile.DEFAULTS_ENV, '1')
  assert cpu_compile.compiler_options(conv_model, 'cpu') is None
  monkeypatch.delenv(cpu_compile.DEFAULTS_ENV)
  monkeypatch.setenv('XLA_FLAGS', f'--{cpu_compile.YNN_FLAG}=individual_dot')
  assert cpu_compile.compiler_options(conv_model, 'cpu') is None

  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((2, 6, 5, 4)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((3, 3, 4, 3)), jnp.float32)
  grad = lambda x, k: jax.grad(lambda a, b: jnp.sum(convolution.conv2d(
      a, b, padding=((1, 1), (1, 1))) ** 2), argnums=(0, 1))(x, k)
  default = jax.jit(grad)(x, k)
  for options in (cpu_compile.EIGEN_CONVOLUTIONS, cpu_compile.SWIN_FUSIONS):
    ours = jax.jit(grad, compiler_options=dict(options))(x, k)
    for a, b in zip(ours, default):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
