"""Tests of the dense CNN family (SRDenseNet, RDN, ESRGAN-RRDB): layouts, counts, parity, shapes.

  .venv/bin/python -m pytest -q tests/test_dense_nets.py

Reference key lists and trainable counts at x2 / x3 / x4, exact PyTorch round trips (scan and
loop), forward parity with the author's PyTorch models (reference/PARITY.md rule v1, err < 1e-4),
output shapes from `jax.eval_shape` (nothing compiled), the feature-extractor mode and errors.
Only the parity cases and one tiny scan-vs-loop check execute a model.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax import models
from medsr_jax import torch_layouts
from medsr_jax.errors import InputError
from medsr_jax.export_torch import variables_from_torch
from medsr_jax.export_torch import variables_to_torch
from medsr_jax.layers import dense
from medsr_jax.models import dense_nets
from medsr_jax.torch_layouts import blocks as tb
from medsr_jax.torch_layouts import dense_nets as layout
from tests import parity_weights
from tests import zoo_checks

NAMES = ('srdensenet', 'rdn', 'esrgan')
LAYOUTS = [(f'{n}{suffix}', n, s) for n in NAMES for suffix, s in (('', 4), ('_x2', 2), ('_x3', 3))]
# Reference totals (spec §6) minus the 4 frozen MeanShift numbers of one channel.
COUNTS = {('srdensenet', 2): 8_372_897, ('srdensenet', 3): 11_323_297,
          ('srdensenet', 4): 10_733_217, ('rdn', 2): 5_614_209, ('rdn', 3): 5_798_849,
          ('rdn', 4): 5_761_921, ('esrgan', 2): 9_949_633, ('esrgan', 3): 10_134_273,
          ('esrgan', 4): 10_097_345}
TINY = {'srdensenet': dict(growth_rate=4, num_blocks=2, num_layers=2, features=8),
        'rdn': dict(features=8, growth_rate=4, num_layers=2, num_blocks=3),
        'esrgan': dict(features=8, growth_rate=4, num_layers=2, num_rdb=2, num_blocks=3)}


@pytest.mark.parametrize('layout_name,name,scale', LAYOUTS)
def test_layout_keys_and_trainable_counts(layout_name, name, scale):
  ref = parity_weights.load_layout(layout_name)
  assert ref['scale'] == scale
  ours = zoo_checks.check_layout_keys(layout_name, name, scale)
  assert sum(int(np.prod(e.shape)) for e in ours if e.kind == 'param') == COUNTS[(name, scale)]
  assert zoo_checks.check_trainable_count(layout_name, name, scale) == COUNTS[(name, scale)]


@pytest.mark.parametrize('layout_name,name,scale', [('srdensenet_x3', 'srdensenet', 3),
                                                    ('rdn', 'rdn', 4), ('esrgan_x2', 'esrgan', 2)])
def test_round_trip_is_exact(layout_name, name, scale):
  v = zoo_checks.check_round_trip(layout_name, name, scale)
  np.testing.assert_allclose(v['constants']['mean_shift']['std'], [1.1], rtol=1e-7)
  sd = parity_weights.state_dict_v1(parity_weights.load_layout(layout_name), seed=7)
  p = v['params']
  if name == 'rdn':  # block 7 of the scanned RDBs is entry 7 of the leading axis
    assert p['body']['dense']['body_5']['conv']['kernel'].shape == (20, 3, 3, 224, 32)
    np.testing.assert_array_equal(p['body']['bottle_neck']['kernel'][7, 0, 0],
                                  sd['body.7.bottle_neck.weight'][:, :, 0, 0].T)
  if name == 'esrgan':
    kernel = p['body']['body_2']['dense']['body_3']['conv']['kernel']
    assert kernel.shape == (23, 3, 3, 160, 32)
    np.testing.assert_array_equal(kernel[22], sd['body.22.body.2.body.3.body.0.weight']
                                  .transpose(2, 3, 1, 0))
  if name == 'srdensenet':
    assert p['bottleneck']['kernel'].shape == (1, 1, 4752, 256)
    assert p['body_7']['body_7']['conv']['kernel'].shape == (3, 3, 1024, 16)


@pytest.mark.parametrize('layout_name,name', [('rdn_x2', 'rdn'), ('esrgan_x3', 'esrgan')])
def test_loop_layout_round_trip_and_agrees_with_scan(layout_name, name):
  ref = parity_weights.load_layout(layout_name)
  scale = int(ref['scale'])
  sd = parity_weights.state_dict_v1(ref, seed=3)
  loop = zoo_checks.check_round_trip(layout_name, name, scale, seed=3, scan_blocks=False)
  scanned = variables_from_torch(name, sd, scale=scale, in_channels=1)
  a = scanned['params']['body']['body_1']['bottle_neck']['kernel'][4] if name == 'esrgan' else \
      scanned['params']['body']['bottle_neck']['kernel'][4]
  b = loop['params']['body_4']['body_1']['bottle_neck']['kernel'] if name == 'esrgan' else \
      loop['params']['body_4']['bottle_neck']['kernel']
  np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('case', NAMES)
def test_forward_parity(case):
  zoo_checks.check_parity(case, case)


@pytest.mark.parametrize('name', ['rdn', 'esrgan'])
def test_tiny_scan_and_loop_forward_agree(name):
  """The same weights (moved through the PyTorch layout) give the same output scanned or not."""
  scanned = models.build(name, scale=2, **TINY[name])
  loop = models.build(name, scale=2, scan_blocks=False, **TINY[name])
  v = zoo_checks.random_variables(scanned, scale=0.3)
  sd = variables_to_torch(name, v, scale=2, in_channels=1, **TINY[name])
  v_loop = variables_from_torch(name, sd, scale=2, in_channels=1, scan_blocks=False,
                                **TINY[name])
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 5, 7, 1))
  y = jax.jit(scanned.apply)(v, x)
  y_loop = jax.jit(loop.apply)(v_loop, x)
  assert y.shape == (1, 10, 14, 1)
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_loop), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('scale', [2, 3, 4])
def test_output_shapes(name, scale):
  model = models.build(name, scale=scale)
  assert set(models.abstract_variables(model)) == {'params', 'constants'}
  zoo_checks.check_output_shapes(model, [(16, 16), (40, 32), (23, 17)])


def test_three_channels_shapes_and_layout():
  model = models.build('rdn', scale=3, in_channels=3)
  v = models.abstract_variables(model)
  y = jax.eval_shape(model.apply, v, jax.ShapeDtypeStruct((1, 9, 6, 3), jnp.float32))
  assert y.shape == (1, 27, 18, 3)
  ours = layout.entries(model)
  assert ours[0].key == 'add_mean.weight' and ours[0].shape == (3, 3, 1, 1)
  assert ours[-2].key == 'tail.1.weight' and ours[-2].shape == (3, 64, 3, 3)


@pytest.mark.parametrize('name,width', [('srdensenet', 256), ('rdn', 64), ('esrgan', 64)])
def test_feature_maps_only(name, width):
  full = models.build(name, scale=4)
  model = models.build(name, scale=4, feature_maps_only=True)
  assert model.feature_channels == width
  v = models.abstract_variables(model)
  assert set(v) == {'params'}  # no MeanShift constants
  assert not {'upsample', 'conv_last'} & set(v['params'])
  tail = sum(int(np.prod(e.shape)) for e in tb.tail('tail', 4, width, 1))
  assert models.count_params(v) == models.count_params(models.abstract_variables(full)) - tail
  y = jax.eval_shape(model.apply, v, jax.ShapeDtypeStruct((2, 23, 17, 1), jnp.float32))
  assert y.shape == (2, 23, 17, width)
  keys = [e.key for e in layout.entries(model)]
  assert keys == [e.key for e in layout.entries(full) if
                  not e.key.startswith(('add_mean', 'sub_mean', 'tail.'))]
  # The scale is not used by a feature extractor.
  model = dense_nets.SRDenseNet(scale=5, feature_maps_only=True)
  model.check_config()


def test_feature_extractor_layout_matches_meta_rdn_reference():
  """The MIASSR MetaRDN's `feature_extractor.*` keys (minus its dead x2 tail) are our layout of
  RDN(feature_maps_only=True) with a prefix."""
  ref = parity_weights.load_layout('meta_rdn')['state_dict']
  want = [(r[0], tuple(r[1])) for r in ref
          if r[0].startswith('feature_extractor.') and '.tail.' not in r[0]]
  fe = dense_nets.RDN(feature_maps_only=True)
  ours = torch_layouts.prefixed(layout.entries(fe), 'feature_extractor.', ('feature_extractor',))
  assert [(e.key, e.shape) for e in ours] == want
  assert ours[0].path == ('feature_extractor', 'head', 'kernel')
  sd = parity_weights.state_dict_v1(parity_weights.load_layout('rdn'), seed=1)
  sd = {k: a for k, a in sd.items() if not k.startswith(('add_mean', 'sub_mean', 'tail.'))}
  v = layout.from_torch(fe, sd)
  assert set(v) == {'params'}
  np.testing.assert_array_equal(layout.to_torch(fe, v)['F0.bias'], sd['F0.bias'])


def test_srdensenet_dense_types():
  widths = {'all': 4752, 'h': 1040, 'hl': 1056}
  base = models.count_params(models.abstract_variables(models.build('srdensenet')))
  for kind, width in widths.items():
    model = models.build('srdensenet', dense_type=kind)
    assert model.bottleneck_in() == width
    v = models.abstract_variables(model)
    assert v['params']['bottleneck']['kernel'].shape == (1, 1, width, 256)
    assert models.count_params(v) == base - (4752 - width) * 256
    assert layout.entries(model)[-8].shape == (256, width, 1, 1)  # bottleneck.weight
    y = jax.eval_shape(model.apply, v, jax.ShapeDtypeStruct((1, 12, 10, 1), jnp.float32))
    assert y.shape == (1, 48, 40, 1)


def test_layer_blocks():
  """RDB / RRDB parameter shapes and names, and the scan bodies' signatures (shapes only)."""
  x = jnp.zeros((1, 6, 6, 64))
  rdb = dense.ResidualDenseBlock(growth=32, num_layers=6)
  v = jax.eval_shape(rdb.init, jax.random.PRNGKey(0), x)['params']
  assert v['dense']['body_5']['conv']['kernel'].shape == (3, 3, 224, 32)
  assert v['bottle_neck']['kernel'].shape == (1, 1, 256, 64)
  assert models.count_params(v) == sum(
      9 * (64 + 32 * j) * 32 + 32 for j in range(6)) + 256 * 64 + 64
  rrdb = dense.RRDB()
  v = jax.eval_shape(rrdb.init, jax.random.PRNGKey(0), x)['params']
  assert sorted(v) == ['body_0', 'body_1', 'body_2']
  y, out = jax.eval_shape(dense.ScannedRDB(growth=8, num_layers=2).init_with_output,
                          jax.random.PRNGKey(0), x)[0]
  assert y.shape == out.shape == x.shape


