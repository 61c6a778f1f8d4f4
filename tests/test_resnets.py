"""Tests of SRResNet, EDSR-lite, EDSR and MDSR: PyTorch layouts, counts, parity, shapes, errors.

  .venv/bin/python -m pytest -q tests/test_resnets.py

Reference data: tests/data/state_dicts/{srresnet,edsr_lite,edsr}{,_x2,_x3}.json and mdsr.json
(keys, shapes, kinds, trainable counts of the author's PyTorch models) and the parity cases
srresnet, srresnet_x3, edsr_lite, edsr, mdsr_s3 (rule v1 of reference/PARITY.md). Real-size
shapes come from `jax.eval_shape`; only the parity cases and a few tiny models execute.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import parity_weights
from tests import zoo_checks
from medsr_jax import models
from medsr_jax.errors import InputError
from medsr_jax.export_torch import variables_from_torch
from medsr_jax.export_torch import variables_to_torch
from medsr_jax.layers import common
from medsr_jax.layers import residual
from medsr_jax.layers import upsample
from medsr_jax.models import resnets
from medsr_jax.torch_layouts import resnets as layout

LAYOUTS = [(f'{name}{suffix}', name, scale)
           for name in ('srresnet', 'edsr_lite', 'edsr')
           for suffix, scale in (('', 4), ('_x2', 2), ('_x3', 3))] + [('mdsr', 'mdsr', 4)]

# Reference totals (spec §6) minus the 4 frozen MeanShift numbers.
COUNTS = {('srresnet', 2): 1_371_778, ('srresnet', 3): 1_556_418, ('srresnet', 4): 1_519_618,
          ('edsr_lite', 2): 1_367_553, ('edsr_lite', 3): 1_552_193, ('edsr_lite', 4): 1_515_265,
          ('edsr', 2): 40_720_385, ('edsr', 3): 43_670_785, ('edsr', 4): 43_080_705}
TINY = dict(n_feats=8, n_resblocks=3)


@pytest.mark.parametrize('layout_name,name,scale', LAYOUTS)
def test_layout_keys_and_trainable_counts(layout_name, name, scale):
  ref = parity_weights.load_layout(layout_name)
  ours = zoo_checks.check_layout_keys(layout_name, name, scale)
  got = zoo_checks.check_trainable_count(layout_name, name, scale)
  assert got == ref['total_params'] - 4
  if name != 'mdsr':
    assert got == COUNTS[(name, scale)]
  assert sum(int(np.prod(e.shape)) for e in ours if e.kind == 'param') == got


def test_srresnet_shares_one_prelu_slope():
  ours = zoo_checks.check_layout_keys('srresnet', 'srresnet', 4)
  aliases = [e for e in ours if e.kind == 'alias']
  assert len(aliases) == 15
  assert {e.alias_of for e in aliases} == {'body.0.body.2.weight'}
  assert [e.key for e in ours if e.path == ('prelu', 'alpha')] == ['body.0.body.2.weight']
  v = models.abstract_variables(models.build('srresnet'))
  assert v['params']['prelu']['alpha'].shape == (1,)
  assert v['params']['body']['conv_0']['kernel'].shape == (16, 3, 3, 64, 64)
  assert v['batch_stats']['upsample']['bn_1']['var'].shape == (64,)


@pytest.mark.parametrize('layout_name,name,scale,scan', [
    ('srresnet', 'srresnet', 4, True), ('srresnet_x3', 'srresnet', 3, False),
    ('edsr_lite_x2', 'edsr_lite', 2, True), ('mdsr', 'mdsr', 4, True)])
def test_round_trip_is_exact(layout_name, name, scale, scan):
  v = zoo_checks.check_round_trip(layout_name, name, scale, scan_blocks=scan)
  np.testing.assert_allclose(v['constants']['mean_shift']['std'], [1.1], rtol=1e-7)
  sd = parity_weights.state_dict_v1(parity_weights.load_layout(layout_name), seed=7)
  if name == 'srresnet':
    body = v['params']['body'] if scan else v['params']['body_5']
    kernel = body['conv_1']['kernel'][5] if scan else body['conv_1']['kernel']
    np.testing.assert_array_equal(kernel, sd['body.5.body.3.weight'].transpose(2, 3, 1, 0))
    stats = v['batch_stats']['body']['bn_1']['mean'][5] if scan else (
        v['batch_stats']['body_5']['bn_1']['mean'])
    np.testing.assert_array_equal(stats, sd['body.5.body.4.running_mean'])
    np.testing.assert_array_equal(v['params']['upsample']['bn_0']['scale'], sd['tail.0.2.weight'])
  if name == 'mdsr':
    np.testing.assert_array_equal(v['params']['input_layer']['bias'], sd['input_layer.0.bias'])
    np.testing.assert_array_equal(v['params']['upsample_4']['conv_1']['bias'],
                                  sd['tail_4.0.2.bias'])


@pytest.mark.parametrize('case,name,call', [
    ('srresnet', 'srresnet', zoo_checks.default_call),
    ('srresnet_x3', 'srresnet', zoo_checks.default_call),
    ('edsr_lite', 'edsr_lite', zoo_checks.default_call),
    ('edsr', 'edsr', zoo_checks.default_call),
    ('mdsr_s3', 'mdsr', zoo_checks.scale_call)])
def test_forward_parity(case, name, call):
  zoo_checks.check_parity(case, name, call)


@pytest.mark.parametrize('name', ['srresnet', 'edsr_lite', 'edsr', 'mdsr'])
@pytest.mark.parametrize('scale', [2, 3, 4])
def test_output_shapes(name, scale):
  model = models.build(name, scale=scale)
  call = {'scale': scale} if name == 'mdsr' else {}
  zoo_checks.check_output_shapes(model, [(24, 24), (45, 36), (17, 10)], **call)


def test_three_channels_and_mdsr_default_scale():
  model = models.build('edsr_lite', scale=2, in_channels=3)
  v = models.abstract_variables(model)
  assert jax.eval_shape(model.apply, v, jnp.zeros((1, 9, 7, 3))).shape == (1, 18, 14, 3)
  mdsr = models.build('mdsr', scale=3)
  args, kwargs = models.example_inputs(mdsr)
  assert kwargs == {'scale': 3} and args[0].shape == (1, 24, 24, 1)
  v = models.abstract_variables(mdsr)
  assert {f'head_{s}' for s in (2, 3, 4)} <= set(v['params'])  # init builds every branch
  assert {f'tail_{s}' for s in (2, 3, 4)} <= set(v['params'])
  assert jax.eval_shape(mdsr.apply, v, jnp.zeros((1, 5, 6, 1))).shape == (1, 15, 18, 1)
  no_input = models.build('mdsr', input_layer=False)
  assert models.count_params(models.abstract_variables(no_input)) == 6_725_187 - 640


@pytest.mark.parametrize('name,scale', [('srresnet', 4), ('edsr', 3), ('edsr_lite', 2),
                                        ('mdsr', 2.5)])
def test_feature_maps_only(name, scale):
  model = models.build(name, scale=4, feature_maps_only=True)
  n = model.n_feats
  v = models.abstract_variables(model)
  assert 'constants' not in v
  assert not {k for k in v['params'] if k.startswith(('tail', 'upsample'))}
  x = jax.ShapeDtypeStruct((1, 21, 13, 1), jnp.float32)
  if name == 'mdsr':
    y = jax.eval_shape(lambda v, x: model.apply(v, x, scale), v, x)  # head ceil(2.5) = 3
  else:
    y = jax.eval_shape(model.apply, v, x)
  assert y.shape == (1, 21, 13, n)
  keys = [e.key for e in layout.entries(model)]
  assert not [k for k in keys if k.startswith(('tail', 'add_mean', 'sub_mean'))]
  assert sum(int(np.prod(e.shape)) for e in layout.entries(model) if e.kind == 'param') == (
      models.count_params(v))
  full = models.build(name, scale=4)
  tail = sum(int(np.prod(e.shape)) for e in layout.entries(full) if e.kind == 'param'
             and e.key.startswith('tail'))
  assert models.count_params(v) + tail == models.count_params(models.abstract_variables(full))


def test_feature_maps_only_numerics_and_mdsr_branches():
  """Features are the trunk output; MDSR feature mode uses head ceil(s); input_layer is dead."""
  x = jax.random.uniform(jax.random.PRNGKey(1), (1, 6, 5, 1))
  full = models.build('mdsr', scale=3, **TINY)
  feats = models.build('mdsr', scale=3, feature_maps_only=True, **TINY)
  v = zoo_checks.random_variables(full)
  f = jax.jit(lambda v, x: feats.apply(v, x, 2.2))(v, x)
  apply3 = jax.jit(lambda v, x: full.apply(v, x, 3))
  y = apply3(v, x)
  assert f.shape == (1, 6, 5, 8) and y.shape == (1, 18, 15, 1)
  p = v['params']
  up = upsample.UpSampler(3, 8)
  conv = common.conv3x3(1)
  want = conv.apply({'params': p['tail_3']}, up.apply({'params': p['upsample_3']}, f))
  np.testing.assert_allclose(np.asarray(y), np.asarray(want), rtol=1e-5, atol=1e-6)
  changed = jax.tree_util.tree_map(lambda a: a, v)
  changed['params'] = dict(p, input_layer=jax.tree_util.tree_map(lambda a: a + 1.0,
                                                                  p['input_layer']))
  np.testing.assert_array_equal(np.asarray(apply3(changed, x)), np.asarray(y))
  y2 = jax.jit(lambda v, x: full.apply(v, x, 2))(v, x)
  assert y2.shape == (1, 12, 10, 1)


def test_scan_and_loop_agree_and_batchnorm_train_mode():
  model = models.build('srresnet', scale=2, **TINY)
  loop = models.build('srresnet', scale=2, scan_blocks=False, **TINY)
  v = zoo_checks.random_variables(model)
  sd = variables_to_torch('srresnet', v, scale=2, in_channels=1, **TINY)
  assert len({float(sd[f'body.{i}.body.2.weight'][0]) for i in range(3)}) == 1
  v_loop = variables_from_torch('srresnet', sd, scale=2, in_channels=1, scan_blocks=False, **TINY)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 7, 6, 1))
  y = jax.jit(model.apply)(v, x)
  np.testing.assert_allclose(np.asarray(jax.jit(loop.apply)(v_loop, x)), np.asarray(y),
                             rtol=1e-5, atol=1e-6)
  # Training mode: batch statistics, running statistics updated (momentum 0.1 as in PyTorch).
  y_train, upd = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(
      v, x)
  assert y_train.shape == y.shape and not np.allclose(np.asarray(y_train), np.asarray(y))
  old = v['batch_stats']['upsample']['bn_0']['mean']
  new = upd['batch_stats']['upsample']['bn_0']['mean']
  assert new.shape == old.shape and not np.allclose(new, old)
  assert upd['batch_stats']['body']['bn_1']['var'].shape == (3, 8)


def test_resblock_variants():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 5, 5, 4))
  block = residual.ResBlock(4, act='leaky_relu', res_scale=0.1)
  v = jax.eval_shape(block.init, jax.random.PRNGKey(0), x)
  rng = np.random.default_rng(0)
  p = jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape).astype(np.float32), v)
  conv = common.Conv2d(4)
  h = conv.apply({'params': p['params']['conv_0']}, x)
  h = conv.apply({'params': p['params']['conv_1']}, jnp.where(h > 0, h, 0.2 * h))
  np.testing.assert_allclose(np.asarray(block.apply(p, x)), np.asarray(0.1 * h + x),
                             rtol=1e-5, atol=1e-5)
  own = jax.eval_shape(residual.ResBlock(4, act='prelu', out_act=True).init,
                       jax.random.PRNGKey(0), x)
  assert own['params']['prelu']['alpha'].shape == (1,)
  assert upsample.torch_indices(4, 3) == [0, 3]
  with pytest.raises(ValueError, match='act'):
    residual.ResBlock(4, act='tanh').init(jax.random.PRNGKey(0), x)


def _sd(layout_name='srresnet_x2', seed=1):
  return parity_weights.state_dict_v1(parity_weights.load_layout(layout_name), seed)


def test_import_errors_name_the_key():
  sd = _sd()
  kw = dict(scale=2, in_channels=1)
  bad = dict(sd)
  del bad['body.7.body.4.running_var']
  with pytest.raises(InputError, match=r'body\.7\.body\.4\.running_var'):
    variables_from_torch('srresnet', bad, **kw)
  bad = dict(sd, **{'body.3.body.0.weight': np.zeros((64, 64, 5, 5), np.float32)})
  with pytest.raises(InputError, match=r'body\.3\.body\.0\.weight'):
    variables_from_torch('srresnet', bad, **kw)
  bad = dict(sd, **{'body.3.body.2.weight': np.array([0.5], np.float32)})
  with pytest.raises(InputError, match=r'body\.3\.body\.2\.weight.*shared'):
    variables_from_torch('srresnet', bad, **kw)
  bad = dict(sd, **{'body.16.body.0.weight': np.zeros((64, 64, 3, 3), np.float32)})
  with pytest.raises(InputError, match=r'body\.16\.body\.0\.weight'):
    variables_from_torch('srresnet', bad, **kw)
  with pytest.raises(InputError, match='missing'):  # an x2 state dict is not an x4 model
    variables_from_torch('srresnet', sd, scale=4, in_channels=1)
  with pytest.raises(InputError, match='unexpected'):  # an SRResNet is not an EDSR-lite
    variables_from_torch('edsr_lite', sd, **kw)
  # PyTorch may list a shared tensor once: the other names are optional.
  slim = {k: a for k, a in sd.items()
          if not k.endswith('.body.2.weight') or k == 'body.0.body.2.weight'}
  v = variables_from_torch('srresnet', slim, **kw)
  np.testing.assert_array_equal(v['params']['prelu']['alpha'], sd['body.0.body.2.weight'])


def test_build_and_call_errors():
  for bad in (dict(scale=5), dict(scale=2.5), dict(act='tanh'), dict(n_resblocks=0),
              dict(blocks=3), dict(init_scheme='xavier')):
    with pytest.raises(InputError):
      models.build('srresnet', **bad)
  with pytest.raises(InputError):
    models.build('mdsr', scale=8)
  mdsr = models.build('mdsr')
  v = models.abstract_variables(mdsr)
  x = jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)
  for scale in (2.5, 5, 1):
    with pytest.raises(InputError, match='scale'):
      jax.eval_shape(lambda v, x: mdsr.apply(v, x, scale), v, x)
  with pytest.raises(InputError, match='static'):
    jax.eval_shape(lambda v, x, s: mdsr.apply(v, x, s), v, x, jnp.float32(2))
  fm = models.build('mdsr', feature_maps_only=True)
  with pytest.raises(InputError, match='ceil'):
    jax.eval_shape(lambda v, x: fm.apply(v, x, 4.5), models.abstract_variables(fm), x)
  srr = models.build('srresnet', scale=2)
  with pytest.raises(InputError, match=r'\(B, H, W, 1\)'):
    jax.eval_shape(srr.apply, models.abstract_variables(srr),
                   jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))
  assert models.build('edsr').res_scale == 0.1 and models.build('edsr_lite').act == 'leaky_relu'
  assert models.default_options('mdsr')['n_resblocks'] == 80


# GMACs of one 1x40x32 LR slice (reference/param_counts.md, torch FlopCounterMode / 2).
GMACS = {('srresnet', 2): 1.750, ('srresnet', 3): 1.989, ('srresnet', 4): 2.513,
         ('edsr_lite', 4): 2.513, ('edsr', 2): 52.108, ('edsr', 3): 55.898, ('edsr', 4): 64.223,
         ('mdsr', 2): 7.789, ('mdsr', 3): 8.029, ('mdsr', 4): 8.553}


@pytest.mark.parametrize('name,scale', sorted(GMACS))
def test_macs_match_reference(name, scale):
  """The forward runs exactly the reference's convs (MDSR: one branch, never input_layer)."""
  complexity = pytest.importorskip('medsr_jax.complexity')
  row = complexity.measure(name, scale=scale, speed=False)
  assert row.macs.total / 1e9 == pytest.approx(GMACS[(name, scale)], abs=6e-4)
