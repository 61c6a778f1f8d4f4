"""Tests of the discriminators: srgan_d, wgan_gp_d, miassr_d, msgan_d (SRGAN-style) and patchgan.

  .venv/bin/python -m pytest -q tests/test_discriminators.py

Reference layouts and parity cases exist for srgan_d and wgan_gp_d (spec §5.15, PARITY.md rule v1,
N = 2 inputs of 96 x 96, gain 1.0). Parameter counts of every model are checked against closed
forms written out here; shapes come from `jax.eval_shape`. Only the parity cases, the WGAN-GP
input gradient and the train-mode BatchNorm update execute a model (small inputs).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax import models
from medsr_jax.errors import InputError
from medsr_jax.export_torch import variables_from_torch
from medsr_jax.layers import common
from medsr_jax.models import discriminators as D
from medsr_jax.torch_layouts import discriminators as dl
from tests import parity_weights
from tests import zoo_checks

REFERENCE = ('srgan_d', 'wgan_gp_d')


def srgan_count(c, widths, p, bn, bias, fc=1024):
  """Closed form: 3x3 convs (+ bias) (+ BN scale/bias), Linear(w p^2, fc), Linear(fc, 1)."""
  total, cin = 0, c
  for w in widths:
    total += 9 * cin * w + (w if bias else 0) + (2 * w if bn else 0)
    cin = w
  return total + cin * p * p * fc + fc + fc + 1


def patchgan_count(c, f=64):
  widths = [2 * c, f, 2 * f, 4 * f, 8 * f, 1]
  return sum(16 * a * b + b for a, b in zip(widths, widths[1:]))


@pytest.mark.parametrize('name', REFERENCE)
def test_layout_counts_and_round_trip(name):
  ours = zoo_checks.check_layout_keys(name, name)
  assert sum(int(np.prod(e.shape)) for e in ours if e.kind == 'param') == (
      parity_weights.load_layout(name)['trainable_params'])
  zoo_checks.check_trainable_count(name, name)
  v = zoo_checks.check_round_trip(name, name)
  assert v['params']['fc1']['kernel'].shape == (18432, 1024)
  assert ('batch_stats' in v) == (name == 'srgan_d')


@pytest.mark.parametrize('name', REFERENCE)
def test_forward_parity(name):
  zoo_checks.check_parity(name, name)


def test_closed_form_counts():
  got = {n: models.count_params(models.abstract_variables(models.build(n)))
         for n in ('srgan_d', 'wgan_gp_d', 'miassr_d', 'msgan_d', 'patchgan')}
  assert got['srgan_d'] == srgan_count(1, D.SRGAN_WIDTHS, 6, True, False) == 23_562_561
  assert got['wgan_gp_d'] == srgan_count(1, D.SRGAN_WIDTHS, 6, False, False) == 23_558_721
  assert got['miassr_d'] == got['wgan_gp_d']
  assert got['msgan_d'] == srgan_count(1, D.MSGAN_WIDTHS, 6, False, True) == 21_219_009
  assert got['patchgan'] == patchgan_count(1) == 2_763_713
  # Other HR sizes / channels change the classifier / first conv only.
  for size, c in ((128, 1), (92, 4), (48, 3)):
    model = models.build('srgan_d', in_channels=c, input_size=size)
    p = math.ceil(size / 16)
    assert model.feature_size() == p
    assert models.count_params(models.abstract_variables(model)) == srgan_count(
        c, D.SRGAN_WIDTHS, p, True, False)
  model = models.build('patchgan', in_channels=4)
  assert models.count_params(models.abstract_variables(model)) == patchgan_count(4)


@pytest.mark.parametrize('name', ['srgan_d', 'wgan_gp_d', 'miassr_d', 'msgan_d'])
@pytest.mark.parametrize('size', [81, 90, 96])
def test_output_shapes_and_size_check(name, size):
  model = models.build(name, scale=4)
  v = models.abstract_variables(model)
  y = jax.eval_shape(model.apply, v, jax.ShapeDtypeStruct((3, size, 96, 1), jnp.float32))
  assert y.shape == (3, 1) and y.dtype == jnp.float32
  for bad in ((80, 96), (96, 97), (48, 48)):
    with pytest.raises(InputError, match='96x96'):
      jax.eval_shape(model.apply, v, jax.ShapeDtypeStruct((1,) + bad + (1,), jnp.float32))
  with pytest.raises(InputError):
    jax.eval_shape(model.apply, v, jax.ShapeDtypeStruct((1, 96, 96, 3), jnp.float32))


def test_patchgan_shapes_and_errors():
  model = models.build('patchgan')
  v = models.abstract_variables(model)
  x = jax.ShapeDtypeStruct((2, 96, 96, 1), jnp.float32)
  assert jax.eval_shape(model.apply, v, x, x).shape == (2, 10, 10, 1)
  x = jax.ShapeDtypeStruct((1, 64, 128, 1), jnp.float32)
  assert jax.eval_shape(model.apply, v, x, x).shape == (1, 6, 14, 1)
  assert [w for w, _ in model.plan()] == [64, 128, 256, 512, 1]
  with pytest.raises(InputError):
    jax.eval_shape(model.apply, v, x, jax.ShapeDtypeStruct((1, 64, 64, 1), jnp.float32))
  args, kwargs = models.example_inputs(model)
  assert len(args) == 2 and not kwargs


def test_instance_norm_and_strided_conv_match_numpy():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 7, 9, 3)).astype(np.float32)
  mean = x.mean(axis=(1, 2), keepdims=True)
  want = (x - mean) / np.sqrt(x.var(axis=(1, 2), keepdims=True) + 1e-5)
  np.testing.assert_allclose(np.asarray(D.instance_norm(jnp.asarray(x))), want, atol=1e-5)
  # nn.Conv2d(3, 2, 4, stride=2, padding=1) written out as a loop over output pixels.
  k = rng.standard_normal((4, 4, 3, 2)).astype(np.float32)
  b = rng.standard_normal(2).astype(np.float32)
  conv = common.Conv2d(2, 4, stride=2, padding=1)
  y = np.asarray(conv.apply({'params': {'kernel': k, 'bias': b}}, jnp.asarray(x)))
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  oh, ow = D.conv_output_size(7, 4, 2, 1), D.conv_output_size(9, 4, 2, 1)
  assert y.shape == (2, oh, ow, 2) == (2, 3, 4, 2)
  for i in range(oh):
    for j in range(ow):
      patch = xp[:, 2 * i:2 * i + 4, 2 * j:2 * j + 4, :]
      np.testing.assert_allclose(y[:, i, j], np.einsum('nhwc,hwco->no', patch, k) + b,
                                 rtol=1e-4, atol=1e-4)


def test_miassr_d_loads_wgan_gp_state_dicts():
  model = models.build('miassr_d')
  ref = parity_weights.load_layout('wgan_gp_d')
  assert [e.key for e in dl.entries(model)] == [r[0] for r in ref['state_dict']]
  sd = parity_weights.state_dict_v1(ref, seed=1)
  v = dl.from_torch(model, sd)
  back = dl.to_torch(model, v)
  for key in sd:
    np.testing.assert_array_equal(back[key], sd[key])


def test_errors_name_the_key():
  sd = parity_weights.state_dict_v1(parity_weights.load_layout('srgan_d'), seed=2)
  bad = dict(sd)
  del bad['features.5.1.running_var']
  with pytest.raises(InputError, match=r'features\.5\.1\.running_var'):
    variables_from_torch('srgan_d', bad, scale=4, in_channels=1)
  bad = dict(sd, **{'classifier.0.weight': np.zeros((1024, 512 * 8 * 8), np.float32)})
  with pytest.raises(InputError, match=r'classifier\.0\.weight'):
    variables_from_torch('srgan_d', bad, scale=4, in_channels=1)
  # ... which is the right shape for a 128 x 128 discriminator.
  variables_from_torch('srgan_d', bad, scale=4, in_channels=1, input_size=128)
  with pytest.raises(InputError, match=r'features\.0\.1\.weight'):  # BN keys are unexpected
    variables_from_torch('wgan_gp_d', sd, scale=4, in_channels=1)
  with pytest.raises(InputError):
    models.build('srgan_d', widths=(64, 64), strides=(1,))


def test_wgan_gp_input_gradient_is_finite_and_nonzero():
  model = models.build('wgan_gp_d', input_size=16)  # real widths, a 1 x 1 last map
  v = zoo_checks.random_like(models.abstract_variables(model), scale=0.1,
                             constant={'var': 1.0, 'mean': 0.0})  # BN stats: identity
  assert 'batch_stats' not in v
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 1))
  grad = jax.jit(jax.grad(lambda x: jnp.sum(model.apply(v, x))))(x)
  grad = np.asarray(grad)
  assert grad.shape == x.shape and np.all(np.isfinite(grad))
  norms = np.sqrt((grad ** 2).sum(axis=(1, 2, 3)))
  assert np.all(norms > 0)


def test_train_mode_batch_norm_updates_batch_stats():
  model = models.build('srgan_d', input_size=16)
  v = zoo_checks.random_like(models.abstract_variables(model), scale=0.1,
                             constant={'var': 1.0, 'mean': 0.0})  # BN stats: identity
  x = jax.random.uniform(jax.random.PRNGKey(1), (4, 16, 16, 1))
  run = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))
  y, new = run(v, x)
  assert y.shape == (4, 1) and np.all(np.isfinite(np.asarray(y)))
  for i in range(len(model.widths)):
    assert not np.allclose(np.asarray(new['batch_stats'][f'bn_{i}']['mean']), 0.0), i
  # Running mean moves by momentum 0.1 toward the batch mean of conv_0's output.
  h = common.Conv2d(64, 3, stride=1, padding=1, use_bias=False).apply(
      {'params': v['params']['conv_0']}, x)
  np.testing.assert_allclose(np.asarray(new['batch_stats']['bn_0']['mean']),
                             0.1 * np.asarray(h).mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  y_eval = jax.jit(model.apply)(v, x)
  assert not np.allclose(np.asarray(y_eval), np.asarray(y))


def test_registry_names_and_defaults():
  assert {'srgan_d', 'wgan_gp_d', 'msgan_d', 'miassr_d', 'patchgan'} <= set(models.available())
  assert models.build('srgan_d', scale=2.5).batch_norm  # scale is ignored
  assert not models.build('wgan_gp_d').batch_norm and not models.build('miassr_d').batch_norm
  assert tuple(models.build('msgan_d').widths) == D.MSGAN_WIDTHS
  assert models.default_options('msgan_d')['conv_bias'] is True
  with pytest.raises(InputError):
    models.build('patchgan', scale=4, input_size=96)
