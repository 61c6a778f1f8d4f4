"""Tests of the MS-GAN multi-scale generators 'ms_srresnet' and 'ms_gan' (thesis §3.2.3, Fig. 3.3).

  .venv/bin/python -m pytest -q tests/test_ms_gan.py

There is no author code for MS-GAN and the thesis gives no parameter count, so counts are checked
against the closed form derived from §3.3.3 (two x2 SRResNets of 16 blocks x 64 kernels) plus the
SRResNet defaults; real-size shapes use `jax.eval_shape`; only tiny models execute.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax import models
from medsr_jax.errors import InputError
from tests import zoo_checks

TINY = dict(n_feats=8, n_resblocks=2)


def conv(cin, cout, k=3):
  return k * k * cin * cout + cout


def closed_form(c=1, n=64, blocks=16, stacked=True, prelu=False):
  """Trainable params of a x4 multi-scale generator (BN everywhere, as SRResNet)."""
  bn = 2 * n
  block = 2 * conv(n, n) + 2 * bn
  trunk = lambda cin: conv(cin, n) + blocks * block + conv(n, n) + int(prelu)
  up_and_image = conv(n, 4 * n) + bn + conv(n, c)
  stage1 = trunk(c) + up_and_image
  stage2 = (trunk(n) if stacked else 0) + up_and_image
  return stage1, stage2


@pytest.mark.parametrize('name,stacked', [('ms_srresnet', False), ('ms_gan', True)])
def test_parameter_counts_closed_form(name, stacked):
  v = models.abstract_variables(models.build(name))
  stage1, stage2 = closed_form(stacked=stacked)
  assert models.count_params(v['params']['stage_1']) == stage1 == 1_371_777
  assert models.count_params(v['params']['stage_2']) == stage2
  assert models.count_params(v) == {'ms_srresnet': 1_520_194, 'ms_gan': 2_779_842}[name]
  # Stage 1 is the x2 SRResNet of the reference minus its PReLU slope (ReLU here).
  srresnet_x2 = models.count_params(models.abstract_variables(models.build('srresnet', scale=2)))
  assert stage1 == srresnet_x2 - 1
  with_prelu = models.build(name, act='prelu', out_act=False, in_channels=3)
  assert models.count_params(models.abstract_variables(with_prelu)) == sum(
      closed_form(c=3, stacked=stacked, prelu=True))


def test_thesis_defaults_and_structure():
  opts = models.default_options('ms_gan')
  assert (opts['n_feats'], opts['n_resblocks'], opts['act'], opts['out_act']) == (
      64, 16, 'relu', True)
  assert opts['stacked'] and not models.default_options('ms_srresnet')['stacked']
  v = models.abstract_variables(models.build('ms_gan'))['params']
  assert v['stage_2']['head']['kernel'].shape == (3, 3, 64, 64)  # takes stage 1's features
  assert v['stage_1']['head']['kernel'].shape == (3, 3, 1, 64)
  assert v['stage_2']['body']['conv_0']['kernel'].shape == (16, 3, 3, 64, 64)
  v = models.abstract_variables(models.build('ms_srresnet'))['params']
  assert set(v['stage_2']) == {'upsample', 'tail'}


@pytest.mark.parametrize('name', ['ms_srresnet', 'ms_gan'])
def test_output_shapes(name):
  model = models.build(name)
  v = models.abstract_variables(model)
  for b, h, w in ((2, 24, 24), (1, 45, 36), (3, 17, 10)):
    x2, x4 = jax.eval_shape(model.apply, v, jax.ShapeDtypeStruct((b, h, w, 1), jnp.float32))
    assert x2.shape == (b, 2 * h, 2 * w, 1) and x4.shape == (b, 4 * h, 4 * w, 1)
    assert x2.dtype == x4.dtype == jnp.float32
  model8 = models.build(name, scale=8, in_channels=2)
  out = jax.eval_shape(model8.apply, models.abstract_variables(model8),
                       jax.ShapeDtypeStruct((1, 5, 7, 2), jnp.float32))
  assert [o.shape for o in out] == [(1, 10, 14, 2), (1, 20, 28, 2), (1, 40, 56, 2)]


def test_stages_are_srresnets():
  """MS-GAN's x2 image is an x2 SRResNet of stage 1's weights; MS-SRResNet's x4 image is an x4
  SRResNet whose up-sampler is stage 1's then stage 2's x2 step."""
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 6, 5, 1))
  srr = lambda s: models.build('srresnet', scale=s, act='relu', out_act=True, **TINY)

  ms_gan = models.build('ms_gan', **TINY)
  v = zoo_checks.random_variables(ms_gan)
  x2, x4 = jax.jit(ms_gan.apply)(v, x)
  stage1 = {col: v[col]['stage_1'] for col in v}
  np.testing.assert_allclose(np.asarray(jax.jit(srr(2).apply)(stage1, x)), np.asarray(x2),
                             rtol=1e-5, atol=1e-6)
  assert x4.shape == (2, 24, 20, 1)

  ms = models.build('ms_srresnet', **TINY)
  v = zoo_checks.random_variables(ms, seed=1)
  x2, x4 = jax.jit(ms.apply)(v, x)
  s1, s2 = v['params']['stage_1'], v['params']['stage_2']
  params = dict(s1, tail=s2['tail'], upsample={
      'conv_0': s1['upsample']['conv_0'], 'bn_0': s1['upsample']['bn_0'],
      'conv_1': s2['upsample']['conv_0'], 'bn_1': s2['upsample']['bn_0']})
  b1, b2 = v['batch_stats']['stage_1'], v['batch_stats']['stage_2']
  stats = dict(b1, upsample={'bn_0': b1['upsample']['bn_0'], 'bn_1': b2['upsample']['bn_0']})
  want = jax.jit(srr(4).apply)({'params': params, 'batch_stats': stats}, x)
  np.testing.assert_allclose(np.asarray(want), np.asarray(x4), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(jax.jit(srr(2).apply)(
      {col: v[col]['stage_1'] for col in v}, x)), np.asarray(x2), rtol=1e-5, atol=1e-6)


def test_train_mode_and_mean_shift():
  model = models.build('ms_gan', **TINY)
  v = zoo_checks.random_variables(model)
  x = jax.random.uniform(jax.random.PRNGKey(2), (2, 4, 4, 1))
  (x2, x4), upd = jax.jit(lambda v, x: model.apply(v, x, train=True,
                                                    mutable=['batch_stats']))(v, x)
  assert x2.shape == (2, 8, 8, 1) and x4.shape == (2, 16, 16, 1)
  for stage in ('stage_1', 'stage_2'):
    assert not np.allclose(upd['batch_stats'][stage]['upsample']['bn_0']['mean'],
                           v['batch_stats'][stage]['upsample']['bn_0']['mean'])
  shifted = models.build('ms_gan', mean=[0.5], std=[2.0], **TINY)
  y = jax.jit(shifted.apply)(v, x)
  ident = jax.jit(model.apply)(v, (x - 0.5) / 2.0)
  for a, b in zip(y, ident):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b) * 2.0 + 0.5, rtol=1e-5, atol=1e-5)


def test_errors():
  for scale in (2, 3, 5, 2.5):
    with pytest.raises(InputError):
      models.build('ms_gan', scale=scale)
  for bad in (dict(act='tanh'), dict(n_resblocks=0), dict(num_blocks=3)):
    with pytest.raises(InputError):
      models.build('ms_srresnet', **bad)
  model = models.build('ms_gan')
  with pytest.raises(InputError, match=r'\(B, H, W, 1\)'):
    jax.eval_shape(model.apply, models.abstract_variables(model),
                   jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))