def test_errors():
  sd = parity_weights.state_dict_v1(parity_weights.load_layout('esrgan_x2'), seed=1)
  bad = dict(sd)
  del bad['body.3.body.1.bottle_neck.bias']
  with pytest.raises(InputError, match=r'body\.3\.body\.1\.bottle_neck\.bias'):
    variables_from_torch('esrgan', bad, scale=2, in_channels=1)
  bad = dict(sd, **{'body.23.weight': np.zeros((64, 64, 1, 1), np.float32)})
  with pytest.raises(InputError, match=r'body\.23\.weight.*\(64, 64, 1, 1\)'):
    variables_from_torch('esrgan', bad, scale=2, in_channels=1)
  bad = dict(sd, **{'body.23.body.0.bottle_neck.bias': np.zeros(64, np.float32)})
  with pytest.raises(InputError, match='unexpected key'):
    variables_from_torch('esrgan', bad, scale=2, in_channels=1)
  with pytest.raises(InputError, match=r'tail\.0\.2\.weight'):  # an x2 state dict is not x4
    variables_from_torch('esrgan', sd, scale=4, in_channels=1)
  sd = parity_weights.state_dict_v1(parity_weights.load_layout('rdn'), seed=1)
  with pytest.raises(InputError, match=r'unexpected key.*body\.19\.body\.0'):  # 20 RDBs, not 19
    variables_from_torch('rdn', sd, scale=4, in_channels=1, num_blocks=19)
  for name, bad_options in [('srdensenet', dict(dense_type='x')), ('rdn', dict(act='tanh')),
                            ('esrgan', dict(num_rdb=0)), ('rdn', dict(init_scheme='x')),
                            ('esrgan', dict(blocks=3))]:
    with pytest.raises(InputError):
      models.build(name, **bad_options)
  for name in NAMES:
    with pytest.raises(InputError):
      models.build(name, scale=5)
  model = models.build('rdn', scale=2, **TINY['rdn'])
  with pytest.raises(InputError, match=r'\(B, H, W, 1\)'):
    jax.eval_shape(model.apply, models.abstract_variables(model),
                   jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))


def test_registry_defaults():
  assert set(NAMES) <= set(models.available())
  assert isinstance(models.build('srdensenet'), dense_nets.SRDenseNet)
  opts = models.default_options('rdn')
  assert (opts['features'], opts['growth_rate'], opts['num_layers'], opts['num_blocks'],
          opts['act']) == (64, 32, 6, 20, 'leaky_relu')
  opts = models.default_options('esrgan')
  assert (opts['num_blocks'], opts['num_rdb'], opts['num_layers'], opts['rdb_residual_scale'],
          opts['rrdb_residual_scale']) == (23, 3, 4, 0.2, 0.2)
  opts = models.default_options('srdensenet')
  assert (opts['growth_rate'], opts['num_blocks'], opts['num_layers'], opts['features'],
          opts['dense_type'], opts['act']) == (16, 8, 8, 256, 'all', 'relu')
  assert torch_layouts.get('esrgan') is layout
